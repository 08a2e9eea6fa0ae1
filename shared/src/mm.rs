//! The allocator structures the host reads in guest memory: zones with their free lists
//! and per-CPU lists, memblock regions and the host-visible part of a slab cache.
//!
//! ```text
//! Zone (6 424 bytes)          SlabCache (120 bytes, first field of the guest's kmem_cache)
//!   kind, spans, counters       name, sizes, slab order and objects per slab
//!   watermarks                  current slab: pfn, freelist, objects in use
//!   free_area[11]: head, nr     partial list head, empty / total slabs, objects in use
//!   pcp[4] (orders 0-3): count, pfns[192]
//! ```
//!
//! Every field is an integer, so any bit pattern is a value: the host copies these out of
//! untrusted guest memory and validates what they say, never what they are. The guest's
//! allocators (`guest::buddy`, `guest::memblock`, `guest::slab`) keep their state in these
//! types, so what the host reads is the allocators' own state, not a copy made for it.

use crate::page::{ZoneType, NO_PFN, NR_ORDERS, NR_ZONES};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Capacity of a per-CPU list, in blocks.
pub const PCP_CAPACITY: usize = 192;
/// Pages moved between a per-CPU list and the buddy lists at a time (`pcp->batch`).
pub const PCP_BATCH: usize = 31;
/// A per-CPU list holding more than this many pages is drained by one batch (`pcp->high`).
pub const PCP_HIGH: usize = 6 * PCP_BATCH;
/// Orders below this have a per-CPU list: 0 to 3, up to Linux's `PAGE_ALLOC_COSTLY_ORDER`.
pub const PCP_ORDERS: u32 = 4;
/// Per-CPU lists per zone, one per order below [`PCP_ORDERS`].
pub const NR_PCP_LISTS: usize = PCP_ORDERS as usize;

/// One order's free list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FreeArea {
    /// First block on the list, or [`NO_PFN`].
    pub head: u64,
    /// Blocks on the list.
    pub nr_free: u64,
}

/// Zone watermarks, in pages.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Watermarks {
    /// Below this only emergency allocations succeed.
    pub min: u64,
    /// Background reclaim would start here.
    pub low: u64,
    /// Reclaim would stop here.
    pub high: u64,
}

/// A per-CPU list of blocks of one order (one of Linux's `per_cpu_pages` lists), used as a
/// stack.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Pcp {
    /// Blocks on the list.
    pub count: u64,
    /// The first frames of the cached blocks, oldest first; `count` of them are valid.
    pub pfns: [u64; PCP_CAPACITY],
}

impl Pcp {
    /// The first frames of the cached blocks, oldest first (at most [`PCP_CAPACITY`]).
    pub fn pfns(&self) -> &[u64] {
        let count = usize::try_from(self.count).unwrap_or(PCP_CAPACITY).min(PCP_CAPACITY);
        &self.pfns[..count]
    }
}

/// A zone: its span, counters, free lists and per-CPU lists.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Zone {
    /// Which zone: a [`ZoneType`] value.
    pub kind: u32,
    /// Padding.
    pub reserved: u32,
    /// First page frame spanned.
    pub start_pfn: u64,
    /// End (exclusive) of the frames spanned.
    pub end_pfn: u64,
    /// Frames with memory behind them.
    pub present: u64,
    /// Frames handed to the buddy allocator.
    pub managed: u64,
    /// Frames on the free lists (not counting the per-CPU lists).
    pub free: u64,
    /// The watermarks.
    pub watermarks: Watermarks,
    /// Pages kept back from allocations that could have used a higher zone, by the
    /// highest zone the allocation allows (Linux's `lowmem_reserve`, `protection` in
    /// /proc/zoneinfo).
    pub lowmem_reserve: [u64; NR_ZONES],
    /// Free lists by order.
    pub free_area: [FreeArea; NR_ORDERS],
    /// The per-CPU lists, by order.
    pub pcp: [Pcp; NR_PCP_LISTS],
}

/// Size of a [`Zone`].
pub const ZONE_SIZE: usize = 6448;
const _: () = assert!(core::mem::size_of::<Zone>() == ZONE_SIZE);

impl Zone {
    /// A zone of `kind` that spans nothing.
    pub const fn empty(kind: ZoneType) -> Self {
        Self {
            kind: kind as u32,
            reserved: 0,
            start_pfn: 0,
            end_pfn: 0,
            present: 0,
            managed: 0,
            free: 0,
            watermarks: Watermarks { min: 0, low: 0, high: 0 },
            lowmem_reserve: [0; NR_ZONES],
            free_area: [FreeArea { head: NO_PFN, nr_free: 0 }; NR_ORDERS],
            pcp: [const { Pcp { count: 0, pfns: [0; PCP_CAPACITY] } }; NR_PCP_LISTS],
        }
    }

    /// Which zone this is, if `kind` names one.
    pub fn zone_type(&self) -> Option<ZoneType> {
        ZoneType::from_u32(self.kind)
    }

    /// Frames spanned.
    pub fn spanned(&self) -> u64 {
        self.end_pfn.saturating_sub(self.start_pfn)
    }

    /// Pages on the per-CPU lists (each list's count capped at [`PCP_CAPACITY`]).
    pub fn pcp_pages(&self) -> u64 {
        self.pcp.iter().zip(0..).map(|(list, order)| (list.pfns().len() as u64) << order).sum()
    }

    /// Whether the zone spans frame `pfn`.
    pub fn spans(&self, pfn: u64) -> bool {
        self.start_pfn <= pfn && pfn < self.end_pfn
    }
}

/// A physical range `[base, base + size)`: one memblock region.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

const _: () = assert!(core::mem::size_of::<Region>() == 16);

impl Region {
    /// End (exclusive), clipped at 2^64 - 1.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// [`SlabCache::flags`]: red zones and poisoning (`slub_debug`).
pub const SLAB_DEBUG: u32 = 1 << 0;
/// [`SlabCache::flags`]: objects have a constructor (and are not poisoned).
pub const SLAB_CTOR: u32 = 1 << 1;
/// [`SlabCache::flags`]: a kmalloc size class; in debug mode each object records the size
/// its caller asked for, and the bytes between that and the class size are red zone.
pub const SLAB_KMALLOC: u32 = 1 << 2;

/// Red-zone byte of an allocated debug object (Linux's `SLUB_RED_ACTIVE`).
pub const RED_ACTIVE: u8 = 0xcc;
/// Red-zone byte of a free debug object (Linux's `SLUB_RED_INACTIVE`).
pub const RED_INACTIVE: u8 = 0xbb;
/// Poison of a free debug object's payload (Linux's `POISON_FREE`).
pub const POISON_FREE: u8 = 0x6b;
/// Last byte of a free debug object's poison (Linux's `POISON_END`).
pub const POISON_END: u8 = 0xa5;

/// The state of a slab cache (Linux's `struct kmem_cache` with its per-CPU slab).
///
/// A slab is 2^`order` pages whose first `struct page` has `PG_SLAB`, `slab_cache` = the
/// cache's address, and (unless it is the current slab) its freelist and objects in use.
/// A free object's word at `free_offset` points to the next free object (0 ends the list).
/// Slabs with free objects are linked through their pages' `next`/`prev` from `partial`,
/// slabs a debug check took out of service from `quarantined`; full slabs are on no list.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SlabCache {
    /// Kernel address of the name (UTF-8, not NUL-terminated).
    pub name_addr: u64,
    /// Length of the name in bytes.
    pub name_len: u64,
    /// Bytes a caller may use in an object.
    pub object_size: u64,
    /// End of the payload and, in debug mode, of the red zone after it: the payload is
    /// `[0, object_size)` (at least 8 bytes without debug), the red zone
    /// `[object_size, red_end)`.
    pub red_end: u64,
    /// Distance between objects: payload, red zone, metadata, alignment padding.
    pub stride: u64,
    /// Slab order.
    pub order: u32,
    /// `SLAB_*` flags.
    pub flags: u32,
    /// Objects in a slab.
    pub objects: u64,
    /// The current slab's first frame, or [`NO_PFN`].
    pub cpu_slab: u64,
    /// The current slab's first free object, or 0.
    pub cpu_freelist: u64,
    /// Objects of the current slab in use (its page's count is stale while it is current).
    pub cpu_inuse: u32,
    /// Offset of the free pointer in a free object: 0, or past the red zone in debug mode
    /// and for caches with a constructor.
    pub free_offset: u32,
    /// Recorded in each slab page's `private`: the kmalloc class plus one, or zero.
    pub class_tag: u64,
    /// First slab with free objects, or [`NO_PFN`].
    pub partial: u64,
    /// Slabs with every object free (also on `partial`).
    pub empty: u64,
    /// Slabs the cache holds.
    pub slabs: u64,
    /// Objects allocated, those written off included.
    pub in_use: u64,
    /// First slab taken out of service by a debug check, or [`NO_PFN`]; such slabs are
    /// linked like the partial list and never allocated from again.
    pub quarantined: u64,
    /// Objects written off with quarantined slabs (counted in `in_use`).
    pub written_off: u64,
}

impl SlabCache {
    /// Whether objects have red zones (`slub_debug`): `[object_size, red_end)` is
    /// [`RED_ACTIVE`] while an object is allocated, [`RED_INACTIVE`] while it is free.
    pub fn has_red_zones(&self) -> bool {
        self.flags & SLAB_DEBUG != 0
    }

    /// Whether free objects are poisoned: [`POISON_FREE`] up to the last payload byte,
    /// which is [`POISON_END`] (debug caches without a constructor).
    pub fn poisons(&self) -> bool {
        self.flags & (SLAB_DEBUG | SLAB_CTOR) == SLAB_DEBUG
    }

    /// Where an allocated object records the size its caller asked for (debug kmalloc
    /// classes): the word after the free pointer. The bytes from that size to
    /// `object_size` are [`RED_ACTIVE`] (Linux's "kmalloc Redzone").
    pub fn requested_size_offset(&self) -> Option<u64> {
        let flags = SLAB_DEBUG | SLAB_KMALLOC;
        (self.flags & flags == flags).then(|| u64::from(self.free_offset) + 8)
    }
}

/// Size of a [`SlabCache`].
pub const SLAB_CACHE_SIZE: usize = 136;
const _: () = assert!(core::mem::size_of::<SlabCache>() == SLAB_CACHE_SIZE);

/// The LRU lists (Linux's `enum lru_list`, the anonymous ones): an index into
/// [`Lruvec::lists`].
pub const LRU_INACTIVE_ANON: usize = 0;
/// The active anonymous list.
pub const LRU_ACTIVE_ANON: usize = 1;
/// LRU lists in a [`Lruvec`].
pub const NR_LRU_LISTS: usize = 2;

/// One LRU list, threaded through `struct page`'s `next` and `prev`: new entries at the
/// head, the oldest at the tail (where reclaim takes from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LruList {
    /// Newest entry, or [`NO_PFN`].
    pub head: u64,
    /// Oldest entry, or [`NO_PFN`].
    pub tail: u64,
    /// Pages on the list (a huge block's entry counts 512).
    pub nr_pages: u64,
}

impl LruList {
    /// An empty list.
    pub const EMPTY: Self = Self { head: NO_PFN, tail: NO_PFN, nr_pages: 0 };
}

/// The node's LRU lists (Linux's `lruvec`; one node, so one of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Lruvec {
    /// By [`LRU_INACTIVE_ANON`] and [`LRU_ACTIVE_ANON`].
    pub lists: [LruList; NR_LRU_LISTS],
}

impl Lruvec {
    /// No page on any list.
    pub const EMPTY: Self = Self { lists: [LruList::EMPTY; NR_LRU_LISTS] };
}

impl Default for Lruvec {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// The /proc/vmstat event counters that apply to this kernel, by Linux's names.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C)]
pub struct VmEvents {
    /// User page faults served or refused.
    pub pgfault: u64,
    /// Of those, the ones that read a page from swap.
    pub pgmajfault: u64,
    /// Pages read from swap.
    pub pswpin: u64,
    /// Pages written to swap.
    pub pswpout: u64,
    /// Pages background reclaim (kswapd) looked at on the inactive list.
    pub pgscan_kswapd: u64,
    /// Pages direct reclaim looked at.
    pub pgscan_direct: u64,
    /// Pages background reclaim freed.
    pub pgsteal_kswapd: u64,
    /// Pages direct reclaim freed.
    pub pgsteal_direct: u64,
    /// Processes the OOM killer killed.
    pub oom_kill: u64,
}
