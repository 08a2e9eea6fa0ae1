//! The memory map: one [`Page`] per present page frame at `VMEMMAP_BASE + 64 × pfn`.
//!
//! Only the parts of the array that describe present memory are backed: each 2 MiB of the
//! array (one 128 MiB section of memory) with a 2 MiB page when at least half of it is
//! needed, else with 4 KiB pages where it is, so large holes cost no `struct page`. The backing comes
//! from memblock and is never cleared: it is RAM the VMM handed over zeroed, and a zero
//! `Page` is valid.

use super::paging::{self, MapError, PageSize, PAGE_2M};
use guest::buddy::Memmap;
use guest::memblock::{Memblock, MAX_REGIONS};
use shared::layout::{PAGE_SIZE, VMEMMAP_BASE};
use shared::page::{Page, PAGE_STRUCT_SIZE};

/// Bytes of a 4 KiB page of the array.
const MAP_PAGE_BYTES: usize = 4096;

/// Page frames whose `Page` shares one 4 KiB page of the array.
const PFNS_PER_MAP_PAGE: u64 = PAGE_SIZE / PAGE_STRUCT_SIZE as u64;

/// The memory map over the page-frame ranges it backs.
pub struct Vmemmap {
    /// Backed page-frame ranges `[start, end)`, sorted, in whole map pages.
    ranges: [(u64, u64); MAX_REGIONS],
    len: usize,
}

impl Vmemmap {
    /// Backs the map for every region of memblock's memory (at most [`MAX_REGIONS`]: the
    /// e820 map has no more RAM ranges than that).
    pub fn populate(memblock: &mut Memblock) -> Result<Self, MapError> {
        let mut map = Self { ranges: [(0, 0); MAX_REGIONS], len: 0 };
        for region in memblock.memory.regions().iter().take(MAX_REGIONS) {
            let start = region.base / PAGE_SIZE / PFNS_PER_MAP_PAGE * PFNS_PER_MAP_PAGE;
            let end =
                region.end().div_ceil(PAGE_SIZE).div_ceil(PFNS_PER_MAP_PAGE) * PFNS_PER_MAP_PAGE;
            match map.ranges[..map.len].last_mut() {
                Some(last) if last.1 >= start => last.1 = last.1.max(end),
                _ => {
                    map.ranges[map.len] = (start, end);
                    map.len += 1;
                }
            }
        }
        let mut done_until = 0;
        for index in 0..map.len {
            let (start, end) = map.ranges[index];
            let mut chunk = (address(start) / PAGE_2M * PAGE_2M).max(done_until);
            while chunk < address(end) {
                map.back_chunk(chunk, memblock)?;
                chunk += PAGE_2M;
            }
            done_until = chunk;
        }
        Ok(map)
    }

    /// Backs the 2 MiB of the array at `chunk`: with one 2 MiB page when at least half of
    /// it describes present memory, else with 4 KiB pages where it does.
    fn back_chunk(&self, chunk: u64, memblock: &mut Memblock) -> Result<(), MapError> {
        let needed: u64 = self.needed_in(chunk).map(|(from, to)| to - from).sum();
        if needed >= PAGE_2M / 2 {
            if let Some(phys) = memblock.alloc(PAGE_2M, PAGE_2M, u64::MAX) {
                return paging::map(chunk, phys, PageSize::Size2M, memblock);
            }
        }
        for (from, to) in self.needed_in(chunk) {
            for virt in (from..to).step_by(MAP_PAGE_BYTES) {
                if !paging::is_mapped(virt) {
                    let phys = memblock
                        .alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX)
                        .ok_or(MapError::NoTablePage)?;
                    paging::map(virt, phys, PageSize::Size4K, memblock)?;
                }
            }
        }
        Ok(())
    }

    /// The parts of the array in `[chunk, chunk + 2 MiB)` that describe present memory.
    fn needed_in(&self, chunk: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges[..self.len].iter().filter_map(move |&(start, end)| {
            let (from, to) = (address(start).max(chunk), address(end).min(chunk + PAGE_2M));
            (from < to).then_some((from, to))
        })
    }

    /// Whether `pfn` has a descriptor.
    pub fn valid(&self, pfn: u64) -> bool {
        let ranges = &self.ranges[..self.len];
        let index = ranges.partition_point(|&(_, end)| end <= pfn);
        ranges.get(index).is_some_and(|&(start, _)| start <= pfn)
    }
}

/// `pfn_to_page`: the address of `pfn`'s descriptor.
pub fn address(pfn: u64) -> u64 {
    VMEMMAP_BASE + pfn * PAGE_STRUCT_SIZE as u64
}

/// `page_to_pfn`: the page frame a descriptor address describes.
pub fn pfn_of(page: *const Page) -> u64 {
    (page as u64 - VMEMMAP_BASE) / PAGE_STRUCT_SIZE as u64
}

impl Memmap for Vmemmap {
    fn page(&mut self, pfn: u64) -> Option<&mut Page> {
        // SAFETY: `valid` says the array is backed at this address (populate mapped it),
        // the memory is reserved in memblock for the map alone, and `&mut self` makes
        // this the only reference into the map.
        self.valid(pfn).then(|| unsafe { &mut *(address(pfn) as *mut Page) })
    }
}
