//! The user programs' runtime: the entry point, system calls through the kernel's
//! trampoline, console output and the panic handler.
//!
//! Life cycle: the kernel starts `_start` at CPL3 with `rsp` on Linux's initial stack
//! (`argc`, the `argv` pointers, a null, `envp`, the auxiliary vector); `_start` keeps
//! the arguments for [`arg`], calls the program's `main`, and passes what it returns to
//! `exit_group`.

#![allow(dead_code, reason = "each program uses the part of the runtime it needs")]
#![expect(clippy::cast_possible_truncation, reason = "user programs are x86_64: usize is 64 bits")]

use core::fmt::Write;
use shared::syscall::*;

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    mov rdi, rsp",
    "    and rsp, -16",
    "    call {start}",
    "    mov edi, eax",
    "    mov eax, {exit_group}",
    "    mov rcx, {vdso}",
    "    call rcx",
    "    ud2",
    start = sym start,
    exit_group = const SYS_EXIT_GROUP,
    vdso = const VDSO_BASE,
);

/// `argc` and `argv` as the kernel left them.
static mut ARGS: (usize, *const *const u8) = (0, core::ptr::null());

/// Keeps the arguments, then runs the program.
extern "C" fn start(stack: *const usize) -> i32 {
    // SAFETY: the kernel's initial stack: `argc`, then `argc` pointers to strings. This
    // runs once, before anything reads `ARGS`.
    unsafe { ARGS = (*stack, stack.add(1).cast()) };
    crate::main()
}

/// Argument `index` (0 is the program's name), without its terminating zero.
pub fn arg(index: usize) -> Option<&'static [u8]> {
    // SAFETY: written once by `start` before `main`.
    let (argc, argv) = unsafe { ARGS };
    if index >= argc {
        return None;
    }
    // SAFETY: the kernel's argv: `argc` pointers to zero-terminated strings in the stack's
    // top page, which stays mapped.
    unsafe {
        let text = *argv.add(index);
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        Some(core::slice::from_raw_parts(text, len))
    }
}

/// The number in argument `name=N`, if there is one.
pub fn arg_value(name: &str) -> Option<u64> {
    (1..).map_while(arg).find_map(|arg| {
        let value = arg.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        core::str::from_utf8(value).ok()?.parse().ok()
    })
}

/// A system call with up to six arguments; returns `rax` (a result, or `-errno`).
#[inline(always)]
pub fn syscall(nr: u64, args: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: the trampoline follows the system-call ABI: it clobbers rcx and r11 only,
    // and the kernel touches no user memory but what the arguments name.
    unsafe {
        core::arch::asm!(
            "call {vdso}",
            vdso = in(reg) VDSO_BASE,
            inlateout("rax") nr as i64 => ret,
            in("rdi") args[0], in("rsi") args[1], in("rdx") args[2],
            in("r10") args[3], in("r8") args[4], in("r9") args[5],
            lateout("rcx") _, lateout("r11") _,
        );
    }
    ret
}

/// Writes `bytes` to the console.
pub fn write(bytes: &[u8]) -> i64 {
    syscall(SYS_WRITE, [1, bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0])
}

/// Sends `bytes` to the host as this process's report.
pub fn report(bytes: &[u8]) -> i64 {
    syscall(SYS_KVM_MM_REPORT, [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0])
}

/// `fork()`: the child's PID in the parent, 0 in the child, or `-errno`.
pub fn fork() -> i64 {
    syscall(SYS_FORK, [0; 6])
}

/// `wait4(pid, &status, 0, NULL)`: the PID reaped and its status, or `-errno`.
pub fn wait(pid: i64) -> (i64, u32) {
    let mut status = 0u32;
    let reaped = syscall(SYS_WAIT4, [pid as u64, &raw mut status as u64, 0, 0, 0, 0]);
    (reaped, status)
}

/// `mmap` of `pages` anonymous pages with `prot` and `flags` (`MAP_ANONYMOUS` added) at a
/// place the kernel picks; the address, or `-errno`.
pub fn mmap(pages: u64, prot: u64, flags: u64) -> i64 {
    syscall(SYS_MMAP, [0, pages * 4096, prot, flags | MAP_ANONYMOUS, u64::MAX, 0])
}

/// `pages` pages of memory at `addr` as 64-bit words.
///
/// # Safety
/// The pages are mapped for this process (readable; writable if written through it), and
/// no other reference to them is live.
pub unsafe fn words<'a>(addr: u64, pages: u64) -> &'a mut [u64] {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u64, (pages * 512) as usize) }
}

/// Flags in a page that forked processes share (`MAP_SHARED`): one sets a flag, another
/// waits for it, yielding the CPU meanwhile.
#[derive(Clone, Copy)]
pub struct SharedFlags(u64);

impl SharedFlags {
    /// A fresh shared page of flags, all clear; `-errno` if it cannot be mapped.
    pub fn new() -> Result<Self, i64> {
        let page = mmap(1, PROT_READ | PROT_WRITE, MAP_SHARED);
        if page < 0 {
            return Err(page);
        }
        Ok(Self(page as u64))
    }

    fn word(self, index: usize) -> *mut u64 {
        assert!(index < 512, "a flag of the page");
        (self.0 as *mut u64).wrapping_add(index)
    }

    /// Sets flag `index`.
    pub fn set(self, index: usize) {
        // SAFETY: a word of the shared page, mapped for the whole run; volatile, since
        // another process reads it.
        unsafe { core::ptr::write_volatile(self.word(index), 1) };
    }

    /// Waits, yielding the CPU, until flag `index` is set.
    pub fn wait_for(self, index: usize) {
        // SAFETY: as in `set`; volatile, since another process writes it.
        while unsafe { core::ptr::read_volatile(self.word(index)) } == 0 {
            syscall(SYS_SCHED_YIELD, [0; 6]);
        }
    }
}

/// Ends the process.
pub fn exit(code: i32) -> ! {
    syscall(SYS_EXIT_GROUP, [code as u64, 0, 0, 0, 0, 0]);
    unreachable!("exit_group returned")
}

/// A line for the console or a report, formatted on the stack (at most a report's
/// [`REPORT_MAX`] bytes; the rest is cut).
pub struct Line {
    buf: [u8; REPORT_MAX as usize],
    len: usize,
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Self { buf: [0; REPORT_MAX as usize], len: 0 }
    }

    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the line, with a newline, to the console.
    pub fn print(mut self) {
        let _ = self.write_str("\n");
        write(&self.buf[..self.len]);
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `println!` for user programs.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let mut line = $crate::rt::Line::new();
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        line.print();
    }};
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut line = Line::new();
    let _ = write!(line, "user panic: {}", info.message());
    line.print();
    exit(101)
}
