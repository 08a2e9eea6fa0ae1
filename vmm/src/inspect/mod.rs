//! The inspector: the guest's memory-management state, read from outside through guest
//! RAM and the guest's own page tables, with no help from the guest beyond `vmcoreinfo`.
//!
//! Life cycle of one command:
//!
//! ```text
//! RamReader         the VMM's own mapping, or a --mem-file read with pread (ram.rs)
//!   Inspector       reads vmcoreinfo at its fixed address: magic, version, seq
//!     snapshot      seq even? run the command on a View; seq unchanged? done,
//!                   else retry, at most `max_tries` times (a torn read)
//!       View        kernel virtual → physical through the guest's tables (shared::walk),
//!                   bounds-checked reads, typed structures (shared::mm, shared::page),
//!                   and one work budget for the whole command (budget.rs)
//!         command   state.rs (e820, memblock, zones, slabs, page, meminfo, vmstat),
//!                   pagetable.rs (pagetable, translate), check.rs (check), process.rs
//!                   (ps, maps, status, smaps, pagemap, oom), swap.rs (swaps, read)
//! ```
//!
//! Guest memory is untrusted: every count is bounded before it sizes a loop or a buffer,
//! every list walk detects cycles, every unit of work is paid from one budget that grows
//! with the guest's size (so nested loops cannot multiply), and garbage yields an
//! [`InspectError`] or a finding, never a panic.

pub mod budget;
mod buffer;
pub mod check;
pub mod pagetable;
pub mod process;
pub mod ram;
pub mod state;
pub mod swap;

pub use budget::{budget_for, Budget};
pub use ram::RamReader;

use shared::page::{Page, PAGE_STRUCT_SIZE};
use shared::vmcoreinfo::{VmCoreInfo, VMCOREINFO_ADDR, VMCOREINFO_MAGIC, VMCOREINFO_VERSION};
use shared::walk::{translate, Stop};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;
use zerocopy::{FromBytes, IntoBytes};

/// Why an inspection failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The RAM file could not be opened.
    #[error("cannot open the RAM file {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a kvm-mm RAM file.
    #[error("{} is not a kvm-mm RAM file: {why}", path.display())]
    NotRamFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The RAM file shrank while it was being read.
    #[error("the RAM file {} shrank while it was being read (another process re-sized it, say a new `vmm run --mem-file` on it); inspect a guest's file while that guest still holds it", path.display())]
    FileShrank {
        /// The file.
        path: PathBuf,
    },
    /// The guest has not published its descriptor.
    #[error("the guest has not published vmcoreinfo (magic {magic:#x} at guest-physical {VMCOREINFO_ADDR:#x}); it does so when its memory managers are up, before its BOOTED checkpoint")]
    NotPublished {
        /// The magic found.
        magic: u64,
    },
    /// The descriptor has another layout version.
    #[error("vmcoreinfo layout version {found}, this vmm reads version {VMCOREINFO_VERSION}; use the vmm that booted the guest")]
    Version {
        /// The version found.
        found: u32,
    },
    /// Guest data points outside RAM.
    #[error("guest data points outside RAM: {len} bytes at guest-physical {gpa:#x}")]
    OutsideRam {
        /// The address.
        gpa: u64,
        /// Bytes wanted.
        len: u64,
    },
    /// A kernel address the guest published does not translate.
    #[error("kernel address {virt:#x} does not translate: {stop}")]
    Unmapped {
        /// The address.
        virt: u64,
        /// Where the walk stopped.
        stop: Stop,
    },
    /// Guest data contradicts itself beyond what a command can report.
    #[error("guest data is inconsistent: {0}")]
    Corrupt(String),
    /// The command's work budget ran out.
    #[error("stopped after {units} units of work, the budget for a guest of this size, while {what}: guest data that makes an inspection this long is corrupt (lists that loop or overlap, counts far beyond RAM)")]
    Budget {
        /// The budget.
        units: u64,
        /// What the command was doing when it ran out.
        what: String,
    },
    /// Every snapshot was torn.
    #[error("no consistent snapshot in {tries} tries: the guest kept changing its allocators (vmcoreinfo's sequence counter was odd or moved); pause the guest, or try again")]
    Torn {
        /// Snapshots tried.
        tries: u32,
    },
    /// A command argument is out of range for this guest.
    #[error("{0}")]
    Argument(String),
}

impl InspectError {
    /// The process exit status for this error: 66 for input that cannot be opened, 65 for
    /// guest data that cannot be read consistently, 64 for a bad argument.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Open { .. } => 66,
            Self::Argument(_) => crate::exit_code::USAGE,
            _ => 65,
        }
    }
}

/// A guest count or index as a host `usize`: exact, since the VMM runs on 64-bit hosts
/// only (x86_64 KVM), and every caller has bounded the value first.
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn to_usize(value: u64) -> usize {
    const _: () = assert!(usize::BITS == 64);
    value as usize
}

/// Snapshots taken before giving up on a guest that keeps changing.
pub const MAX_TRIES: u32 = 100;

/// Reads consistent snapshots of one guest.
pub struct Inspector<'a> {
    ram: RamReader<'a>,
    /// The guest's swap file, for `read` of swapped-out pages and `swaps`' file name.
    pub swap_file: Option<swap::SwapFile>,
    /// Snapshots tried before [`InspectError::Torn`].
    pub max_tries: u32,
    /// Pause between tries.
    pub retry_delay: Duration,
}

impl<'a> Inspector<'a> {
    /// An inspector of `ram`.
    pub fn new(ram: RamReader<'a>) -> Self {
        Self { ram, swap_file: None, max_tries: MAX_TRIES, retry_delay: Duration::from_millis(1) }
    }

    /// Runs `command` on a consistent snapshot: the sequence counter even before and
    /// unchanged after. A torn run is retried; its result (even an error caused by the
    /// guest changing under it) is discarded. The tries share one work budget, so a guest
    /// that keeps changing cannot multiply it.
    pub fn snapshot<T>(
        &mut self,
        mut command: impl FnMut(&mut View<'_, 'a>) -> Result<T, InspectError>,
    ) -> Result<T, InspectError> {
        let seq_at = VMCOREINFO_ADDR + std::mem::offset_of!(VmCoreInfo, seq) as u64;
        let mut budget = Budget::new(budget_for(self.ram.ram_bytes()));
        for _ in 0..self.max_tries {
            self.ram.begin_snapshot()?;
            let info: VmCoreInfo = self.ram.read_obj(VMCOREINFO_ADDR)?;
            if info.magic != VMCOREINFO_MAGIC {
                return Err(InspectError::NotPublished { magic: info.magic });
            }
            if info.version != VMCOREINFO_VERSION {
                return Err(InspectError::Version { found: info.version });
            }
            if info.seq % 2 == 0 {
                // A seqlock reader: the data reads stay between the two counter reads.
                fence(Ordering::Acquire);
                let mut view =
                    View { ram: &mut self.ram, info, budget, memmap: MemmapCopy::default() };
                let result = command(&mut view);
                budget = view.budget;
                fence(Ordering::Acquire);
                if self.ram.read_fresh::<u64>(seq_at)? == info.seq {
                    self.ram.end_snapshot()?;
                    return result;
                }
            }
            std::thread::sleep(self.retry_delay);
        }
        Err(InspectError::Torn { tries: self.max_tries })
    }
}

/// One snapshot's view of the guest.
pub struct View<'r, 'a> {
    /// Guest RAM.
    pub ram: &'r mut RamReader<'a>,
    /// The descriptor at the start of the snapshot.
    pub info: VmCoreInfo,
    /// What the command may still spend.
    pub budget: Budget,
    /// `struct page`s already read by this command ([`View::copy_memmap`]).
    memmap: MemmapCopy,
}

/// `struct page`s read once for a whole command: `check` reads the memory map whole,
/// then walks its lists through the copy instead of reading the same descriptors again.
/// Most descriptors are all zero (tail pages, pages nobody has used), so only the others
/// are kept.
#[derive(Default)]
struct MemmapCopy {
    /// Runs of frames whose descriptors were read: (first pfn, pfns), sorted, disjoint.
    runs: Vec<(u64, u64)>,
    /// The descriptors of those frames that are not all zero, by pfn.
    pages: Vec<(u64, Page)>,
    /// Descriptors that could not be read: (first pfn, pfns, why).
    unreadable: Vec<(u64, u64, String)>,
}

impl MemmapCopy {
    fn get(&self, pfn: u64) -> Option<Page> {
        let run = self.runs.partition_point(|&(first, _)| first <= pfn).checked_sub(1)?;
        let (first, count) = self.runs[run];
        if pfn - first >= count {
            return None;
        }
        Some(match self.pages.binary_search_by_key(&pfn, |&(p, _)| p) {
            Ok(at) => self.pages[at].1,
            Err(_) => Page::default(),
        })
    }
}

impl View<'_, '_> {
    /// The guest-physical address behind kernel virtual address `virt`.
    pub fn phys(&mut self, virt: u64) -> Result<u64, InspectError> {
        self.budget.spend(1, || format!("translating {virt:#x}"))?;
        translate(self.ram, self.info.cr3, virt)
            .map(|m| m.phys)
            .map_err(|stop| InspectError::Unmapped { virt, stop })
    }

    /// Fills `buf` from kernel virtual address `virt`: one translation per page, one read
    /// per physically contiguous run.
    pub fn read_virt(&mut self, virt: u64, buf: &mut [u8]) -> Result<(), InspectError> {
        self.for_each_run(virt, buf.len(), |ram, phys, part| ram.read(phys, &mut buf[part]))
    }

    /// Calls `read` with each physically contiguous run of the `len` bytes at kernel
    /// virtual address `virt`: its guest-physical address and its place in the bytes.
    /// One translation per page.
    fn for_each_run(
        &mut self,
        virt: u64,
        len: usize,
        mut read: impl FnMut(&mut RamReader, u64, Range<usize>) -> Result<(), InspectError>,
    ) -> Result<(), InspectError> {
        self.budget.spend(len as u64 / 4096, || format!("reading {len} bytes at {virt:#x}"))?;
        let (mut done, mut run) = (0, None::<(usize, u64, usize)>);
        while done < len {
            let at = virt.wrapping_add(done as u64);
            let chunk = (4096 - (at % 4096) as usize).min(len - done);
            let phys = self.phys(at)?;
            run = match run {
                Some((from, start, run_len)) if start + run_len as u64 == phys => {
                    Some((from, start, run_len + chunk))
                }
                Some((from, start, run_len)) => {
                    read(self.ram, start, from..from + run_len)?;
                    Some((done, phys, chunk))
                }
                None => Some((done, phys, chunk)),
            };
            done += chunk;
        }
        if let Some((from, start, run_len)) = run {
            read(self.ram, start, from..from + run_len)?;
        }
        Ok(())
    }

    /// The value of type `T` at kernel virtual address `virt`.
    pub fn read_virt_obj<T: FromBytes + IntoBytes>(
        &mut self,
        virt: u64,
    ) -> Result<T, InspectError> {
        let mut value = T::new_zeroed();
        self.read_virt(virt, value.as_mut_bytes())?;
        Ok(value)
    }

    /// The `struct page` of frame `pfn`.
    pub fn page(&mut self, pfn: u64) -> Result<Page, InspectError> {
        if pfn >= self.info.max_pfn {
            return Err(InspectError::Argument(format!(
                "pfn {pfn:#x} is beyond the guest's last page frame {:#x}",
                self.info.max_pfn.saturating_sub(1)
            )));
        }
        if let Some(page) = self.memmap.get(pfn) {
            return Ok(page);
        }
        self.read_virt_obj(self.page_addr(pfn))
    }

    /// Reads the `struct page`s of the frames `[start, end)` of each of `ranges` once,
    /// 2 MiB of descriptors a read, so that [`page`](Self::page) and
    /// [`copied_page`](Self::copied_page) answer from the copy. Overlapping ranges are
    /// read once; descriptors that cannot be read are noted with the reason. Without host
    /// memory for the copy, nothing is copied and descriptors are read one by one.
    pub fn copy_memmap(&mut self, ranges: &[(u64, u64)]) -> Result<(), InspectError> {
        let mut union: Vec<(u64, u64)> =
            ranges.iter().copied().filter(|&(start, end)| start < end).collect();
        union.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (start, end) in union {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        // 32 768 descriptors a read: physically contiguous wherever the vmemmap is backed
        // by a 2 MiB page.
        const CHUNK: u64 = 32_768;
        let Some(mut scratch) =
            buffer::ZeroedBuffer::<u8>::huge(to_usize(CHUNK) * PAGE_STRUCT_SIZE)
        else {
            return Ok(());
        };
        let mut copy = MemmapCopy::default();
        for (start, end) in merged {
            let mut pfn = start;
            while pfn < end {
                let chunk = (CHUNK - pfn % CHUNK).min(end - pfn);
                let bytes = &mut scratch[..to_usize(chunk) * PAGE_STRUCT_SIZE];
                // Only what RAM holds data for is read; the rest of the scratch stays
                // zero (all-zero descriptors are not kept), and is zeroed again after.
                let mut data: Vec<Range<usize>> = Vec::new();
                let read =
                    self.for_each_run(self.page_addr(pfn), bytes.len(), |ram, phys, part| {
                        let at = part.start;
                        let parts = ram.read_data(phys, &mut bytes[part])?;
                        data.extend(parts.into_iter().map(|p| at + p.start..at + p.end));
                        Ok(())
                    });
                match read {
                    Ok(()) => {
                        match copy.runs.last_mut() {
                            Some((first, count)) if *first + *count == pfn => *count += chunk,
                            _ => copy.runs.push((pfn, chunk)),
                        }
                        for part in &data {
                            // Whole descriptors around the part (the rest reads zero).
                            let first = part.start / PAGE_STRUCT_SIZE;
                            let last = part.end.div_ceil(PAGE_STRUCT_SIZE);
                            let raw = &bytes[first * PAGE_STRUCT_SIZE..last * PAGE_STRUCT_SIZE];
                            let described =
                                raw.chunks_exact(PAGE_STRUCT_SIZE).zip(pfn + first as u64..);
                            copy.pages.extend(described.filter_map(|(raw, pfn)| {
                                let page = Page::read_from_bytes(raw).unwrap_or_default();
                                (page != Page::default()).then_some((pfn, page))
                            }));
                        }
                    }
                    Err(err @ InspectError::Budget { .. }) => return Err(err),
                    Err(err) => copy.unreadable.push((pfn, chunk, err.to_string())),
                }
                for part in data {
                    bytes[part].fill(0);
                }
                pfn += chunk;
            }
        }
        self.memmap = copy;
        Ok(())
    }

    /// Kernel virtual address of frame `pfn`'s `struct page`.
    pub fn page_addr(&self, pfn: u64) -> u64 {
        self.info.vmemmap.wrapping_add(pfn.wrapping_mul(PAGE_STRUCT_SIZE as u64))
    }

    /// The frames of `[start, end)` whose descriptors are not all zero, in order, each
    /// with its `struct page`, or, for a run that could not be read, its length and why
    /// (at the run's first frame). From [`copy_memmap`](Self::copy_memmap)'s copy, or,
    /// without one, read now; an error only when the budget runs out.
    #[allow(clippy::type_complexity)]
    pub fn described_pages(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, Result<Page, (u64, String)>)>, InspectError> {
        let copy = &self.memmap;
        let mut found = Vec::new();
        if copy.runs.is_empty() && copy.unreadable.is_empty() {
            for pfn in start..end {
                match self.page(pfn) {
                    Ok(page) if page == Page::default() => {}
                    Ok(page) => found.push((pfn, Ok(page))),
                    Err(err @ InspectError::Budget { .. }) => return Err(err),
                    Err(err) => found.push((pfn, Err((1, err.to_string())))),
                }
            }
            return Ok(found);
        }
        for (first, count, why) in &copy.unreadable {
            let (from, to) = ((*first).max(start), (first + count).min(end));
            if from < to {
                found.push((from, Err((to - from, why.clone()))));
            }
        }
        let at = copy.pages.partition_point(|&(pfn, _)| pfn < start);
        let described = copy.pages[at..].iter().take_while(|&&(pfn, _)| pfn < end);
        found.extend(described.map(|&(pfn, page)| (pfn, Ok(page))));
        found.sort_by_key(|&(pfn, _)| pfn);
        Ok(found)
    }
}

/// An inspection; also the `vmm inspect` subcommands, whose help these comments are.
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// The sanitised e820 map, as the kernel prints it at boot.
    E820,
    /// memblock's memory and reserved regions (debugfs format).
    Memblock,
    /// Free blocks per zone and order (/proc/buddyinfo).
    Buddyinfo,
    /// Zone counters and watermarks (/proc/zoneinfo subset).
    Zoneinfo,
    /// Slab caches (/proc/slabinfo, version 2.1).
    Slabinfo,
    /// Memory use (/proc/meminfo: the fields that apply).
    Meminfo,
    /// Page counts and events (/proc/vmstat: free and LRU pages, faults, swap-ins and
    /// -outs, pages scanned and reclaimed, OOM kills).
    Vmstat,
    /// The swap device (/proc/swaps): size and slots in use.
    Swaps,
    /// The guest's page tables: runs of equal permissions (QEMU `info mem`), or every
    /// mapped page with its flags (QEMU `info tlb`).
    Pagetable {
        /// Only START-END (hex, END exclusive; canonical addresses, END may be
        /// 800000000000, the end of the lower half).
        #[arg(long, value_name = "START-END", value_parser = pagetable::parse_range)]
        range: Option<pagetable::Range>,
        /// One line per page, as QEMU's `info tlb`.
        #[arg(long)]
        tlb: bool,
        /// A process's tables instead of the kernel's (see `ps`).
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
    },
    /// Walk virtual addresses through the guest's tables, level by level.
    Translate {
        /// Virtual addresses (hex).
        #[arg(required = true, value_name = "ADDR", value_parser = parse_hex)]
        addrs: Vec<u64>,
        /// Through a process's tables instead of the kernel's (see `ps`).
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
    },
    /// Decode the struct page of a page frame.
    Page {
        /// Page-frame number (hex).
        #[arg(value_name = "PFN", value_parser = parse_hex)]
        pfn: u64,
    },
    /// Account for every RAM page and cross-check free lists, per-CPU lists, slab
    /// freelists, counters, the kernel's mappings and every process's memory.
    Check,
    /// The processes, as crash's `ps` lists them (PID, PPID, state, VSZ, RSS, name).
    Ps,
    /// A process's memory map, as /proc/PID/maps; without a PID, every process's, each
    /// headed by its PID.
    Maps {
        /// The process (see `ps`).
        #[arg(value_name = "PID")]
        pid: Option<u32>,
    },
    /// A process's memory lines of /proc/PID/status (VmPeak, VmSize, VmRSS, VmPTE…).
    Status {
        /// The process (see `ps`).
        #[arg(value_name = "PID")]
        pid: u32,
    },
    /// A process's /proc/PID/smaps: per VMA, Rss, Pss, shared and private, clean and
    /// dirty, Anonymous, AnonHugePages, Swap, SwapPss and VmFlags.
    Smaps {
        /// The process (see `ps`).
        #[arg(value_name = "PID")]
        pid: u32,
    },
    /// A process's pages, as /proc/PID/pagemap decodes them: present, PFN, huge and
    /// exclusively mapped, or swapped and the slot, one line per page of its VMAs.
    Pagemap {
        /// The process (see `ps`).
        #[arg(value_name = "PID")]
        pid: u32,
        /// Only START-END (hex, END exclusive).
        #[arg(long, value_name = "START-END", value_parser = pagetable::parse_range)]
        range: Option<pagetable::Range>,
    },
    /// What the OOM killer would do now: each process's badness and oom_score (Linux's
    /// dump_tasks table), and the one it would kill.
    Oom,
    /// A process's memory at ADDR, from RAM or, for a page swapped out, from its slot
    /// in the swap file (give `--swap-file`), as `xxd` shows it.
    Read {
        /// The process (see `ps`).
        #[arg(value_name = "PID")]
        pid: u32,
        /// The first address (hex).
        #[arg(value_name = "ADDR", value_parser = parse_hex)]
        addr: u64,
        /// Bytes to read (at most 65536).
        #[arg(long, default_value_t = 256)]
        len: u64,
    },
}

/// A hexadecimal number, `0x` optional, as command arguments take them.
fn parse_hex(text: &str) -> Result<u64, String> {
    pagetable::parse_hex(text).ok_or_else(|| format!("{text:?} is not a hexadecimal number"))
}

impl Command {
    /// Inspections `vmm run --inspect` accepts, by name.
    pub const NAMES: [&'static str; 13] = [
        "e820",
        "memblock",
        "buddyinfo",
        "zoneinfo",
        "slabinfo",
        "meminfo",
        "vmstat",
        "swaps",
        "oom",
        "pagetable",
        "check",
        "ps",
        "maps",
    ];

    /// The inspection named `name` (one of [`Command::NAMES`]), with default arguments.
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "e820" => Self::E820,
            "memblock" => Self::Memblock,
            "buddyinfo" => Self::Buddyinfo,
            "zoneinfo" => Self::Zoneinfo,
            "slabinfo" => Self::Slabinfo,
            "meminfo" => Self::Meminfo,
            "vmstat" => Self::Vmstat,
            "swaps" => Self::Swaps,
            "oom" => Self::Oom,
            "pagetable" => Self::Pagetable { range: None, tlb: false, pid: None },
            "check" => Self::Check,
            "ps" => Self::Ps,
            "maps" => Self::Maps { pid: None },
            _ => return None,
        })
    }

    /// The command's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::E820 => "e820",
            Self::Memblock => "memblock",
            Self::Buddyinfo => "buddyinfo",
            Self::Zoneinfo => "zoneinfo",
            Self::Slabinfo => "slabinfo",
            Self::Meminfo => "meminfo",
            Self::Vmstat => "vmstat",
            Self::Swaps => "swaps",
            Self::Oom => "oom",
            Self::Read { .. } => "read",
            Self::Pagetable { .. } => "pagetable",
            Self::Translate { .. } => "translate",
            Self::Page { .. } => "page",
            Self::Check => "check",
            Self::Ps => "ps",
            Self::Maps { .. } => "maps",
            Self::Status { .. } => "status",
            Self::Smaps { .. } => "smaps",
            Self::Pagemap { .. } => "pagemap",
        }
    }
}

/// What an inspection found. `vmm inspect --json` prints it; its schema is
/// `docs/inspect.schema.json`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// The e820 map.
    E820(Vec<shared::boot::E820Entry>),
    /// memblock.
    Memblock(state::MemblockRegions),
    /// Zones, for buddyinfo.
    Buddyinfo(Vec<shared::hypercall::ZoneReport>),
    /// Zones, for zoneinfo.
    Zoneinfo(Vec<shared::hypercall::ZoneReport>),
    /// Slab caches.
    Slabinfo(Vec<shared::hypercall::SlabInfoReport>),
    /// Memory use.
    Meminfo(state::Meminfo),
    /// Page counts and events.
    Vmstat(state::Vmstat),
    /// The swap device (none: empty).
    Swaps(Vec<swap::SwapDevice>),
    /// The OOM killer's view.
    Oom(process::Oom),
    /// A process's memory.
    Read(swap::UserMemory),
    /// A page-table dump.
    Pagetable(pagetable::PageTableDump),
    /// Translations.
    Translate(Vec<pagetable::AddressWalk>),
    /// A `struct page`.
    Page(state::PageInfo),
    /// The check's report.
    Check(check::CheckReport),
    /// The processes, and the RAM pages that scale %MEM.
    Ps {
        /// The processes.
        tasks: Vec<process::TaskInfo>,
        /// Pages of RAM.
        ram_pages: u64,
    },
    /// Memory maps.
    Maps(Vec<process::Maps>),
    /// A process's status.
    Status(process::Status),
    /// A process's smaps.
    Smaps(Vec<process::SmapsEntry>),
    /// A process's pages.
    Pagemap(Vec<process::PagemapEntry>),
}

impl Output {
    /// The output in the format users of Linux and QEMU know.
    pub fn text(&self) -> String {
        match self {
            Self::E820(map) => state::e820_text(map),
            Self::Memblock(memblock) => state::memblock_text(memblock),
            Self::Buddyinfo(zones) => crate::procfs::buddyinfo(zones),
            Self::Zoneinfo(zones) => crate::procfs::zoneinfo(zones),
            Self::Slabinfo(slabs) => crate::procfs::slabinfo(slabs),
            Self::Meminfo(meminfo) => state::meminfo_text(meminfo),
            Self::Vmstat(vmstat) => state::vmstat_text(vmstat),
            Self::Swaps(devices) => swap::swaps_text(devices),
            Self::Oom(oom) => process::oom_text(oom),
            Self::Read(memory) => swap::read_text(memory),
            Self::Pagetable(dump) => pagetable::dump_text(dump),
            Self::Translate(list) => list.iter().map(pagetable::address_walk_text).collect(),
            Self::Page(page) => state::page_text(page),
            Self::Check(report) => check::check_text(report),
            Self::Ps { tasks, ram_pages } => process::ps_text(tasks, *ram_pages),
            Self::Maps(maps) => process::maps_text(maps),
            Self::Status(status) => process::status_text(status),
            Self::Smaps(entries) => process::smaps_text(entries),
            Self::Pagemap(pages) => process::pagemap_text(pages),
        }
    }

    /// Whether the output reports a problem in the guest (a failed check).
    pub fn found_problems(&self) -> bool {
        matches!(self, Self::Check(report) if !report.ok())
    }
}

impl Inspector<'_> {
    /// Runs `command` on a consistent snapshot.
    pub fn run(&mut self, command: &Command) -> Result<Output, InspectError> {
        let swap_file = self.swap_file.take();
        let result = self.snapshot(|view| {
            Ok(match command {
                Command::E820 => Output::E820(state::e820(view)?),
                Command::Memblock => Output::Memblock(state::memblock(view)?),
                Command::Buddyinfo => Output::Buddyinfo(state::zones(view)?),
                Command::Zoneinfo => Output::Zoneinfo(state::zones(view)?),
                Command::Slabinfo => Output::Slabinfo(state::slabs(view)?),
                Command::Meminfo => Output::Meminfo(state::meminfo(view)?),
                Command::Vmstat => Output::Vmstat(state::vmstat(view)?),
                Command::Swaps => Output::Swaps(swap::swaps(view, swap_file.as_ref())?),
                Command::Oom => Output::Oom(process::oom(view)?),
                Command::Read { pid, addr, len } => {
                    Output::Read(swap::read(view, swap_file.as_ref(), *pid, *addr, *len)?)
                }
                Command::Pagetable { range, tlb, pid } => {
                    let root = root(view, *pid)?;
                    Output::Pagetable(pagetable::dump(view, root, range.unwrap_or_default(), *tlb)?)
                }
                Command::Translate { addrs, pid } => {
                    let root = root(view, *pid)?;
                    Output::Translate(
                        addrs.iter().map(|&a| pagetable::translate(view, root, a)).collect(),
                    )
                }
                Command::Page { pfn } => Output::Page(state::page(view, *pfn)?),
                Command::Check => Output::Check(check::check(view)?),
                Command::Ps => Output::Ps {
                    tasks: process::tasks(view)?,
                    ram_pages: view.ram.ram_bytes() / 4096,
                },
                Command::Maps { pid } => Output::Maps(process::maps(view, *pid)?),
                Command::Status { pid } => Output::Status(process::status(view, *pid)?),
                Command::Smaps { pid } => Output::Smaps(process::smaps(view, *pid)?),
                Command::Pagemap { pid, range } => {
                    Output::Pagemap(process::pagemap(view, *pid, *range)?)
                }
            })
        });
        self.swap_file = swap_file;
        result
    }
}

/// The page-table root to read: process `pid`'s, or the kernel's.
fn root(view: &mut View<'_, '_>, pid: Option<u32>) -> Result<u64, InspectError> {
    match pid {
        Some(pid) => Ok(process::task(view, pid)?.mm.pgd),
        None => Ok(view.info.cr3),
    }
}

/// One inspection `vmm run --inspect` made. In JSON: `at`, `command`, and `output` or
/// `error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// When: `checkpoint N (name)`, N counting the run's checkpoints, or `exit`.
    pub at: String,
    /// The command.
    pub command: &'static str,
    /// What it found, or why it could not.
    pub result: Result<Output, String>,
}

impl serde::Serialize for Inspection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut fields = serializer.serialize_struct("Inspection", 3)?;
        fields.serialize_field("at", &self.at)?;
        fields.serialize_field("command", self.command)?;
        match &self.result {
            Ok(output) => fields.serialize_field("output", output)?,
            Err(error) => fields.serialize_field("error", error)?,
        }
        fields.end()
    }
}

/// The JSON form of an [`Inspection`], for its schema.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct InspectionJson {
    /// When: `checkpoint N (name)`, N counting the run's checkpoints, or `exit`.
    at: String,
    /// The command.
    command: String,
    /// What it found, or why it could not.
    #[serde(flatten)]
    result: InspectionResult,
}

/// An inspection's result.
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum InspectionResult {
    /// What it found.
    Output(Output),
    /// Why it could not.
    Error(String),
}

impl schemars::JsonSchema for Inspection {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Inspection".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        InspectionJson::json_schema(generator)
    }
}
