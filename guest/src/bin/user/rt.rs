//! The user programs' runtime: the entry point, system calls through the kernel's
//! trampoline, console output and the panic handler.
//!
//! Life cycle: the kernel starts `_start` at CPL3 with `rsp` at the top of the main stack;
//! `_start` calls the program's `main`, and passes what it returns to `exit_group`.

use core::fmt::Write;
use shared::syscall::{SYS_EXIT_GROUP, SYS_KVM_MM_REPORT, SYS_WRITE, VDSO_BASE};

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    and rsp, -16",
    "    call {main}",
    "    mov edi, eax",
    "    mov eax, {exit_group}",
    "    mov rcx, {vdso}",
    "    call rcx",
    "    ud2",
    main = sym crate::main,
    exit_group = const SYS_EXIT_GROUP,
    vdso = const VDSO_BASE,
);

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

/// Ends the process.
pub fn exit(code: i32) -> ! {
    syscall(SYS_EXIT_GROUP, [code as u64, 0, 0, 0, 0, 0]);
    unreachable!("exit_group returned")
}

/// A line for the console, formatted on the stack.
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Self { buf: [0; 256], len: 0 }
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
