//! The device bus: what a port or MMIO exit reaches. Port I/O goes to the console, the
//! debug-exit port or the hypercall port; everything else is an unexpected access, named
//! once and answered with all ones.

use super::ExitAction;
use crate::devices::{console, AccessKind, Console, Unexpected};
use crate::outcome::ExitReason;
use kvm_ioctls::VcpuExit;
use shared::ports::{COM1_BASE, COM1_LEN, DEBUG_EXIT, HYPERCALL};

/// The devices an exit can reach.
pub struct Devices {
    pub(super) console: Console,
    pub(super) unexpected: Unexpected,
}

impl Devices {
    /// Fresh devices; the console copies to stdout when `echo` is set.
    pub fn new(echo: bool) -> Self {
        Self { console: console(echo), unexpected: Unexpected::default() }
    }

    /// Decides what an exit means.
    pub fn handle(&mut self, exit: VcpuExit<'_>) -> ExitAction {
        match exit {
            VcpuExit::IoOut(port, data) => self.port_out(port, data),
            VcpuExit::IoIn(port, data) => {
                if let Some(offset) = com1_offset(port) {
                    data.iter_mut().for_each(|byte| *byte = self.console.read(offset));
                } else {
                    self.unexpected.record(AccessKind::PortRead, u64::from(port), data.len());
                    data.fill(0xff);
                }
                ExitAction::Continue
            }
            VcpuExit::MmioRead(addr, data) => {
                self.unexpected.record(AccessKind::MmioRead, addr, data.len());
                data.fill(0xff);
                ExitAction::Continue
            }
            VcpuExit::MmioWrite(addr, data) => {
                self.unexpected.record(AccessKind::MmioWrite, addr, data.len());
                ExitAction::Continue
            }
            VcpuExit::Shutdown => ExitAction::Shutdown,
            VcpuExit::InternalError => ExitAction::InternalError,
            VcpuExit::Hlt => ExitAction::Halted,
            VcpuExit::FailEntry(hardware_reason, cpu) => {
                ExitAction::Stop(ExitReason::EntryFailure { hardware_reason, cpu })
            }
            other => ExitAction::Stop(ExitReason::UnhandledExit { exit: format!("{other:?}") }),
        }
    }

    fn port_out(&mut self, port: u16, data: &[u8]) -> ExitAction {
        match port {
            DEBUG_EXIT => ExitAction::Stop(ExitReason::GuestExit {
                status: data.first().copied().unwrap_or(0),
            }),
            HYPERCALL if data.len() == 4 => ExitAction::Hypercall(u64::from(u32::from_le_bytes([
                data[0], data[1], data[2], data[3],
            ]))),
            _ => {
                if let Some(offset) = com1_offset(port) {
                    // A string `out` (`rep outsb`) arrives as one exit with every byte.
                    for &byte in data {
                        // The UART has no interrupt to raise, so writes cannot fail.
                        let _ = self.console.write(offset, byte);
                    }
                } else {
                    self.unexpected.record(AccessKind::PortWrite, u64::from(port), data.len());
                }
                ExitAction::Continue
            }
        }
    }
}

fn com1_offset(port: u16) -> Option<u8> {
    port.checked_sub(COM1_BASE)
        .filter(|&offset| offset < COM1_LEN)
        .and_then(|offset| u8::try_from(offset).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{console_text, UnexpectedAccess};

    #[test]
    fn kvm_failure_exits_stop_the_run() {
        let mut devices = Devices::new(false);
        assert_eq!(
            devices.handle(VcpuExit::FailEntry(0x8000_0021, 3)),
            ExitAction::Stop(ExitReason::EntryFailure { hardware_reason: 0x8000_0021, cpu: 3 })
        );
        assert_eq!(devices.handle(VcpuExit::InternalError), ExitAction::InternalError);
        assert_eq!(devices.handle(VcpuExit::Shutdown), ExitAction::Shutdown);
        assert_eq!(devices.handle(VcpuExit::Hlt), ExitAction::Halted);
        assert!(matches!(
            devices.handle(VcpuExit::Watchdog),
            ExitAction::Stop(ExitReason::UnhandledExit { .. })
        ));
    }

    #[test]
    fn ports_reach_their_devices() {
        let mut devices = Devices::new(false);
        assert_eq!(
            devices.handle(VcpuExit::IoOut(DEBUG_EXIT, &[3])),
            ExitAction::Stop(ExitReason::GuestExit { status: 3 })
        );
        assert_eq!(
            devices.handle(VcpuExit::IoOut(HYPERCALL, &[0x00, 0x10, 0, 0])),
            ExitAction::Hypercall(0x1000)
        );
        assert_eq!(devices.handle(VcpuExit::IoOut(COM1_BASE, b"ok\n")), ExitAction::Continue);
        assert_eq!(console_text(&devices.console).0, "ok\n");
        let mut data = [0u8; 2];
        assert_eq!(devices.handle(VcpuExit::IoIn(0x1234, &mut data)), ExitAction::Continue);
        assert_eq!(data, [0xff, 0xff]);
        assert_eq!(
            devices.handle(VcpuExit::IoOut(HYPERCALL, &[1])),
            ExitAction::Continue,
            "short hypercall write"
        );
        let list = devices.unexpected.list();
        assert_eq!(list.len(), 2);
        assert!(list.contains(&UnexpectedAccess {
            kind: AccessKind::PortWrite,
            addr: u64::from(HYPERCALL)
        }));
    }
}
