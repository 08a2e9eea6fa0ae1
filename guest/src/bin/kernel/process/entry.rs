//! The doors between kernel and user mode: entering a program, leaving it for good, the
//! `syscall` entry, the trampoline page, and copies that survive bad user pointers.
//!
//! ```text
//! kernel: enter_user(rip, rsp, &tss.rsp0) ── saves rbx rbp r12–r15 and rsp, sets RSP0,
//!                                            iretq to CPL3 ─▶ user code
//! user:   call VDSO_BASE ─▶ trampoline: `syscall; ret` or `ud2; ret` (chosen by probe)
//!           syscall ─▶ syscall_entry: a trap frame on the kernel stack, vector SYSCALL_VECTOR
//!           ud2     ─▶ #UD at VDSO_BASE: the trap handler takes it as a system call
//!         exceptions ─▶ the CPU switches to RSP0; traps.rs hands CPL3 frames to process
//! kernel: leave_user(value) ── back on the stack enter_user saved: enter_user returns value
//! ```
//!
//! Every trap from user mode lands on the kernel stack just below where `enter_user` was
//! called, so `leave_user` only has to reload that stack pointer.

use crate::cpu::{USER_CS, USER_DS};
use core::sync::atomic::{AtomicBool, Ordering};

/// The vector `syscall_entry` puts in its trap frame (above the 32 exception vectors).
pub const SYSCALL_VECTOR: u64 = 0x100;

core::arch::global_asm!(
    ".section .text",
    // rdi = user rip, rsi = user rsp, rdx = &TSS.RSP0.
    ".global enter_user",
    "enter_user:",
    "    push rbx", "push rbp", "push r12", "push r13", "push r14", "push r15",
    "    mov [rip + user_saved_rsp], rsp",
    "    mov [rip + syscall_kernel_rsp], rsp",
    "    mov [rdx], rsp",
    "    push {user_ds}",
    "    push rsi",
    // RFLAGS: IF set (user mode takes the timer's interrupts; the kernel runs with IF
    // clear, every gate being an interrupt gate), the reserved bit 1 set.
    "    push 0x202",
    "    push {user_cs}",
    "    push rdi",
    "    xor eax, eax", "xor ebx, ebx", "xor ecx, ecx", "xor edx, edx",
    "    xor esi, esi", "xor edi, edi", "xor ebp, ebp",
    "    xor r8d, r8d", "xor r9d, r9d", "xor r10d, r10d", "xor r11d, r11d",
    "    xor r12d, r12d", "xor r13d, r13d", "xor r14d, r14d", "xor r15d, r15d",
    "    iretq",
    // rdi = what enter_user returns.
    ".global leave_user",
    "leave_user:",
    "    mov rsp, [rip + user_saved_rsp]",
    "    mov rax, rdi",
    "    pop r15", "pop r14", "pop r13", "pop r12", "pop rbp", "pop rbx",
    "    ret",
    // `syscall` lands here at CPL0 with the user's rsp, rip in rcx and rflags in r11.
    // `swapgs` twice changes nothing at CPL0 but raises #GP where a host leaves `syscall`
    // at CPL3: that is how the probe tells the two apart.
    ".global syscall_entry",
    "syscall_entry:",
    "    swapgs",
    "    swapgs",
    "    mov [rip + syscall_user_rsp], rsp",
    "    mov rsp, [rip + syscall_kernel_rsp]",
    "    push {user_ds}",
    "    push qword ptr [rip + syscall_user_rsp]",
    "    push r11",
    "    push {user_cs}",
    "    push rcx",
    "    push 0",
    "    push {vector}",
    "    jmp exception_common",
    ".global syscall_entry_end",
    "syscall_entry_end:",
    // rdi = destination, rsi = source, rdx = length; returns the bytes not copied. With
    // SMAP on, the copy runs with RFLAGS.AC set (`stac`), the one place the kernel may
    // touch user memory.
    ".global copy_user",
    "copy_user:",
    "    mov rcx, rdx",
    "    test byte ptr [rip + {smap}], 1",
    "    jz 5f",
    // `stac` and `clac` as `pushf`/`popf` of RFLAGS.AC: some emulating KVMs cannot run
    // them.
    "    pushfq",
    "    or qword ptr [rsp], 1 << 18",
    "    popfq",
    "5:  rep movsb",
    "    xor eax, eax",
    "    jmp 7f",
    "6:  mov rax, rcx",
    "7:  test byte ptr [rip + {smap}], 1",
    "    jz 8f",
    "    pushfq",
    "    and qword ptr [rsp], ~(1 << 18)",
    "    popfq",
    "8:  ret",
    ".pushsection __ex_table, \"a\"",
    ".balign 8",
    ".quad 5b, 6b",
    ".popsection",
    ".section .bss",
    ".balign 8",
    "user_saved_rsp: .quad 0",
    "syscall_kernel_rsp: .quad 0",
    "syscall_user_rsp: .quad 0",
    ".section .text",
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    vector = const SYSCALL_VECTOR,
    smap = sym SMAP_ENABLED,
);

/// Whether SMAP is on: `copy_user` then brackets its copy with `stac` and `clac`, and
/// every trap entry clears RFLAGS.AC (`stac` and `clac` raise #UD on a CPU without SMAP).
pub(crate) static SMAP_ENABLED: AtomicBool = AtomicBool::new(false);

/// Records that SMAP is on (`cpu::enable_user_protections`).
pub fn set_smap(on: bool) {
    SMAP_ENABLED.store(on, Ordering::Relaxed);
}

extern "C" {
    fn enter_user(rip: u64, rsp: u64, rsp0: *mut u64) -> u64;
    fn leave_user(value: u64) -> !;
    fn syscall_entry();
    fn syscall_entry_end();
    fn copy_user(dst: *mut u8, src: *const u8, len: usize) -> usize;
}

/// Runs user code at `rip` with stack `rsp` in the address space CR3 holds, until a trap
/// handler calls [`leave`]; returns the value it passed.
///
/// # Safety
/// CR3 holds a process tree that maps `rip` as user code; no kernel borrow (of the
/// memory managers or the process) may be live, since `leave` abandons the frames between.
pub unsafe fn run(rip: u64, rsp: u64) -> u64 {
    // SAFETY: the caller's contract; `enter_user` saves and restores the callee-saved
    // registers across the excursion, as the C ABI asks.
    unsafe { enter_user(rip, rsp, crate::cpu::kernel_stack_slot()) }
}

/// Ends the excursion [`run`] began: `run` returns `value`.
///
/// # Safety
/// Called from a trap taken while [`run`] is active, with no borrow live whose guard
/// would have to run (the frames between are dropped without unwinding).
pub unsafe fn leave(value: u64) -> ! {
    // SAFETY: the caller's contract; `user_saved_rsp` is the stack `run` left.
    unsafe { leave_user(value) }
}

/// The `syscall` entry's address (for LSTAR) and its end.
pub fn syscall_entry_range() -> core::ops::Range<u64> {
    syscall_entry as *const () as u64..syscall_entry_end as *const () as u64
}

/// Copies `len` bytes from `src` to `dst`, either of which may be a user address that
/// faults; returns whether all were copied. A fault on a mapped-on-demand page is served
/// by the fault handler and the copy goes on; one the handler refuses ends the copy.
///
/// # Safety
/// The kernel side of the copy is valid for `len` bytes; the user side lies below
/// `TASK_SIZE` (checked by the caller): no kernel address may be reached through it.
pub unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> bool {
    // SAFETY: the caller's contract; a fault at the copy resumes at its fixup.
    unsafe { copy_user(dst, src, len) == 0 }
}

/// The trampoline's code for each entry: the call goes in, `ret` comes back.
pub fn trampoline(entry: shared::syscall::SyscallEntry) -> [u8; 3] {
    match entry {
        shared::syscall::SyscallEntry::Syscall => [0x0f, 0x05, 0xc3],
        _ => [0x0f, 0x0b, 0xc3],
    }
}
