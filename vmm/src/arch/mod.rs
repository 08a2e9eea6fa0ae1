//! x86_64 boot state: the GDT, the boot page tables and the vCPU registers for a direct
//! entry into 64-bit long mode (`shared::layout` has the addresses).

pub mod gdt;
pub mod paging;
pub mod regs;
