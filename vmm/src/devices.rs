//! The guest's devices: the COM1 console (vm-superio's 8250) and a record of accesses to
//! ports and addresses no device owns.

use serde::Serialize;
use std::collections::BTreeSet;
use std::io::Write;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

/// Console bytes kept for the outcome; a guest printing more keeps only the first ones.
pub const CONSOLE_CAPTURE_LIMIT: usize = 16 << 20;
/// Distinct unexpected accesses recorded; later ones are still answered, not recorded.
pub const UNEXPECTED_ACCESS_LIMIT: usize = 64;

/// The serial console's output: captured, and copied to stdout when asked.
pub struct ConsoleSink {
    echo: bool,
    captured: Vec<u8>,
    truncated: bool,
}

impl ConsoleSink {
    fn new(echo: bool) -> Self {
        Self { echo, captured: Vec::new(), truncated: false }
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.echo {
            // Stdout is line buffered; a closed stdout must not stop the guest.
            let _ = std::io::stdout().write_all(buf);
        }
        let room = CONSOLE_CAPTURE_LIMIT - self.captured.len();
        self.truncated |= buf.len() > room;
        self.captured.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.echo {
            let _ = std::io::stdout().flush();
        }
        Ok(())
    }
}

/// The 8250 raises no interrupts: the guest polls nothing and has no interrupt controller.
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// The COM1 UART.
pub type Console = Serial<NoInterrupt, NoEvents, ConsoleSink>;

/// Creates the console.
pub fn console(echo: bool) -> Console {
    Serial::new(NoInterrupt, ConsoleSink::new(echo))
}

/// The console text so far, and whether some was dropped.
pub fn console_text(console: &Console) -> (String, bool) {
    let sink = console.writer();
    (String::from_utf8_lossy(&sink.captured).into_owned(), sink.truncated)
}

/// What kind of access found no device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AccessKind {
    /// `in` from a port.
    PortRead,
    /// `out` to a port.
    PortWrite,
    /// A load from guest-physical memory that is not RAM.
    MmioRead,
    /// A store to guest-physical memory that is not RAM.
    MmioWrite,
}

/// An access no device owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct UnexpectedAccess {
    /// Read or write, port or memory.
    pub kind: AccessKind,
    /// The port or guest-physical address.
    pub addr: u64,
}

/// Accesses no device owns, each named once.
#[derive(Default)]
pub struct Unexpected {
    seen: BTreeSet<UnexpectedAccess>,
}

impl Unexpected {
    /// Records an access; the first of each kind and address is logged.
    pub fn record(&mut self, kind: AccessKind, addr: u64, len: usize) {
        let access = UnexpectedAccess { kind, addr };
        if self.seen.len() >= UNEXPECTED_ACCESS_LIMIT || !self.seen.insert(access) {
            return;
        }
        let what = match kind {
            AccessKind::PortRead => format!("read {len} byte(s) from I/O port {addr:#x}"),
            AccessKind::PortWrite => format!("wrote {len} byte(s) to I/O port {addr:#x}"),
            AccessKind::MmioRead => format!("read {len} byte(s) at guest-physical {addr:#x}"),
            AccessKind::MmioWrite => format!("wrote {len} byte(s) at guest-physical {addr:#x}"),
        };
        log::warn!("guest {what}, where no device or RAM is; reads return all ones, writes are dropped (reported once)");
    }

    /// The recorded accesses, sorted.
    pub fn list(&self) -> Vec<UnexpectedAccess> {
        self.seen.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_captures_what_the_guest_writes_through_the_uart() {
        let mut uart = console(false);
        for byte in b"hi\n" {
            uart.write(0, *byte).expect("THR write");
        }
        assert_eq!(console_text(&uart), ("hi\n".to_string(), false));
    }

    #[test]
    fn unexpected_accesses_are_recorded_once_each() {
        let mut unexpected = Unexpected::default();
        for _ in 0..3 {
            unexpected.record(AccessKind::PortWrite, 0x1234, 1);
            unexpected.record(AccessKind::PortRead, 0x1234, 1);
        }
        let list = unexpected.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], UnexpectedAccess { kind: AccessKind::PortRead, addr: 0x1234 });
        for addr in 0..1000 {
            unexpected.record(AccessKind::MmioRead, addr, 4);
        }
        assert_eq!(unexpected.list().len(), UNEXPECTED_ACCESS_LIMIT);
    }
}
