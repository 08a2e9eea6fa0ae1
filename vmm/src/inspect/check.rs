//! `check`: every RAM page accounted for exactly once, every list well formed, every
//! counter equal to what the lists hold, and every kernel mapping where it belongs.
//!
//! Passes, each marking page frames with one owner:
//!
//! ```text
//! 1 kernel image      [kernel_start, kernel_end) from vmcoreinfo
//! 2 page tables       every table reachable from cr3; the pages backing the vmemmap; every
//!                     leaf checked against its region: inside RAM, mapping
//!                     its own frame where the region is linear, with the rights the region
//!                     allows, nothing with reserved bits, nothing user-accessible; a
//!                     quarter of the budget at most (tables that alias read without end)
//!   processes         each task's VMAs (sorted, disjoint, in user space, map_count of
//!                     them), its kernel half (the kernel's), its user tables and leaves
//!                     (inside a VMA, no more rights than it, RSS of them); then every
//!                     user page's mapcount and refcount against the entries mapping it,
//!                     copy-on-write pages read-only in every sharer; then the LRU
//!                     lists (each listed page a mapped user page, flagged for its
//!                     list, counted; every mapped user page listed)
//! 3 free lists        per zone and order; a block met twice is a cycle; a block marked
//!                     known zero (PG_ZERO) must read as zero
//!   per-CPU lists     per zone and order (0-3); a block covers 2^order pages; one
//!                     marked known zero must read as zero
//!   quarantine lists  per cache, before the scan: those slabs' objects are not checked
//! 4 memmap scan       every struct page of RAM: slabs (their freelists walked, objects
//!                     counted; in debug caches every object's red zones and poison, as
//!                     SLUB's validate_slab), other allocated blocks (PG_HEAD), stray
//!                     PG_BUDDY/PG_PCP, PG_ANON pages no process maps
//!   partial lists     per cache; a slab met twice is a cycle
//! 5 memblock          what is left inside a reserved range
//! 6 nobody            what is left: a finding
//! 7 mappings          vmalloc pages are allocated frames; page tables are mapped only
//!                     through the direct map
//! 8 counters          zone free, nr_free and managed; cache objects, slabs, empty slabs
//! ```
//!
//! Two owners for one page is a finding, except that an allocated block (PG_HEAD) may be
//! a page table, a slab or a user page: those come from the buddy allocator too. Every step pays the
//! command's work budget, so no input makes `check` run long.

use super::state::{self, caches, memblock, raw_zones, Cache};
use super::{process, to_usize, InspectError, View};
use schemars::JsonSchema;
use serde::Serialize;
use shared::layout::KERNEL_VIRT_BASE;
use shared::mm::{Lruvec, LRU_ACTIVE_ANON, LRU_INACTIVE_ANON};
use shared::mm::{PCP_CAPACITY, POISON_END, POISON_FREE, RED_ACTIVE, RED_INACTIVE};
use shared::page::{Page, MAX_ORDER, NO_PFN, PAGE_STRUCT_SIZE, PG_ANON, PG_BUDDY, PG_HEAD, PG_PCP};
use shared::page::{PG_ACTIVE, PG_LRU, PG_SLAB, PG_SWAPCACHE, PG_ZERO};
use shared::process::{MmStruct, Vma, TASK_SIZE, VM_ACCESS, VM_EXEC, VM_SHARED, VM_WRITE};
use shared::pte::{level_name, PageTableEntry, PteFlags, ADDR_MASK};
use shared::syscall::VDSO_BASE;
use shared::vmcoreinfo::PAGING_NX;
use shared::walk::{for_each_leaf, EnumError, Leaf, PhysMem, Visitor, ALL_ADDRESSES};
use std::fmt::Write;
use zerocopy::IntoBytes;

/// Text formatted only when a finding uses it: a hostile image can make millions of
/// findings, of which [`MAX_FINDINGS`] are listed.
#[derive(Clone, Copy)]
struct Lazy<F>(F);

/// Text written by `write` when it is displayed.
fn lazy<F: Fn(&mut std::fmt::Formatter<'_>) -> std::fmt::Result>(write: F) -> Lazy<F> {
    Lazy(write)
}

impl<F: Fn(&mut std::fmt::Formatter<'_>) -> std::fmt::Result> std::fmt::Display for Lazy<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (self.0)(f)
    }
}

/// Findings listed; more are only counted.
pub const MAX_FINDINGS: usize = 100;

/// What kind of problem a finding is: one per corruption `check` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A page with two owners that exclude each other.
    DoubleOwner,
    /// A block that runs past the last page frame.
    BeyondLastFrame,
    /// RAM pages that are not free, allocated or reserved.
    OwnedByNobody,
    /// A free page inside a memblock reservation.
    FreeInReservation,
    /// A free list that loops (or shares blocks with another).
    FreeListLoop,
    /// A free block misaligned or outside its zone.
    FreeListBadBlock,
    /// A free block whose `struct page` is not `PG_BUDDY` with the list's order.
    FreeListWrongFlags,
    /// A broken back link on a free list.
    FreeListBackLink,
    /// A free block whose `struct page` cannot be read.
    FreeListUnreadable,
    /// `nr_free` or a zone's `free` differs from what its lists hold.
    FreeCountMismatch,
    /// A per-CPU list longer than it can be.
    PcpOverflow,
    /// A per-CPU block misaligned, outside its zone, or not flagged `PG_PCP`.
    PcpBadBlock,
    /// A page flagged `PG_BUDDY` on no free list.
    StrayBuddyFlag,
    /// A page flagged `PG_PCP` on no per-CPU list.
    StrayPcpFlag,
    /// `struct page`s that cannot be read.
    MemmapUnreadable,
    /// An allocated block of an impossible order.
    BadBlockOrder,
    /// A zone's `managed` differs from free + per-CPU + allocated.
    ManagedMismatch,
    /// A slab of a cache vmcoreinfo does not list.
    UnknownSlabCache,
    /// A slab whose order or object count disagrees with its cache.
    SlabGeometry,
    /// A slab freelist link that is not an object of the slab.
    SlabFreelistBadLink,
    /// A slab freelist that loops.
    SlabFreelistLoop,
    /// A slab whose free and used objects do not add up.
    SlabObjectCount,
    /// A debug object's red zone after its payload overwritten (Linux's "Right Redzone
    /// overwritten"): a write past the object.
    SlabRightRedzone,
    /// A debug kmalloc object's bytes between the size its caller asked for and its class
    /// size overwritten, or its recorded size impossible (Linux's "kmalloc Redzone").
    SlabKmallocRedzone,
    /// A free debug object's poison overwritten: a write after free.
    SlabPoisonOverwritten,
    /// A cache's partial (or quarantine) list that loops.
    PartialListLoop,
    /// A slab on a partial (or quarantine) list that is not a slab of the cache off the
    /// CPU.
    PartialListBadSlab,
    /// A broken back link on a partial (or quarantine) list.
    PartialListBackLink,
    /// A full slab on a partial list.
    PartialListFullSlab,
    /// A cache's count of empty slabs differs from its partial list.
    EmptySlabCount,
    /// A cache's object or slab counts differ from its slabs.
    CacheCounters,
    /// A page-table entry with reserved bits set: the CPU faults on it.
    ReservedBits,
    /// A user-accessible mapping, or any lower-half mapping, in the kernel's own tree.
    UserMapping,
    /// A kernel-half mapping outside every kernel region.
    OutsideKernelRegions,
    /// A mapping of frames that are not RAM where only RAM may be.
    OutsideRam,
    /// A direct-map or kernel-image leaf that maps a frame other than its own.
    WrongFrame,
    /// A mapping with rights its region forbids (writable text, executable data, W+X).
    WrongRights,
    /// A page table mapped somewhere besides the direct map.
    TableMappedOutsideDirectMap,
    /// A vmalloc mapping of a frame that is not an allocated page, or of device memory
    /// that is cached.
    VmallocTarget,
    /// Page tables that read more entries than any sound tree holds.
    TableEnumeration,
    /// The task array cannot be read.
    TaskList,
    /// A process's VMA tree that is not one, or VMAs unsorted, overlapping, misaligned
    /// or beyond user space, or more or fewer than its `map_count`.
    ProcessVmas,
    /// A process's RSS counter differs from the pages its tables map, or its page-table
    /// counter from the tables it has.
    RssMismatch,
    /// A user page-table entry outside every VMA of its process.
    UserPteOutsideVma,
    /// A user page-table entry with rights its VMA does not grant.
    UserPteExceedsVma,
    /// A user page whose mapcount or refcount differs from the entries that map it, or
    /// a PG_ANON page no process maps.
    MapcountMismatch,
    /// A page shared by private mappings (copy-on-write) that one of them may write.
    CowWritable,
    /// A process's kernel half (PML4 entries 256–511) that is not the kernel's.
    KernelHalfDiffers,
    /// A free (or per-CPU) block marked known zero (`PG_ZERO`) that holds data.
    KnownZeroNotZero,
    /// An LRU list that breaks, loops, lists a page that is not a mapped user page or
    /// flags it for the other list, or counts other than its entries; or a mapped user
    /// page on no list.
    LruList,
    /// A user entry that is neither present, zero nor a swap entry; a swap entry naming a
    /// slot off the device; a slot whose count differs from the swap entries naming it;
    /// or a process whose swap counter differs from its swap entries.
    SwapEntry,
}

/// One problem `check` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Finding {
    /// What kind of problem.
    pub kind: FindingKind,
    /// What it is, naming the zone and order, cache and slab, or address and frame.
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Owner {
    Nobody,
    Kernel,
    Vmemmap,
    Table,
    Free,
    Pcp,
    Slab,
    Allocated,
    User,
    Reserved,
}

const OWNERS: [(Owner, &str); 10] = [
    (Owner::Free, "free (buddy)"),
    (Owner::Pcp, "per-CPU lists"),
    (Owner::Slab, "slab"),
    (Owner::Table, "page tables"),
    (Owner::Vmemmap, "vmemmap"),
    (Owner::Kernel, "kernel image"),
    (Owner::Reserved, "memblock reserved"),
    (Owner::User, "user pages"),
    (Owner::Allocated, "other allocated"),
    (Owner::Nobody, "owned by nobody"),
];

fn owner_name(owner: Owner) -> &'static str {
    OWNERS.iter().find(|(o, _)| *o == owner).map_or("?", |(_, name)| name)
}

/// Pages of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Count {
    /// The kind.
    pub owner: &'static str,
    /// RAM pages of that kind.
    pub pages: u64,
}

/// One slab cache as the check found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CacheCount {
    /// The cache.
    pub name: String,
    /// Slabs found in the memory map.
    pub slabs: u64,
    /// Pages those slabs take.
    pub pages: u64,
    /// Objects in use in them.
    pub objects_in_use: u64,
    /// Free objects on their freelists.
    pub objects_free: u64,
    /// Slabs on its quarantine list (taken out of service by a debug check; their objects
    /// are not checked again).
    pub quarantined: u64,
}

/// The result of `check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CheckReport {
    /// RAM pages (memblock `memory`).
    pub ram_pages: u64,
    /// RAM pages by owner; they add up to `ram_pages`.
    pub pages: Vec<Count>,
    /// Slab caches.
    pub caches: Vec<CacheCount>,
    /// What is wrong, in the order found.
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS`], counted only.
    pub findings_omitted: u64,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    /// Whether a finding of `kind` was made.
    pub fn found(&self, kind: FindingKind) -> bool {
        self.findings.iter().any(|f| f.kind == kind)
    }
}

struct Marks {
    owner: Vec<Owner>,
    findings: Vec<Finding>,
    omitted: u64,
}

impl Marks {
    fn finding(&mut self, kind: FindingKind, text: impl FnOnce() -> String) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding { kind, text: text() });
        } else {
            self.omitted += 1;
        }
    }

    /// A finding that explains those made before it: listed first, even past
    /// [`MAX_FINDINGS`] (the last one listed is then only counted).
    fn finding_first(&mut self, kind: FindingKind, text: impl FnOnce() -> String) {
        self.findings.insert(0, Finding { kind, text: text() });
        if self.findings.len() > MAX_FINDINGS {
            self.findings.pop();
            self.omitted += 1;
        }
    }

    /// Gives `count` frames from `pfn` to `owner`; false if one already had an owner that
    /// excludes it (reported). The caller paid for `count` frames.
    fn mark(&mut self, pfn: u64, count: u64, owner: Owner) -> bool {
        let len = self.owner.len() as u64;
        if pfn >= len || count > len - pfn {
            self.finding(FindingKind::BeyondLastFrame, || {
                format!(
                    "pfn {pfn:#x}+{count}: {} beyond the last page frame {:#x}",
                    owner_name(owner),
                    len.saturating_sub(1)
                )
            });
            return false;
        }
        for p in pfn..pfn + count {
            let old = self.owner[to_usize(p)];
            match (old, owner) {
                (Owner::Nobody, _) => self.owner[to_usize(p)] = owner,
                // Page tables and slabs are allocated blocks too; reserved is what is left.
                (Owner::Table | Owner::Slab | Owner::User, Owner::Allocated)
                | (_, Owner::Reserved) => {}
                _ => {
                    self.finding(FindingKind::DoubleOwner, || {
                        format!("pfn {p:#x} is both {} and {}", owner_name(old), owner_name(owner))
                    });
                    return false;
                }
            }
        }
        true
    }

    fn owner_of(&self, pfn: u64) -> Option<Owner> {
        self.owner.get(to_usize(pfn)).copied()
    }
}

/// The kernel's address regions, from vmcoreinfo.
struct KernelRegions {
    page_offset: u64,
    direct_end: u64,
    vmalloc: (u64, u64),
    vmemmap: (u64, u64),
    image: (u64, u64),
    /// Kernel text and rodata, physical: `[kernel_start, kernel_data)`.
    read_only: (u64, u64),
    /// Kernel rodata, physical: `[kernel_rodata, kernel_data)`.
    rodata: (u64, u64),
    nx: bool,
    ram: Vec<(u64, u64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KernelRegion {
    Lower,
    DirectMap,
    Vmalloc,
    Vmemmap,
    Image,
    Other,
}

impl KernelRegions {
    fn new(view: &View<'_, '_>) -> Self {
        let info = view.info;
        let memmap_bytes = info.max_pfn.saturating_mul(PAGE_STRUCT_SIZE as u64);
        Self {
            page_offset: info.page_offset,
            direct_end: info.vmalloc_start.max(info.page_offset),
            vmalloc: (info.vmalloc_start, info.vmalloc_end),
            vmemmap: (
                info.vmemmap,
                info.vmemmap.saturating_add(memmap_bytes.next_multiple_of(2 << 20)),
            ),
            image: (
                KERNEL_VIRT_BASE.saturating_add(info.kernel_start),
                KERNEL_VIRT_BASE.saturating_add(info.kernel_end),
            ),
            read_only: (info.kernel_start, info.kernel_data),
            rodata: (info.kernel_rodata, info.kernel_data),
            nx: info.paging_flags & PAGING_NX != 0,
            ram: view.ram.ranges(),
        }
    }

    fn of(&self, virt: u64) -> KernelRegion {
        let inside = |(start, end): (u64, u64)| (start..end).contains(&virt);
        if virt < 1 << 47 {
            KernelRegion::Lower
        } else if inside(self.image) {
            KernelRegion::Image
        } else if inside(self.vmemmap) {
            KernelRegion::Vmemmap
        } else if inside(self.vmalloc) {
            KernelRegion::Vmalloc
        } else if inside((self.page_offset, self.direct_end)) {
            KernelRegion::DirectMap
        } else {
            KernelRegion::Other
        }
    }

    fn in_ram(&self, phys: u64, size: u64) -> bool {
        self.ram.iter().any(|&(start, len)| {
            phys >= start && phys.saturating_sub(start).saturating_add(size) <= len
        })
    }
}

fn overlaps((start, end): (u64, u64), phys: u64, size: u64) -> bool {
    phys < end && start < phys.saturating_add(size)
}

/// The enumeration's visitor: marks tables and the vmemmap's backing, checks each leaf
/// against its region, and keeps what the later passes need.
struct Mappings<'m> {
    marks: &'m mut Marks,
    regions: KernelRegions,
    /// Leaves outside the direct map: (virt, phys, size).
    elsewhere: Vec<(u64, u64, u64)>,
    /// vmalloc leaves of RAM: (virt, phys, size).
    vmalloc_ram: Vec<(u64, u64, u64)>,
}

impl Visitor for Mappings<'_> {
    fn table(&mut self, _level: u8, gpa: u64) {
        self.marks.mark(gpa / 4096, 1, Owner::Table);
    }

    fn reserved(&mut self, level: u8, entry_addr: u64, virt: u64, entry: PageTableEntry) {
        self.marks.finding(
            FindingKind::ReservedBits,
            || format!(
                "{} entry at {entry_addr:#x} (for {virt:#x}) = {:#x} sets a reserved bit: the CPU faults there",
                level_name(level),
                entry.raw()
            ),
        );
    }

    fn leaf(&mut self, leaf: Leaf) -> bool {
        let (virt, phys, size) = (leaf.virt, leaf.phys, leaf.size);
        let at = lazy(move |f| write!(f, "{virt:#x} -> {phys:#x} ({} KiB)", size / 1024));
        let writable = leaf.flags.contains(PteFlags::WRITABLE);
        let executable = !leaf.flags.contains(PteFlags::NO_EXECUTE);
        let region = self.regions.of(virt);
        if leaf.flags.contains(PteFlags::USER) || region == KernelRegion::Lower {
            self.marks.finding(FindingKind::UserMapping, || {
                format!("{at}: a user-accessible or lower-half mapping in the kernel's tree")
            });
        }
        // Only the kernel's text may be executable: `[kernel_start, kernel_rodata)`.
        let text = region == KernelRegion::Image
            && phys >= self.regions.read_only.0
            && phys.saturating_add(size) <= self.regions.rodata.0;
        if self.regions.nx && executable && !text {
            self.marks.finding(FindingKind::WrongRights, || {
                format!("{at}: executable outside the kernel's text")
            });
        }
        let needs_ram =
            matches!(region, KernelRegion::DirectMap | KernelRegion::Vmemmap | KernelRegion::Image);
        if needs_ram && !self.regions.in_ram(phys, size) {
            self.marks
                .finding(FindingKind::OutsideRam, || format!("{at}: maps frames beyond guest RAM"));
        }
        match region {
            KernelRegion::DirectMap => {
                if phys != virt - self.regions.page_offset {
                    self.marks.finding(FindingKind::WrongFrame, || {
                        format!(
                            "{at}: a direct-map leaf must map frame {:#x}",
                            virt - self.regions.page_offset
                        )
                    });
                }
                if writable && overlaps(self.regions.read_only, phys, size) {
                    self.marks.finding(FindingKind::WrongRights, || {
                        format!("{at}: a writable alias of the kernel's text or rodata")
                    });
                }
            }
            KernelRegion::Image => {
                if phys != virt - KERNEL_VIRT_BASE {
                    self.marks.finding(FindingKind::WrongFrame, || {
                        format!(
                            "{at}: a kernel-image leaf must map frame {:#x}",
                            virt - KERNEL_VIRT_BASE
                        )
                    });
                }
                if writable && overlaps(self.regions.read_only, phys, size) {
                    self.marks.finding(FindingKind::WrongRights, || {
                        format!("{at}: the kernel's text or rodata is writable")
                    });
                }
            }
            KernelRegion::Vmemmap => {
                if self.regions.in_ram(phys, size) {
                    self.marks.mark(phys / 4096, size / 4096, Owner::Vmemmap);
                }
            }
            KernelRegion::Vmalloc => {
                if self.regions.in_ram(phys, size) {
                    self.vmalloc_ram.push((virt, phys, size));
                } else if !leaf.entry.flags().contains(PteFlags::NO_CACHE) {
                    self.marks.finding(FindingKind::VmallocTarget, || {
                        format!("{at}: device memory mapped cached")
                    });
                }
            }
            KernelRegion::Other => self.marks.finding(FindingKind::OutsideKernelRegions, || {
                format!("{at}: outside the direct map, vmalloc, vmemmap and kernel image")
            }),
            KernelRegion::Lower => {}
        }
        if region != KernelRegion::DirectMap {
            self.elsewhere.push((virt, phys, size));
        }
        true
    }
}

/// Runs every pass over one snapshot.
pub fn check(view: &mut View<'_, '_>) -> Result<CheckReport, InspectError> {
    let info = view.info;
    let ram_end: u64 = view.ram.ranges().iter().map(|(start, len)| start + len).max().unwrap_or(0);
    if info.max_pfn > ram_end / 4096 {
        return Err(InspectError::Corrupt(format!(
            "max_pfn {:#x} lies beyond guest RAM (which ends at {ram_end:#x})",
            info.max_pfn
        )));
    }
    view.budget.spend(info.max_pfn, || "sizing the page-owner map".into())?;
    let mut marks = Marks {
        owner: vec![Owner::Nobody; to_usize(info.max_pfn)],
        findings: Vec::new(),
        omitted: 0,
    };

    // 1: the kernel image.
    let kernel_pages = info.kernel_end.saturating_sub(info.kernel_start).div_ceil(4096);
    view.budget.spend(kernel_pages, || "marking the kernel image".into())?;
    marks.mark(info.kernel_start / 4096, kernel_pages, Owner::Kernel);

    // 2: page tables, the vmemmap's backing, and every mapping.
    let mut mappings = Mappings {
        marks: &mut marks,
        regions: KernelRegions::new(view),
        elsewhere: Vec::new(),
        vmalloc_ram: Vec::new(),
    };
    // A sound tree reads each of its tables once, a few entries per page of RAM; tables
    // that alias each other read without end. A quarter of the budget bounds them and
    // leaves the later passes theirs, even when every entry read was a leaf to record.
    let granted = *view.budget.left_mut() / 4;
    let mut entries = granted;
    let walked = for_each_leaf(view.ram, info.cr3, ALL_ADDRESSES, &mut entries, &mut mappings);
    *view.budget.left_mut() -= granted - entries;
    let (elsewhere, vmalloc_ram) = (mappings.elsewhere, mappings.vmalloc_ram);
    if walked == Err(EnumError::Budget) {
        marks.finding_first(
            FindingKind::TableEnumeration,
            || format!("the page tables read more than {granted} entries, more than a sound tree of this guest holds: tables alias each other or loop (mappings past that point are not checked)"),
        );
    }
    for &(_, _, size) in &elsewhere {
        view.budget
            .spend(size / 4096, || "recording the mappings outside the direct map".into())?;
    }

    // The memory map, read once: the lists below and the scan read it through the copy.
    let mb = memblock(view)?;
    let present = |r: &shared::mm::Region| {
        (r.base.div_ceil(4096), (r.base.saturating_add(r.size) / 4096).min(info.max_pfn))
    };
    let ranges: Vec<(u64, u64)> = mb.memory.iter().map(present).collect();
    view.copy_memmap(&ranges)?;

    // 2, processes: their tables and pages, after the kernel's and before the memory map.
    check_processes(view, &mut marks)?;

    // 3: free lists and per-CPU lists.
    let zones = raw_zones(view)?;
    let mut zone_pages = vec![(0u64, 0u64, 0u64); zones.len()]; // free, pcp, allocated
    for (z, zone) in zones.iter().enumerate() {
        let name = zone.zone_type().map_or("?", |t| t.name());
        let mut free = 0u64;
        for order in 0..=MAX_ORDER {
            let area = zone.free_area[order as usize];
            let walked = walk_free_list(view, &mut marks, zone, name, order, area.head)?;
            if walked != area.nr_free {
                marks.finding(
                    FindingKind::FreeCountMismatch,
                    || format!("zone {name} order {order}: nr_free is {} but the list holds {walked} blocks", area.nr_free),
                );
            }
            free += walked << order;
        }
        if free != zone.free {
            marks.finding(FindingKind::FreeCountMismatch, || {
                format!("zone {name}: free is {} but its lists hold {free} pages", zone.free)
            });
        }
        for (list, order) in zone.pcp.iter().zip(0u32..) {
            if list.count > PCP_CAPACITY as u64 {
                marks.finding(
                    FindingKind::PcpOverflow,
                    || format!("zone {name}: per-CPU list of order {order} holds {} blocks, more than {PCP_CAPACITY}", list.count),
                );
            }
            let mut scratch = Vec::new();
            for (index, &pfn) in list.pfns().iter().enumerate() {
                view.budget.spend(1 << order, || format!("walking zone {name}'s per-CPU lists"))?;
                let page = view.page(pfn).ok();
                let flagged = page.is_some_and(|p| p.flags & PG_PCP != 0 && p.order == order);
                if page.is_some_and(|p| p.flags & PG_ZERO != 0) {
                    let at = lazy(move |f| {
                        write!(
                            f,
                            "zone {name} order {order} per-CPU list, block {index} (pfn {pfn:#x})"
                        )
                    });
                    check_known_zero(view, &mut marks, pfn, order, &mut scratch, &at)?;
                }
                let inside = pfn % (1 << order) == 0
                    && zone.spans(pfn)
                    && zone.spans(pfn.saturating_add((1 << order) - 1));
                if !inside || !flagged {
                    marks.finding(FindingKind::PcpBadBlock, || {
                        format!(
                            "zone {name}: per-CPU block {pfn:#x} of order {order} is misaligned, \
                             outside the zone or not flagged PG_PCP with that order"
                        )
                    });
                }
                marks.mark(pfn, 1 << order, Owner::Pcp);
            }
        }
        zone_pages[z] = (free, zone.pcp_pages(), 0);
    }

    // 4: the memory map.
    let caches = caches(view)?;
    let mut cache_counts: Vec<CacheCount> = caches
        .iter()
        .map(|c| CacheCount {
            name: c.name.clone(),
            slabs: 0,
            pages: 0,
            objects_in_use: 0,
            objects_free: 0,
            quarantined: 0,
        })
        .collect();
    // Quarantined slabs hold damage a debug check already reported: their objects are not
    // checked again.
    let mut quarantined = Vec::with_capacity(caches.len());
    let none = std::collections::HashSet::new();
    for (cache, count) in caches.iter().zip(&mut cache_counts) {
        let slabs = walk_slab_list(view, &mut marks, cache, SlabList::Quarantined, &none)?;
        count.quarantined = slabs.len() as u64;
        quarantined.push(slabs);
    }
    let slabs = Slabs { caches: &caches, quarantined: &quarantined };
    let mut ram_pages = 0u64;
    for (index, region) in mb.memory.iter().enumerate() {
        let (start, end) = present(region);
        ram_pages += end.saturating_sub(start);
        let scanning = || {
            format!(
                "scanning the struct pages of memblock memory region {index} of {} ({:#x}+{:#x})",
                mb.memory.len(),
                region.base,
                region.size
            )
        };
        view.budget.spend(end.saturating_sub(start), scanning)?;
        // An all-zero descriptor is owned by nobody and flags nothing: only the others
        // need a look, and the copy holds just those.
        for (pfn, page) in view.described_pages(start, end).map_err(|err| within(err, scanning))? {
            match page {
                Ok(page) => scan_page(
                    view,
                    &mut marks,
                    &zones,
                    &mut zone_pages,
                    &slabs,
                    &mut cache_counts,
                    pfn,
                    &page,
                )
                .map_err(|err| within(err, scanning))?,
                // It explains the free and per-CPU lists found unreadable before it.
                Err((count, why)) => marks.finding_first(FindingKind::MemmapUnreadable, || {
                    format!("struct pages of pfn {pfn:#x}+{count} unreadable: {why}")
                }),
            }
        }
    }
    for (cache, quarantined) in caches.iter().zip(&quarantined) {
        walk_slab_list(view, &mut marks, cache, SlabList::Partial, quarantined)?;
    }

    // 5: memblock reservations; 6: nobody.
    for (index, r) in mb.reserved.iter().enumerate() {
        let start = r.base / 4096;
        let end = r.base.saturating_add(r.size).div_ceil(4096).min(info.max_pfn);
        view.budget.spend(end.saturating_sub(start), || {
            format!("marking memblock reserved region {index} ({:#x}+{:#x})", r.base, r.size)
        })?;
        for pfn in start..end {
            match marks.owner[to_usize(pfn)] {
                Owner::Nobody => marks.owner[to_usize(pfn)] = Owner::Reserved,
                Owner::Free | Owner::Pcp => marks.finding(FindingKind::FreeInReservation, || {
                    format!(
                        "pfn {pfn:#x} is free but inside memblock reservation {:#x}+{:#x}",
                        r.base, r.size
                    )
                }),
                _ => {}
            }
        }
    }
    let mut counts = vec![0u64; OWNERS.len()];
    let (mut nobody_first, mut nobody) = (None, 0u64);
    for (index, region) in mb.memory.iter().enumerate() {
        let start = region.base.div_ceil(4096);
        let end = (region.base.saturating_add(region.size) / 4096).min(info.max_pfn);
        view.budget.spend(end.saturating_sub(start), || {
            format!("counting the owners of memblock memory region {index}")
        })?;
        for pfn in start..end {
            let owner = marks.owner[to_usize(pfn)];
            if owner == Owner::Nobody {
                nobody += 1;
                nobody_first.get_or_insert(pfn);
            }
            if let Some(slot) = OWNERS.iter().position(|(o, _)| *o == owner) {
                counts[slot] += 1;
            }
        }
    }
    if let Some(first) = nobody_first {
        marks.finding(
            FindingKind::OwnedByNobody,
            || format!("{nobody} RAM pages are owned by nobody (not free, allocated or reserved), the first pfn {first:#x}"),
        );
    }

    // 7: mappings that need the owners.
    for &(virt, phys, size) in &vmalloc_ram {
        let bad = (phys / 4096..(phys + size) / 4096)
            .find(|&pfn| !matches!(marks.owner_of(pfn), Some(Owner::Allocated)));
        if let Some(pfn) = bad {
            let owner = marks.owner_of(pfn).map_or("beyond the last frame", owner_name);
            marks.finding(
                FindingKind::VmallocTarget,
                || format!("{virt:#x} -> {phys:#x}: a vmalloc page must be an allocated frame, pfn {pfn:#x} is {owner}"),
            );
        }
    }
    for &(virt, phys, size) in &elsewhere {
        if let Some(pfn) = (phys / 4096..(phys + size) / 4096)
            .find(|&pfn| marks.owner_of(pfn) == Some(Owner::Table))
        {
            marks.finding(
                FindingKind::TableMappedOutsideDirectMap,
                || format!("{virt:#x} -> {phys:#x}: maps page table pfn {pfn:#x}, which only the direct map may"),
            );
        }
    }

    // 8: counters.
    for (zone, &(free, pcp, allocated)) in zones.iter().zip(&zone_pages) {
        let name = zone.zone_type().map_or("?", |t| t.name());
        if zone.managed != free + pcp + allocated {
            marks.finding(
                FindingKind::ManagedMismatch,
                || format!(
                    "zone {name}: managed is {} but free {free} + per-CPU {pcp} + allocated {allocated} = {}",
                    zone.managed,
                    free + pcp + allocated
                ),
            );
        }
    }
    for (cache, count) in caches.iter().zip(&cache_counts) {
        if cache.raw.in_use != count.objects_in_use || cache.raw.slabs != count.slabs {
            marks.finding(
                FindingKind::CacheCounters,
                || format!(
                    "cache {}: counts {} objects in {} slabs, its slabs hold {} objects in {} slabs",
                    cache.name, cache.raw.in_use, cache.raw.slabs, count.objects_in_use, count.slabs
                ),
            );
        }
    }
    Ok(CheckReport {
        ram_pages,
        pages: OWNERS
            .iter()
            .zip(counts)
            .map(|((_, name), pages)| Count { owner: name, pages })
            .collect(),
        caches: cache_counts,
        findings: marks.findings,
        findings_omitted: marks.omitted,
    })
}

/// How the processes map one user page.
#[derive(Default)]
struct UserFrame {
    /// A tail page of a whole huge block: its head carries the counts.
    tail: bool,
    /// Entries that map it.
    maps: u32,
    /// Of those, writable ones.
    writable: u32,
    /// Whether a private VMA maps it (sharing it is then copy-on-write).
    private: bool,
}

/// The processes' memory (pass 2's second part): each task's VMAs, kernel half, tables
/// and leaves, then every user page's counts. Marks user tables and pages.
fn check_processes(view: &mut View<'_, '_>, marks: &mut Marks) -> Result<(), InspectError> {
    let tasks = match process::tasks(view) {
        Ok(tasks) => tasks,
        Err(err @ InspectError::Budget { .. }) => return Err(err),
        Err(err) => {
            marks.finding(FindingKind::TaskList, || format!("the task array: {err}"));
            return Ok(());
        }
    };
    let nx = view.info.paging_flags & PAGING_NX != 0;
    let mut kernel_half = [0u64; 256];
    let kernel_pml4 = view.info.cr3 & ADDR_MASK;
    if let Err(err) = view.ram.read(kernel_pml4 + 2048, kernel_half.as_mut_bytes()) {
        marks.finding(FindingKind::KernelHalfDiffers, || {
            format!("the kernel's PML4 at {kernel_pml4:#x} cannot be read: {err}")
        });
        return Ok(());
    }
    // Frames below max_pfn only (a user entry beyond is a finding, not a key): at most
    // one entry per RAM page, however the tables alias.
    let mut frames: std::collections::BTreeMap<u64, UserFrame> = Default::default();
    let max_pfn = view.info.max_pfn;
    // Swap entries naming each slot (slots off the device are findings, not keys).
    let mut named: std::collections::BTreeMap<u64, u64> = Default::default();
    for task in tasks.iter().filter(|t| t.mm.pgd != 0) {
        let pid = task.pid;
        let vmas = match process::vmas(view, &task.mm) {
            Ok(vmas) => vmas,
            Err(err @ InspectError::Budget { .. }) => return Err(err),
            Err(err) => {
                marks.finding(FindingKind::ProcessVmas, || format!("pid {pid}: {err}"));
                continue;
            }
        };
        check_vmas(marks, pid, &task.mm, &vmas);
        let mut upper = [0u64; 256];
        let pml4 = task.mm.pgd & ADDR_MASK;
        if let Err(err) = view.ram.read(pml4 + 2048, upper.as_mut_bytes()) {
            marks.finding(FindingKind::KernelHalfDiffers, || {
                format!("pid {pid}: its PML4 at {:#x} cannot be read: {err}", task.mm.pgd)
            });
            continue;
        }
        if let Some(i) = (0..256).find(|&i| upper[i] != kernel_half[i]) {
            marks.finding(FindingKind::KernelHalfDiffers, || {
                format!(
                    "pid {pid}: PML4 entry {} is {:#x}, the kernel's {:#x}",
                    256 + i,
                    upper[i],
                    kernel_half[i]
                )
            });
        }
        let walked = process::user_leaves(view, task.mm.pgd)?;
        for &table in &walked.table_frames {
            marks.mark(table / 4096, 1, Owner::Table);
        }
        let mut rss = 0u64;
        for leaf in &walked.leaves {
            if leaf.virt == VDSO_BASE {
                continue; // the kernel's trampoline page, in every process
            }
            let at = vmas.partition_point(|v| v.end <= leaf.virt);
            let Some(vma) = vmas.get(at).filter(|v| v.start <= leaf.virt) else {
                marks.finding(FindingKind::UserPteOutsideVma, || {
                    format!(
                        "pid {pid}: {:#x} maps pfn {:#x} outside every VMA",
                        leaf.virt,
                        leaf.phys / 4096
                    )
                });
                continue;
            };
            let flags = leaf.entry.flags();
            let excess = if flags.contains(PteFlags::WRITABLE) && vma.flags & VM_WRITE == 0 {
                Some("writable")
            } else if flags.contains(PteFlags::USER) && vma.flags & VM_ACCESS == 0 {
                Some("user-accessible")
            } else if nx && !flags.contains(PteFlags::NO_EXECUTE) && vma.flags & VM_EXEC == 0 {
                Some("executable")
            } else {
                None
            };
            if let Some(excess) = excess {
                marks.finding(FindingKind::UserPteExceedsVma, || {
                    format!(
                        "pid {pid}: {:#x} is {excess}, its VMA {:#x}-{:#x} is {}",
                        leaf.virt,
                        vma.start,
                        vma.end,
                        String::from_utf8_lossy(&vma.perms())
                    )
                });
            }
            let pages = leaf.size / 4096;
            rss += pages;
            view.budget.spend(pages, || format!("counting the pages of pid {pid}"))?;
            let first = leaf.phys / 4096;
            if first.saturating_add(pages) > max_pfn {
                marks.finding(FindingKind::OutsideRam, || {
                    format!("pid {pid}: {:#x} maps pfn {first:#x}, beyond RAM", leaf.virt)
                });
                continue;
            }
            // A whole huge block (an order-9 anonymous head) counts its mappings on its
            // head; a split one, or a 4 KiB page, on each page.
            let whole = pages > 1
                && match view.page(first) {
                    Ok(head) => head.flags & PG_ANON != 0 && head.order == HUGE_ORDER,
                    Err(err @ InspectError::Budget { .. }) => return Err(err),
                    Err(_) => false,
                };
            for pfn in first..first + pages {
                let frame = frames.entry(pfn).or_default();
                if whole && pfn != first {
                    frame.tail = true;
                    continue;
                }
                frame.maps = frame.maps.saturating_add(1);
                frame.writable =
                    frame.writable.saturating_add(u32::from(flags.contains(PteFlags::WRITABLE)));
                frame.private |= vma.flags & VM_SHARED == 0;
            }
        }
        check_swap_entries(
            marks,
            (pid, &task.mm),
            &vmas,
            &walked.absent,
            &mut named,
            view.info.nr_swap_slots,
        );
        if rss != task.mm.rss_anon {
            marks.finding(FindingKind::RssMismatch, || {
                format!("pid {pid}: RSS counter {} pages, its tables map {rss}", task.mm.rss_anon)
            });
        }
        // The walk counts the PML4 too; Linux's page-table counter leaves it out.
        let below_root = walked.tables.saturating_sub(1);
        if below_root != task.mm.pgtables {
            marks.finding(FindingKind::RssMismatch, || {
                format!(
                    "pid {pid}: page-table counter {} tables, {below_root} below its PML4",
                    task.mm.pgtables
                )
            });
        }
    }
    for (&pfn, frame) in &frames {
        if !marks.mark(pfn, 1, Owner::User) || frame.tail && frame.maps == 0 {
            continue;
        }
        let page = match view.page(pfn) {
            Ok(page) => page,
            Err(err @ InspectError::Budget { .. }) => return Err(err),
            Err(err) => {
                marks.finding(FindingKind::MemmapUnreadable, || {
                    format!("user page pfn {pfn:#x}: {err}")
                });
                continue;
            }
        };
        if page.flags & PG_ANON == 0 {
            marks.finding(FindingKind::MapcountMismatch, || {
                format!(
                    "pfn {pfn:#x} is mapped by {} user entries but not flagged PG_ANON",
                    frame.maps
                )
            });
        } else if page.mapcount != frame.maps
            || page.refcount != frame.maps + u32::from(page.flags & PG_SWAPCACHE != 0)
        {
            // The swap cache holds a reference of its own.
            marks.finding(FindingKind::MapcountMismatch, || {
                format!(
                    "pfn {pfn:#x}: mapcount {} and refcount {}, but {} user entries map it{}",
                    page.mapcount,
                    page.refcount,
                    frame.maps,
                    if page.flags & PG_SWAPCACHE != 0 {
                        " and the swap cache holds it"
                    } else {
                        ""
                    }
                )
            });
        }
        if frame.maps > 1 && frame.private && frame.writable > 0 {
            marks.finding(FindingKind::CowWritable, || {
                format!(
                    "pfn {pfn:#x} is shared copy-on-write by {} entries, {} of them writable",
                    frame.maps, frame.writable
                )
            });
        }
    }
    check_swap_counts(view, marks, &named)?;
    check_lru(view, marks, &frames)
}

/// A process's not-present entries: each a swap entry (level 1, inside a VMA, naming a
/// slot of the device), counted into `named`, and as many as its swap counter says.
fn check_swap_entries(
    marks: &mut Marks,
    (pid, mm): (u32, &MmStruct),
    vmas: &[Vma],
    absent: &[(u64, u8, PageTableEntry)],
    named: &mut std::collections::BTreeMap<u64, u64>,
    slots: u64,
) {
    let mut swapents = 0u64;
    for &(virt, level, entry) in absent {
        let Some(slot) = entry.swap_slot().filter(|_| level == 1) else {
            marks.finding(FindingKind::SwapEntry, || {
                format!(
                    "pid {pid}: {virt:#x} has a level-{level} entry {:#x} that is neither \
                     present, zero nor a swap entry",
                    entry.raw()
                )
            });
            continue;
        };
        swapents += 1;
        let at = vmas.partition_point(|v| v.end <= virt);
        if vmas.get(at).is_none_or(|v| v.start > virt) {
            marks.finding(FindingKind::UserPteOutsideVma, || {
                format!("pid {pid}: {virt:#x} names swap slot {slot} outside every VMA")
            });
        }
        if slot >= slots {
            marks.finding(FindingKind::SwapEntry, || {
                format!("pid {pid}: {virt:#x} names swap slot {slot}, past the device's {slots}")
            });
            continue;
        }
        *named.entry(slot).or_default() += 1;
    }
    if swapents != mm.swapents {
        marks.finding(FindingKind::SwapEntry, || {
            format!(
                "pid {pid}: swap counter {}, its tables hold {swapents} swap entries",
                mm.swapents
            )
        });
    }
}

/// Every slot's count in the swap map equals the swap entries naming it.
fn check_swap_counts(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    named: &std::collections::BTreeMap<u64, u64>,
) -> Result<(), InspectError> {
    let (slots, map) = (view.info.nr_swap_slots, view.info.swap_map);
    if slots > 0 && map == 0 {
        marks.finding(FindingKind::SwapEntry, || {
            format!("vmcoreinfo counts {slots} swap slots but publishes no swap map")
        });
        return Ok(());
    }
    let counts = match state::swap_counts(view) {
        Ok(counts) => counts,
        Err(err @ InspectError::Budget { .. }) => return Err(err),
        Err(err) => {
            marks.finding(FindingKind::SwapEntry, || format!("the swap map: {err}"));
            return Ok(());
        }
    };
    // The map was paid for as it was read (a page of it a unit); the comparison walks the
    // named slots in step with it.
    let mut named = named.iter().peekable();
    for (slot, &count) in (0u64..).zip(&counts) {
        let entries = named.next_if(|(&s, _)| s == slot).map_or(0, |(_, &n)| n);
        if u64::from(count) != entries {
            marks.finding(FindingKind::SwapEntry, || {
                format!("swap slot {slot}: count {count}, named by {entries} swap entries")
            });
        }
    }
    Ok(())
}

/// A transparent huge page's order: a whole block's counts (and its LRU entry) are on its
/// head.
const HUGE_ORDER: u32 = 9;

/// The LRU lists (`vmcoreinfo.lruvec`): each entry a user page flagged for its list
/// (`PG_LRU`, `PG_ACTIVE`, `PG_ANON`), linked both ways, listed once, the pages counted as
/// the list says; and every page a process maps on a list (a whole huge block once, on
/// its head). A walk stops at the first break and at a page met twice.
fn check_lru(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    frames: &std::collections::BTreeMap<u64, UserFrame>,
) -> Result<(), InspectError> {
    let mapped = |frame: &UserFrame| frame.maps > 0 && !frame.tail;
    if view.info.lruvec == 0 && !frames.values().any(mapped) {
        return Ok(()); // no LRU lists published, and no user page to be on one
    }
    let lruvec: Lruvec = match view.read_virt_obj(view.info.lruvec) {
        Ok(lruvec) => lruvec,
        Err(err @ InspectError::Budget { .. }) => return Err(err),
        Err(err) => {
            marks.finding(FindingKind::LruList, || {
                format!("the LRU lists at {:#x}: {err}", view.info.lruvec)
            });
            return Ok(());
        }
    };
    let mut listed = std::collections::BTreeSet::new();
    for (lru, name) in [(LRU_INACTIVE_ANON, "inactive"), (LRU_ACTIVE_ANON, "active")] {
        let list = lruvec.lists[lru];
        let (mut pfn, mut prev, mut pages) = (list.head, NO_PFN, 0u64);
        while pfn != NO_PFN {
            view.budget.spend(1, || format!("walking the {name} LRU list"))?;
            let page = match view.page(pfn) {
                Ok(page) => page,
                Err(err @ InspectError::Budget { .. }) => return Err(err),
                Err(err) => {
                    marks.finding(FindingKind::LruList, || format!("{name} LRU list: {err}"));
                    break;
                }
            };
            if !listed.insert(pfn) {
                marks.finding(FindingKind::LruList, || {
                    format!("pfn {pfn:#x} is on the LRU lists twice (a list loops?)")
                });
                break;
            }
            let active = page.flags & PG_ACTIVE != 0;
            if page.flags & (PG_LRU | PG_ANON) != PG_LRU | PG_ANON
                || active != (lru == LRU_ACTIVE_ANON)
            {
                marks.finding(FindingKind::LruList, || {
                    format!("pfn {pfn:#x} on the {name} LRU list is flagged {:#x}", page.flags)
                });
            }
            if page.prev != prev {
                marks.finding(FindingKind::LruList, || {
                    format!(
                        "pfn {pfn:#x} on the {name} LRU list: back link {:#x}, not {prev:#x}",
                        page.prev
                    )
                });
            }
            let whole = page.order == HUGE_ORDER;
            pages = pages.saturating_add(if whole { 1u64 << HUGE_ORDER } else { 1 });
            (prev, pfn) = (pfn, page.next);
        }
        if prev != list.tail || pages != list.nr_pages {
            marks.finding(FindingKind::LruList, || {
                format!(
                    "the {name} LRU list ends at {prev:#x} with {pages} pages; its head says tail {:#x}, {} pages",
                    list.tail, list.nr_pages
                )
            });
        }
    }
    for (&pfn, _) in frames.iter().filter(|(_, frame)| mapped(frame)) {
        if !listed.contains(&pfn) {
            marks.finding(FindingKind::LruList, || {
                format!("pfn {pfn:#x} is mapped by a process but on no LRU list")
            });
        }
    }
    for &pfn in &listed {
        if !frames.get(&pfn).is_some_and(mapped) {
            marks.finding(FindingKind::LruList, || {
                format!("pfn {pfn:#x} is on an LRU list but no process maps it")
            });
        }
    }
    Ok(())
}

/// A process's VMAs against the rules (sorted, disjoint, page aligned, not empty, below
/// TASK_SIZE) and its counters.
fn check_vmas(marks: &mut Marks, pid: u32, mm: &shared::process::MmStruct, vmas: &[Vma]) {
    let mut prev_end = 0;
    for v in vmas {
        let sound = v.start < v.end && (v.start | v.end) % 4096 == 0 && v.end <= TASK_SIZE;
        if !sound || v.start < prev_end {
            marks.finding(FindingKind::ProcessVmas, || {
                format!(
                    "pid {pid}: VMA {:#x}-{:#x} is {}",
                    v.start,
                    v.end,
                    if sound {
                        "out of order or overlaps the one before"
                    } else {
                        "empty, misaligned or beyond user space"
                    }
                )
            });
        }
        prev_end = prev_end.max(v.end);
    }
    let total = vmas.iter().map(|v| v.len() / 4096).fold(0, u64::saturating_add);
    if vmas.len() as u64 != mm.map_count || total != mm.total_vm {
        marks.finding(FindingKind::ProcessVmas, || {
            format!(
                "pid {pid}: its tree holds {} VMAs of {total} pages; map_count {}, total_vm {}",
                vmas.len(),
                mm.map_count,
                mm.total_vm
            )
        });
    }
}

/// A budget error from inside a loop, naming the loop too: the step where the budget runs
/// out (one slab's freelist) need not be what spent it (thousands of memblock regions,
/// each scanning every slab again).
fn within(err: InspectError, outer: impl FnOnce() -> String) -> InspectError {
    match err {
        InspectError::Budget { units, what } => {
            InspectError::Budget { units, what: format!("{what}, {}", outer()) }
        }
        other => other,
    }
}

/// Walks one free list; returns the blocks it holds (up to where it breaks).
fn walk_free_list(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    zone: &shared::mm::Zone,
    name: &str,
    order: u32,
    head: u64,
) -> Result<u64, InspectError> {
    let bound = (zone.spanned() >> order).saturating_add(1);
    let (mut pfn, mut prev, mut count) = (head, NO_PFN, 0u64);
    let mut scratch = Vec::new();
    while pfn != NO_PFN {
        view.budget
            .spend(1 << order, || format!("walking zone {name}'s order-{order} free list"))?;
        let at = lazy(move |f| {
            write!(f, "zone {name} order {order} free list, block {count} (pfn {pfn:#x})")
        });
        if count >= bound {
            marks.finding(FindingKind::FreeListLoop, || {
                format!("{at}: longer than the zone can hold: a cycle")
            });
            break;
        }
        if pfn % (1 << order) != 0 || !zone.spans(pfn) || !zone.spans(pfn + ((1 << order) - 1)) {
            marks.finding(FindingKind::FreeListBadBlock, || {
                format!("{at}: misaligned or outside the zone")
            });
            break;
        }
        let page = match view.page(pfn) {
            Ok(page) => page,
            Err(InspectError::Budget { units, what }) => {
                return Err(InspectError::Budget { units, what })
            }
            Err(err) => {
                marks.finding(FindingKind::FreeListUnreadable, || format!("{at}: {err}"));
                break;
            }
        };
        if page.flags & PG_BUDDY == 0 || page.order != order {
            marks.finding(FindingKind::FreeListWrongFlags, || {
                format!(
                    "{at}: not a free block of this order (flags {:#x}, order {})",
                    page.flags, page.order
                )
            });
        }
        if page.prev != prev {
            marks.finding(FindingKind::FreeListBackLink, || {
                format!("{at}: back link is {:#x}, expected {prev:#x}", page.prev)
            });
        }
        if marks.owner_of(pfn) == Some(Owner::Free) {
            marks.finding(FindingKind::FreeListLoop, || {
                format!("{at}: met twice: the list loops or shares blocks")
            });
            break;
        }
        if !marks.mark(pfn, 1 << order, Owner::Free) {
            break; // `mark` named the other owner.
        }
        if page.flags & PG_ZERO != 0 {
            check_known_zero(view, marks, pfn, order, &mut scratch, &at)?;
        }
        count += 1;
        (prev, pfn) = (pfn, page.next);
    }
    Ok(count)
}

/// Where the first byte that is not zero lies in `bytes`. Tests 64 bytes at a time, with
/// an OR the compiler turns into vector instructions: a byte at a time, the known-zero
/// check of a dense copy of a 256 MiB guest's RAM file took 200 ms.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const RUN: usize = 64;
    let mut runs = bytes.chunks_exact(RUN);
    let dirty = runs.by_ref().position(|run| run.iter().fold(0, |acc, &b| acc | b) != 0);
    let from = dirty.map_or(bytes.len() - runs.remainder().len(), |run| run * RUN);
    bytes[from..].iter().position(|&b| b != 0).map(|i| from + i)
}

/// A free block marked known zero (`PG_ZERO`) must read as zero: the guest serves new
/// pages from it without zeroing them. Reads only what the RAM file holds data for (a
/// block the VMM dropped is a hole); the walk already paid a unit per page.
fn check_known_zero(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    pfn: u64,
    order: u32,
    scratch: &mut Vec<u8>,
    at: &impl std::fmt::Display,
) -> Result<(), InspectError> {
    const CHUNK: u64 = 64 << 10;
    scratch.resize(to_usize(CHUNK), 0);
    let (start, len) = (pfn * 4096, 4096u64 << order);
    let mut offset = 0;
    while offset < len {
        let part = CHUNK.min(len - offset);
        let buf = &mut scratch[..to_usize(part)];
        let data = match view.ram.read_data(start + offset, buf) {
            Ok(data) => data,
            Err(err) => {
                marks.finding(FindingKind::KnownZeroNotZero, || {
                    format!("{at}: marked known zero, cannot be read: {err}")
                });
                return Ok(());
            }
        };
        let dirty = data.iter().find_map(|r| first_nonzero(&buf[r.clone()]).map(|i| r.start + i));
        if let Some(i) = dirty {
            let gpa = start + offset + i as u64;
            marks.finding(FindingKind::KnownZeroNotZero, || {
                format!("{at}: marked known zero, holds data at {gpa:#x}")
            });
            return Ok(());
        }
        offset += part;
    }
    Ok(())
}

/// The slab caches, and the slabs on each one's quarantine list.
struct Slabs<'a> {
    caches: &'a [Cache],
    quarantined: &'a [std::collections::HashSet<u64>],
}

#[allow(clippy::too_many_arguments)]
fn scan_page(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    zones: &[shared::mm::Zone],
    zone_pages: &mut [(u64, u64, u64)],
    slabs: &Slabs<'_>,
    counts: &mut [CacheCount],
    pfn: u64,
    page: &Page,
) -> Result<(), InspectError> {
    let owner = marks.owner_of(pfn);
    if page.flags & PG_BUDDY != 0 && owner != Some(Owner::Free) {
        marks.finding(FindingKind::StrayBuddyFlag, || {
            format!("pfn {pfn:#x} is flagged PG_BUDDY but on no free list")
        });
    }
    if page.flags & PG_PCP != 0 && owner != Some(Owner::Pcp) {
        marks.finding(FindingKind::StrayPcpFlag, || {
            format!("pfn {pfn:#x} is flagged PG_PCP but on no per-CPU list")
        });
    }
    if page.flags & PG_ANON != 0 && owner != Some(Owner::User) {
        marks.finding(FindingKind::MapcountMismatch, || {
            format!(
                "pfn {pfn:#x} is flagged PG_ANON (mapcount {}) but no process maps it",
                page.mapcount
            )
        });
    }
    if page.flags & PG_HEAD == 0 {
        return Ok(());
    }
    if page.order > MAX_ORDER {
        marks.finding(FindingKind::BadBlockOrder, || {
            format!("pfn {pfn:#x}: allocated block of order {} (at most {MAX_ORDER})", page.order)
        });
        return Ok(());
    }
    let pages = 1u64 << page.order;
    view.budget.spend(pages, || format!("marking the allocated block at pfn {pfn:#x}"))?;
    if let Some(z) = zones.iter().position(|z| z.spans(pfn)) {
        zone_pages[z].2 += pages;
    }
    if page.flags & PG_SLAB != 0 {
        // A slab whose frames already have an owner (reported by `mark`) is not checked:
        // slabs claimed on overlapping frames would each be read in full.
        let owned = marks.mark(pfn, pages, Owner::Slab);
        match slabs.caches.iter().position(|c| c.addr == page.slab_cache) {
            Some(c) if owned => {
                let quarantined = slabs.quarantined[c].contains(&pfn);
                let cache = &slabs.caches[c];
                check_slab(view, marks, cache, &mut counts[c], pfn, page, quarantined)?
            }
            Some(_) => {}
            None => marks.finding(FindingKind::UnknownSlabCache, || {
                format!("pfn {pfn:#x}: slab of unknown cache {:#x}", page.slab_cache)
            }),
        }
    } else {
        marks.mark(pfn, pages, Owner::Allocated);
    }
    Ok(())
}

/// A cache's lists of slabs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SlabList {
    /// Slabs with free objects.
    Partial,
    /// Slabs a debug check took out of service.
    Quarantined,
}

/// Walks one of a cache's lists: slabs of this cache, never the current one, linked both
/// ways, met once. The partial list holds no full slab, and as many empty ones as the
/// cache counts, and no slab of `elsewhere` (the quarantine list, for the partial list).
/// Returns the sound slabs met.
fn walk_slab_list(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    cache: &Cache,
    list: SlabList,
    elsewhere: &std::collections::HashSet<u64>,
) -> Result<std::collections::HashSet<u64>, InspectError> {
    let c = &cache.raw;
    let (head, name) = match list {
        SlabList::Partial => (c.partial, "partial list"),
        SlabList::Quarantined => (c.quarantined, "quarantine list"),
    };
    let (mut slab, mut prev, mut empty) = (head, NO_PFN, 0u64);
    let (mut seen, mut sound) =
        (std::collections::HashSet::new(), std::collections::HashSet::new());
    while slab != NO_PFN {
        view.budget.spend(1, || format!("walking cache {}'s {name}", cache.name))?;
        let (cache_name, index) = (&cache.name, seen.len());
        let at =
            lazy(move |f| write!(f, "cache {cache_name} {name}, slab {index} (pfn {slab:#x})"));
        if !seen.insert(slab) {
            marks.finding(FindingKind::PartialListLoop, || {
                format!("{at}: met twice: the list loops")
            });
            return Ok(sound);
        }
        let page = match view.page(slab) {
            Ok(page) => page,
            Err(InspectError::Budget { units, what }) => {
                return Err(InspectError::Budget { units, what })
            }
            Err(err) => {
                marks.finding(FindingKind::PartialListBadSlab, || format!("{at}: {err}"));
                return Ok(sound);
            }
        };
        if page.flags & PG_SLAB == 0 || page.slab_cache != cache.addr || slab == c.cpu_slab {
            marks.finding(FindingKind::PartialListBadSlab, || {
                format!("{at}: not a slab of this cache off the CPU (flags {:#x})", page.flags)
            });
            return Ok(sound);
        }
        if elsewhere.contains(&slab) {
            marks.finding(FindingKind::PartialListBadSlab, || {
                format!("{at}: also on the quarantine list")
            });
            return Ok(sound);
        }
        sound.insert(slab);
        if page.prev != prev {
            marks.finding(FindingKind::PartialListBackLink, || {
                format!("{at}: back link is {:#x}, expected {prev:#x}", page.prev)
            });
        }
        if list == SlabList::Partial && page.slab_inuse >= page.slab_objects {
            marks.finding(FindingKind::PartialListFullSlab, || {
                format!("{at}: full ({} of {} objects in use)", page.slab_inuse, page.slab_objects)
            });
        }
        empty += u64::from(page.slab_inuse == 0);
        (prev, slab) = (slab, page.next);
    }
    if list == SlabList::Partial && empty != c.empty {
        marks.finding(FindingKind::EmptySlabCount, || {
            format!(
                "cache {}: counts {} empty slabs, its partial list holds {empty}",
                cache.name, c.empty
            )
        });
    }
    Ok(sound)
}

/// Walks one slab's freelist: every link inside the slab, at an object, met once; free
/// objects and objects in use adding up to the slab's objects. In a debug cache, unless
/// the slab is `quarantined`, every object's red zone and poison too.
fn check_slab(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    cache: &Cache,
    count: &mut CacheCount,
    pfn: u64,
    page: &Page,
    quarantined: bool,
) -> Result<(), InspectError> {
    let c = &cache.raw;
    let current = pfn == c.cpu_slab;
    let (inuse, mut object) = if current {
        (c.cpu_inuse, c.cpu_freelist)
    } else {
        (u32::from(page.slab_inuse), page.slab_freelist)
    };
    count.slabs += 1;
    count.pages += 1 << page.order.min(MAX_ORDER);
    count.objects_in_use += u64::from(inuse);
    let cache_name = &cache.name;
    let at = lazy(move |f| write!(f, "cache {cache_name} slab pfn {pfn:#x}"));
    let slab_bytes = 4096u64 << page.order.min(MAX_ORDER);
    let geometry_ok = c.order == page.order
        && u64::from(page.slab_objects) == c.objects
        && c.stride >= 8
        && c.objects.saturating_mul(c.stride) <= slab_bytes
        && u64::from(c.free_offset) + 8 <= c.stride;
    if !geometry_ok {
        marks.finding(FindingKind::SlabGeometry, || {
            format!(
                "{at}: order {} and {} objects, the cache says order {} and {} objects of {} bytes",
                page.order, page.slab_objects, c.order, c.objects, c.stride
            )
        });
        return Ok(());
    }
    view.budget.spend(c.objects, || format!("walking the freelist of {at}"))?;
    let base = view.info.page_offset.wrapping_add(pfn * 4096);
    let mut seen = vec![false; to_usize(c.objects)];
    let mut free = 0u64;
    while object != 0 {
        let offset = object.wrapping_sub(base);
        let index = offset / c.stride;
        if offset % c.stride != 0 || index >= seen.len() as u64 {
            marks.finding(
                FindingKind::SlabFreelistBadLink,
                || format!("{at}: freelist link {object:#x} after {free} free objects is not an object of the slab"),
            );
            return Ok(());
        }
        if std::mem::replace(&mut seen[to_usize(index)], true) {
            marks.finding(FindingKind::SlabFreelistLoop, || {
                format!("{at}: freelist loops back to object {index} after {free} free objects")
            });
            return Ok(());
        }
        free += 1;
        let link = object.wrapping_sub(view.info.page_offset) + u64::from(c.free_offset);
        match view.ram.read_u64(link) {
            Some(next) => object = next,
            None => {
                marks.finding(FindingKind::SlabFreelistBadLink, || {
                    format!("{at}: free object {object:#x} is not in RAM")
                });
                return Ok(());
            }
        }
    }
    count.objects_free += free;
    if free + u64::from(inuse) != c.objects {
        marks.finding(FindingKind::SlabObjectCount, || {
            format!(
                "{at}: {free} free objects and {inuse} in use, but the slab has {} objects",
                c.objects
            )
        });
    }
    if c.has_red_zones() && !quarantined {
        check_debug_objects(view, marks, cache, &at, base, &seen)?;
    }
    Ok(())
}

/// Checks every object of a debug slab as SLUB's `validate_slab` does: a free object
/// (`free[i]`) has its inactive red zone and, if the cache poisons, its poison; an
/// allocated one its active red zone and, in a kmalloc class, red zone from the size its
/// caller asked for to the class size.
fn check_debug_objects(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    cache: &Cache,
    at: &dyn std::fmt::Display,
    base: u64,
    free: &[bool],
) -> Result<(), InspectError> {
    let c = &cache.raw;
    // The layout must fit the stride (the geometry check bounded the stride by the slab).
    let size = c.object_size;
    let requested_at = c.requested_size_offset();
    let fits = size >= 1
        && size <= c.red_end
        && c.red_end <= c.stride
        && requested_at.is_none_or(|offset| offset + 8 <= c.stride);
    if !fits {
        marks.finding(FindingKind::SlabGeometry, || {
            format!(
                "{at}: object size {size} and red zone end {} do not fit its {}-byte stride",
                c.red_end, c.stride
            )
        });
        return Ok(());
    }
    let len = c.objects * c.stride;
    // A unit per object and per 256 bytes compared: a page of objects costs what 16
    // struct pages do.
    view.budget
        .spend(c.objects + len / 256, || format!("checking the red zones and poison of {at}"))?;
    let mut bytes = vec![0u8; to_usize(len)];
    // By frame, as the freelist walk reads: the slab is its frames, whatever maps them.
    if let Err(err) = view.ram.read(base.wrapping_sub(view.info.page_offset), &mut bytes) {
        marks.finding(FindingKind::SlabGeometry, || {
            format!("{at}: its objects are not in RAM: {err}")
        });
        return Ok(());
    }
    let differs = |object: &[u8], from: u64, to: u64, byte: u8| {
        let bytes = &object[to_usize(from)..to_usize(to)];
        // Compared a chunk at a time (memcmp); searched byte by byte only where one differs.
        let pattern = [byte; 256];
        let bad = bytes.chunks(pattern.len()).position(|chunk| chunk != &pattern[..chunk.len()])?;
        let rest = &bytes[bad * pattern.len()..];
        rest.iter().position(|&b| b != byte).map(|i| from + (bad * pattern.len() + i) as u64)
    };
    for (index, &is_free) in free.iter().enumerate() {
        let offset = index as u64 * c.stride;
        let object = &bytes[to_usize(offset)..to_usize(offset + c.stride)];
        let address = base.wrapping_add(offset);
        let state = if is_free { "free" } else { "in use" };
        let mut report = |kind: FindingKind, what: &dyn Fn() -> String| {
            marks.finding(kind, || format!("{at}: object {address:#x} ({state}): {}", what()));
        };
        let red = if is_free { RED_INACTIVE } else { RED_ACTIVE };
        if let Some(byte) = differs(object, size, c.red_end, red) {
            report(FindingKind::SlabRightRedzone, &|| {
                format!(
                    "Right Redzone overwritten at byte {byte} ({:#04x}, expected {red:#04x})",
                    object[to_usize(byte)]
                )
            });
        }
        if is_free && c.poisons() {
            let damaged = differs(object, 0, size - 1, POISON_FREE)
                .or_else(|| differs(object, size - 1, size, POISON_END));
            if let Some(byte) = damaged {
                report(FindingKind::SlabPoisonOverwritten, &|| {
                    format!(
                        "Poison overwritten at byte {byte} ({:#04x}): a write after free",
                        object[to_usize(byte)]
                    )
                });
            }
        }
        if let (false, Some(word)) = (is_free, requested_at) {
            let word = to_usize(word);
            let requested =
                u64::from_le_bytes(object[word..word + 8].try_into().unwrap_or([0xff; 8]));
            if requested > size {
                report(FindingKind::SlabKmallocRedzone, &|| {
                    format!("kmalloc Redzone: requested size {requested} is more than the object's {size}")
                });
            } else if let Some(byte) = differs(object, requested, size, RED_ACTIVE) {
                report(FindingKind::SlabKmallocRedzone, &|| {
                    format!(
                        "kmalloc Redzone overwritten at byte {byte} ({:#04x}) of {requested} requested",
                        object[to_usize(byte)]
                    )
                });
            }
        }
    }
    Ok(())
}

/// The report as text: pages by owner, caches, then the findings or "OK".
pub fn check_text(report: &CheckReport) -> String {
    let mut out = format!("RAM pages: {}\n", report.ram_pages);
    for count in &report.pages {
        let _ = writeln!(out, "  {:<20} {:>10}", count.owner, count.pages);
    }
    let _ = writeln!(
        out,
        "slab caches: {:<15} {:>6} {:>6} {:>8} {:>8}",
        "", "pages", "slabs", "in use", "free"
    );
    for c in report.caches.iter().filter(|c| c.slabs > 0) {
        let _ = writeln!(
            out,
            "  {:<26} {:>6} {:>6} {:>8} {:>8}",
            c.name, c.pages, c.slabs, c.objects_in_use, c.objects_free
        );
    }
    if report.ok() {
        out.push_str("OK: every RAM page has exactly one owner; free, per-CPU, partial and slab free lists are well formed; zone and cache counters match; every kernel mapping is where it belongs; every process's pages agree with its VMAs and counters\n");
    } else {
        let _ =
            writeln!(out, "{} problems:", report.findings.len() as u64 + report.findings_omitted);
        for finding in &report.findings {
            let _ = writeln!(out, "  {}", finding.text);
        }
        if report.findings_omitted > 0 {
            let _ = writeln!(out, "  ... and {} more", report.findings_omitted);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::first_nonzero;

    #[test]
    fn first_nonzero_finds_the_first_set_byte_wherever_it_lies() {
        let lengths = (0..=200).chain([4095, 4096]);
        for len in lengths {
            let zeros = vec![0u8; len];
            assert_eq!(first_nonzero(&zeros), None, "{len} zeros");
            for at in 0..len {
                let mut bytes = zeros.clone();
                bytes[at] = if at % 2 == 0 { 0x80 } else { 1 };
                bytes[len - 1] |= 0x10; // a later byte does not hide the first
                assert_eq!(first_nonzero(&bytes), Some(at), "{len} bytes, the first set at {at}");
            }
        }
    }
}
