//! vmalloc: virtually contiguous kernel memory made of page frames from anywhere, in a
//! window of the kernel's address space (Linux's `mm/vmalloc.c`).
//!
//! ```text
//! start  [area 0 pages][guard][area 1 pages][guard]   …   end
//! ```
//!
//! Life of an area: [`Vmalloc::vmalloc`] places it first-fit with an unmapped guard page
//! after it, so that running off its end faults, and maps a fresh frame at each page
//! ([`VmallocMemory::alloc_frame`]); [`Vmalloc::ioremap`] maps device memory the same way,
//! uncached. [`Vmalloc::vfree`] unmaps the area a chunk at a time (page tables go back as
//! they empty), invalidates the TLB for each chunk, and only then gives its frames back.
//! The mappings are global, so that invalidation must reach global entries:
//! [`Tlb::flush_all`]'s contract.

use crate::paging::{Frame, MapError, Mapper, PageSize, PteFlags, TableAlloc, Tlb, VirtPage};
use shared::addr::{PhysAddr, VirtAddr};

/// Areas that can exist at once.
pub const MAX_AREAS: usize = 64;
/// Pages unmapped, flushed and freed at a time by [`Vmalloc::vfree`].
pub const VFREE_CHUNK: usize = 64;

const PAGE: u64 = PageSize::Size4K.bytes();

/// The page tables of the tree areas are mapped in, and the frames areas are made of.
pub trait VmallocMemory: TableAlloc {
    /// A page frame for an area; `None` when memory runs out.
    fn alloc_frame(&mut self) -> Option<PhysAddr>;
    /// Gives back a frame [`alloc_frame`](Self::alloc_frame) returned.
    fn free_frame(&mut self, frame: PhysAddr);
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Area {
    start: u64,
    pages: u64,
    /// Device memory: its frames are not ours to free.
    io: bool,
}

impl Area {
    /// End of the area including its guard page.
    fn end_with_guard(&self) -> u64 {
        self.start + (self.pages + 1) * PAGE
    }
}

/// Why a vmalloc operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmallocError {
    /// Zero bytes were asked for.
    Empty,
    /// No room in the window, or [`MAX_AREAS`] areas already.
    NoSpace,
    /// No frame or page table was left.
    NoMemory,
    /// The address does not start an area.
    NotAnArea(u64),
    /// The tree does not hold what the area mapped (it was changed behind vmalloc's back).
    Tree(MapError),
}

impl From<MapError> for VmallocError {
    fn from(err: MapError) -> Self {
        match err {
            MapError::NoTableMemory => Self::NoMemory,
            other => Self::Tree(other),
        }
    }
}

impl core::fmt::Display for VmallocError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => write!(f, "zero bytes asked for"),
            Self::NoSpace => write!(f, "no room in the vmalloc area"),
            Self::NoMemory => write!(f, "out of memory"),
            Self::NotAnArea(addr) => write!(f, "{addr:#x} does not start a vmalloc area"),
            Self::Tree(err) => write!(f, "page tables: {err}"),
        }
    }
}

/// The live areas of one window.
pub struct Vmalloc {
    areas: [Area; MAX_AREAS],
    len: usize,
    window: (u64, u64),
    nx: PteFlags,
}

impl Vmalloc {
    /// No areas in `[start, end)`; `nx` says whether the CPU has no-execute pages.
    pub const fn new(start: VirtAddr, end: VirtAddr, nx: bool) -> Self {
        Self {
            areas: [Area { start: 0, pages: 0, io: false }; MAX_AREAS],
            len: 0,
            window: (start.as_u64(), end.as_u64()),
            nx: if nx { PteFlags::NO_EXECUTE } else { PteFlags::empty() },
        }
    }

    /// First-fit placement of `pages` pages and a guard page: where in the sorted list
    /// and at which address.
    fn place(&self, pages: u64) -> Result<(usize, u64), VmallocError> {
        let bytes = pages.checked_add(1).and_then(|p| p.checked_mul(PAGE));
        let bytes = bytes.ok_or(VmallocError::NoSpace)?;
        let mut candidate = self.window.0;
        for (index, area) in self.areas[..self.len].iter().enumerate() {
            if candidate + bytes <= area.start {
                return Ok((index, candidate));
            }
            candidate = area.end_with_guard();
        }
        if self.len == MAX_AREAS || candidate.checked_add(bytes).is_none_or(|e| e > self.window.1) {
            return Err(VmallocError::NoSpace);
        }
        Ok((self.len, candidate))
    }

    fn insert(&mut self, index: usize, area: Area) {
        self.areas.copy_within(index..self.len, index + 1);
        self.areas[index] = area;
        self.len += 1;
    }

    /// Allocates `size` bytes of virtually contiguous memory, read-write, not executable,
    /// global, mapped in `tree`.
    pub fn vmalloc<M: VmallocMemory>(
        &mut self,
        tree: &mut Mapper<M>,
        tlb: &impl Tlb,
        size: u64,
    ) -> Result<VirtAddr, VmallocError> {
        if size == 0 {
            return Err(VmallocError::Empty);
        }
        let pages = size.div_ceil(PAGE);
        let (index, start) = self.place(pages)?;
        let flags = PteFlags::WRITABLE | PteFlags::GLOBAL | self.nx;
        for page in 0..pages {
            let virt = VirtAddr::new(start + page * PAGE);
            let mapped = match tree.memory.alloc_frame() {
                None => Err(VmallocError::NoMemory),
                Some(frame) => {
                    let (page, frame) = (
                        VirtPage::containing(virt, PageSize::Size4K),
                        Frame::containing(frame, PageSize::Size4K),
                    );
                    // The address was unmapped: no TLB holds it.
                    tree.map(page, frame, flags).map(|flush| flush.ignore()).map_err(|err| {
                        tree.memory.free_frame(frame.start());
                        VmallocError::from(err)
                    })
                }
            };
            if let Err(err) = mapped {
                // Give back what was mapped so far; its failure would hide the first.
                let _ = release(tree, tlb, Area { start, pages: page, io: false });
                return Err(err);
            }
        }
        self.insert(index, Area { start, pages, io: false });
        Ok(VirtAddr::new(start))
    }

    /// Maps `size` bytes of device memory at physical `phys` (page aligned) uncached and
    /// global; executable only if asked.
    pub fn ioremap<M: TableAlloc>(
        &mut self,
        tree: &mut Mapper<M>,
        phys: PhysAddr,
        size: u64,
        executable: bool,
    ) -> Result<VirtAddr, VmallocError> {
        let pages = size.div_ceil(PAGE).max(1);
        let (index, start) = self.place(pages)?;
        let nx = if executable { PteFlags::empty() } else { self.nx };
        let flags = PteFlags::WRITABLE | PteFlags::NO_CACHE | PteFlags::GLOBAL | nx;
        let mapping =
            tree.map_range(VirtAddr::new(start), phys, pages * PAGE, flags, PageSize::Size4K);
        // The range was unmapped: no TLB holds it.
        mapping.map(|flush| flush.ignore())?;
        self.insert(index, Area { start, pages, io: true });
        Ok(VirtAddr::new(start))
    }

    /// Frees the area starting at `addr`: unmaps it, invalidates the TLB, gives its frames
    /// back (not those of device memory).
    pub fn vfree<M: VmallocMemory>(
        &mut self,
        tree: &mut Mapper<M>,
        tlb: &impl Tlb,
        addr: VirtAddr,
    ) -> Result<(), VmallocError> {
        let addr = addr.as_u64();
        let index = self.areas[..self.len]
            .iter()
            .position(|a| a.start == addr)
            .ok_or(VmallocError::NotAnArea(addr))?;
        let area = self.areas[index];
        self.areas.copy_within(index + 1..self.len, index);
        self.len -= 1;
        release(tree, tlb, area)
    }

    /// The number of live areas.
    pub fn areas(&self) -> usize {
        self.len
    }

    /// The first address and pages of the live area holding `addr`, if any.
    pub fn area_of(&self, addr: VirtAddr) -> Option<(VirtAddr, u64)> {
        let addr = addr.as_u64();
        let area = self.areas[..self.len]
            .iter()
            .find(|a| a.start <= addr && addr < a.start + a.pages * PAGE)?;
        Some((VirtAddr::new(area.start), area.pages))
    }
}

/// Unmaps `area`'s pages a chunk at a time: collect the chunk's frames, unmap it in one
/// pass, invalidate the TLB, then free the frames, which no translation reaches any more.
fn release<M: VmallocMemory>(
    tree: &mut Mapper<M>,
    tlb: &impl Tlb,
    area: Area,
) -> Result<(), VmallocError> {
    let mut done = 0;
    while done < area.pages {
        let count = (area.pages - done).min(VFREE_CHUNK as u64);
        let virt = VirtAddr::new(area.start + done * PAGE);
        let mut frames = [PhysAddr::new(0); VFREE_CHUNK];
        let mut mapped = 0;
        tree.translate_each(virt, count, |_, translation| {
            if let Some(translation) = translation {
                frames[mapped] = translation.phys;
                mapped += 1;
            }
        });
        tree.unmap_range(virt, count * PAGE).map_err(VmallocError::Tree)?.flush(tlb);
        if !area.io {
            for &frame in &frames[..mapped] {
                tree.memory.free_frame(frame);
            }
        }
        done += count;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Arena, Recorder};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    const START: u64 = 0xffff_c900_0000_0000;
    const END: u64 = START + (1 << 30);

    fn setup() -> (Vmalloc, Mapper<Arena>, Recorder) {
        let tree = Mapper::create(Arena::default()).expect("root");
        (Vmalloc::new(VirtAddr::new(START), VirtAddr::new(END), true), tree, Recorder::default())
    }

    fn mapped(tree: &mut Mapper<Arena>, virt: u64) -> Option<u64> {
        tree.translate(VirtAddr::new(virt)).map(|t| t.phys.as_u64())
    }

    #[test]
    fn areas_are_mapped_with_a_guard_page_between_them() {
        let (mut vm, mut tree, tlb) = setup();
        let a = vm.vmalloc(&mut tree, &tlb, 5 * PAGE + 100).expect("room").as_u64();
        let b = vm.vmalloc(&mut tree, &tlb, 3 * PAGE).expect("room").as_u64();
        assert_eq!((a, b), (START, START + 7 * PAGE), "six pages, a guard, then the next");
        let t = tree.translate(VirtAddr::new(a + 5 * PAGE)).expect("mapped");
        assert!(t.flags.contains(PteFlags::WRITABLE | PteFlags::GLOBAL | PteFlags::NO_EXECUTE));
        assert_eq!(mapped(&mut tree, a + 6 * PAGE), None, "the guard page");
        let frames: Vec<_> = (0..6).filter_map(|p| mapped(&mut tree, a + p * PAGE)).collect();
        assert_eq!(frames.len(), 6);
        assert_eq!(tree.memory.frames_out.len(), 9);
        assert_eq!(vm.area_of(VirtAddr::new(a + 3 * PAGE)), Some((VirtAddr::new(a), 6)));
        assert_eq!(vm.area_of(VirtAddr::new(a + 6 * PAGE)), None);
    }

    #[test]
    fn vfree_unmaps_flushes_every_page_and_frees_every_frame_and_table() {
        let (mut vm, mut tree, tlb) = setup();
        // More pages than a per-page flush covers, and more than one chunk.
        let pages = VFREE_CHUNK as u64 + 40;
        let a = vm.vmalloc(&mut tree, &tlb, pages * PAGE).expect("room");
        vm.vfree(&mut tree, &tlb, a).expect("an area");
        for page in 0..pages {
            let virt = a.as_u64() + page * PAGE;
            assert_eq!(mapped(&mut tree, virt), None);
            assert!(tlb.flushed(virt), "page {page} was not invalidated");
        }
        assert!(tlb.0.borrow().contains(&None), "a chunk past the threshold flushes everything");
        assert!(tree.memory.frames_out.is_empty(), "every frame went back");
        // All but the root and the PDPT under the area's PML4 entry, which stays: the
        // kernel half's PML4 entries never change once made.
        assert_eq!(tree.memory.live, 2, "every page table went back");
        assert_eq!(vm.vfree(&mut tree, &tlb, a), Err(VmallocError::NotAnArea(a.as_u64())));
    }

    #[test]
    fn running_out_of_frames_gives_back_what_was_taken() {
        let (mut vm, mut tree, tlb) = setup();
        tree.memory.frame_limit = Some(10);
        assert_eq!(vm.vmalloc(&mut tree, &tlb, 20 * PAGE), Err(VmallocError::NoMemory));
        assert!(tree.memory.frames_out.is_empty());
        assert_eq!(tree.memory.live, 2, "the root and the kernel half's PDPT");
        assert_eq!(vm.areas(), 0);
        assert_eq!(vm.vmalloc(&mut tree, &tlb, 0), Err(VmallocError::Empty));
        let small = Vmalloc::new(VirtAddr::new(START), VirtAddr::new(START + 4 * PAGE), true);
        assert_eq!(small.place(4), Err(VmallocError::NoSpace), "no room for the guard page");
    }

    #[test]
    fn ioremap_maps_device_memory_uncached_and_vfree_keeps_its_frames() {
        let (mut vm, mut tree, tlb) = setup();
        let io = vm.ioremap(&mut tree, PhysAddr::new(0xfee0_0000), 2 * PAGE, false).expect("ok");
        let t = tree.translate(io).expect("mapped");
        assert_eq!(t.phys.as_u64(), 0xfee0_0000);
        assert!(t.flags.contains(PteFlags::NO_CACHE | PteFlags::NO_EXECUTE));
        vm.vfree(&mut tree, &tlb, io).expect("an area");
        assert_eq!(mapped(&mut tree, io.as_u64()), None);
        assert_eq!(tree.memory.live, 2, "the root and the kernel half's PDPT");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn areas_stay_disjoint_guarded_and_give_everything_back(
            ops in proptest::collection::vec((any::<bool>(), 1u64..100, any::<usize>()), 1..60),
        ) {
            let (mut vm, mut tree, tlb) = setup();
            // Live areas: start -> pages.
            let mut live: BTreeMap<u64, u64> = BTreeMap::new();
            for (allocate, pages, pick) in ops {
                if allocate || live.is_empty() {
                    let Ok(start) = vm.vmalloc(&mut tree, &tlb, pages * PAGE) else {
                        prop_assert_eq!(live.len(), MAX_AREAS);
                        continue;
                    };
                    live.insert(start.as_u64(), pages);
                } else {
                    let (&start, _) = live.iter().nth(pick % live.len()).expect("non-empty");
                    vm.vfree(&mut tree, &tlb, VirtAddr::new(start)).expect("an area");
                    live.remove(&start);
                }
                let mut frames = std::collections::BTreeSet::new();
                let mut end = START;
                for (&start, &pages) in &live {
                    prop_assert!(start >= end, "areas overlap or share a guard page");
                    for page in 0..pages {
                        let frame = mapped(&mut tree, start + page * PAGE);
                        prop_assert!(frame.is_some_and(|f| frames.insert(f)), "a page without its own frame");
                    }
                    prop_assert_eq!(mapped(&mut tree, start + pages * PAGE), None, "guard page mapped");
                    end = start + (pages + 1) * PAGE;
                }
                prop_assert_eq!(frames.len(), tree.memory.frames_out.len(), "frames leaked");
            }
            for &start in live.keys() {
                vm.vfree(&mut tree, &tlb, VirtAddr::new(start)).expect("an area");
            }
            prop_assert!(tree.memory.frames_out.is_empty());
            // The root, and the PDPT under the area's PML4 entry (never freed).
            prop_assert_eq!(tree.memory.live, 2);
        }
    }
}
