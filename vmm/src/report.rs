//! Decoding the guest's reports (`shared::hypercall`) into typed values.
//!
//! Report payloads are guest memory and so untrusted: every length is bounded, every read
//! bounds-checked, and a payload that does not decode becomes [`Report::Malformed`].

use crate::inspect::Pod;
use serde::Serialize;
use shared::boot::{e820_type_name, E820Entry};
use shared::hypercall::{
    exception_name, CmdlineErrorKind, ExceptionReport, OopsCause, PanicHeader, ReportKind, Request,
    ZoneReport, GPR_NAMES, REPORT_MAX_LEN, UNMAPPED,
};
use shared::page::ZoneType;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// One e820 range, as JSON shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct E820Range {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Type number.
    #[serde(rename = "type")]
    pub typ: u32,
}

impl From<E820Entry> for E820Range {
    fn from(entry: E820Entry) -> Self {
        Self { addr: entry.addr, size: entry.size, typ: entry.typ }
    }
}

impl E820Range {
    /// The type's name in Linux's boot print, if it has one.
    pub fn type_name(&self) -> Option<&'static str> {
        e820_type_name(self.typ)
    }
}

/// A memblock region, as JSON shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// One zone's counters and free lists (`/proc/zoneinfo`, `/proc/buddyinfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ZoneInfo {
    /// `DMA`, `DMA32` or `Normal`.
    pub zone: String,
    /// First page frame spanned.
    pub start_pfn: u64,
    /// Page frames spanned.
    pub spanned: u64,
    /// Page frames with memory.
    pub present: u64,
    /// Page frames the buddy allocator manages.
    pub managed: u64,
    /// Free page frames on the buddy lists.
    pub free: u64,
    /// Free page frames on the per-CPU lists.
    pub pcp: u64,
    /// Watermark min.
    pub min: u64,
    /// Watermark low.
    pub low: u64,
    /// Watermark high.
    pub high: u64,
    /// Free blocks per order, 0 to 10.
    pub nr_free: Vec<u64>,
}

impl ZoneInfo {
    /// The decoded form of a zone report; an unknown zone number is named `?`.
    pub fn from_report(report: &ZoneReport) -> Self {
        Self {
            zone: ZoneType::from_u32(report.zone).map_or("?", ZoneType::name).into(),
            start_pfn: report.start_pfn,
            spanned: report.spanned,
            present: report.present,
            managed: report.managed,
            free: report.free,
            pcp: report.pcp,
            min: report.min,
            low: report.low,
            high: report.high,
            nr_free: report.nr_free.to_vec(),
        }
    }
}

/// One address as the guest's own page-table walker translated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GuestTranslation {
    /// The virtual address.
    pub virt: u64,
    /// Its physical address, or `None` if unmapped.
    pub phys: Option<u64>,
    /// The size of the page it lies in (0 if unmapped).
    pub page_size: u64,
}

/// One slab cache's `/proc/slabinfo` columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlabInfo {
    /// The cache's name.
    pub name: String,
    /// Objects allocated.
    pub active_objs: u64,
    /// Objects in all slabs.
    pub num_objs: u64,
    /// Object size in bytes.
    pub objsize: u64,
    /// Objects per slab.
    pub objperslab: u64,
    /// Pages per slab.
    pub pagesperslab: u64,
    /// Slabs with an object allocated.
    pub active_slabs: u64,
    /// Slabs.
    pub num_slabs: u64,
    /// Bytes of each slab no object uses.
    pub waste_per_slab: u64,
}

/// A report from the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "report", rename_all = "kebab-case")]
pub enum Report {
    /// The sanitised e820 map the guest uses.
    E820 {
        /// Its ranges, sorted and disjoint.
        ranges: Vec<E820Range>,
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
    Exception {
        /// Vector number.
        vector: u64,
        /// Linux's mnemonic (`#PF`).
        mnemonic: String,
        /// CPU error code (zero where the vector has none).
        error_code: u64,
        /// Faulting instruction.
        rip: u64,
        /// Stack pointer.
        rsp: u64,
        /// Flags.
        rflags: u64,
        /// CR2 (the faulting address of a page fault).
        cr2: u64,
        /// General-purpose registers by name, in the CPU's order.
        #[serde(serialize_with = "as_map")]
        registers: Vec<(String, u64)>,
    },
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
    Zone(ZoneInfo),
    /// TSC cycles of each memory-setup phase.
    BootTimes {
        /// e820 to memblock ready.
        memblock_cycles: u64,
        /// memblock ready to memory map ready.
        memmap_cycles: u64,
        /// Memory map ready to buddy allocator ready.
        buddy_cycles: u64,
        /// RAM in memblock.
        ram_bytes: u64,
    },
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
    Stress {
        /// The seed.
        seed: u64,
        /// Operations run.
        ops: u64,
        /// Successful allocations.
        allocations: u64,
        /// Frees.
        frees: u64,
        /// Refused allocations.
        failed_allocations: u64,
        /// Most pages allocated at once.
        max_live_pages: u64,
        /// Whether the free lists were the boot state again at the end.
        restored: bool,
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
    Oops {
        /// `null-pointer`, `stack-overflow`, `write-to-read-only`, `execute-no-execute`,
        /// `unmapped-vmalloc` or `unhandled`.
        cause: String,
        /// The faulting address (CR2).
        address: u64,
        /// The faulting instruction.
        rip: u64,
        /// The page-fault error code.
        error_code: u64,
    },
    /// The kernel's page tables.
    PageTables {
        /// Tables: PML4, PDPT, PD, PT.
        tables: [u64; 4],
        /// Pages mapped: 4 KiB, 2 MiB, 1 GiB.
        pages: [u64; 3],
    },
    /// A slab cache's state (sent when the guest exits).
    Slab(SlabInfo),
    /// A report that could not be decoded.
    Malformed {
        /// The kind number the guest gave.
        kind: u32,
        /// What is wrong with it.
        problem: String,
    },
}

fn as_map<S: serde::Serializer>(pairs: &[(String, u64)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(name, value)| (name, value)))
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

/// A payload as little-endian 64-bit words.
fn words(payload: &[u8]) -> Result<Vec<u64>, String> {
    if payload.len() % 8 != 0 {
        return Err(format!("payload of {} bytes is not whole 64-bit words", payload.len()));
    }
    Ok(payload
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Decodes a payload of report kind `kind`.
pub fn decode(kind: u32, payload: &[u8]) -> Result<Report, String> {
    let Some(kind) = ReportKind::from_u32(kind) else {
        return Err(format!("unknown report kind {kind}"));
    };
    match kind {
        ReportKind::E820 => {
            if payload.len() % E820Entry::SIZE != 0 {
                return Err(format!(
                    "e820 payload of {} bytes is not whole entries",
                    payload.len()
                ));
            }
            let ranges = payload
                .chunks_exact(E820Entry::SIZE)
                .map(|chunk| {
                    let mut raw = [0; E820Entry::SIZE];
                    raw.copy_from_slice(chunk);
                    E820Range::from(E820Entry::from_bytes(&raw))
                })
                .collect();
            Ok(Report::E820 { ranges })
        }
        ReportKind::Panic => {
            let header_len = std::mem::size_of::<PanicHeader>();
            let field = |index: usize| {
                payload
                    .get(index * 4..index * 4 + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            };
            let (Some(line), Some(column), Some(file_len), Some(message_len)) =
                (field(0), field(1), field(2), field(3))
            else {
                return Err("panic payload shorter than its header".into());
            };
            let file_end = header_len + file_len as usize;
            let message_end = file_end + message_len as usize;
            if message_end != payload.len() {
                return Err(format!(
                    "panic payload of {} bytes, header says {message_end}",
                    payload.len()
                ));
            }
            Ok(Report::Panic {
                message: String::from_utf8_lossy(&payload[file_end..]).into_owned(),
                file: String::from_utf8_lossy(&payload[header_len..file_end]).into_owned(),
                line,
                column,
            })
        }
        ReportKind::Exception => {
            let bytes: &[u8; ExceptionReport::SIZE] = payload.try_into().map_err(|_| {
                format!(
                    "exception payload of {} bytes, expected {}",
                    payload.len(),
                    ExceptionReport::SIZE
                )
            })?;
            let report = ExceptionReport::from_bytes(bytes);
            Ok(Report::Exception {
                vector: report.vector,
                mnemonic: exception_name(report.vector).0.to_string(),
                error_code: report.error_code,
                rip: report.rip,
                rsp: report.rsp,
                rflags: report.rflags,
                cr2: report.cr2,
                registers: GPR_NAMES.iter().map(|n| n.to_string()).zip(report.gprs).collect(),
            })
        }
        ReportKind::Memblock => {
            let words = words(payload.get(8..).ok_or("memblock payload shorter than its header")?)?;
            let count = |at: usize| {
                payload
                    .get(at..at + 4)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            };
            let (memory, reserved) = (count(0), count(4));
            if words.len() != 2 * (memory + reserved) {
                return Err(format!(
                    "memblock payload holds {} words for {memory} + {reserved} regions",
                    words.len()
                ));
            }
            let mut regions =
                words.chunks_exact(2).map(|pair| Region { base: pair[0], size: pair[1] });
            Ok(Report::Memblock {
                memory: regions.by_ref().take(memory).collect(),
                reserved: regions.collect(),
            })
        }
        ReportKind::Zone => {
            if payload.len() != ZoneReport::SIZE {
                return Err(format!(
                    "zone payload of {} bytes, expected {}",
                    payload.len(),
                    ZoneReport::SIZE
                ));
            }
            let report = ZoneReport::from_bytes(payload);
            ZoneType::from_u32(report.zone).ok_or("unknown zone number")?;
            Ok(Report::Zone(ZoneInfo::from_report(&report)))
        }
        ReportKind::BootTimes => match words(payload)?.as_slice() {
            &[memblock_cycles, memmap_cycles, buddy_cycles, ram_bytes] => {
                Ok(Report::BootTimes { memblock_cycles, memmap_cycles, buddy_cycles, ram_bytes })
            }
            _ => Err(format!("boot-times payload of {} bytes, expected 32", payload.len())),
        },
        ReportKind::Test => {
            let field = |index: usize| {
                payload
                    .get(index * 4..index * 4 + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            };
            let (Some(passed), Some(name_len), Some(detail_len)) = (field(0), field(1), field(2))
            else {
                return Err("test payload shorter than its header".into());
            };
            let name_end = 16 + name_len;
            if payload.len() != name_end + detail_len {
                return Err(format!(
                    "test payload of {} bytes, header says {}",
                    payload.len(),
                    name_end + detail_len
                ));
            }
            Ok(Report::Test {
                name: String::from_utf8_lossy(&payload[16..name_end]).into_owned(),
                passed: passed == 1,
                detail: String::from_utf8_lossy(&payload[name_end..]).into_owned(),
            })
        }
        ReportKind::Stress => match words(payload)?.as_slice() {
            &[seed, ops, allocations, frees, failed_allocations, max_live_pages, restored] => {
                Ok(Report::Stress {
                    seed,
                    ops,
                    allocations,
                    frees,
                    failed_allocations,
                    max_live_pages,
                    restored: restored == 1,
                })
            }
            _ => Err(format!("stress payload of {} bytes, expected 56", payload.len())),
        },
        ReportKind::Translations => {
            let words = words(payload)?;
            if words.len() % 3 != 0 {
                return Err(format!(
                    "translations payload of {} words is not whole triples",
                    words.len()
                ));
            }
            let entries = words
                .chunks_exact(3)
                .map(|t| GuestTranslation {
                    virt: t[0],
                    phys: (t[1] != UNMAPPED).then_some(t[1]),
                    page_size: t[2],
                })
                .collect();
            Ok(Report::Translations { entries })
        }
        ReportKind::Oops => match words(payload)?.as_slice() {
            &[cause, address, rip, error_code] => {
                let cause = OopsCause::from_u32((cause & 0xffff_ffff) as u32)
                    .ok_or("unknown oops cause")?;
                Ok(Report::Oops { cause: cause.name().to_string(), address, rip, error_code })
            }
            _ => Err(format!("oops payload of {} bytes, expected 32", payload.len())),
        },
        ReportKind::PageTables => match words(payload)?.as_slice() {
            &[pml4, pdpt, pd, pt, small, large, huge] => {
                Ok(Report::PageTables { tables: [pml4, pdpt, pd, pt], pages: [small, large, huge] })
            }
            _ => Err(format!("page-table payload of {} bytes, expected 56", payload.len())),
        },
        ReportKind::SlabInfo => {
            let (name, rest) =
                payload.split_at_checked(24).ok_or("slabinfo payload shorter than its name")?;
            match words(rest)?.as_slice() {
                &[active_objs, num_objs, objsize, objperslab, pagesperslab, active_slabs, num_slabs, waste_per_slab] =>
                {
                    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                    Ok(Report::Slab(SlabInfo {
                        name: String::from_utf8_lossy(&name[..end]).into_owned(),
                        active_objs,
                        num_objs,
                        objsize,
                        objperslab,
                        pagesperslab,
                        active_slabs,
                        num_slabs,
                        waste_per_slab,
                    }))
                }
                _ => Err(format!("slabinfo payload of {} bytes, expected 88", payload.len())),
            }
        }
        ReportKind::BootError => {
            Ok(Report::BootError { message: String::from_utf8_lossy(payload).into_owned() })
        }
        ReportKind::CmdlineError => {
            let (reason, option) = payload
                .split_at_checked(4)
                .ok_or("command-line error payload shorter than 4 bytes")?;
            let reason = CmdlineErrorKind::from_u32(u32::from_le_bytes([
                reason[0], reason[1], reason[2], reason[3],
            ]))
            .ok_or("unknown command-line error reason")?;
            Ok(Report::CmdlineError {
                reason: match reason {
                    CmdlineErrorKind::UnknownOption => "unknown-option",
                    CmdlineErrorKind::BadValue => "bad-value",
                }
                .to_string(),
                option: String::from_utf8_lossy(option).into_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_payload_decodes_whole_entries_only() {
        let mut payload = E820Entry::new(0x1000, 0x2000, 1).to_bytes().to_vec();
        assert_eq!(
            decode(1, &payload),
            Ok(Report::E820 { ranges: vec![E820Range { addr: 0x1000, size: 0x2000, typ: 1 }] })
        );
        payload.push(0);
        assert!(decode(1, &payload).is_err());
    }

    #[test]
    fn panic_payload_lengths_must_add_up() {
        let mut payload = Vec::new();
        for field in [42u32, 7, 7, 5] {
            payload.extend(field.to_le_bytes());
        }
        payload.extend(b"main.rsboom!");
        let report = decode(2, &payload).expect("decodes");
        assert_eq!(
            report,
            Report::Panic { message: "boom!".into(), file: "main.rs".into(), line: 42, column: 7 }
        );
        assert!(decode(2, &payload[..payload.len() - 1]).is_err());
        assert!(decode(2, &payload[..10]).is_err());
    }

    #[test]
    fn cmdline_error_and_exception_payloads() {
        let mut payload = 1u32.to_le_bytes().to_vec();
        payload.extend(b"frob=1");
        assert_eq!(
            decode(4, &payload),
            Ok(Report::CmdlineError { reason: "unknown-option".into(), option: "frob=1".into() })
        );
        assert!(decode(4, &[9, 0, 0, 0]).is_err());
        let mut raw = [0u8; ExceptionReport::SIZE];
        raw[0] = 6;
        raw[16] = 0x42;
        let Ok(Report::Exception { vector, mnemonic, rip, registers, .. }) = decode(3, &raw) else {
            panic!("exception decodes");
        };
        assert_eq!((vector, mnemonic.as_str(), rip, registers.len()), (6, "#UD", 0x42, 15));
        assert!(decode(3, &raw[1..]).is_err());
        assert!(decode(99, &[]).is_err());
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
