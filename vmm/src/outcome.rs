//! What a run ends with: the exit reason, the decoded reports and what the host saw,
//! and the process exit codes the CLI maps them to.

use crate::devices::UnexpectedAccess;
use crate::report::{E820Range, Report, SlabInfo, ZoneInfo};
use serde::Serialize;
use shared::hypercall::exception_name;
use shared::status::GuestStatus;
use std::time::Duration;

/// Process exit codes of the `vmm` command besides the guest's own status (0–63).
pub mod exit_code {
    /// The command line or the guest configuration is invalid (sysexits `EX_USAGE`).
    pub const USAGE: u8 = 64;
    /// The host could not run the guest: no usable KVM, memory or file errors
    /// (sysexits `EX_UNAVAILABLE`).
    pub const HOST: u8 = 69;
    /// The guest crashed in a way it could not report itself: triple fault, emulation
    /// failure, entry failure, halt, or an exit the VMM does not handle (sysexits `EX_SOFTWARE`).
    pub const GUEST_CRASH: u8 = 70;
    /// The guest outlived `--timeout` (as GNU `timeout`).
    pub const TIMEOUT: u8 = 124;
}

/// vCPU registers the VMM saw when the guest stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Registers {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Flags.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2 (last page-fault address).
    pub cr2: u64,
    /// CR3 (page-table root).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

/// Why the run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum ExitReason {
    /// The guest wrote `status` to the debug-exit port.
    GuestExit {
        /// The status (see `shared::status`).
        status: u8,
    },
    /// `KVM_EXIT_SHUTDOWN`: the guest triple faulted.
    TripleFault {
        /// Registers after the shutdown.
        registers: Registers,
    },
    /// `KVM_EXIT_INTERNAL_ERROR`: KVM could not emulate a guest instruction (or another
    /// internal error, named by `suberror`).
    EmulationFailure {
        /// `KVM_INTERNAL_ERROR_*` suberror (1 = emulation).
        suberror: u32,
        /// Guest instruction pointer.
        rip: u64,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: the CPU refused to enter the guest.
    EntryFailure {
        /// Hardware entry-failure reason (VMX exit reason or SVM exit code).
        hardware_reason: u64,
        /// Physical CPU of the failure.
        cpu: u32,
    },
    /// `KVM_EXIT_HLT`: the guest halted with nothing to wake it.
    Halted {
        /// Instruction pointer after the `hlt`.
        rip: u64,
    },
    /// The guest was still running after the timeout.
    Timeout {
        /// The timeout, in seconds.
        seconds: f64,
    },
    /// A KVM exit the VMM does not handle.
    UnhandledExit {
        /// The exit, as kvm-ioctls names it.
        exit: String,
    },
}

impl ExitReason {
    /// The process exit code for this reason.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::GuestExit { status } => *status,
            Self::Timeout { .. } => exit_code::TIMEOUT,
            _ => exit_code::GUEST_CRASH,
        }
    }

    /// One line saying what happened.
    pub fn describe(&self) -> String {
        match self {
            Self::GuestExit { status } => match GuestStatus::from_u8(*status) {
                Some(known) => format!("guest exited with status {status} ({})", known.describe()),
                None => format!("guest exited with status {status}"),
            },
            Self::TripleFault { registers: r } => format!(
                "guest triple fault (KVM_EXIT_SHUTDOWN); last registers: RIP {:#x} RSP {:#x} RFLAGS {:#x} CR0 {:#x} CR2 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x}",
                r.rip, r.rsp, r.rflags, r.cr0, r.cr2, r.cr3, r.cr4, r.efer
            ),
            Self::EmulationFailure { suberror: 1, rip } => {
                format!("KVM could not emulate the guest instruction at RIP {rip:#x} (KVM_EXIT_INTERNAL_ERROR: emulation failure)")
            }
            Self::EmulationFailure { suberror, rip } => {
                format!("KVM internal error, suberror {suberror}, at RIP {rip:#x} (KVM_EXIT_INTERNAL_ERROR)")
            }
            Self::EntryFailure { hardware_reason, cpu } => format!(
                "the CPU refused to enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason {hardware_reason:#x}, host CPU {cpu}); the boot register state is invalid for this host"
            ),
            Self::Halted { rip } => format!("guest halted at RIP {rip:#x} with nothing to wake it, without exiting"),
            Self::Timeout { seconds } => format!("guest still running after the {seconds} s timeout; stopped it"),
            Self::UnhandledExit { exit } => format!("guest stopped with a KVM exit the VMM does not handle: {exit}"),
        }
    }
}

/// One address translated by the guest's walker and by KVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TranslationCheck {
    /// The virtual address.
    pub virt: u64,
    /// The guest's translation (`None`: unmapped).
    pub guest: Option<u64>,
    /// KVM's translation (`None`: unmapped, or KVM refused the address).
    pub kvm: Option<u64>,
    /// The page size the guest found (0 if unmapped).
    pub page_size: u64,
}

impl TranslationCheck {
    /// Whether the two agree.
    pub fn agrees(&self) -> bool {
        self.guest == self.kvm
    }
}

/// One address translated by the host's walker (`shared::walk`, reading guest RAM from
/// outside) and by KVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WalkerCheck {
    /// The virtual address.
    pub virt: u64,
    /// The host walker's translation (`None`: unmapped).
    pub walker: Option<u64>,
    /// KVM's translation (`None`: unmapped, or KVM refused the address).
    pub kvm: Option<u64>,
    /// The page size the walker found (0 if unmapped).
    pub page_size: u64,
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Why the run ended.
    pub exit: ExitReason,
    /// The process exit code (`exit.exit_code()`).
    pub exit_code: u8,
    /// Decoded reports, in the order the guest sent them.
    pub reports: Vec<Report>,
    /// Checkpoint tags, in order.
    pub checkpoints: Vec<u64>,
    /// Accesses to ports or addresses no device owns, each once.
    pub unexpected_accesses: Vec<UnexpectedAccess>,
    /// The guest's translations checked against `KVM_TRANSLATE`.
    pub translation_checks: Vec<TranslationCheck>,
    /// The host walker checked against KVM at the guest's translation checkpoint.
    pub walker_checks: Vec<WalkerCheck>,
    /// Host inspections (`--inspect`) at checkpoints and at exit.
    pub inspections: Vec<crate::inspect::Inspection>,
    /// The guest console text.
    pub console: String,
    /// Whether the console outgrew the capture limit.
    pub console_truncated: bool,
    /// Bytes of guest RAM the host committed by the end of the run.
    pub ram_resident_bytes: u64,
    /// Host time from the start of VM creation to the first `KVM_RUN`.
    #[serde(serialize_with = "seconds")]
    pub setup_time: Duration,
    /// Host time from the first `KVM_RUN` to the end of the run.
    #[serde(serialize_with = "seconds")]
    pub run_time: Duration,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl Outcome {
    /// The e820 map the guest reported, if it did.
    pub fn e820(&self) -> Option<&[E820Range]> {
        self.reports.iter().find_map(|report| match report {
            Report::E820 { ranges } => Some(ranges.as_slice()),
            _ => None,
        })
    }

    /// Each zone as the guest last reported it (after its workload).
    pub fn zones(&self) -> Vec<ZoneInfo> {
        let mut zones: Vec<ZoneInfo> = Vec::new();
        for zone in self.zone_reports() {
            match zones.iter_mut().find(|z| z.zone == zone.zone) {
                Some(known) => *known = zone.clone(),
                None => zones.push(zone.clone()),
            }
        }
        zones
    }

    /// Each zone as the guest first reported it (right after boot).
    pub fn boot_zones(&self) -> Vec<ZoneInfo> {
        let mut zones: Vec<ZoneInfo> = Vec::new();
        for zone in self.zone_reports() {
            if !zones.iter().any(|z| z.zone == zone.zone) {
                zones.push(zone.clone());
            }
        }
        zones
    }

    fn zone_reports(&self) -> impl Iterator<Item = &ZoneInfo> {
        self.reports.iter().filter_map(|report| match report {
            Report::Zone(zone) => Some(zone),
            _ => None,
        })
    }

    /// The slab caches as the guest last reported them.
    pub fn slabs(&self) -> Vec<&SlabInfo> {
        self.reports
            .iter()
            .filter_map(|report| match report {
                Report::Slab(slab) => Some(slab),
                _ => None,
            })
            .collect()
    }

    /// The self-test results: (name, passed, detail).
    pub fn tests(&self) -> Vec<(&str, bool, &str)> {
        self.reports
            .iter()
            .filter_map(|report| match report {
                Report::Test { name, passed, detail } => {
                    Some((name.as_str(), *passed, detail.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    /// One line for the end of a run: the exit reason and the guest's own account of a
    /// failure, when it sent one.
    pub fn summary(&self) -> String {
        let mut line = self.exit.describe();
        for report in &self.reports {
            let detail = match report {
                Report::Panic { message, file, line, column } => {
                    format!("panic: {message} at {file}:{line}:{column}")
                }
                Report::Exception { vector, error_code, rip, cr2, .. } => {
                    let (mnemonic, name) = exception_name(*vector);
                    format!("{mnemonic} {name} at RIP {rip:#x}, error code {error_code:#x}, CR2 {cr2:#x}")
                }
                Report::CmdlineError { reason, option } => format!("{reason}: '{option}'"),
                Report::BootError { message } => message.clone(),
                Report::Oops { cause, address, rip, .. } => {
                    format!("oops: {cause} at address {address:#x}, RIP {rip:#x}")
                }
                Report::Malformed { kind, problem } => {
                    format!("malformed report of kind {kind}: {problem}")
                }
                Report::Test { name, passed: false, detail } => {
                    format!("check failed: {name}: {detail}")
                }
                Report::E820 { .. }
                | Report::Translations { .. }
                | Report::PageTables { .. }
                | Report::Slab(_)
                | Report::Memblock { .. }
                | Report::Zone(_)
                | Report::BootTimes { .. }
                | Report::Test { .. }
                | Report::Stress { .. } => continue,
            };
            line.push_str("; ");
            line.push_str(&detail);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_keep_guest_and_vmm_ranges_apart() {
        assert_eq!(ExitReason::GuestExit { status: 3 }.exit_code(), 3);
        assert_eq!(ExitReason::Timeout { seconds: 1.0 }.exit_code(), exit_code::TIMEOUT);
        assert_eq!(ExitReason::Halted { rip: 0 }.exit_code(), exit_code::GUEST_CRASH);
        let vmm_codes =
            [exit_code::USAGE, exit_code::HOST, exit_code::GUEST_CRASH, exit_code::TIMEOUT];
        assert!(vmm_codes.iter().all(|&code| code >= shared::status::GUEST_STATUS_LIMIT));
        let mut sorted = vmm_codes.to_vec();
        sorted.dedup();
        assert_eq!(sorted.len(), vmm_codes.len());
    }

    #[test]
    fn failures_are_described_in_one_line_naming_the_kvm_exit() {
        let entry = ExitReason::EntryFailure { hardware_reason: 0x8000_0021, cpu: 1 };
        assert!(entry.describe().contains("KVM_EXIT_FAIL_ENTRY, hardware reason 0x80000021"));
        let emulation = ExitReason::EmulationFailure { suberror: 1, rip: 0x4000_0000 };
        assert!(emulation.describe().contains("emulation failure"));
        assert!(emulation.describe().contains("RIP 0x40000000"));
        let triple =
            ExitReason::TripleFault { registers: Registers { rip: 0x1234, ..Default::default() } };
        assert!(triple.describe().starts_with("guest triple fault (KVM_EXIT_SHUTDOWN)"));
        for reason in [entry, emulation, triple] {
            assert!(!reason.describe().contains('\n'));
        }
    }
}
