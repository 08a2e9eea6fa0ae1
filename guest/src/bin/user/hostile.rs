//! `user-hostile`: a program that does what no program may. Each bad access runs in a
//! child of its own, which the kernel must kill with the right signal while the parent
//! and the kernel go on; the parent reads each child's end from `wait4`. Then the parent
//! makes system calls with bad arguments, each of which must fail with Linux's error.
//!
//! Its report has one `case=signal` pair per child, then one `call=result` pair per bad
//! call, so the end-to-end test reads both the kernel's verdicts and the errors.
#![no_std]
#![no_main]

#[macro_use]
mod rt;

use core::fmt::Write;
use rt::syscall;
use shared::layout::{KERNEL_VIRT_BASE, PAGE_OFFSET};
use shared::syscall::*;

const SIGILL: u32 = 4;
const SIGFPE: u32 = 8;
const SIGSEGV: u32 = 11;

/// The bad accesses: a name, what the child does, and the signal that must end it.
const CASES: [(&str, fn(), u32); 10] = [
    ("null-read", null_read, SIGSEGV),
    ("kernel-write", kernel_write, SIGSEGV),
    ("kernel-jump", kernel_jump, SIGSEGV),
    ("stack-exec", stack_exec, SIGSEGV),
    ("text-write", text_write, SIGSEGV),
    ("prot-none-read", prot_none_read, SIGSEGV),
    ("stack-guard", stack_guard, SIGSEGV),
    ("privileged", privileged, SIGSEGV),
    ("ud2", undefined, SIGILL),
    ("divide-by-zero", divide_by_zero, SIGFPE),
];

fn null_read() {
    // SAFETY: deliberately not: nothing is mapped at 0.
    unsafe { core::ptr::read_volatile(core::ptr::null::<u64>()) };
}

fn kernel_write() {
    // SAFETY: deliberately not: the direct map is the kernel's.
    unsafe { core::ptr::write_volatile(PAGE_OFFSET as *mut u64, 0xbad) };
}

fn kernel_jump() {
    // SAFETY: deliberately not: kernel text is not user-executable.
    let entry: extern "C" fn() = unsafe { core::mem::transmute(KERNEL_VIRT_BASE as *const ()) };
    entry();
}

fn stack_exec() {
    // `ret`, on the stack, which is never executable.
    let code = [0xc3u8; 16];
    let code = core::hint::black_box(&code);
    // SAFETY: deliberately not: the stack is data.
    let entry: extern "C" fn() = unsafe { core::mem::transmute(code.as_ptr()) };
    entry();
}

fn text_write() {
    // SAFETY: deliberately not: the program's code is read-only.
    unsafe { core::ptr::write_volatile(text_write as *const () as *mut u8, 0xcc) };
}

/// A page written, then made `PROT_NONE`: still mapped, but no access may reach it.
fn prot_none_page() -> u64 {
    let page = rt::mmap(1, PROT_READ | PROT_WRITE, MAP_PRIVATE) as u64;
    // SAFETY: the page was just mapped read-write.
    unsafe { core::ptr::write_volatile(page as *mut u64, 42) };
    syscall(SYS_MPROTECT, [page, 4096, PROT_NONE, 0, 0, 0]);
    page
}

fn prot_none_read() {
    // SAFETY: deliberately not: the page is PROT_NONE.
    unsafe { core::ptr::read_volatile(prot_none_page() as *const u64) };
}

fn stack_guard() {
    // A page right below the stack's guard gap, then a touch of the gap itself: the stack
    // may not grow to within 256 pages of another mapping.
    let stack_bottom = STACK_TOP - 32 * 4096;
    let below = stack_bottom - 256 * 4096 - 4096;
    let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
    syscall(SYS_MMAP, [below, 4096, PROT_READ | PROT_WRITE, flags, u64::MAX, 0]);
    // SAFETY: deliberately not: the gap is no memory of ours.
    unsafe { core::ptr::write_volatile((below + 8192) as *mut u64, 1) };
}

fn privileged() {
    // SAFETY: deliberately not: `hlt` at CPL3 raises #GP.
    unsafe { core::arch::asm!("hlt") };
}

fn undefined() {
    // SAFETY: deliberately raises #UD.
    unsafe { core::arch::asm!("ud2") };
}

fn divide_by_zero() {
    // SAFETY: deliberately raises #DE.
    unsafe {
        core::arch::asm!("xor ecx, ecx", "div ecx", out("eax") _, out("edx") _, out("ecx") _)
    };
}

/// The bad system calls, each with the error it must give.
fn bad_calls() -> [(&'static str, i64, i64); 17] {
    let rw = PROT_READ | PROT_WRITE;
    let anon = MAP_PRIVATE | MAP_ANONYMOUS;
    let kernel = PAGE_OFFSET;
    let none = prot_none_page();
    let text = main as *const () as u64 & !0xfff;
    let brk = syscall(SYS_BRK, [0; 6]);
    [
        // Dropping the program's own code: it comes back from the image on the next call.
        ("madvise-dontneed-text", syscall(SYS_MADVISE, [text, 4096, MADV_DONTNEED, 0, 0, 0]), 0),
        (
            "mprotect-wrapping",
            syscall(SYS_MPROTECT, [0x1000_0000, u64::MAX, PROT_READ, 0, 0, 0]),
            -ENOMEM,
        ),
        ("madvise-hint-unmapped", syscall(SYS_MADVISE, [0x1000_0000, 4096, 0, 0, 0, 0]), -ENOMEM),
        // A break that cannot be is refused with the current one, as Linux does.
        ("brk-wrapping", syscall(SYS_BRK, [u64::MAX, 0, 0, 0, 0, 0]) - brk, 0),
        ("write-prot-none-buf", syscall(SYS_WRITE, [1, none, 8, 0, 0, 0]), -EFAULT),
        ("write-kernel-buf", syscall(SYS_WRITE, [1, kernel, 16, 0, 0, 0]), -EFAULT),
        ("write-unmapped-buf", syscall(SYS_WRITE, [1, 0x1000, 16, 0, 0, 0]), -EFAULT),
        ("mmap-no-sharing", syscall(SYS_MMAP, [0, 4096, rw, MAP_ANONYMOUS, 0, 0]), -EINVAL),
        ("mmap-zero-len", syscall(SYS_MMAP, [0, 0, rw, anon, 0, 0]), -EINVAL),
        (
            "mmap-fixed-kernel",
            syscall(SYS_MMAP, [kernel, 4096, rw, anon | MAP_FIXED, 0, 0]),
            -ENOMEM,
        ),
        ("mmap-huge", syscall(SYS_MMAP, [0, 1 << 46, rw, anon, 0, 0]), -ENOMEM),
        ("munmap-misaligned", syscall(SYS_MUNMAP, [0x40_0001, 4096, 0, 0, 0, 0]), -EINVAL),
        (
            "mprotect-unmapped",
            syscall(SYS_MPROTECT, [0x1000_0000, 4096, PROT_READ, 0, 0, 0]),
            -ENOMEM,
        ),
        ("mprotect-kernel", syscall(SYS_MPROTECT, [kernel, 4096, PROT_READ, 0, 0, 0]), -ENOMEM),
        ("madvise-bad-advice", syscall(SYS_MADVISE, [0x40_0000, 4096, 99, 0, 0, 0]), -EINVAL),
        ("wait4-no-child", syscall(SYS_WAIT4, [u64::MAX, 0, 0, 0, 0, 0]), -ECHILD),
        ("report-kernel-buf", syscall(SYS_KVM_MM_REPORT, [kernel, 8, 0, 0, 0, 0]), -EFAULT),
    ]
}

fn main() -> i32 {
    let mut line = rt::Line::new();
    let mut ok = true;
    for (name, case, signal) in CASES {
        let pid = rt::fork();
        if pid == 0 {
            case();
            // Still alive: the kernel let it through.
            rt::exit(100);
        }
        let (reaped, status) = rt::wait(pid);
        // Killed by a signal: the status is the signal number (bits 0–6).
        let got = if reaped == pid && status & 0xff00 == 0 { status & 0x7f } else { 0 };
        ok &= got == signal;
        let _ = write!(line, "{name}={got} ");
    }
    // Children reaped through status pointers the parent may not write: EFAULT, and the
    // child is reaped all the same.
    let read_only = rt::mmap(1, PROT_READ, MAP_PRIVATE) as u64;
    for (name, status) in
        [("wait4-kernel-status", PAGE_OFFSET), ("wait4-read-only-status", read_only)]
    {
        let pid = rt::fork();
        if pid == 0 {
            rt::exit(0);
        }
        let got = syscall(SYS_WAIT4, [pid as u64, status, 0, 0, 0, 0]);
        ok &= got == -EFAULT;
        let _ = write!(line, "{name}={got} ");
    }
    let no_child = syscall(SYS_WAIT4, [u64::MAX, 0, 0, 0, 0, 0]);
    ok &= no_child == -ECHILD;
    let _ = write!(line, "reaped-all={no_child} ");
    for (name, got, expected) in bad_calls() {
        ok &= got == expected;
        let _ = write!(line, "{name}={got} ");
    }
    rt::report(line.as_bytes());
    println!("user-hostile done: the kernel survived");
    i32::from(!ok)
}
