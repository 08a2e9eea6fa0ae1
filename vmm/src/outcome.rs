//! What a run ends with: the exit reason, the decoded reports and what the host saw,
//! and the process exit codes the CLI maps them to.

use crate::devices::UnexpectedAccess;
use crate::report::Report;
use schemars::JsonSchema;
use serde::Serialize;
use shared::boot::E820Entry;
use shared::hypercall::{checkpoint, SlabInfoReport, ZoneReport};
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
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

/// Whose page-table walker a [`TranslationCheck`] holds against KVM's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Walker {
    /// The guest kernel's own walker, which reported its translations.
    Guest,
    /// The host's walker (`shared::walk`), reading guest RAM from outside.
    Host,
}

/// One address translated by a walker and by KVM (`KVM_TRANSLATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TranslationCheck {
    /// Whose walker.
    pub walker: Walker,
    /// The virtual address.
    pub virt: u64,
    /// The walker's translation (`None`: unmapped).
    pub phys: Option<u64>,
    /// KVM's translation (`None`: unmapped, or KVM refused the address).
    pub kvm: Option<u64>,
    /// The page size the walker found (0 if unmapped).
    pub page_size: u64,
}

impl TranslationCheck {
    /// Whether the walker and KVM agree.
    pub fn agrees(&self) -> bool {
        self.phys == self.kvm
    }
}

/// One walker's checks in JSON: how many, and the disagreements in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CheckSummary {
    /// Addresses checked.
    pub checked: usize,
    /// Addresses where the walker and KVM disagree.
    pub disagreements: Vec<TranslationCheck>,
}

/// The translation checks in JSON, by walker (the full list is [`Outcome::translation_checks`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TranslationChecks {
    /// The guest's walker against KVM.
    pub guest: CheckSummary,
    /// The host's walker against KVM.
    pub host: CheckSummary,
}

fn summarise<S: serde::Serializer>(checks: &[TranslationCheck], out: S) -> Result<S::Ok, S::Error> {
    let by = |walker: Walker| {
        let mine = checks.iter().filter(|c| c.walker == walker);
        CheckSummary {
            checked: mine.clone().count(),
            disagreements: mine.filter(|c| !c.agrees()).copied().collect(),
        }
    };
    TranslationChecks { guest: by(Walker::Guest), host: by(Walker::Host) }.serialize(out)
}

/// A checkpoint the guest reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Checkpoint {
    /// The tag (`shared::hypercall::checkpoint`).
    pub tag: u64,
    /// Its name.
    pub name: &'static str,
}

impl Checkpoint {
    /// The checkpoint tagged `tag`.
    pub fn new(tag: u64) -> Self {
        Self { tag, name: checkpoint::name(tag) }
    }
}

/// Console bytes `--json` carries: the end of the console, where a failure is.
pub const JSON_CONSOLE_LIMIT: usize = 64 << 10;

fn console_tail<S: serde::Serializer>(console: &str, out: S) -> Result<S::Ok, S::Error> {
    let mut start = console.len().saturating_sub(JSON_CONSOLE_LIMIT);
    while !console.is_char_boundary(start) {
        start += 1;
    }
    out.serialize_str(&console[start..])
}

/// What the run loop gathers while the guest runs; [`Outcome::new`] completes it.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// Why the run ended.
    pub exit: ExitReason,
    /// Decoded reports, in the order the guest sent them.
    pub reports: Vec<Report>,
    /// Checkpoints, in order.
    pub checkpoints: Vec<Checkpoint>,
    /// Accesses to ports or addresses no device owns, each once.
    pub unexpected_accesses: Vec<UnexpectedAccess>,
    /// The walkers checked against `KVM_TRANSLATE`.
    pub translation_checks: Vec<TranslationCheck>,
    /// Host inspections (`--inspect`).
    pub inspections: Vec<crate::inspect::Inspection>,
    /// The guest console text.
    pub console: String,
    /// Whether the console outgrew the capture limit.
    pub console_truncated: bool,
}

/// Everything a run produced. In JSON the translation checks are summarised and the
/// console is its last [`JSON_CONSOLE_LIMIT`] bytes; its schema is
/// `docs/outcome.schema.json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Outcome {
    /// Why the run ended.
    pub exit: ExitReason,
    /// The process exit code (`exit.exit_code()`).
    pub exit_code: u8,
    /// Decoded reports, in the order the guest sent them.
    pub reports: Vec<Report>,
    /// Checkpoints, in order.
    pub checkpoints: Vec<Checkpoint>,
    /// Accesses to ports or addresses no device owns, each once.
    pub unexpected_accesses: Vec<UnexpectedAccess>,
    /// The guest's and the host's walkers checked against `KVM_TRANSLATE` at the guest's
    /// translation checkpoint.
    #[serde(serialize_with = "summarise")]
    #[schemars(with = "TranslationChecks")]
    pub translation_checks: Vec<TranslationCheck>,
    /// Host inspections (`--inspect`) at checkpoints and at exit.
    pub inspections: Vec<crate::inspect::Inspection>,
    /// The guest console text.
    #[serde(serialize_with = "console_tail")]
    pub console: String,
    /// Whether the console outgrew the capture limit (or, in JSON, the part shown).
    pub console_truncated: bool,
    /// Bytes of guest RAM the host committed by the end of the run.
    pub ram_resident_bytes: u64,
    /// Host seconds from the start of VM creation to the first `KVM_RUN`.
    #[serde(rename = "setup_seconds", serialize_with = "seconds")]
    #[schemars(with = "f64")]
    pub setup_time: Duration,
    /// Host seconds from the first `KVM_RUN` to the end of the run.
    #[serde(rename = "run_seconds", serialize_with = "seconds")]
    #[schemars(with = "f64")]
    pub run_time: Duration,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl Outcome {
    /// The outcome of a run: what the run loop gathered, and the host's own figures.
    pub fn new(
        record: RunRecord,
        ram_resident_bytes: u64,
        setup_time: Duration,
        run_time: Duration,
    ) -> Self {
        let console_truncated =
            record.console_truncated || record.console.len() > JSON_CONSOLE_LIMIT;
        Self {
            exit_code: record.exit.exit_code(),
            exit: record.exit,
            reports: record.reports,
            checkpoints: record.checkpoints,
            unexpected_accesses: record.unexpected_accesses,
            translation_checks: record.translation_checks,
            inspections: record.inspections,
            console: record.console,
            console_truncated,
            ram_resident_bytes,
            setup_time,
            run_time,
        }
    }

    /// The e820 map the guest reported, if it did.
    pub fn e820(&self) -> Option<&[E820Entry]> {
        self.reports.iter().find_map(|report| match report {
            Report::E820 { ranges } => Some(ranges.as_slice()),
            _ => None,
        })
    }

    /// Each zone as the guest last reported it (after its workload).
    pub fn zones(&self) -> Vec<ZoneReport> {
        let mut zones: Vec<ZoneReport> = Vec::new();
        for zone in self.zone_reports() {
            match zones.iter_mut().find(|z| z.zone == zone.zone) {
                Some(known) => *known = *zone,
                None => zones.push(*zone),
            }
        }
        zones
    }

    /// Each zone as the guest first reported it (right after boot).
    pub fn boot_zones(&self) -> Vec<ZoneReport> {
        let mut zones: Vec<ZoneReport> = Vec::new();
        for zone in self.zone_reports() {
            if !zones.iter().any(|z| z.zone == zone.zone) {
                zones.push(*zone);
            }
        }
        zones
    }

    fn zone_reports(&self) -> impl Iterator<Item = &ZoneReport> {
        self.reports.iter().filter_map(|report| match report {
            Report::Zone(zone) => Some(zone),
            _ => None,
        })
    }

    /// The slab caches as the guest last reported them.
    pub fn slabs(&self) -> Vec<SlabInfoReport> {
        self.reports
            .iter()
            .filter_map(|report| match report {
                Report::Slab(slab) => Some(*slab),
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
        for failure in self.reports.iter().filter_map(Report::failure) {
            line.push_str("; ");
            line.push_str(&failure);
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
