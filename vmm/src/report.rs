//! Decoding the guest's reports (`shared::hypercall`) into typed values.
//!
//! Every payload is a `shared` type, or such a header followed by its variable part, so
//! decoding is `zerocopy`'s `read_from_bytes` of the type the kind names: no field is
//! read by position here. Payloads are guest memory and so untrusted: every length is
//! bounded, every read bounds-checked, and a payload that does not decode becomes
//! [`Report::Malformed`].

use schemars::JsonSchema;
use serde::Serialize;
use shared::boot::E820Entry;
use shared::hypercall::{
    exception_name, BootTimes, CmdlineErrorHeader, CmdlineErrorKind, ExceptionReport,
    GuestTranslation, MemblockHeader, OomKillReport, OopsReport, PageTablesReport, PanicHeader,
    ProcessReport, ReportKind, Request, SlabInfoReport, StressReport, TestHeader, VmasHeader,
    ZoneReport, REPORT_MAX_LEN,
};
use shared::mm::Region;
use shared::page::ZoneType;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromBytes, Immutable, KnownLayout};

/// A report from the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "report", rename_all = "kebab-case")]
pub enum Report {
    /// The sanitised e820 map the guest uses.
    E820 {
        /// Its ranges, sorted and disjoint.
        ranges: Vec<E820Entry>,
    },
    /// The kernel panicked.
    Panic {
        /// The panic message.
        message: String,
        /// Source file.
        file: String,
        /// Source line.
        line: u32,
        /// Source column.
        column: u32,
    },
    /// An unhandled CPU exception.
    Exception(ExceptionReport),
    /// The guest rejected a command-line option.
    CmdlineError {
        /// `unknown-option` or `bad-value`.
        reason: String,
        /// The option as written.
        option: String,
    },
    /// memblock at the hand-off to the buddy allocator.
    Memblock {
        /// Memory regions.
        memory: Vec<Region>,
        /// Reserved regions.
        reserved: Vec<Region>,
    },
    /// A zone's state (sent after boot and again after the workload).
    Zone(ZoneReport),
    /// TSC cycles of each memory-setup phase.
    BootTimes(BootTimes),
    /// One self-test check.
    Test {
        /// What was checked.
        name: String,
        /// Whether it passed.
        passed: bool,
        /// Why it failed (empty when it passed).
        detail: String,
    },
    /// The stress workload's counters.
    Stress(StressReport),
    /// A user process ended.
    Process(ProcessReport),
    /// What a user program reported.
    User {
        /// Its text.
        text: String,
    },
    /// A process's VMAs as its kernel holds them, at a user checkpoint.
    Vmas {
        /// The process.
        pid: u32,
        /// Its VMAs, in address order.
        vmas: Vec<shared::process::Vma>,
    },
    /// The OOM killer chose a victim (the kill follows, after the `oom` checkpoint).
    OomKill {
        /// The victim's name.
        name: String,
        /// What the killer saw of it.
        #[serde(flatten)]
        kill: OomKillReport,
    },
    /// Why the guest could not finish booting.
    BootError {
        /// The guest's message.
        message: String,
    },
    /// The guest's own translations, to be checked against KVM's.
    Translations {
        /// The addresses and their translations.
        entries: Vec<GuestTranslation>,
    },
    /// A kernel page fault the guest could not handle.
    Oops(OopsReport),
    /// The kernel's page tables.
    PageTables(PageTablesReport),
    /// A slab cache's state (sent when the guest exits).
    Slab(SlabInfoReport),
    /// A report that could not be decoded.
    Malformed {
        /// The kind number the guest gave.
        kind: u32,
        /// What is wrong with it.
        problem: String,
    },
}

/// Reads and decodes the report `request` describes.
pub fn read_report(mem: &GuestMemoryMmap, request: &Request) -> Report {
    let malformed = |problem: String| Report::Malformed { kind: request.kind, problem };
    let len = usize::try_from(request.len).ok().filter(|_| request.len <= REPORT_MAX_LEN);
    let Some(len) = len else {
        return malformed(format!("{} bytes, more than the {REPORT_MAX_LEN} allowed", request.len));
    };
    let mut payload = vec![0; len];
    if let Err(err) = mem.read_slice(&mut payload, GuestAddress(request.arg)) {
        return malformed(format!("payload at {:#x} is not in guest RAM: {err}", request.arg));
    }
    decode(request.kind, &payload).unwrap_or_else(malformed)
}

/// The payload as one `T`.
fn value<T: FromBytes>(what: &str, payload: &[u8]) -> Result<T, String> {
    T::read_from_bytes(payload).map_err(|_| {
        format!("{what} payload of {} bytes, expected {}", payload.len(), size_of::<T>())
    })
}

/// A header `T` and the bytes after it.
fn header<'p, T: FromBytes + KnownLayout + Immutable>(
    what: &str,
    payload: &'p [u8],
) -> Result<(T, &'p [u8]), String> {
    T::read_from_prefix(payload).map_err(|_| format!("{what} payload shorter than its header"))
}

/// The payload as a sequence of `T` (whole ones only).
fn sequence<T: FromBytes>(what: &str, payload: &[u8]) -> Result<Vec<T>, String> {
    if payload.len() % size_of::<T>() != 0 {
        return Err(format!(
            "{what} payload of {} bytes is not whole {}-byte entries",
            payload.len(),
            size_of::<T>()
        ));
    }
    payload.chunks_exact(size_of::<T>()).map(|chunk| value(what, chunk)).collect()
}

/// `bytes` split at the lengths a header gives, which must add up to all of them.
fn split_exactly<'p, const N: usize>(
    what: &str,
    bytes: &'p [u8],
    lengths: [u32; N],
) -> Result<[&'p [u8]; N], String> {
    let total: u64 = lengths.iter().map(|&len| u64::from(len)).sum();
    if total != bytes.len() as u64 {
        return Err(format!(
            "{what} payload holds {} bytes after its header, the header says {total}",
            bytes.len()
        ));
    }
    let mut rest = bytes;
    Ok(lengths.map(|len| {
        let (part, tail) = rest.split_at(len as usize);
        rest = tail;
        part
    }))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes a payload of report kind `kind`.
pub fn decode(kind: u32, payload: &[u8]) -> Result<Report, String> {
    let Some(kind) = ReportKind::from_u32(kind) else {
        return Err(format!("unknown report kind {kind}"));
    };
    Ok(match kind {
        ReportKind::E820 => Report::E820 { ranges: sequence("e820", payload)? },
        ReportKind::Panic => {
            let (h, rest): (PanicHeader, _) = header("panic", payload)?;
            let [file, message] = split_exactly("panic", rest, [h.file_len, h.message_len])?;
            Report::Panic {
                message: text(message),
                file: text(file),
                line: h.line,
                column: h.column,
            }
        }
        ReportKind::Exception => Report::Exception(value("exception", payload)?),
        ReportKind::CmdlineError => {
            let (h, option): (CmdlineErrorHeader, _) = header("command-line error", payload)?;
            let reason = CmdlineErrorKind::from_u32(h.kind)
                .ok_or_else(|| format!("unknown command-line error reason {}", h.kind))?;
            Report::CmdlineError { reason: reason.name().into(), option: text(option) }
        }
        ReportKind::Memblock => {
            let (h, rest): (MemblockHeader, _) = header("memblock", payload)?;
            // `size_of` as a `u32`, checked at compile time.
            const REGION: u32 = 16;
            const _: () = assert!(size_of::<Region>() == REGION as usize);
            let sizes = [h.memory.saturating_mul(REGION), h.reserved.saturating_mul(REGION)];
            let [memory, reserved] = split_exactly("memblock", rest, sizes)?;
            Report::Memblock {
                memory: sequence("memblock", memory)?,
                reserved: sequence("memblock", reserved)?,
            }
        }
        ReportKind::Zone => {
            let zone: ZoneReport = value("zone", payload)?;
            ZoneType::from_u32(zone.zone).ok_or("unknown zone number")?;
            Report::Zone(zone)
        }
        ReportKind::BootTimes => Report::BootTimes(value("boot-times", payload)?),
        ReportKind::Test => {
            let (h, rest): (TestHeader, _) = header("test", payload)?;
            let [name, detail] = split_exactly("test", rest, [h.name_len, h.detail_len])?;
            Report::Test { name: text(name), passed: h.passed == 1, detail: text(detail) }
        }
        ReportKind::Stress => Report::Stress(value("stress", payload)?),
        ReportKind::BootError => Report::BootError { message: text(payload) },
        ReportKind::Translations => {
            Report::Translations { entries: sequence("translations", payload)? }
        }
        ReportKind::Oops => Report::Oops(value("oops", payload)?),
        ReportKind::PageTables => Report::PageTables(value("page-tables", payload)?),
        ReportKind::SlabInfo => Report::Slab(value("slabinfo", payload)?),
        ReportKind::Process => Report::Process(value("process", payload)?),
        ReportKind::OomKill => {
            let kill: OomKillReport = value("oom-kill", payload)?;
            let len = kill.comm.iter().position(|&b| b == 0).unwrap_or(kill.comm.len());
            Report::OomKill { name: text(&kill.comm[..len]), kill }
        }
        ReportKind::User => Report::User { text: text(payload) },
        ReportKind::Vmas => {
            let (h, rest): (VmasHeader, _) = header("vmas", payload)?;
            const VMA: u32 = 32;
            const _: () = assert!(size_of::<shared::process::Vma>() == VMA as usize);
            let [vmas] = split_exactly("vmas", rest, [h.count.saturating_mul(VMA)])?;
            Report::Vmas { pid: h.pid, vmas: sequence("vmas", vmas)? }
        }
    })
}

impl Report {
    /// The report's failure in one line, for the run's summary; `None` for reports that
    /// are not failures.
    pub fn failure(&self) -> Option<String> {
        Some(match self {
            Self::Panic { message, file, line, column } => {
                format!("panic: {message} at {file}:{line}:{column}")
            }
            Self::Exception(e) => {
                let (mnemonic, name) = exception_name(e.vector);
                format!(
                    "{mnemonic} {name} at RIP {:#x}, error code {:#x}, CR2 {:#x}",
                    e.rip, e.error_code, e.cr2
                )
            }
            Self::CmdlineError { reason, option } => format!("{reason}: '{option}'"),
            Self::BootError { message } => message.clone(),
            Self::Oops(oops) => format!(
                "oops: {} at address {:#x}, RIP {:#x}",
                oops.cause_name(),
                oops.address,
                oops.rip
            ),
            Self::Malformed { kind, problem } => {
                format!("malformed report of kind {kind}: {problem}")
            }
            Self::Test { name, passed: false, detail } => format!("check failed: {name}: {detail}"),
            Self::E820 { .. }
            | Self::Translations { .. }
            | Self::PageTables(_)
            | Self::Slab(_)
            | Self::Memblock { .. }
            | Self::Zone(_)
            | Self::BootTimes(_)
            | Self::Test { .. }
            | Self::Stress(_)
            | Self::Process(_)
            | Self::User { .. }
            | Self::Vmas { .. }
            | Self::OomKill { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::hypercall::{OopsCause, UNMAPPED};
    use zerocopy::IntoBytes;

    /// One well-formed payload of each kind, encoded as the guest encodes it.
    fn payloads() -> Vec<(ReportKind, Vec<u8>, Report)> {
        let e820 = vec![E820Entry::new(0x1000, 0x2000, 1), E820Entry::new(0x10_0000, 0x1000, 2)];
        let with = |head: &[u8], tails: &[&[u8]]| {
            let mut bytes = head.to_vec();
            tails.iter().for_each(|t| bytes.extend_from_slice(t));
            bytes
        };
        let panic = PanicHeader { line: 42, column: 7, file_len: 7, message_len: 5 };
        let memblock = MemblockHeader { memory: 1, reserved: 2 };
        let regions = [
            Region { base: 0, size: 4096 },
            Region { base: 1, size: 2 },
            Region { base: 3, size: 4 },
        ];
        let test = TestHeader { passed: 0, name_len: 4, detail_len: 3, reserved: 0 };
        let zone = ZoneReport { zone: 1, start_pfn: 4096, free: 7, ..Default::default() };
        let oops =
            OopsReport { cause: OopsCause::NullPointer as u32, address: 8, ..Default::default() };
        let exception = ExceptionReport { vector: 6, rip: 0x42, ..Default::default() };
        let translations = [
            GuestTranslation { virt: 0x1000, phys: 0x2000, page_size: 4096 },
            GuestTranslation { virt: 0, phys: UNMAPPED, page_size: 0 },
        ];
        let slab = SlabInfoReport::of(&Default::default(), b"kmalloc-64");
        let stress = StressReport { seed: 7, restored: 1, ..Default::default() };
        let process = ProcessReport { pid: 1, signal: 11, fault_address: 8, ..Default::default() };
        let mut comm = [0; shared::process::TASK_COMM_LEN];
        comm[..3].copy_from_slice(b"hog");
        let kill = OomKillReport { pid: 4, points: 900, comm, ..Default::default() };
        let vma =
            shared::process::Vma::new(0x40_0000, 0x40_1000, 5, shared::process::VmaKind::Image);
        let times =
            BootTimes { memblock_cycles: 1, memmap_cycles: 2, buddy_cycles: 3, ram_bytes: 4 };
        let tables = PageTablesReport { tables: [1, 2, 3, 4], pages: [5, 6, 7] };
        vec![
            (ReportKind::E820, e820.as_bytes().to_vec(), Report::E820 { ranges: e820.clone() }),
            (
                ReportKind::Panic,
                with(panic.as_bytes(), &[b"main.rs", b"boom!"]),
                Report::Panic {
                    message: "boom!".into(),
                    file: "main.rs".into(),
                    line: 42,
                    column: 7,
                },
            ),
            (ReportKind::Exception, exception.as_bytes().to_vec(), Report::Exception(exception)),
            (
                ReportKind::CmdlineError,
                with(CmdlineErrorHeader { kind: 1 }.as_bytes(), &[b"frob=1"]),
                Report::CmdlineError { reason: "unknown-option".into(), option: "frob=1".into() },
            ),
            (
                ReportKind::Memblock,
                with(memblock.as_bytes(), &[regions.as_bytes()]),
                Report::Memblock { memory: regions[..1].to_vec(), reserved: regions[1..].to_vec() },
            ),
            (ReportKind::Zone, zone.as_bytes().to_vec(), Report::Zone(zone)),
            (ReportKind::BootTimes, times.as_bytes().to_vec(), Report::BootTimes(times)),
            (
                ReportKind::Test,
                with(test.as_bytes(), &[b"name", b"why"]),
                Report::Test { name: "name".into(), passed: false, detail: "why".into() },
            ),
            (ReportKind::Stress, stress.as_bytes().to_vec(), Report::Stress(stress)),
            (
                ReportKind::BootError,
                b"no RAM".to_vec(),
                Report::BootError { message: "no RAM".into() },
            ),
            (
                ReportKind::Translations,
                translations.as_bytes().to_vec(),
                Report::Translations { entries: translations.to_vec() },
            ),
            (ReportKind::Oops, oops.as_bytes().to_vec(), Report::Oops(oops)),
            (ReportKind::PageTables, tables.as_bytes().to_vec(), Report::PageTables(tables)),
            (ReportKind::SlabInfo, slab.as_bytes().to_vec(), Report::Slab(slab)),
            (ReportKind::Process, process.as_bytes().to_vec(), Report::Process(process)),
            (ReportKind::User, b"ok=1".to_vec(), Report::User { text: "ok=1".into() }),
            (
                ReportKind::Vmas,
                with(VmasHeader { pid: 3, count: 1 }.as_bytes(), &[vma.as_bytes()]),
                Report::Vmas { pid: 3, vmas: vec![vma] },
            ),
            (
                ReportKind::OomKill,
                kill.as_bytes().to_vec(),
                Report::OomKill { name: "hog".into(), kill },
            ),
        ]
    }

    #[test]
    fn every_report_kind_round_trips_and_a_byte_short_is_malformed() {
        let cases = payloads();
        let kinds: Vec<ReportKind> = cases.iter().map(|(kind, ..)| *kind).collect();
        assert_eq!(kinds, ReportKind::ALL, "one case per kind, in order");
        for (kind, bytes, expected) in cases {
            assert_eq!(decode(kind as u32, &bytes), Ok(expected), "{kind:?}");
            // Free text ends these payloads: any length is whole.
            if ![ReportKind::BootError, ReportKind::CmdlineError, ReportKind::User].contains(&kind)
            {
                assert!(decode(kind as u32, &bytes[..bytes.len() - 1]).is_err(), "{kind:?} short");
                let mut long = bytes.clone();
                long.push(0);
                assert!(decode(kind as u32, &long).is_err(), "{kind:?} long");
            }
        }
        assert!(decode(99, &[]).is_err());
    }

    #[test]
    fn headers_must_agree_with_the_lengths_that_follow() {
        let lie = PanicHeader { line: 1, column: 1, file_len: u32::MAX, message_len: u32::MAX };
        assert!(decode(ReportKind::Panic as u32, lie.as_bytes()).is_err());
        let huge = MemblockHeader { memory: u32::MAX, reserved: u32::MAX };
        assert!(decode(ReportKind::Memblock as u32, huge.as_bytes()).is_err());
        assert!(decode(ReportKind::CmdlineError as u32, &9u32.to_le_bytes()).is_err());
        let unknown_zone = ZoneReport { zone: 9, ..Default::default() };
        assert!(decode(ReportKind::Zone as u32, unknown_zone.as_bytes()).is_err());
    }

    #[test]
    fn reports_outside_ram_or_too_long_are_malformed() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory");
        let outside = Request { nr: shared::hypercall::REPORT, kind: 1, arg: 0xfff0, len: 40 };
        assert!(matches!(read_report(&mem, &outside), Report::Malformed { kind: 1, .. }));
        let huge = Request { len: u64::MAX, ..outside };
        assert!(matches!(read_report(&mem, &huge), Report::Malformed { .. }));
    }
}
