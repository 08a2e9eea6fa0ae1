//! The boot GDT: null, 64-bit code, data, and a TSS descriptor (VM entry wants a usable TR).
//!
//! Descriptor format: Intel SDM vol. 3, 3.4.5 (segment descriptors).

use kvm_bindings::kvm_segment;

/// Selector of the 64-bit code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the TSS.
pub const TSS_SELECTOR: u16 = 0x18;

/// Access byte: present, DPL 0, code, execute/read, accessed.
const ACCESS_CODE: u8 = 0x9b;
/// Access byte: present, DPL 0, data, read/write, accessed.
const ACCESS_DATA: u8 = 0x93;
/// Access byte: present, 64-bit TSS (busy).
const ACCESS_TSS: u8 = 0x8b;
/// Flags nibble: 4 KiB granularity, 64-bit code (L).
const FLAGS_CODE64: u8 = 0xa;
/// Flags nibble: 4 KiB granularity, 32-bit default size (D/B).
const FLAGS_DATA: u8 = 0xc;

/// Encodes a segment descriptor.
pub const fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    (limit & 0xffff)
        | ((base & 0x00ff_ffff) << 16)
        | ((access as u64) << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((flags as u64) & 0xf) << 52)
        | (((base >> 24) & 0xff) << 56)
}

/// The GDT's entries, indexed by selector / 8.
pub const GDT: [u64; 4] = [
    0,
    descriptor(0, 0xfffff, ACCESS_CODE, FLAGS_CODE64),
    descriptor(0, 0xfffff, ACCESS_DATA, FLAGS_DATA),
    descriptor(0, 0xfffff, ACCESS_TSS, 0),
];

/// The `kvm_segment` KVM wants for the descriptor at `selector` (what the CPU's hidden
/// segment-register part would hold after loading it).
pub fn segment(selector: u16) -> kvm_segment {
    let entry = GDT[usize::from(selector >> 3)];
    let access = (entry >> 40) as u8;
    let flags = ((entry >> 52) & 0xf) as u8;
    let limit = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
    let granular = flags & 0x8 != 0;
    kvm_segment {
        base: (((entry >> 16) & 0x00ff_ffff) | (((entry >> 56) & 0xff) << 24)),
        limit: if granular {
            (limit << 12) | 0xfff
        } else {
            limit
        },
        selector,
        type_: access & 0xf,
        present: (access >> 7) & 1,
        dpl: (access >> 5) & 3,
        db: (flags >> 2) & 1,
        s: (access >> 4) & 1,
        l: (flags >> 1) & 1,
        g: u8::from(granular),
        avl: flags & 1,
        unusable: 0,
        padding: 0,
    }
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
    fn segments_decode_their_descriptors() {
        let code = segment(CODE_SELECTOR);
        assert_eq!(
            (code.l, code.db, code.s, code.type_, code.present),
            (1, 0, 1, 0xb, 1)
        );
        assert_eq!((code.limit, code.g), (0xffff_ffff, 1));
        let data = segment(DATA_SELECTOR);
        assert_eq!((data.l, data.db, data.type_), (0, 1, 0x3));
        let tss = segment(TSS_SELECTOR);
        assert_eq!((tss.s, tss.type_, tss.g, tss.limit), (0, 0xb, 0, 0xfffff));
    }
}
