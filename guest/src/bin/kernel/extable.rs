//! The exception table: instructions allowed to fault, and where execution resumes when
//! they do (Linux's `__ex_table` and `fixup_exception`).
//!
//! ```text
//! __ex_table (kernel.ld, read-only)   [(instruction, fixup), …]
//! a fault at `instruction`            the handler finds it, stores CR2 in rax and the
//!                                     error code plus one in rdx, resumes at `fixup`
//! ```
//!
//! The probes built on it ([`read_u64`], [`write_u8`]) touch an address and report a
//! fault as a value instead of an oops: the self-tests use them to show that an address
//! really is unmapped or read-only, and `copy_from_user` will use the same table.

use shared::addr::VirtAddr;

/// One entry: an instruction that may fault and where to resume.
#[repr(C)]
struct Entry {
    instruction: u64,
    fixup: u64,
}

extern "C" {
    static __ex_table_start: Entry;
    static __ex_table_end: Entry;
}

/// The fixup for a fault at `rip`, if the table lists it.
pub fn fixup(rip: u64) -> Option<u64> {
    let start = &raw const __ex_table_start;
    let end = &raw const __ex_table_end;
    // SAFETY: the linker places `__ex_table` between the two symbols: a read-only array of
    // `Entry`s (the `.quad` pairs below), which lives as long as the kernel.
    let entries = unsafe {
        let len = (end as usize - start as usize) / core::mem::size_of::<Entry>();
        core::slice::from_raw_parts(start, len)
    };
    entries.iter().find(|entry| entry.instruction == rip).map(|entry| entry.fixup)
}

/// A fault a probe took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The faulting address (CR2).
    pub address: u64,
    /// The page-fault error code.
    pub error_code: u64,
}

/// What a probe returns in rax and rdx: a value, or CR2 and the error code plus one.
#[repr(C)]
struct Probe {
    value: u64,
    fault: u64,
}

impl Probe {
    fn result(self) -> Result<u64, Fault> {
        match self.fault {
            0 => Ok(self.value),
            code => Err(Fault { address: self.value, error_code: code - 1 }),
        }
    }
}

core::arch::global_asm!(
    ".section .text",
    // rdi = address; returns rax = the word, rdx = 0.
    "probe_read_u64:",
    "    xor edx, edx",
    "1:  mov rax, qword ptr [rdi]",
    "2:  ret",
    // rdi = address, sil = the byte; returns rax = 0, rdx = 0.
    "probe_write_u8:",
    "    xor edx, edx",
    "    xor eax, eax",
    "3:  mov byte ptr [rdi], sil",
    "4:  ret",
    ".pushsection __ex_table, \"a\"",
    ".balign 8",
    ".quad 1b, 2b",
    ".quad 3b, 4b",
    ".popsection",
);

extern "C" {
    fn probe_read_u64(addr: u64) -> Probe;
    fn probe_write_u8(addr: u64, value: u8) -> Probe;
}

/// Reads the word at `addr`, or reports the fault that stopped it.
///
/// # Safety
/// A read at `addr` must be harmless if it succeeds: no device register behind it.
pub unsafe fn read_u64(addr: VirtAddr) -> Result<u64, Fault> {
    // SAFETY: the probe reads 8 bytes at `addr`, and its exception-table entry turns a
    // fault into a return; the caller vouches for the read's harmlessness.
    unsafe { probe_read_u64(addr.as_u64()) }.result()
}

/// Writes `value` at `addr`, or reports the fault that stopped it.
///
/// # Safety
/// If the write succeeds it changes memory: `addr` must be a byte the caller may write.
pub unsafe fn write_u8(addr: VirtAddr, value: u8) -> Result<(), Fault> {
    // SAFETY: the probe writes one byte at `addr`, and its exception-table entry turns a
    // fault into a return; the caller vouches for the write.
    unsafe { probe_write_u8(addr.as_u64(), value) }.result().map(|_| ())
}
