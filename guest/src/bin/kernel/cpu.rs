//! The kernel's own GDT and TSS, replacing the VMM's boot GDT (which only the identity map
//! reaches): flat 64-bit code and data, and a TSS whose IST 1 stack takes double faults,
//! so that a kernel stack overflow into its guard page is reported instead of ending in a
//! triple fault. Also turns on the CPU features the page tables use (NX, global pages).

use core::arch::asm;
use shared::addr::PhysAddr;
use x86_64::instructions::tables::{lgdt, load_tss};
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::gdt::SegmentSelector;
use x86_64::structures::DescriptorTablePointer;
use x86_64::{PrivilegeLevel, VirtAddr};

/// The 64-bit TSS (Intel SDM vol. 3, 8.7).
#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

const _: () = assert!(core::mem::size_of::<Tss>() == 104);

/// The IST slot double faults run on (1-based, as in the IDT gate).
pub const DOUBLE_FAULT_IST: u8 = 1;

static mut TSS: Tss = Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: 104,
};

/// Null, kernel code64 (0x08), kernel data (0x10), TSS (0x18, two slots), user data
/// (0x28), user code64 (0x30). The user pair sits where `sysret` expects it: SS at
/// STAR[63:48] + 8 and CS at + 16 (Intel SDM vol. 2, SYSRET), as in Linux's GDT.
static mut GDT: [u64; 7] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0,
    0,
    0x00cf_f300_0000_ffff,
    0x00af_fb00_0000_ffff,
];

const TSS_SELECTOR: u16 = 0x18;
/// The GDT's size minus one.
const GDT_LIMIT: u16 = 7 * 8 - 1;
/// User data selector, RPL 3.
pub const USER_DS: u64 = 0x28 | 3;
/// User code selector, RPL 3.
pub const USER_CS: u64 = 0x30 | 3;
/// STAR[63:48]: `sysret` loads SS from this + 8 and CS from this + 16.
const SYSRET_BASE: u64 = 0x20;
/// STAR[47:32]: `syscall` loads CS from this and SS from this + 8.
const SYSCALL_BASE: u64 = 0x08;

extern "C" {
    static __fault_stack_top: u8;
}

/// Loads the kernel's GDT and TSS. The code and data descriptors equal the VMM's, so the
/// segment registers need no reload.
pub fn init() {
    // SAFETY: runs once at boot on the only CPU, before anything reads GDT or TSS; both are
    // statics that live forever, as the CPU requires of loaded tables.
    unsafe {
        let tss = &raw mut TSS;
        (*tss).ist[usize::from(DOUBLE_FAULT_IST - 1)] = &raw const __fault_stack_top as u64;
        let base = tss as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        let gdt = &raw mut GDT;
        // 64-bit available TSS: type 9, present.
        (*gdt)[3] = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89 << 40)
            | (((base >> 24) & 0xff) << 56);
        (*gdt)[4] = base >> 32;
        lgdt(&DescriptorTablePointer { limit: GDT_LIMIT, base: VirtAddr::from_ptr(gdt) });
        load_tss(SegmentSelector::new(TSS_SELECTOR >> 3, PrivilegeLevel::Ring0));
    }
}

/// Where the stack the CPU switches to on a trap from user mode is kept (TSS.RSP0), for
/// the user-mode entry to fill in.
pub fn kernel_stack_slot() -> *mut u64 {
    // SAFETY: only an address is formed; the TSS is a static that lives forever.
    unsafe { (&raw mut TSS).cast::<u8>().add(4).cast::<u64>() }
}

/// Arms `syscall`: EFER.SCE, the selectors in STAR, `entry` in LSTAR, and RFLAGS.IF, TF,
/// DF and AC cleared on entry (FMASK), as Linux's `syscall_init`.
pub fn enable_syscall(entry: u64) {
    use x86_64::registers::model_specific::Msr;
    const STAR: u32 = 0xc000_0081;
    const LSTAR: u32 = 0xc000_0082;
    const FMASK: u32 = 0xc000_0084;
    // SAFETY: these MSRs only define where `syscall` goes; no user code runs yet, and
    // `entry` is the kernel's syscall entry stub.
    unsafe {
        Efer::update(|flags| *flags |= EferFlags::SYSTEM_CALL_EXTENSIONS);
        Msr::new(STAR).write(SYSRET_BASE << 48 | SYSCALL_BASE << 32);
        Msr::new(LSTAR).write(entry);
        Msr::new(FMASK).write(0x4_0700);
    }
}

/// Whether the CPU has no-execute pages (CPUID 0x8000_0001 EDX bit 20).
pub fn has_nx() -> bool {
    core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 20) != 0
}

/// Whether CPUID leaf 7 (structured extended features) has `ebx` bit `bit`.
fn leaf7_ebx(bit: u32) -> bool {
    core::arch::x86_64::__cpuid(0).eax >= 7
        && core::arch::x86_64::__cpuid_count(7, 0).ebx & (1 << bit) != 0
}

/// Turns on SMEP (the kernel never runs user code) and SMAP (the kernel touches user
/// memory only where it says so, between `stac` and `clac`: `copy_user`) where the CPU
/// offers them, as Linux does. Returns which it turned on.
pub fn enable_user_protections() -> (bool, bool) {
    let (smep, smap) = (leaf7_ebx(7), leaf7_ebx(20));
    if smep {
        // SAFETY: the kernel executes no user page.
        unsafe { Cr4::update(|flags| *flags |= Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION) };
    }
    if smap {
        // SAFETY: the kernel reads and writes user memory only in `copy_user`, which sets
        // RFLAGS.AC around its copy once the caller has recorded that SMAP is on.
        unsafe { Cr4::update(|flags| *flags |= Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION) };
    }
    (smep, smap)
}

/// Whether the CPU has global pages (CPUID 1 EDX bit 13).
pub fn has_global_pages() -> bool {
    core::arch::x86_64::__cpuid(1).edx & (1 << 13) != 0
}

/// Whether the CPU maps 1 GiB pages (CPUID 0x8000_0001 EDX bit 26, `pdpe1gb`).
pub fn has_gigabyte_pages() -> bool {
    core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// The root of the loaded page-table tree (CR3's address bits).
pub fn page_table_root() -> PhysAddr {
    PhysAddr::new(x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64())
}

/// Invalidates every TLB entry, global ones included: toggling CR4.PGE does that, where a
/// CR3 reload keeps global entries (Intel SDM vol. 3, 4.10.4.1). Without PGE, a CR3
/// reload is everything.
pub fn flush_tlb_everything() {
    let cr4 = Cr4::read();
    if cr4.contains(Cr4Flags::PAGE_GLOBAL) {
        // SAFETY: clearing and restoring PGE changes no mapping; it only empties the TLB.
        unsafe {
            Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL);
            Cr4::write(cr4);
        }
    } else {
        x86_64::instructions::tlb::flush_all();
    }
}

/// Turns on CR0.WP (read-only pages bind the kernel too), and EFER.NXE and CR4.PGE where
/// the CPU has them.
pub fn enable_paging_features() {
    // SAFETY: WP only makes read-only mappings read-only for the kernel as well; the boot
    // tables map everything writable.
    unsafe { Cr0::update(|flags| *flags |= Cr0Flags::WRITE_PROTECT) };
    if has_nx() {
        // SAFETY: setting NXE only makes the NX bit meaningful; no present entry sets it yet.
        unsafe { Efer::update(|flags| *flags |= EferFlags::NO_EXECUTE_ENABLE) };
    }
    if has_global_pages() {
        // SAFETY: PGE only lets global entries survive CR3 loads.
        unsafe { Cr4::update(|flags| *flags |= Cr4Flags::PAGE_GLOBAL) };
    }
}

/// Loads `root` into CR3, which invalidates every translation of the tree it replaces.
///
/// # Safety
/// `root` must be a PML4 that maps the running code, its stack, and every address the
/// kernel uses from now on; the tree it replaces must have no global entries (the VMM's
/// boot tables have none), which a CR3 load would keep.
pub unsafe fn switch_page_tables(root: PhysAddr) {
    // SAFETY: the caller's contract.
    unsafe { asm!("mov cr3, {}", in(reg) root.as_u64(), options(nostack, preserves_flags)) };
}
