//! The vCPU run loop: `KVM_RUN`, then handle the exit, until the guest ends.
//!
//! Port I/O goes to the console, the debug-exit port or the hypercall port; everything
//! else is an unexpected access, named once and answered with all ones. A watchdog thread
//! enforces the timeout by signalling the vCPU thread, which makes `KVM_RUN` return
//! `EINTR`; it keeps signalling until the loop notices, so a signal that lands outside
//! `KVM_RUN` is not lost.

use crate::devices::{console, console_text, AccessKind, Console, Unexpected};
use crate::inspect::{Command, GuestRam, Inspection, Inspector};
use crate::outcome::{ExitReason, Outcome, Registers, TranslationCheck, WalkerCheck};
use crate::report::{read_report, Report};
use crate::vm::Error;
use kvm_ioctls::{VcpuExit, VcpuFd};
use shared::hypercall::{checkpoint, Request, CHECKPOINT, REPORT};
use shared::ports::{COM1_BASE, COM1_LEN, DEBUG_EXIT, HYPERCALL};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Reports and checkpoints kept per run; a guest sending more is misbehaving.
pub const RECORD_LIMIT: usize = 4096;

/// What one exit asks of the loop.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Resume the guest.
    Continue,
    /// Handle the hypercall whose request is at this guest-physical address.
    Hypercall(u64),
    /// The run is over.
    Stop(ExitReason),
    /// The run is over; the reason needs the vCPU's registers.
    Shutdown,
    /// The run is over with `KVM_EXIT_INTERNAL_ERROR`; the details are in `kvm_run`.
    InternalError,
    /// The run is over with `KVM_EXIT_HLT`.
    Halted,
}

/// The devices an exit can reach.
pub struct Devices {
    console: Console,
    unexpected: Unexpected,
}

impl Devices {
    /// Fresh devices; the console copies to stdout when `echo` is set.
    pub fn new(echo: bool) -> Self {
        Self { console: console(echo), unexpected: Unexpected::default() }
    }

    /// Decides what an exit means.
    pub fn handle(&mut self, exit: VcpuExit<'_>) -> Step {
        match exit {
            VcpuExit::IoOut(port, data) => self.port_out(port, data),
            VcpuExit::IoIn(port, data) => {
                if let Some(offset) = com1_offset(port) {
                    data.iter_mut().for_each(|byte| *byte = self.console.read(offset));
                } else {
                    self.unexpected.record(AccessKind::PortRead, u64::from(port), data.len());
                    data.fill(0xff);
                }
                Step::Continue
            }
            VcpuExit::MmioRead(addr, data) => {
                self.unexpected.record(AccessKind::MmioRead, addr, data.len());
                data.fill(0xff);
                Step::Continue
            }
            VcpuExit::MmioWrite(addr, data) => {
                self.unexpected.record(AccessKind::MmioWrite, addr, data.len());
                Step::Continue
            }
            VcpuExit::Shutdown => Step::Shutdown,
            VcpuExit::InternalError => Step::InternalError,
            VcpuExit::Hlt => Step::Halted,
            VcpuExit::FailEntry(hardware_reason, cpu) => {
                Step::Stop(ExitReason::EntryFailure { hardware_reason, cpu })
            }
            other => Step::Stop(ExitReason::UnhandledExit { exit: format!("{other:?}") }),
        }
    }

    fn port_out(&mut self, port: u16, data: &[u8]) -> Step {
        match port {
            DEBUG_EXIT => {
                Step::Stop(ExitReason::GuestExit { status: data.first().copied().unwrap_or(0) })
            }
            HYPERCALL if data.len() == 4 => {
                Step::Hypercall(u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]])))
            }
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
                Step::Continue
            }
        }
    }
}

fn com1_offset(port: u16) -> Option<u8> {
    port.checked_sub(COM1_BASE)
        .filter(|&offset| offset < COM1_LEN)
        .and_then(|offset| u8::try_from(offset).ok())
}

/// Runs `vcpu` until the guest ends or `timeout` passes. The outcome's host-side figures
/// (committed RAM, setup and run times) are left zero for the caller, which measures them.
pub fn run(
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    timeout: Option<Duration>,
    echo: bool,
    inspect: &[Command],
) -> Result<Outcome, Error> {
    let mut inspections = Vec::new();
    let mut walker_checks = Vec::new();
    let mut devices = Devices::new(echo);
    let mut reports = Vec::new();
    let mut checkpoints = Vec::new();
    let mut translation_checks = Vec::new();
    let watchdog = timeout.map(Watchdog::start);
    let exit = loop {
        if let Some(watchdog) = &watchdog {
            if watchdog.expired() {
                break ExitReason::Timeout { seconds: watchdog.timeout.as_secs_f64() };
            }
        }
        let step = match vcpu.run() {
            Ok(exit) => devices.handle(exit),
            Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => Step::Continue,
            Err(source) => return Err(Error::Kvm { call: "KVM_RUN", source }),
        };
        match step {
            Step::Continue => {}
            Step::Hypercall(gpa) => {
                let tag = hypercall(mem, gpa, &mut reports, &mut checkpoints);
                if tag == Some(checkpoint::CHECK_TRANSLATIONS) {
                    check_translations(vcpu, &reports, &mut translation_checks);
                    check_walker(vcpu, mem, &reports, &mut walker_checks);
                }
                if let Some(tag) = tag {
                    let at = format!("checkpoint {tag} ({})", checkpoint::name(tag));
                    run_inspections(mem, inspect, &at, echo, &mut inspections);
                }
            }
            Step::Stop(reason) => break reason,
            Step::Shutdown => break ExitReason::TripleFault { registers: registers(vcpu) },
            Step::Halted => break ExitReason::Halted { rip: registers(vcpu).rip },
            Step::InternalError => {
                // SAFETY: KVM filled the `internal` member of the exit union: the exit
                // reason was KVM_EXIT_INTERNAL_ERROR.
                let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                break ExitReason::EmulationFailure { suberror, rip: registers(vcpu).rip };
            }
        }
    };
    drop(watchdog);
    let _ = std::io::Write::flush(devices.console.writer_mut());
    run_inspections(mem, inspect, "exit", echo, &mut inspections);
    let (console, console_truncated) = console_text(&devices.console);
    Ok(Outcome {
        exit_code: exit.exit_code(),
        exit,
        reports,
        checkpoints,
        unexpected_accesses: devices.unexpected.list(),
        translation_checks,
        walker_checks,
        inspections,
        console,
        console_truncated,
        ram_resident_bytes: 0,
        setup_time: Duration::ZERO,
        run_time: Duration::ZERO,
    })
}

/// Runs the `--inspect` list on guest memory (the vCPU is stopped), printing each result
/// when the console is echoed.
fn run_inspections(
    mem: &GuestMemoryMmap,
    commands: &[Command],
    at: &str,
    echo: bool,
    out: &mut Vec<Inspection>,
) {
    if commands.is_empty() || out.len() >= RECORD_LIMIT {
        return;
    }
    let mut inspector = Inspector::new(GuestRam::borrowed(mem));
    // The vCPU is stopped: a torn snapshot will not mend by waiting.
    inspector.max_tries = 1;
    for command in commands {
        let result = inspector.run(command).map_err(|err| err.to_string());
        if echo {
            match &result {
                Ok(output) => {
                    println!("vmm: inspect {} at {at}:\n{}", command.name(), output.text())
                }
                Err(err) => log::warn!("inspect {} at {at}: {err}", command.name()),
            }
        }
        out.push(Inspection { at: at.to_string(), command: command.name(), result });
    }
}

/// Checks the host's page-table walker against `KVM_TRANSLATE` on the guest's current
/// tree: the guest's sample addresses, and around every mapped page (first byte, middle,
/// last byte, and the bytes just outside), up to [`RECORD_LIMIT`] addresses.
fn check_walker(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    reports: &[Report],
    out: &mut Vec<WalkerCheck>,
) {
    let Ok(sregs) = vcpu.get_sregs() else {
        log::warn!("cannot read the vCPU's CR3 to check the host walker");
        return;
    };
    let mut ram = GuestRam::borrowed(mem);
    let mut addrs: Vec<u64> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Translations { entries } => Some(entries.iter().map(|e| e.virt)),
            _ => None,
        })
        .flatten()
        .collect();
    struct Around<'v>(&'v mut Vec<u64>);
    impl shared::walk::Visitor for Around<'_> {
        fn leaf(&mut self, leaf: shared::walk::Leaf) -> bool {
            let end = leaf.virt.wrapping_add(leaf.size);
            self.0.extend([
                leaf.virt,
                leaf.virt.wrapping_add(leaf.size / 2 + 8),
                end.wrapping_sub(1),
                end,
                leaf.virt.wrapping_sub(1),
            ]);
            self.0.len() < RECORD_LIMIT
        }
    }
    let mut budget = crate::inspect::pagetable::ENTRY_BUDGET;
    let _ = shared::walk::for_each_leaf(
        &mut ram,
        sregs.cr3,
        0,
        u64::MAX,
        &mut budget,
        &mut Around(&mut addrs),
    );
    addrs.extend([0, 0x0000_8000_0000_0000, u64::MAX]);
    addrs.truncate(RECORD_LIMIT);
    for virt in addrs {
        let walker = shared::walk::translate(&mut ram, sregs.cr3, virt).ok();
        let kvm =
            vcpu.translate_gva(virt).ok().filter(|t| t.valid != 0).map(|t| t.physical_address);
        let check = WalkerCheck {
            virt,
            walker: walker.map(|m| m.phys),
            kvm,
            page_size: walker.map_or(0, |m| m.page_size),
        };
        if check.walker != check.kvm {
            log::warn!(
                "host walker and KVM disagree on {virt:#x}: walker {:x?}, KVM {:x?}",
                check.walker,
                check.kvm
            );
        }
        out.push(check);
    }
}

/// Checks the guest's last reported translations against `KVM_TRANSLATE`.
fn check_translations(vcpu: &VcpuFd, reports: &[Report], checks: &mut Vec<TranslationCheck>) {
    let Some(entries) = reports.iter().rev().find_map(|r| match r {
        Report::Translations { entries } => Some(entries),
        _ => None,
    }) else {
        log::warn!("the guest asked for a translation check without reporting translations");
        return;
    };
    for entry in entries.iter().take(RECORD_LIMIT) {
        let kvm = vcpu
            .translate_gva(entry.virt)
            .ok()
            .filter(|t| t.valid != 0)
            .map(|t| t.physical_address);
        let check = TranslationCheck {
            virt: entry.virt,
            guest: entry.phys,
            kvm,
            page_size: entry.page_size,
        };
        if !check.agrees() {
            log::warn!(
                "guest and KVM disagree on {:#x}: guest {:x?}, KVM {:x?}",
                check.virt,
                check.guest,
                check.kvm
            );
        }
        checks.push(check);
    }
}

/// Handles a hypercall; the request and its payload are untrusted guest memory. Returns
/// a checkpoint's tag.
fn hypercall(
    mem: &GuestMemoryMmap,
    gpa: u64,
    reports: &mut Vec<Report>,
    checkpoints: &mut Vec<u64>,
) -> Option<u64> {
    let mut raw = [0u8; Request::SIZE];
    let report = match mem.read_slice(&mut raw, GuestAddress(gpa)) {
        Err(err) => Report::Malformed {
            kind: 0,
            problem: format!("hypercall request at {gpa:#x} is not in guest RAM: {err}"),
        },
        Ok(()) => {
            let request = Request::from_bytes(&raw);
            match request.nr {
                CHECKPOINT => {
                    log::debug!("guest checkpoint {}", request.arg);
                    if checkpoints.len() < RECORD_LIMIT {
                        checkpoints.push(request.arg);
                    }
                    return Some(request.arg);
                }
                REPORT => read_report(mem, &request),
                nr => Report::Malformed {
                    kind: request.kind,
                    problem: format!("unknown hypercall {nr}"),
                },
            }
        }
    };
    if let Report::Malformed { problem, .. } = &report {
        log::warn!("guest sent a bad hypercall: {problem}");
    }
    if reports.len() < RECORD_LIMIT {
        reports.push(report);
    }
    None
}

fn registers(vcpu: &VcpuFd) -> Registers {
    let regs = vcpu.get_regs().unwrap_or_default();
    let sregs = vcpu.get_sregs().unwrap_or_default();
    Registers {
        rip: regs.rip,
        rsp: regs.rsp,
        rflags: regs.rflags,
        cr0: sregs.cr0,
        cr2: sregs.cr2,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        efer: sregs.efer,
    }
}

/// Interrupts `KVM_RUN` on the current thread once `timeout` has passed.
struct Watchdog {
    timeout: Duration,
    expired: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Re-sent this often until the vCPU loop notices the timeout.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl Watchdog {
    fn start(timeout: Duration) -> Self {
        static HANDLER: Once = Once::new();
        HANDLER.call_once(|| {
            if let Err(err) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
                log::warn!("cannot install the timeout signal handler ({err}); --timeout may not stop a busy guest");
            }
        });
        // SAFETY: pthread_self has no preconditions.
        let vcpu_thread = unsafe { libc::pthread_self() };
        let expired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = Arc::clone(&expired);
        let thread = std::thread::spawn(move || {
            if stopped.recv_timeout(timeout) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            flag.store(true, Ordering::SeqCst);
            while stopped.recv_timeout(KICK_INTERVAL) == Err(RecvTimeoutError::Timeout) {
                // SAFETY: the vCPU thread is alive: it joins this thread (Drop) before it
                // returns, and the signal's handler does nothing.
                unsafe { libc::pthread_kill(vcpu_thread, kick_signal()) };
            }
        });
        Self { timeout, expired, stop: Some(stop), thread: Some(thread) }
    }

    fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::UnexpectedAccess;

    #[test]
    fn kvm_failure_exits_stop_the_run() {
        let mut devices = Devices::new(false);
        assert_eq!(
            devices.handle(VcpuExit::FailEntry(0x8000_0021, 3)),
            Step::Stop(ExitReason::EntryFailure { hardware_reason: 0x8000_0021, cpu: 3 })
        );
        assert_eq!(devices.handle(VcpuExit::InternalError), Step::InternalError);
        assert_eq!(devices.handle(VcpuExit::Shutdown), Step::Shutdown);
        assert_eq!(devices.handle(VcpuExit::Hlt), Step::Halted);
        assert!(matches!(
            devices.handle(VcpuExit::Watchdog),
            Step::Stop(ExitReason::UnhandledExit { .. })
        ));
    }

    #[test]
    fn ports_reach_their_devices() {
        let mut devices = Devices::new(false);
        assert_eq!(
            devices.handle(VcpuExit::IoOut(DEBUG_EXIT, &[3])),
            Step::Stop(ExitReason::GuestExit { status: 3 })
        );
        assert_eq!(
            devices.handle(VcpuExit::IoOut(HYPERCALL, &[0x00, 0x10, 0, 0])),
            Step::Hypercall(0x1000)
        );
        assert_eq!(devices.handle(VcpuExit::IoOut(COM1_BASE, b"ok\n")), Step::Continue);
        assert_eq!(console_text(&devices.console).0, "ok\n");
        let mut data = [0u8; 2];
        assert_eq!(devices.handle(VcpuExit::IoIn(0x1234, &mut data)), Step::Continue);
        assert_eq!(data, [0xff, 0xff]);
        assert_eq!(
            devices.handle(VcpuExit::IoOut(HYPERCALL, &[1])),
            Step::Continue,
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
