//! Hypercalls: requests the guest hands the VMM through [`crate::ports::HYPERCALL`].
//!
//! The guest fills a [`Request`] in its memory and writes the request's guest-physical
//! address (below 4 GiB) to the port as a 32-bit value. The vCPU stops while the VMM handles
//! the request, so the guest needs no locking around it.
//!
//! - `CHECKPOINT(tag)`: the guest reached a named point; the VMM records it and runs the
//!   host-side inspections asked for before it resumes the guest.
//! - `REPORT(kind, gpa, len)`: `len` bytes at `gpa` hold a structured result of the given
//!   [`ReportKind`]; the VMM decodes it into a typed value. Payloads are little-endian and
//!   at most [`REPORT_MAX_LEN`] bytes.

use crate::mm::SlabCache;
use crate::page::ZoneType;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A hypercall request (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Request {
    /// [`CHECKPOINT`], [`REPORT`], [`ZERO_PAGES`], [`COPY_PAGE`], [`DISCARD_PAGES`],
    /// [`SWAP_WRITE`], [`SWAP_READ`] or [`SWAP_WRITE_BATCH`].
    pub nr: u32,
    /// For `REPORT`, the [`ReportKind`]; for the page-work calls (all the others but
    /// `CHECKPOINT`), zero from the guest, which the VMM sets to [`PAGE_WORK_DONE`] when
    /// it has done the work; zero otherwise.
    pub kind: u32,
    /// For `CHECKPOINT`, the tag; for `REPORT`, the payload's guest-physical address; for
    /// the page-work calls, the first page's.
    pub arg: u64,
    /// For `REPORT`, the payload length in bytes; for `ZERO_PAGES` and `DISCARD_PAGES`, the
    /// pages; for `COPY_PAGE`, the destination page's guest-physical address; for
    /// `SWAP_WRITE` and `SWAP_READ`, the swap slot; for `SWAP_WRITE_BATCH`, the
    /// [`SwapIo`]s at `arg`; zero otherwise.
    pub len: u64,
}

const _: () = assert!(core::mem::size_of::<Request>() == 24);

/// Hypercall number: the guest reached checkpoint `arg`.
pub const CHECKPOINT: u32 = 1;
/// Hypercall number: a report of `kind`, `len` bytes at guest-physical `arg`.
pub const REPORT: u32 = 2;
/// Hypercall number: fill `len` pages of RAM from guest-physical `arg` (page aligned) with
/// zeros. The host's stores are native; the guest's own would be emulated on some hosts
/// (about 170 µs a page on the CI machines, against a few µs for the exit).
pub const ZERO_PAGES: u32 = 3;
/// Hypercall number: copy the page of RAM at guest-physical `arg` to the one at `len`
/// (both page aligned, distinct): copy-on-write's copy, done by the host.
pub const COPY_PAGE: u32 = 4;
/// Hypercall number: the guest no longer needs the `len` pages of RAM from guest-physical
/// `arg` (page aligned; at most a 4 MiB block): the VMM drops them, so that they read as
/// zero and take no host memory (Linux's free page reporting, as virtio-balloon serves
/// it). Answered like [`ZERO_PAGES`].
pub const DISCARD_PAGES: u32 = 5;
/// Hypercall number: write the page of RAM at guest-physical `arg` to swap slot `len` of
/// the swap device (`vmm run --swap-file`): the host copies, so the guest never copies
/// 4 KiB itself. Answered like [`ZERO_PAGES`]; a slot past the device's end, or no device,
/// is refused.
pub const SWAP_WRITE: u32 = 6;
/// Hypercall number: read swap slot `len` into the page of RAM at guest-physical `arg`.
/// Answered like [`SWAP_WRITE`].
pub const SWAP_READ: u32 = 7;
/// Hypercall number: write `len` pages (1 to [`SWAP_BATCH_MAX`]) to their swap slots, as
/// the [`SwapIo`]s at guest-physical `arg` name them: reclaim's batch in one exit. Every
/// page and slot is checked before any is written; answered like [`ZERO_PAGES`].
pub const SWAP_WRITE_BATCH: u32 = 8;
/// The most pages one [`SWAP_WRITE_BATCH`] writes (Linux's `SWAP_CLUSTER_MAX`, reclaim's
/// batch).
pub const SWAP_BATCH_MAX: u64 = 32;

/// One page of a [`SWAP_WRITE_BATCH`] (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SwapIo {
    /// The page's guest-physical address.
    pub frame: u64,
    /// Its slot.
    pub slot: u64,
}

const _: () = assert!(core::mem::size_of::<SwapIo>() == 16);
/// The most pages one [`DISCARD_PAGES`] call may name (a buddy block of the top order).
pub const DISCARD_PAGES_MAX: u64 = 1024;
/// What the VMM writes into a page-work request's `kind` once the work is done; a guest
/// that finds it unchanged does the work itself.
pub const PAGE_WORK_DONE: u32 = 1;
/// The most pages one [`ZERO_PAGES`] call may name (a 2 MiB huge page).
pub const ZERO_PAGES_MAX: u64 = 512;

/// Largest report payload the VMM accepts.
pub const REPORT_MAX_LEN: u64 = 64 * 1024;

/// Checkpoint tags the guest uses, numbered in the order a run meets them.
pub mod checkpoint {
    /// The guest walked its sample addresses (the last
    /// [`super::ReportKind::Translations`] report): check them against KVM's own
    /// translation (`KVM_TRANSLATE`). vmcoreinfo is not published yet.
    pub const CHECK_TRANSLATIONS: u64 = 1;
    /// The kernel finished booting and published vmcoreinfo; the workload runs next.
    pub const BOOTED: u64 = 2;
    /// A workload paused between two steps with its allocators consistent, so that the
    /// host can inspect it.
    pub const PROGRESS: u64 = 3;
    /// A user program asked for one (`SYS_KVM_MM_CHECKPOINT`): every process is
    /// published, mid-run, for the host to inspect.
    pub const USER: u64 = 4;
    /// The OOM killer chose its victim (the last [`super::ReportKind::OomKill`] report)
    /// and is about to kill it: every process is published as the killer saw it.
    pub const OOM: u64 = 5;

    /// A checkpoint's name.
    pub fn name(tag: u64) -> &'static str {
        match tag {
            CHECK_TRANSLATIONS => "check-translations",
            BOOTED => "booted",
            PROGRESS => "progress",
            USER => "user",
            OOM => "oom",
            _ => "guest-defined",
        }
    }
}

/// What a report's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReportKind {
    /// The sanitised e820 map: `[`[`crate::boot::E820Entry`]`]`.
    E820 = 1,
    /// A kernel panic: a [`PanicHeader`], then the file name, then the message (UTF-8).
    Panic = 2,
    /// An unhandled CPU exception: an [`ExceptionReport`].
    Exception = 3,
    /// A rejected command-line option: a [`CmdlineErrorHeader`], then the option (UTF-8).
    CmdlineError = 4,
    /// memblock at the hand-off to the buddy allocator: a [`MemblockHeader`], then its
    /// `memory` and `reserved` [`crate::mm::Region`]s.
    Memblock = 5,
    /// One zone's counters and free lists: a [`ZoneReport`].
    Zone = 6,
    /// Boot-phase costs: a [`BootTimes`].
    BootTimes = 7,
    /// One self-test check: a [`TestHeader`], then the name, then the detail (UTF-8).
    Test = 8,
    /// The stress workload's counters: a [`StressReport`].
    Stress = 9,
    /// Why the boot could not go on (UTF-8).
    BootError = 10,
    /// The guest's own translations, for the VMM to check against KVM's:
    /// `[`[`GuestTranslation`]`]`.
    Translations = 11,
    /// A kernel page fault it cannot handle, with its cause: an [`OopsReport`].
    Oops = 12,
    /// The kernel's page tables: a [`PageTablesReport`].
    PageTables = 13,
    /// One slab cache's `/proc/slabinfo` line and its waste: a [`SlabInfoReport`].
    SlabInfo = 14,
    /// A user process ended: a [`ProcessReport`].
    Process = 15,
    /// What a user program reported through `SYS_KVM_MM_REPORT` (UTF-8).
    User = 16,
    /// A process's VMAs, as the kernel holds them, at a user checkpoint: a [`VmasHeader`],
    /// then its [`crate::process::Vma`]s in address order.
    Vmas = 17,
    /// The OOM killer chose a victim: an [`OomKillReport`].
    OomKill = 18,
}

impl ReportKind {
    /// Every kind, in number order.
    pub const ALL: [ReportKind; 18] = [
        Self::E820,
        Self::Panic,
        Self::Exception,
        Self::CmdlineError,
        Self::Memblock,
        Self::Zone,
        Self::BootTimes,
        Self::Test,
        Self::Stress,
        Self::BootError,
        Self::Translations,
        Self::Oops,
        Self::PageTables,
        Self::SlabInfo,
        Self::Process,
        Self::User,
        Self::Vmas,
        Self::OomKill,
    ];

    /// The kind with this number, if it is one.
    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| *kind as u32 == value)
    }
}

/// Header of a [`ReportKind::Panic`] payload (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PanicHeader {
    /// Source line of the panic.
    pub line: u32,
    /// Source column of the panic.
    pub column: u32,
    /// Bytes of file name following the header.
    pub file_len: u32,
    /// Bytes of message following the file name.
    pub message_len: u32,
}

const _: () = assert!(core::mem::size_of::<PanicHeader>() == 16);

/// Header of a [`ReportKind::Memblock`] payload (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct MemblockHeader {
    /// Regions of `memory` that follow.
    pub memory: u32,
    /// Regions of `reserved` that follow them.
    pub reserved: u32,
}

/// Header of a [`ReportKind::Vmas`] payload (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VmasHeader {
    /// The process.
    pub pid: u32,
    /// VMAs that follow.
    pub count: u32,
}

/// Header of a [`ReportKind::CmdlineError`] payload (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CmdlineErrorHeader {
    /// A [`CmdlineErrorKind`].
    pub kind: u32,
}

/// Payload of [`ReportKind::Zone`] (168 bytes): `/proc/zoneinfo` and `/proc/buddyinfo`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct ZoneReport {
    /// The zone: a [`ZoneType`] number (its name in JSON).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "json::zone_name"),
        schemars(with = "String")
    )]
    pub zone: u32,
    /// Zero.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub reserved: u32,
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
    pub nr_free: [u64; crate::page::NR_ORDERS],
    /// Pages kept back from allocations whose highest zone is each zone in turn (Linux's
    /// `lowmem_reserve`).
    pub protection: [u64; crate::page::NR_ZONES],
}

const _: () = assert!(core::mem::size_of::<ZoneReport>() == 192);

impl ZoneReport {
    /// The report of `zone`: the one mapping from a zone to what the host prints, used by
    /// the guest's report and by the host's reading of guest memory alike.
    pub fn of(zone: &crate::mm::Zone) -> Self {
        Self {
            zone: zone.kind,
            reserved: 0,
            start_pfn: zone.start_pfn,
            spanned: zone.spanned(),
            present: zone.present,
            managed: zone.managed,
            free: zone.free,
            pcp: zone.pcp_pages(),
            min: zone.watermarks.min,
            low: zone.watermarks.low,
            high: zone.watermarks.high,
            nr_free: zone.free_area.map(|area| area.nr_free),
            protection: zone.lowmem_reserve,
        }
    }

    /// The zone's name (`DMA`, `DMA32`, `Normal`), or `?` for a number that names none.
    pub fn zone_name(&self) -> &'static str {
        zone_name(self.zone)
    }
}

/// Payload of [`ReportKind::BootTimes`] (32 bytes): TSC cycles of each boot phase.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct BootTimes {
    /// From the start of memory setup to memblock ready (e820 in, reservations made).
    pub memblock_cycles: u64,
    /// From memblock ready to the memory map ready (page tables and vmemmap).
    pub memmap_cycles: u64,
    /// From the memory map ready to the buddy allocator ready (hand-off, watermarks).
    pub buddy_cycles: u64,
    /// Bytes of RAM in memblock, to scale the figures.
    pub ram_bytes: u64,
}

const _: () = assert!(core::mem::size_of::<BootTimes>() == 32);

/// Header of a [`ReportKind::Test`] payload (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TestHeader {
    /// 1 if the check passed.
    pub passed: u32,
    /// Bytes of name following the header.
    pub name_len: u32,
    /// Bytes of detail following the name.
    pub detail_len: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<TestHeader>() == 16);

/// Payload of [`ReportKind::Stress`] (56 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct StressReport {
    /// The seed.
    pub seed: u64,
    /// Operations run.
    pub ops: u64,
    /// Successful allocations.
    pub allocations: u64,
    /// Frees.
    pub frees: u64,
    /// Allocations refused (watermark or no block).
    pub failed_allocations: u64,
    /// Most pages allocated at once.
    pub max_live_pages: u64,
    /// 1 if the free lists were exactly the boot state again at the end (a boolean in
    /// JSON).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "json::boolean"),
        schemars(with = "bool")
    )]
    pub restored: u64,
}

const _: () = assert!(core::mem::size_of::<StressReport>() == 56);

/// Payload of [`ReportKind::Process`] (72 bytes): how a user process ended and what its
/// address space cost.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct ProcessReport {
    /// Process ID.
    pub pid: u32,
    /// Its parent's, or 0.
    pub ppid: u32,
    /// The exit code it passed to `exit`/`exit_group` (0 when killed).
    pub exit_code: i32,
    /// The signal that killed it (11 SIGSEGV, 4 SIGILL, …), or 0.
    pub signal: u32,
    /// How system calls entered the kernel: a [`crate::syscall::SyscallEntry`] value.
    pub syscall_entry: u32,
    /// Faults served with a transparent huge page (counted in `page_faults` too).
    pub thp_faults: u32,
    /// System calls made.
    pub syscalls: u64,
    /// Page faults served.
    pub page_faults: u64,
    /// Pages the kernel had zeroed for it.
    pub pages_zeroed: u64,
    /// New pages it got that were known to hold zeros (`PG_ZERO`): no zeroing needed.
    pub pages_known_zero: u64,
    /// Write faults on a shared page that copied it (copy-on-write).
    pub cow_copies: u64,
    /// Write faults on a page it was the last sharer of, which it kept.
    pub cow_reused: u64,
    /// The most pages it had mapped at once (`hiwater_rss`).
    pub hiwater_rss_pages: u64,
    /// VMAs at exit.
    pub map_count: u64,
    /// For a kill: the faulting address (CR2 for a page fault), else 0.
    pub fault_address: u64,
    /// For a kill: the instruction pointer.
    pub fault_ip: u64,
    /// Times it gave up the CPU because it could not go on: waiting in `wait4`
    /// (`/proc/PID/status`'s `voluntary_ctxt_switches`).
    pub voluntary_switches: u64,
    /// Times another process got the CPU while it could have gone on: its time slice ran
    /// out or it called `sched_yield` (`nonvoluntary_ctxt_switches`).
    pub nonvoluntary_switches: u64,
}

const _: () = assert!(core::mem::size_of::<ProcessReport>() == 120);

/// Payload of [`ReportKind::OomKill`] (96 bytes): the victim the OOM killer chose and
/// the figures of Linux's kill line, as it saw them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct OomKillReport {
    /// The victim's PID.
    pub pid: u32,
    /// The PID of the process whose fault found no memory.
    pub trigger_pid: u32,
    /// The victim's `oom_score_adj`.
    pub oom_score_adj: i32,
    /// The page-allocation order that failed.
    pub order: u32,
    /// The victim's badness (`crate::process::oom_badness`).
    pub points: i64,
    /// The pages badness is scaled by: RAM the page allocator manages, plus swap slots.
    pub totalpages: u64,
    /// The victim's `total_vm`, KiB.
    pub total_vm_kib: u64,
    /// Its anonymous RSS, KiB.
    pub anon_rss_kib: u64,
    /// Its file-backed RSS, KiB (0: no page cache).
    pub file_rss_kib: u64,
    /// Its shared-memory RSS, KiB (0: anonymous shared pages count as anonymous).
    pub shmem_rss_kib: u64,
    /// Its page tables, KiB.
    pub pgtables_kib: u64,
    /// Its swap entries.
    pub swapents: u64,
    /// Its name, zero-padded (the host reports it as text).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub comm: [u8; crate::process::TASK_COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<OomKillReport>() == 96);

/// Bytes of a cache name in a [`SlabInfoReport`].
pub const SLAB_NAME_LEN: usize = 24;

/// Payload of [`ReportKind::SlabInfo`] (88 bytes): `/proc/slabinfo`'s columns and the
/// bytes each slab wastes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct SlabInfoReport {
    /// The cache's name, NUL-padded (a string in JSON).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "json::nul_padded"),
        schemars(with = "String")
    )]
    pub name: [u8; SLAB_NAME_LEN],
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

const _: () = assert!(core::mem::size_of::<SlabInfoReport>() == 88);

impl SlabInfoReport {
    /// The line of the cache `cache` named `name`: the one mapping from a cache to what
    /// the host prints, used by the guest's report and by the host's reading of guest
    /// memory alike. The arithmetic saturates: a hostile cache may hold any values.
    pub fn of(cache: &SlabCache, name: &[u8]) -> Self {
        let mut padded = [0; SLAB_NAME_LEN];
        let len = name.len().min(SLAB_NAME_LEN);
        padded[..len].copy_from_slice(&name[..len]);
        let slab_bytes = 4096u64.checked_shl(cache.order).unwrap_or(0);
        Self {
            name: padded,
            active_objs: cache.in_use,
            num_objs: cache.slabs.saturating_mul(cache.objects),
            objsize: cache.object_size,
            objperslab: cache.objects,
            pagesperslab: 1u64.checked_shl(cache.order).unwrap_or(0),
            active_slabs: cache.slabs.saturating_sub(cache.empty),
            num_slabs: cache.slabs,
            waste_per_slab: slab_bytes.saturating_sub(cache.objects.saturating_mul(cache.stride)),
        }
    }

    /// The name, up to its first NUL.
    pub fn name(&self) -> &str {
        nul_padded_str(&self.name)
    }
}

/// `bytes` up to the first NUL, as UTF-8 (up to the first invalid byte).
fn nul_padded_str(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match core::str::from_utf8(&bytes[..end]) {
        Ok(text) => text,
        Err(err) => core::str::from_utf8(&bytes[..err.valid_up_to()]).unwrap_or_default(),
    }
}

/// Payload of [`ReportKind::PageTables`] (56 bytes): what the kernel's tree holds.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct PageTablesReport {
    /// Tables per level: PML4, PDPT, PD, PT.
    pub tables: [u64; 4],
    /// Leaves per page size: 4 KiB, 2 MiB, 1 GiB.
    pub pages: [u64; 3],
}

const _: () = assert!(core::mem::size_of::<PageTablesReport>() == 56);

/// The physical address of an unmapped virtual address in a [`GuestTranslation`].
pub const UNMAPPED: u64 = u64::MAX;

/// One address of a [`ReportKind::Translations`] payload (24 bytes), as the guest's own
/// walker translated it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct GuestTranslation {
    /// The virtual address.
    pub virt: u64,
    /// Its physical address, or [`UNMAPPED`] (null in JSON).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "json::unmapped_as_null"),
        schemars(with = "Option<u64>")
    )]
    pub phys: u64,
    /// The size of the page it lies in (0 if unmapped).
    pub page_size: u64,
}

impl GuestTranslation {
    /// The physical address, if mapped.
    pub fn phys(&self) -> Option<u64> {
        (self.phys != UNMAPPED).then_some(self.phys)
    }
}

/// Payload of [`ReportKind::Oops`] (32 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct OopsReport {
    /// An [`OopsCause`] (its name in JSON).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "json::oops_cause"),
        schemars(with = "String")
    )]
    pub cause: u32,
    /// Zero.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub reserved: u32,
    /// The faulting address (CR2).
    pub address: u64,
    /// The instruction that faulted.
    pub rip: u64,
    /// The page-fault error code.
    pub error_code: u64,
}

const _: () = assert!(core::mem::size_of::<OopsReport>() == 32);

impl OopsReport {
    /// The cause's name, or `unknown` for a number that names none.
    pub fn cause_name(&self) -> &'static str {
        oops_cause_name(self.cause)
    }
}

/// Why a kernel page fault could not be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum OopsCause {
    /// An access to the first page: a null pointer.
    NullPointer = 1,
    /// A kernel stack ran into its guard page.
    StackOverflow = 2,
    /// A write to a read-only page (kernel text or rodata).
    WriteToReadOnly = 3,
    /// An instruction fetch from a no-execute page.
    ExecuteNoExecute = 4,
    /// An access to an unmapped address in the vmalloc area.
    UnmappedVmalloc = 5,
    /// Any other fault.
    Unhandled = 6,
}

impl OopsCause {
    /// The cause with this number.
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::NullPointer,
            2 => Self::StackOverflow,
            3 => Self::WriteToReadOnly,
            4 => Self::ExecuteNoExecute,
            5 => Self::UnmappedVmalloc,
            6 => Self::Unhandled,
            _ => return None,
        })
    }

    /// A short name, as reports show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::NullPointer => "null-pointer",
            Self::StackOverflow => "stack-overflow",
            Self::WriteToReadOnly => "write-to-read-only",
            Self::ExecuteNoExecute => "execute-no-execute",
            Self::UnmappedVmalloc => "unmapped-vmalloc",
            Self::Unhandled => "unhandled",
        }
    }

    /// Linux's words for it, for the console.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NullPointer => "kernel NULL pointer dereference",
            Self::StackOverflow => "kernel stack overflow (guard page hit)",
            Self::WriteToReadOnly => "write to read-only memory",
            Self::ExecuteNoExecute => "kernel tried to execute NX-protected page",
            Self::UnmappedVmalloc => "unable to handle page fault in the vmalloc area",
            Self::Unhandled => "unable to handle page fault",
        }
    }
}

/// Why a command-line option was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CmdlineErrorKind {
    /// The option's name is not one the kernel knows.
    UnknownOption = 1,
    /// The option is known but its value is not valid.
    BadValue = 2,
}

impl CmdlineErrorKind {
    /// The kind with this number, if it is one.
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::UnknownOption),
            2 => Some(Self::BadValue),
            _ => None,
        }
    }

    /// `unknown-option` or `bad-value`.
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownOption => "unknown-option",
            Self::BadValue => "bad-value",
        }
    }
}

/// The general-purpose registers in the order the guest's exception entry saves them.
pub const GPR_NAMES: [&str; 15] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

/// Payload of [`ReportKind::Exception`] (192 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct ExceptionReport {
    /// Exception vector (0–31).
    pub vector: u64,
    /// Error code pushed by the CPU, or zero for vectors without one.
    pub error_code: u64,
    /// Instruction pointer at the exception.
    pub rip: u64,
    /// Code segment at the exception.
    pub cs: u64,
    /// Flags at the exception.
    pub rflags: u64,
    /// Stack pointer at the exception.
    pub rsp: u64,
    /// Stack segment at the exception.
    pub ss: u64,
    /// CR2 (the faulting address, for page faults).
    pub cr2: u64,
    /// General-purpose registers, in [`GPR_NAMES`] order (by name in JSON).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "json::registers"),
        schemars(with = "std::collections::BTreeMap<String, u64>")
    )]
    pub gprs: [u64; 15],
    /// Zero; keeps the size a multiple of 16.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub reserved: u64,
}

const _: () = assert!(core::mem::size_of::<ExceptionReport>() == 192);

/// Linux's mnemonic and name for an exception vector (`arch/x86/include/asm/trapnr.h`).
pub fn exception_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        9 => ("#OLD_MF", "coprocessor segment overrun"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack segment fault"),
        13 => ("#GP", "general protection fault"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection fault"),
        28 => ("#HV", "hypervisor injection"),
        29 => ("#VC", "VMM communication"),
        30 => ("#SX", "security exception"),
        _ => ("#??", "reserved vector"),
    }
}

/// The name of zone number `zone` as the guest reports it, `?` if there is none.
fn zone_name(zone: u32) -> &'static str {
    ZoneType::from_u32(zone).map_or("?", ZoneType::name)
}

/// The name of oops cause `cause` as the guest reports it.
fn oops_cause_name(cause: u32) -> &'static str {
    OopsCause::from_u32(cause).map_or("unknown", OopsCause::name)
}

/// Serialisers for the JSON forms of the payloads (host only).
#[cfg(feature = "serde")]
mod json {
    use super::{nul_padded_str, GPR_NAMES, SLAB_NAME_LEN, UNMAPPED};
    use serde::ser::{SerializeMap, Serializer};

    pub fn zone_name<S: Serializer>(zone: &u32, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(super::zone_name(*zone))
    }

    pub fn oops_cause<S: Serializer>(cause: &u32, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(super::oops_cause_name(*cause))
    }

    pub fn boolean<S: Serializer>(value: &u64, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_bool(*value == 1)
    }

    pub fn nul_padded<S: Serializer>(
        name: &[u8; SLAB_NAME_LEN],
        out: S,
    ) -> Result<S::Ok, S::Error> {
        out.serialize_str(nul_padded_str(name))
    }

    pub fn unmapped_as_null<S: Serializer>(phys: &u64, out: S) -> Result<S::Ok, S::Error> {
        match *phys {
            UNMAPPED => out.serialize_none(),
            phys => out.serialize_some(&phys),
        }
    }

    pub fn registers<S: Serializer>(gprs: &[u64; 15], out: S) -> Result<S::Ok, S::Error> {
        let mut map = out.serialize_map(Some(gprs.len()))?;
        for (name, value) in GPR_NAMES.iter().zip(gprs) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    #[test]
    fn request_decodes_little_endian_fields() {
        let mut bytes = [0u8; 24];
        bytes[0] = 2;
        bytes[4] = 1;
        bytes[8..16].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        bytes[16..24].copy_from_slice(&40u64.to_le_bytes());
        let request = Request::read_from_bytes(&bytes).expect("24 bytes");
        assert_eq!(request, Request { nr: REPORT, kind: 1, arg: 0x1122_3344_5566_7788, len: 40 });
    }

    #[test]
    fn exception_report_decodes_every_field_in_order() {
        let mut bytes = [0u8; 192];
        for (index, chunk) in bytes.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&(index as u64 + 100).to_le_bytes());
        }
        let report = ExceptionReport::read_from_bytes(&bytes).expect("192 bytes");
        assert_eq!((report.vector, report.cr2), (100, 107));
        assert_eq!(report.gprs[0], 108);
        assert_eq!(report.gprs[14], 122);
        assert_eq!(report.reserved, 123);
    }

    #[test]
    fn every_report_kind_round_trips_through_its_number() {
        for (number, kind) in (1u32..).zip(ReportKind::ALL) {
            assert_eq!(kind as u32, number, "numbered in order, without gaps");
            assert_eq!(ReportKind::from_u32(number), Some(kind));
        }
        assert_eq!(ReportKind::from_u32(0), None);
        assert_eq!(ReportKind::from_u32(ReportKind::OomKill as u32 + 1), None);
    }

    #[test]
    fn slab_lines_saturate_on_hostile_caches() {
        let sane = SlabCache {
            order: 1,
            objects: 30,
            stride: 256,
            slabs: 4,
            empty: 1,
            ..Default::default()
        };
        let line = SlabInfoReport::of(&sane, b"kmalloc-256");
        assert_eq!(line.name(), "kmalloc-256");
        assert_eq!((line.num_objs, line.pagesperslab, line.active_slabs), (120, 2, 3));
        assert_eq!(line.waste_per_slab, 8192 - 30 * 256);
        let hostile = SlabCache {
            order: 200,
            objects: u64::MAX,
            stride: u64::MAX,
            slabs: u64::MAX,
            empty: u64::MAX,
            ..Default::default()
        };
        let line = SlabInfoReport::of(&hostile, &[b'x'; 40]);
        assert_eq!((line.pagesperslab, line.waste_per_slab, line.active_slabs), (0, 0, 0));
        assert_eq!(line.name().len(), SLAB_NAME_LEN);
        assert_eq!(SlabInfoReport::of(&sane, b"ab\xffcd").name(), "ab");
    }
}
