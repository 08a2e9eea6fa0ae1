//! The console: COM1, driven the cheap way, and the `log` backend on top of it.
//!
//! Every port access is a VM exit, and on an emulating KVM an expensive one, so a whole
//! line goes out with one `rep outsb`, which KVM hands to the VMM as a single exit. The
//! VMM's UART never fills, so the guest does not poll the line-status register.

use core::fmt::{self, Write};
use log::{Level, LevelFilter, Log, Metadata, Record};
use shared::ports::COM1_BASE;

/// Writes bytes to the serial port.
pub fn write_bytes(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // SAFETY: `rep outsb` reads `bytes.len()` bytes from `bytes` (a valid slice) and writes
    // them to COM1's data register; it touches no other memory. DF is clear (the ABI
    // guarantees it between functions).
    unsafe {
        core::arch::asm!(
            "rep outsb",
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            in("dx") COM1_BASE,
            options(nostack, preserves_flags, readonly),
        );
    }
}

/// A console line built on the stack, truncated when it would overflow.
pub struct Line {
    bytes: [u8; 256],
    len: usize,
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Self { bytes: [0; 256], len: 0 }
    }

    /// The text so far (only whole UTF-8 characters are ever appended).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("<invalid UTF-8>")
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

struct Console;

impl Log for Console {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Line::new();
        let prefix = match record.level() {
            Level::Error => "ERROR: ",
            Level::Warn => "WARNING: ",
            _ => "",
        };
        // `Line` truncates instead of failing.
        let _ = write!(line, "{prefix}{}", record.args());
        write_bytes(line.as_bytes());
        write_bytes(b"\n");
    }

    fn flush(&self) {}
}

static CONSOLE: Console = Console;

/// Installs the console as the `log` backend, at `info` until the command line says more.
pub fn init() {
    // Only fails when a logger is already set, which cannot happen: this runs once at boot.
    let _ = log::set_logger(&CONSOLE);
    log::set_max_level(LevelFilter::Info);
}
