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

/// A hypercall request (24 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Request {
    /// [`CHECKPOINT`] or [`REPORT`].
    pub nr: u32,
    /// For `REPORT`, the [`ReportKind`]; zero otherwise.
    pub kind: u32,
    /// For `CHECKPOINT`, the tag; for `REPORT`, the payload's guest-physical address.
    pub arg: u64,
    /// For `REPORT`, the payload length in bytes; zero otherwise.
    pub len: u64,
}

const _: () = assert!(core::mem::size_of::<Request>() == Request::SIZE);

impl Request {
    /// Size of the encoded request.
    pub const SIZE: usize = 24;

    /// Decodes a request from its little-endian encoding.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| (u64::from(u32_at(at + 4)) << 32) | u64::from(u32_at(at));
        Self { nr: u32_at(0), kind: u32_at(4), arg: u64_at(8), len: u64_at(16) }
    }
}

/// Hypercall number: the guest reached checkpoint `arg`.
pub const CHECKPOINT: u32 = 1;
/// Hypercall number: a report of `kind`, `len` bytes at guest-physical `arg`.
pub const REPORT: u32 = 2;

/// Largest report payload the VMM accepts.
pub const REPORT_MAX_LEN: u64 = 64 * 1024;

/// Checkpoint tags the guest uses.
pub mod checkpoint {
    /// The kernel finished booting and is about to run its workload.
    pub const BOOTED: u64 = 1;
    /// Check the last [`super::ReportKind::Translations`] report against KVM's own
    /// translation (`KVM_TRANSLATE`) of every address in it.
    pub const CHECK_TRANSLATIONS: u64 = 2;

    /// A checkpoint's name.
    pub fn name(tag: u64) -> &'static str {
        match tag {
            BOOTED => "booted",
            CHECK_TRANSLATIONS => "check-translations",
            _ => "guest-defined",
        }
    }
}

/// What a report's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReportKind {
    /// The sanitised e820 map: a sequence of [`crate::boot::E820Entry`].
    E820 = 1,
    /// A kernel panic: a [`PanicHeader`], then the file name, then the message (UTF-8).
    Panic = 2,
    /// An unhandled CPU exception: an [`ExceptionReport`].
    Exception = 3,
    /// A rejected command-line option: a `u32` [`CmdlineErrorKind`], then the option (UTF-8).
    CmdlineError = 4,
    /// memblock at the hand-off to the buddy allocator: a [`MemblockHeader`], then
    /// `memory` and `reserved` regions as (base, size) pairs of `u64`.
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
    /// The guest's own translations: (virtual, physical or [`UNMAPPED`], page size in
    /// bytes or 0) triples of `u64`, for the VMM to check against KVM's.
    Translations = 11,
    /// A kernel page fault it cannot handle, with its cause: an [`OopsReport`].
    Oops = 12,
    /// The kernel's page tables: tables per level (PML4, PDPT, PD, PT), then pages mapped
    /// per size (4 KiB, 2 MiB, 1 GiB): seven `u64`.
    PageTables = 13,
    /// One slab cache's `/proc/slabinfo` line and its waste: a [`SlabInfoReport`].
    SlabInfo = 14,
}

/// The physical address of an unmapped virtual address in a [`ReportKind::Translations`].
pub const UNMAPPED: u64 = u64::MAX;

impl ReportKind {
    /// The kind with this number, if it is one.
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::E820,
            2 => Self::Panic,
            3 => Self::Exception,
            4 => Self::CmdlineError,
            5 => Self::Memblock,
            6 => Self::Zone,
            7 => Self::BootTimes,
            8 => Self::Test,
            9 => Self::Stress,
            10 => Self::BootError,
            11 => Self::Translations,
            12 => Self::Oops,
            13 => Self::PageTables,
            14 => Self::SlabInfo,
            _ => return None,
        })
    }
}

/// Header of a [`ReportKind::Panic`] payload (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MemblockHeader {
    /// Regions of `memory` that follow.
    pub memory: u32,
    /// Regions of `reserved` that follow them.
    pub reserved: u32,
}

/// Payload of [`ReportKind::Zone`] (168 bytes): `/proc/zoneinfo` and `/proc/buddyinfo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ZoneReport {
    /// [`crate::page::ZoneType`] number.
    pub zone: u32,
    /// Zero.
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
    /// Free blocks per order.
    pub nr_free: [u64; crate::page::NR_ORDERS],
}

const _: () = assert!(core::mem::size_of::<ZoneReport>() == ZoneReport::SIZE);

impl ZoneReport {
    /// Size of the encoded report.
    pub const SIZE: usize = 168;

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
        }
    }
}

/// Payload of [`ReportKind::BootTimes`] (32 bytes): TSC cycles of each boot phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BootTimes {
    /// From the start of memory setup to memblock ready (e820 in, reservations made).
    pub memblock_cycles: u64,
    /// From memblock ready to the memory map ready (direct map and vmemmap populated).
    pub memmap_cycles: u64,
    /// From the memory map ready to the buddy allocator ready (hand-off, watermarks).
    pub buddy_cycles: u64,
    /// Bytes of RAM in memblock, to scale the figures.
    pub ram_bytes: u64,
}

const _: () = assert!(core::mem::size_of::<BootTimes>() == 32);

/// Header of a [`ReportKind::Test`] payload (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// 1 if the free lists were exactly the boot state again at the end.
    pub restored: u64,
}

const _: () = assert!(core::mem::size_of::<StressReport>() == 56);

/// Payload of [`ReportKind::SlabInfo`] (88 bytes): `/proc/slabinfo`'s columns and the
/// bytes each slab wastes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SlabInfoReport {
    /// The cache's name, NUL-padded.
    pub name: [u8; 24],
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

/// Payload of [`ReportKind::Oops`] (32 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct OopsReport {
    /// An [`OopsCause`].
    pub cause: u32,
    /// Zero.
    pub reserved: u32,
    /// The faulting address (CR2).
    pub address: u64,
    /// The instruction that faulted.
    pub rip: u64,
    /// The page-fault error code.
    pub error_code: u64,
}

const _: () = assert!(core::mem::size_of::<OopsReport>() == 32);

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
}

/// The general-purpose registers in the order the guest's exception entry saves them.
pub const GPR_NAMES: [&str; 15] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

/// Payload of [`ReportKind::Exception`] (192 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// General-purpose registers, in [`GPR_NAMES`] order.
    pub gprs: [u64; 15],
    /// Zero; keeps the size a multiple of 16.
    pub reserved: u64,
}

const _: () = assert!(core::mem::size_of::<ExceptionReport>() == ExceptionReport::SIZE);

impl ExceptionReport {
    /// Size of the encoded report.
    pub const SIZE: usize = 192;

    /// Decodes a report from its little-endian encoding.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        let mut words = [0u64; Self::SIZE / 8];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut raw = [0; 8];
            raw.copy_from_slice(chunk);
            *word = u64::from_le_bytes(raw);
        }
        let mut gprs = [0; 15];
        gprs.copy_from_slice(&words[8..23]);
        Self {
            vector: words[0],
            error_code: words[1],
            rip: words[2],
            cs: words[3],
            rflags: words[4],
            rsp: words[5],
            ss: words[6],
            cr2: words[7],
            gprs,
            reserved: words[23],
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_decodes_little_endian_fields() {
        let mut bytes = [0u8; Request::SIZE];
        bytes[0] = 2;
        bytes[4] = 1;
        bytes[8..16].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        bytes[16..24].copy_from_slice(&40u64.to_le_bytes());
        let request = Request::from_bytes(&bytes);
        assert_eq!(request, Request { nr: REPORT, kind: 1, arg: 0x1122_3344_5566_7788, len: 40 });
    }

    #[test]
    fn exception_report_decodes_every_field_in_order() {
        let mut bytes = [0u8; ExceptionReport::SIZE];
        for (index, chunk) in bytes.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&(index as u64 + 100).to_le_bytes());
        }
        let report = ExceptionReport::from_bytes(&bytes);
        assert_eq!((report.vector, report.cr2), (100, 107));
        assert_eq!(report.gprs[0], 108);
        assert_eq!(report.gprs[14], 122);
        assert_eq!(report.reserved, 123);
    }

    #[test]
    fn report_kinds_round_trip() {
        for kind in
            [ReportKind::E820, ReportKind::Panic, ReportKind::Exception, ReportKind::CmdlineError]
        {
            assert_eq!(ReportKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(ReportKind::from_u32(0), None);
    }
}
