//! The memory map: one [`Page`] per present page frame at `VMEMMAP_BASE + 64 × pfn`.
//!
//! Life cycle: [`VmemmapLayout::new`] finds the frames that need a descriptor (memblock's
//! memory, in whole pages of descriptors); [`VmemmapLayout::populate`] backs them in the
//! kernel's tree while it is built: each 2 MiB of the array (one 128 MiB section of
//! memory) with a 2 MiB page when at least half of it is needed, else with 4 KiB pages
//! where it is, so holes cost no `struct page`; once the tree is loaded,
//! [`VmemmapLayout::activate`] gives the [`Vmemmap`] the buddy allocator runs on. The
//! backing comes from memblock and is never cleared: it is RAM the VMM handed over
//! zeroed, and a zero `Page` is valid.

use super::tables::BootTables;
use guest::buddy::Memmap;
use guest::memblock::{Region, MAX_REGIONS};
use guest::paging::{Frame, MapError, Mapper, PageSize, PteFlags, VirtPage};
use shared::addr::{PhysAddr, VirtAddr};
use shared::layout::{PAGE_SIZE, VMEMMAP_BASE};
use shared::page::{Page, PAGE_STRUCT_SIZE};

/// Page frames whose `Page` shares one 4 KiB page of the array.
const PFNS_PER_MAP_PAGE: u64 = PAGE_SIZE / PAGE_STRUCT_SIZE as u64;
/// 2 MiB: one page of the array per 128 MiB section.
const CHUNK: u64 = PageSize::Size2M.bytes();

/// `pfn_to_page`: the address of `pfn`'s descriptor.
pub fn address(pfn: u64) -> u64 {
    VMEMMAP_BASE + pfn * PAGE_STRUCT_SIZE as u64
}

/// `page_to_pfn`: the page frame a descriptor address describes.
pub fn pfn_of(page: *const Page) -> u64 {
    (page as u64 - VMEMMAP_BASE) / PAGE_STRUCT_SIZE as u64
}

/// The page-frame ranges that have descriptors: `[start, end)`, sorted, in whole pages of
/// the array.
#[derive(Clone, Copy)]
pub struct VmemmapLayout {
    ranges: [(u64, u64); MAX_REGIONS],
    len: usize,
}

impl VmemmapLayout {
    /// The ranges for `memory` (memblock's memory regions; the e820 map has no more RAM
    /// ranges than [`MAX_REGIONS`]).
    pub fn new(memory: &[Region]) -> Self {
        let mut layout = Self { ranges: [(0, 0); MAX_REGIONS], len: 0 };
        for region in memory.iter().take(MAX_REGIONS) {
            let start = region.base / PAGE_SIZE / PFNS_PER_MAP_PAGE * PFNS_PER_MAP_PAGE;
            let end =
                region.end().div_ceil(PAGE_SIZE).div_ceil(PFNS_PER_MAP_PAGE) * PFNS_PER_MAP_PAGE;
            match layout.ranges[..layout.len].last_mut() {
                Some(last) if last.1 >= start => last.1 = last.1.max(end),
                _ => {
                    layout.ranges[layout.len] = (start, end);
                    layout.len += 1;
                }
            }
        }
        layout
    }

    /// Backs the array in `tree`, which is being built, with pages from its memblock.
    pub fn populate(
        &self,
        tree: &mut Mapper<BootTables<'_>>,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let mut done_until = 0;
        for &(start, end) in &self.ranges[..self.len] {
            let mut chunk = (address(start) / CHUNK * CHUNK).max(done_until);
            while chunk < address(end) {
                self.back_chunk(chunk, tree, flags)?;
                chunk += CHUNK;
            }
            done_until = chunk;
        }
        Ok(())
    }

    /// Backs the 2 MiB of the array at `chunk`: with one 2 MiB page when at least half of
    /// it describes present memory, else with 4 KiB pages where it does.
    fn back_chunk(
        &self,
        chunk: u64,
        tree: &mut Mapper<BootTables<'_>>,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let needed: u64 = self.needed_in(chunk).map(|(from, to)| to - from).sum();
        if needed >= CHUNK / 2 {
            if let Some(phys) = tree.memory.memblock.alloc(CHUNK, CHUNK, u64::MAX) {
                let page = VirtPage::new(VirtAddr::new(chunk), PageSize::Size2M)?;
                let frame = Frame::new(PhysAddr::new(phys), PageSize::Size2M)?;
                // The tree is not loaded yet: nothing to flush.
                return tree.map(page, frame, flags).map(|flush| flush.ignore());
            }
        }
        for (from, to) in self.needed_in(chunk) {
            // The ranges are whole, disjoint pages of the array, and each chunk is backed
            // once: no page here is mapped yet.
            for virt in (from..to).step_by(super::PAGE_BYTES) {
                let phys = tree
                    .memory
                    .memblock
                    .alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX)
                    .ok_or(MapError::NoTableMemory)?;
                let page = VirtPage::new(VirtAddr::new(virt), PageSize::Size4K)?;
                let frame = Frame::new(PhysAddr::new(phys), PageSize::Size4K)?;
                tree.map(page, frame, flags)?.ignore();
            }
        }
        Ok(())
    }

    /// The parts of the array in `[chunk, chunk + 2 MiB)` that describe present memory.
    fn needed_in(&self, chunk: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges[..self.len].iter().filter_map(move |&(start, end)| {
            let (from, to) = (address(start).max(chunk), address(end).min(chunk + CHUNK));
            (from < to).then_some((from, to))
        })
    }

    /// The memory map, usable from now on.
    ///
    /// # Safety
    /// A tree in which [`populate`](Self::populate) backed this layout is loaded in CR3,
    /// and this is the only `Vmemmap` made from it.
    pub unsafe fn activate(self) -> Vmemmap {
        Vmemmap { layout: self }
    }
}

/// The memory map over the page-frame ranges it backs.
pub struct Vmemmap {
    layout: VmemmapLayout,
}

impl Vmemmap {
    /// Whether `pfn` has a descriptor (Linux's `pfn_valid`): a binary search over the
    /// backed ranges.
    pub fn valid(&self, pfn: u64) -> bool {
        let ranges = &self.layout.ranges[..self.layout.len];
        let index = ranges.partition_point(|&(_, end)| end <= pfn);
        ranges.get(index).is_some_and(|&(start, _)| start <= pfn)
    }
}

impl Memmap for Vmemmap {
    fn page(&mut self, pfn: u64) -> Option<&mut Page> {
        // SAFETY: `valid` says the array is backed at this address (`activate`'s contract:
        // the tree that maps it is loaded), the memory is reserved in memblock for the map
        // alone, and `&mut self` of the one `Vmemmap` makes this the only reference.
        self.valid(pfn).then(|| unsafe { &mut *(address(pfn) as *mut Page) })
    }
}

/// The descriptor of a frame its caller owns outright, for code that cannot borrow the
/// memory managers (the page-fault handler's pager, for the frames of its pool).
///
/// # Safety
/// `pfn` is a frame of RAM (so its descriptor is backed), which the caller owns: no other
/// code reads or writes its descriptor while the reference lives.
pub unsafe fn owned_page<'a>(pfn: u64) -> &'a mut Page {
    // SAFETY: the caller's contract.
    unsafe { &mut *(address(pfn) as *mut Page) }
}
