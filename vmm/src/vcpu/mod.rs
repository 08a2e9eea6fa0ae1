//! The vCPU run loop: `KVM_RUN`, then handle the exit, until the guest ends.
//!
//! ```text
//! loop  KVM_RUN ─▶ bus.rs          port and MMIO exits: console, debug exit, strays
//!               ─▶ hypercall.rs    CHECKPOINT or REPORT, read from guest RAM
//!                    checkpoint ─▶ translation_check.rs   at CHECK_TRANSLATIONS
//!                               ─▶ the caller's observer and `--inspect`, from BOOTED on
//!       watchdog.rs                interrupts KVM_RUN: to look for a guest halted for good
//!                                  (MP state HALTED, interrupts off), and at the timeout
//! ```
//!
//! The loop gathers a [`RunRecord`]; `Vm::run` adds the host's figures to make the
//! [`crate::Outcome`].

pub mod bus;
pub mod hypercall;
pub mod translation_check;
pub mod watchdog;

use crate::devices::console_text;
use crate::inspect::{Command, Inspection, Inspector, RamReader};
use crate::outcome::{Checkpoint, ExitReason, Registers, RunRecord};
use crate::vm::Error;
use bus::Devices;
use hypercall::Hypercall;
use kvm_ioctls::VcpuFd;
use shared::hypercall::checkpoint;
use std::time::Duration;
use vm_memory::GuestMemoryMmap;
use watchdog::Watchdog;

/// Reports and checkpoints kept per run; a guest sending more is misbehaving.
pub const RECORD_LIMIT: usize = 4096;

/// What one exit asks of the loop.
#[derive(Debug, PartialEq)]
pub enum ExitAction {
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

/// A checkpoint the guest is stopped at, as an observer sees it.
pub struct CheckpointStop<'a> {
    /// Which checkpoint.
    pub checkpoint: Checkpoint,
    /// Its place in the run: 1 for the first checkpoint met.
    pub ordinal: usize,
    /// Guest RAM, while the vCPU is stopped.
    pub memory: &'a GuestMemoryMmap,
}

/// What the loop needs besides the vCPU and guest RAM.
pub struct RunOptions<'a> {
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// Copy the console to stdout, and print `--inspect` results as they come.
    pub echo: bool,
    /// Host inspections at every checkpoint from BOOTED on, and at exit.
    pub inspect: &'a [Command],
    /// The swap device, if the guest has one.
    pub swap: Option<&'a crate::swap::SwapDevice>,
}

/// Runs `vcpu` until the guest ends or the timeout passes, calling `observe` at every
/// checkpoint while the vCPU is stopped.
pub fn run(
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    options: &RunOptions<'_>,
    observe: &mut dyn FnMut(&CheckpointStop<'_>),
) -> Result<RunRecord, Error> {
    let mut devices = Devices::new(options.echo);
    let mut reports = Vec::new();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    // Checkpoints met, counted past the record's limit.
    let mut met = 0;
    let mut translation_checks = Vec::new();
    let mut inspections = Vec::new();
    let mut booted = false;
    let watchdog = Watchdog::start(options.timeout);
    let exit = loop {
        if let (true, Some(timeout)) = (watchdog.expired(), watchdog.timeout) {
            break ExitReason::Timeout { seconds: timeout.as_secs_f64() };
        }
        let mut kicked = false;
        let step = match vcpu.run() {
            Ok(exit) => devices.handle(exit),
            Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => {
                kicked = true;
                ExitAction::Continue
            }
            Err(source) => return Err(Error::Kvm { call: "KVM_RUN", source }),
        };
        let step = if kicked && halted_for_good(vcpu) { ExitAction::Halted } else { step };
        match step {
            ExitAction::Continue => {}
            ExitAction::Hypercall(gpa) => match hypercall::dispatch(mem, options.swap, gpa) {
                Hypercall::PageWork => {}
                Hypercall::Report(report) => {
                    if let crate::Report::Malformed { problem, .. } = &report {
                        log::warn!("guest sent a bad hypercall: {problem}");
                    }
                    if reports.len() < RECORD_LIMIT {
                        reports.push(report);
                    }
                }
                Hypercall::Checkpoint(tag) => {
                    log::debug!("guest checkpoint {tag} ({})", checkpoint::name(tag));
                    let stop = Checkpoint::new(tag);
                    if checkpoints.len() < RECORD_LIMIT {
                        checkpoints.push(stop);
                    }
                    met += 1;
                    let ordinal = met;
                    if tag == checkpoint::CHECK_TRANSLATIONS && translation_checks.is_empty() {
                        translation_checks = translation_check::check(vcpu, mem, &reports);
                    }
                    booted |= tag == checkpoint::BOOTED;
                    if booted {
                        let at = format!("checkpoint {ordinal} ({})", stop.name);
                        run_inspections(mem, options, &at, &mut inspections);
                        observe(&CheckpointStop { checkpoint: stop, ordinal, memory: mem });
                    }
                }
            },
            ExitAction::Stop(reason) => break reason,
            ExitAction::Shutdown => break ExitReason::TripleFault { registers: registers(vcpu) },
            ExitAction::Halted => break ExitReason::Halted { rip: registers(vcpu).rip },
            ExitAction::InternalError => {
                // SAFETY: KVM filled the `internal` member of the exit union: the exit
                // reason was KVM_EXIT_INTERNAL_ERROR.
                let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                break ExitReason::EmulationFailure { suberror, rip: registers(vcpu).rip };
            }
        }
    };
    drop(watchdog);
    let _ = std::io::Write::flush(devices.console.writer_mut());
    if booted {
        run_inspections(mem, options, "exit", &mut inspections);
    } else if !options.inspect.is_empty() {
        log::warn!("the guest ended before its BOOTED checkpoint: there was nothing to inspect");
    }
    let (console, console_truncated) = console_text(&devices.console);
    Ok(RunRecord {
        exit,
        reports,
        checkpoints,
        unexpected_accesses: devices.unexpected.list(),
        translation_checks,
        inspections,
        console,
        console_truncated,
    })
}

/// Runs the `--inspect` list on guest memory (the vCPU is stopped), printing each result
/// when the console is echoed.
fn run_inspections(
    mem: &GuestMemoryMmap,
    options: &RunOptions<'_>,
    at: &str,
    out: &mut Vec<Inspection>,
) {
    if options.inspect.is_empty() || out.len() >= RECORD_LIMIT {
        return;
    }
    let mut inspector = Inspector::new(RamReader::mapped(mem));
    inspector.swap_file =
        options.swap.and_then(|device| crate::inspect::swap::SwapFile::open(device.path()).ok());
    // The vCPU is stopped: a torn snapshot will not mend by waiting.
    inspector.max_tries = 1;
    for command in options.inspect {
        let result = inspector.run(command).map_err(|err| err.to_string());
        if options.echo {
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

/// Whether the vCPU sits in `hlt` with interrupts off: nothing can wake it. (With the
/// in-kernel LAPIC, KVM runs `hlt` itself and only its MP state tells.)
fn halted_for_good(vcpu: &VcpuFd) -> bool {
    const RFLAGS_IF: u64 = 1 << 9;
    let halted = vcpu.get_mp_state().is_ok_and(|s| s.mp_state == kvm_bindings::KVM_MP_STATE_HALTED);
    halted && vcpu.get_regs().is_ok_and(|regs| regs.rflags & RFLAGS_IF == 0)
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
