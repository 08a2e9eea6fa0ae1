//! What the host reads of a process's address space: VMAs and the B+tree that orders them,
//! with Linux's `vm_flags` and x86_64 user layout.
//!
//! ```text
//! VmaTree (guest::vma)               arenas in kernel memory
//!   root, height ─────────────────▶ VmaNode (512 bytes), VMA_FANOUT entries:
//!                                     branch: ends[i] = greatest end below child slots[i]
//!                                     leaf:   ends[i] = end of the VMA at vmas[slots[i]]
//!                                   Vma (32 bytes): [start, end), vm_flags, kind
//! ```
//!
//! Ranges are half-open, `[start, end)`, page aligned. Every field is an integer, so any
//! bit pattern is a value: the host validates indices against the arenas' lengths and
//! bounds its walk by the tree's height, never trusting either.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// End (exclusive) of user addresses: Linux x86_64's `TASK_SIZE_MAX`, the canonical
/// lower half minus its last page.
pub const TASK_SIZE: u64 = 0x0000_7fff_ffff_f000;
/// Where a program image's lowest segment may start (Linux's `mmap_min_addr` is 64 KiB;
/// static x86_64 executables link at 4 MiB).
pub const USER_IMAGE_BASE: u64 = 0x40_0000;
/// Pages kept free below a stack for it to grow into (Linux's `stack_guard_gap`).
pub const STACK_GUARD_GAP_PAGES: u64 = 256;
/// VMAs a process may have (Linux's `sysctl_max_map_count` default).
pub const MAX_MAP_COUNT: u32 = 65_530;

/// Mapping may be read (`VM_READ`).
pub const VM_READ: u64 = 0x1;
/// Mapping may be written (`VM_WRITE`).
pub const VM_WRITE: u64 = 0x2;
/// Mapping may be executed (`VM_EXEC`).
pub const VM_EXEC: u64 = 0x4;
/// Mapping is shared between processes (`VM_SHARED`).
pub const VM_SHARED: u64 = 0x8;
/// `mprotect` may add read (`VM_MAYREAD`).
pub const VM_MAYREAD: u64 = 0x10;
/// `mprotect` may add write (`VM_MAYWRITE`).
pub const VM_MAYWRITE: u64 = 0x20;
/// `mprotect` may add execute (`VM_MAYEXEC`).
pub const VM_MAYEXEC: u64 = 0x40;
/// The stack: grows down into the gap below it (`VM_GROWSDOWN`).
pub const VM_GROWSDOWN: u64 = 0x100;
/// Never merged with neighbours or made huge (Linux uses `VM_NOHUGEPAGE` for the latter).
pub const VM_NOHUGEPAGE: u64 = 0x4000_0000;
/// The access bits a fault checks.
pub const VM_ACCESS: u64 = VM_READ | VM_WRITE | VM_EXEC;

/// What a VMA maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum VmaKind {
    /// Anonymous memory: `mmap(MAP_ANONYMOUS)` and the heap.
    Anonymous = 0,
    /// A segment of the program image.
    Image = 1,
    /// The main stack.
    Stack = 2,
    /// The heap (`brk`).
    Heap = 3,
}

impl VmaKind {
    /// The kind a [`Vma::kind`] value names, if any.
    pub fn from_raw(raw: u32) -> Option<Self> {
        [Self::Anonymous, Self::Image, Self::Stack, Self::Heap]
            .into_iter()
            .find(|k| *k as u32 == raw)
    }

    /// The path column of `/proc/PID/maps` for this kind.
    pub fn maps_name(self) -> &'static str {
        match self {
            Self::Anonymous => "",
            Self::Image => "[image]",
            Self::Stack => "[stack]",
            Self::Heap => "[heap]",
        }
    }
}

/// A virtual memory area (Linux's `vm_area_struct`, the part that describes the range).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct Vma {
    /// First address (page aligned).
    pub start: u64,
    /// End, exclusive (page aligned, above `start`).
    pub end: u64,
    /// `VM_*` flags.
    pub flags: u64,
    /// A [`VmaKind`] value.
    pub kind: u32,
    /// Padding.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Vma>() == 32);

impl Vma {
    /// An area of `kind` over `[start, end)`.
    pub const fn new(start: u64, end: u64, flags: u64, kind: VmaKind) -> Self {
        Self { start, end, flags, kind: kind as u32, reserved: 0 }
    }

    /// Bytes the area spans.
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the area spans nothing (never true of a mapped VMA).
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `addr` lies inside.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The permission columns of `/proc/PID/maps`: `rwxp` or `rwxs`.
    pub fn perms(&self) -> [u8; 4] {
        let bit = |flag, c| if self.flags & flag != 0 { c } else { b'-' };
        [
            bit(VM_READ, b'r'),
            bit(VM_WRITE, b'w'),
            bit(VM_EXEC, b'x'),
            if self.flags & VM_SHARED != 0 { b's' } else { b'p' },
        ]
    }
}

/// Entries per [`VmaNode`]. Linux's maple tree has 16 slots in a range node; 32 make 10 000
/// VMAs a tree of three levels instead of four (docs/PERFORMANCE.md).
pub const VMA_FANOUT: usize = 32;
/// No node or VMA: an empty tree's root.
pub const NO_INDEX: u32 = u32::MAX;
/// A tree is never taller than this: with every node but the root at least half full
/// ([`VMA_FANOUT`] / 2 entries), a tree of height h holds at least 2 × 16^(h-1) VMAs, so
/// [`MAX_MAP_COUNT`] of them make at most four levels; eight is a margin.
pub const VMA_TREE_MAX_HEIGHT: u32 = 8;

/// A node of the VMA tree: a B+tree keyed by each VMA's end, so that `find_vma(addr)`
/// ("the first VMA with end > addr") is a descent that counts keys ≤ addr per level.
///
/// Eight cache lines, aligned: the keys fill the first four and the slots the next two,
/// so a lookup never reads the header in the seventh. The eighth is padding, so that a
/// node's offset in its arena is its index shifted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(64))]
pub struct VmaNode {
    /// Sorted keys; entries past `count` hold `u64::MAX`.
    pub ends: [u64; VMA_FANOUT],
    /// Children or VMAs; entries past `count` hold [`NO_INDEX`].
    pub slots: [u32; VMA_FANOUT],
    /// Entries in use (1 to [`VMA_FANOUT`]; the root of an empty tree has 0).
    pub count: u32,
    /// 1 for a leaf (slots are VMA indices), 0 for a branch (slots are node indices).
    pub leaf: u32,
    /// Zero: the rest of the seventh cache line and the eighth.
    pub reserved: [u32; 30],
}

const _: () = assert!(core::mem::size_of::<VmaNode>() == 512);

impl VmaNode {
    /// An empty node.
    pub const fn empty(leaf: bool) -> Self {
        Self {
            ends: [u64::MAX; VMA_FANOUT],
            slots: [NO_INDEX; VMA_FANOUT],
            count: 0,
            leaf: leaf as u32,
            reserved: [0; 30],
        }
    }
}

/// Task slots the kernel publishes: as many as processes may exist at once.
pub const MAX_TASKS: usize = 128;
/// Bytes of a task's name (Linux's `TASK_COMM_LEN`), zero-padded.
pub const TASK_COMM_LEN: usize = 16;

/// [`Task::state`]: an unused slot.
pub const TASK_FREE: u32 = 0;
/// [`Task::state`]: running or ready to run (crash's `RU`).
pub const TASK_RUNNING: u32 = 1;
/// [`Task::state`]: asleep in `wait4` (crash's `IN`, interruptible).
pub const TASK_INTERRUPTIBLE: u32 = 2;
/// [`Task::state`]: ended, not yet reaped by its parent (crash's `ZO`).
pub const TASK_ZOMBIE: u32 = 3;

/// The two letters crash's `ps` shows for a [`Task::state`].
pub fn task_state_name(state: u32) -> &'static str {
    match state {
        TASK_RUNNING => "RU",
        TASK_INTERRUPTIBLE => "IN",
        TASK_ZOMBIE => "ZO",
        TASK_FREE => "--",
        _ => "??",
    }
}

/// The lowest `oom_score_adj`: the OOM killer never picks the process.
pub const OOM_SCORE_ADJ_MIN: i32 = -1000;
/// The highest `oom_score_adj`: the process goes first.
pub const OOM_SCORE_ADJ_MAX: i32 = 1000;

/// The OOM killer's badness of a process (Linux's `oom_badness`): the pages it would
/// free, resident, in swap and in page tables, plus `oom_score_adj` thousandths of
/// `totalpages` (RAM and swap). `None` for a process it never picks.
pub fn oom_badness(mm: &MmStruct, oom_score_adj: i32, totalpages: u64) -> Option<i64> {
    if oom_score_adj <= OOM_SCORE_ADJ_MIN {
        return None;
    }
    let pages = mm.rss_anon.saturating_add(mm.swapents).saturating_add(mm.pgtables);
    let pages = i64::try_from(pages).unwrap_or(i64::MAX);
    let per_mille = i64::try_from(totalpages / 1000).unwrap_or(i64::MAX);
    Some(pages.saturating_add(i64::from(oom_score_adj).saturating_mul(per_mille)))
}

/// A process as the kernel publishes it for the host (the part of Linux's `task_struct`
/// that `ps` shows, and its `mm_struct`). The kernel keeps [`MAX_TASKS`] of them in one
/// array that `vmcoreinfo` points to, and rewrites a slot when its process is created,
/// ends or is reaped, and every process's at each checkpoint a process asks for.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Task {
    /// Process ID (0 in a free slot).
    pub pid: u32,
    /// Parent's PID, or 0.
    pub ppid: u32,
    /// [`TASK_RUNNING`], [`TASK_INTERRUPTIBLE`], [`TASK_ZOMBIE`] or [`TASK_FREE`].
    pub state: u32,
    /// For a zombie, the status `wait4` will report.
    pub exit_status: u32,
    /// Linux's `oom_score_adj` ([`OOM_SCORE_ADJ_MIN`]..=[`OOM_SCORE_ADJ_MAX`]), added to
    /// the OOM killer's badness in thousandths of the guest's pages.
    pub oom_score_adj: i32,
    /// Zero (keeps `comm` 8-byte aligned).
    pub _pad: u32,
    /// The program's name, zero-padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// Its memory (all zero once it has ended).
    pub mm: MmStruct,
}

/// A process's address space (Linux's `mm_struct`, the part the host reads). Pointers are
/// kernel virtual addresses; counts are the kernel's, to be checked against the tables.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct MmStruct {
    /// Physical address of the PML4 (CR3 while it runs); 0 when it has none.
    pub pgd: u64,
    /// The VMA tree's node arena: [`VmaNode`]s.
    pub vma_nodes: u64,
    /// Nodes in the arena (in the tree or free).
    pub nr_vma_nodes: u64,
    /// The VMA tree's VMA arena: [`Vma`]s, indexed by the leaves' slots.
    pub vmas: u64,
    /// VMAs in the arena (in the tree or free).
    pub nr_vmas: u64,
    /// The root node's index, or [`NO_INDEX`].
    pub vma_root: u32,
    /// Levels of the tree (1: the root is a leaf).
    pub vma_height: u32,
    /// VMAs in the tree (`map_count`).
    pub map_count: u64,
    /// Pages the VMAs span (`total_vm`).
    pub total_vm: u64,
    /// Pages mapped: its anonymous RSS (`MM_ANONPAGES`).
    pub rss_anon: u64,
    /// The most pages it had mapped at once (`hiwater_rss`).
    pub hiwater_rss: u64,
    /// The most pages its VMAs spanned at once (`hiwater_vm`).
    pub hiwater_vm: u64,
    /// Page tables below the PML4: Linux's `pgtables_bytes` in pages (`VmPTE`).
    pub pgtables: u64,
    /// Swap entries in its tables (`MM_SWAPENTS`: `VmSwap`).
    pub swapents: u64,
    /// Start of the heap.
    pub start_brk: u64,
    /// The break.
    pub brk: u64,
    /// Top of the main stack.
    pub start_stack: u64,
}

const _: () = assert!(core::mem::size_of::<MmStruct>() == 128);
const _: () = assert!(core::mem::size_of::<Task>() == 168);
