//! The boot GDT: null, 64-bit code, data, and a TSS descriptor (VM entry wants a usable TR).
//!
//! Descriptor format: Intel SDM vol. 3, 3.4.5 (segment descriptors). All segments are
//! flat: base 0, limit 0xfffff.

use kvm_bindings::kvm_segment;

/// Selector of the 64-bit code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the TSS.
pub const TSS_SELECTOR: u16 = 0x18;

/// A flat segment descriptor: its access byte and flags nibble.
#[derive(Clone, Copy)]
struct Descriptor {
    access: u8,
    flags: u8,
}

/// Flat segments' limit (in 4 KiB units where the G flag is set).
const LIMIT: u32 = 0xfffff;
/// Flags: 4 KiB granularity.
const FLAG_G: u8 = 0x8;
/// Flags: 32-bit default operand size.
const FLAG_DB: u8 = 0x4;
/// Flags: 64-bit code.
const FLAG_L: u8 = 0x2;

/// Present, DPL 0, code, execute/read, accessed; 64-bit.
const CODE: Descriptor = Descriptor { access: 0x9b, flags: FLAG_G | FLAG_L };
/// Present, DPL 0, data, read/write, accessed.
const DATA: Descriptor = Descriptor { access: 0x93, flags: FLAG_G | FLAG_DB };
/// Present, 64-bit TSS (busy).
const TSS: Descriptor = Descriptor { access: 0x8b, flags: 0 };

impl Descriptor {
    const fn encode(self) -> u64 {
        let limit = LIMIT as u64;
        (limit & 0xffff)
            | ((self.access as u64) << 40)
            | ((limit >> 16) << 48)
            | ((self.flags as u64) << 52)
    }

    /// What the CPU's hidden segment-register part holds after loading `selector`.
    fn segment(self, selector: u16) -> kvm_segment {
        let granular = self.flags & FLAG_G != 0;
        kvm_segment {
            base: 0,
            limit: if granular { (LIMIT << 12) | 0xfff } else { LIMIT },
            selector,
            type_: self.access & 0xf,
            present: self.access >> 7,
            dpl: (self.access >> 5) & 3,
            db: u8::from(self.flags & FLAG_DB != 0),
            s: (self.access >> 4) & 1,
            l: u8::from(self.flags & FLAG_L != 0),
            g: u8::from(granular),
            avl: 0,
            unusable: 0,
            padding: 0,
        }
    }
}

/// The GDT's entries, indexed by selector / 8.
pub const GDT: [u64; 4] = [0, CODE.encode(), DATA.encode(), TSS.encode()];
/// The GDT's limit (its size minus one).
pub const GDT_LIMIT: u16 = 31;
const _: () = assert!(GDT_LIMIT as usize == 8 * GDT.len() - 1);

/// The `kvm_segment` for the code segment.
pub fn code_segment() -> kvm_segment {
    CODE.segment(CODE_SELECTOR)
}

/// The `kvm_segment` for the data segments.
pub fn data_segment() -> kvm_segment {
    DATA.segment(DATA_SELECTOR)
}

/// The `kvm_segment` for the task register.
pub fn tss_segment() -> kvm_segment {
    TSS.segment(TSS_SELECTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_well_known_encodings() {
        // The flat 64-bit code and data descriptors every long-mode loader uses.
        assert_eq!(GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT[2], 0x00cf_9300_0000_ffff);
        assert_eq!(GDT[3], 0x000f_8b00_0000_ffff);
    }

    #[test]
    fn segments_match_their_descriptors() {
        let code = code_segment();
        assert_eq!((code.l, code.db, code.s, code.type_, code.present), (1, 0, 1, 0xb, 1));
        assert_eq!((code.limit, code.g, code.selector), (0xffff_ffff, 1, CODE_SELECTOR));
        let data = data_segment();
        assert_eq!((data.l, data.db, data.type_, data.selector), (0, 1, 0x3, DATA_SELECTOR));
        let tss = tss_segment();
        assert_eq!((tss.s, tss.type_, tss.g, tss.limit), (0, 0xb, 0, 0xfffff));
    }
}
