//! vCPU register state for entering the kernel directly in 64-bit mode
//! (Intel SDM vol. 3, 10.8.5 "Initializing IA-32e Mode").

use super::gdt::{code_segment, data_segment, tss_segment, GDT_LIMIT};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use shared::layout::{BOOT_GDT, BOOT_PML4, ZERO_PAGE};

/// CR0: protection enable.
pub const X86_CR0_PE: u64 = 1 << 0;
/// CR0: extension type (always 1).
pub const X86_CR0_ET: u64 = 1 << 4;
/// CR0: numeric error reporting.
pub const X86_CR0_NE: u64 = 1 << 5;
/// CR0: paging.
pub const X86_CR0_PG: u64 = 1 << 31;
/// CR4: physical address extension.
pub const X86_CR4_PAE: u64 = 1 << 5;
/// EFER: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1, which is always set.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

/// General-purpose registers at entry: `RIP` = the kernel entry, `RSI` = the zero page,
/// interrupts off. The kernel sets up its own stack.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs { rip: entry, rsi: ZERO_PAGE, rflags: RFLAGS_RESERVED, ..Default::default() }
}

/// Special registers at entry: long mode on the boot page tables and the boot GDT.
pub fn boot_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let data = data_segment();
    sregs.cs = code_segment();
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss_segment();
    sregs.gdt.base = BOOT_GDT;
    sregs.gdt.limit = GDT_LIMIT;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
    sregs.cr3 = BOOT_PML4;
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// The x87/SSE state Linux expects at boot: default control word and MXCSR.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}

/// Loads the boot state into `vcpu`.
pub fn setup_vcpu(vcpu: &VcpuFd, entry: u64) -> Result<(), kvm_ioctls::Error> {
    let sregs = boot_sregs(vcpu.get_sregs()?);
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&boot_regs(entry))?;
    vcpu.set_fpu(&boot_fpu())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_state_is_consistent() {
        let sregs = boot_sregs(kvm_sregs::default());
        assert_eq!(sregs.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE | X86_CR0_PG);
        assert_ne!(sregs.cr4 & X86_CR4_PAE, 0);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((sregs.cs.l, sregs.cs.db), (1, 0), "64-bit code segment");
        assert_eq!(sregs.gdt.limit, 31);
        let regs = boot_regs(0xffff_ffff_8020_0000);
        assert_eq!((regs.rip, regs.rsi, regs.rflags), (0xffff_ffff_8020_0000, ZERO_PAGE, 2));
    }
}
