//! Demand paging: an area whose pages are mapped on first touch.
//!
//! Life cycle: the owner [`arm`](Pager::arm)s the pager with an area and a pool of frames
//! taken in advance; each not-present fault in the area ([`Pager::handle_fault`]) maps a
//! zeroed frame from the pool, taking any page table the mapping needs from the pool too;
//! [`disarm`](Pager::disarm) hands back the count of faults and the unused frames.
//!
//! The page-fault handler cannot borrow the kernel's memory managers (the code that
//! faulted may be using them), which is why the pager owns everything a fault needs. It
//! only adds mappings to entries that were not present, which no TLB holds; tables and
//! frames go back through whoever unmaps the area.

use crate::paging::{Frame, Mapper, PageSize, PteFlags, TableAlloc, TableMemory, VirtPage};
use core::ops::Range;
use shared::addr::{PhysAddr, VirtAddr};

/// Frames the pool can hold.
pub const POOL_CAPACITY: usize = 64;

/// What the pager needs of the kernel besides its pool: the tables it maps into, and the
/// bookkeeping of frames it turns into pages and tables.
///
/// # Safety
/// An implementor writes where it is told: each method's contract says what the address
/// must be, and the pager keeps it (the pool's frames, handed over by the unsafe
/// [`Pager::arm`]; the tables of the tree [`Pager::handle_fault`] was given).
pub unsafe trait PagerMemory: TableMemory {
    /// Fills `frame` with zeros.
    ///
    /// # Safety
    /// `frame` is a 4 KiB-aligned frame of the pager's pool: RAM the pager owns.
    unsafe fn zero(&mut self, frame: PhysAddr);
    /// Makes `frame` an empty page table of the tree (zeroed, flagged a table, with no
    /// used entries).
    ///
    /// # Safety
    /// As for [`zero`](Self::zero).
    unsafe fn make_table(&mut self, frame: PhysAddr);
    /// The used-entry count of the table at `table`.
    ///
    /// # Safety
    /// `table` is a page table of the tree the pager is mapping into.
    unsafe fn used(&mut self, table: PhysAddr) -> &mut u64;
}

/// Why the pager cannot be armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagerError {
    /// It is armed already: disarm it first.
    Armed,
    /// More frames than [`POOL_CAPACITY`].
    TooManyFrames(usize),
    /// The area is empty or not page aligned.
    BadArea,
    /// A frame is not 4 KiB aligned.
    BadFrame(PhysAddr),
}

/// Frames taken in advance.
#[derive(Clone, Copy)]
struct Pool {
    frames: [PhysAddr; POOL_CAPACITY],
    count: usize,
}

impl Pool {
    fn take(&mut self) -> Option<PhysAddr> {
        self.count = self.count.checked_sub(1)?;
        Some(self.frames[self.count])
    }

    fn put(&mut self, frame: PhysAddr) {
        if let Some(slot) = self.frames.get_mut(self.count) {
            *slot = frame;
            self.count += 1;
        }
    }
}

/// What [`Pager::disarm`] hands back.
#[derive(Clone, Copy)]
pub struct Disarmed {
    /// Faults handled while armed.
    pub faults: u64,
    pool: Pool,
}

impl Disarmed {
    /// The frames the pager did not use.
    pub fn unused(&self) -> &[PhysAddr] {
        &self.pool.frames[..self.pool.count]
    }
}

/// The pager: an area, a pool, and a count of faults handled.
pub struct Pager {
    area: Option<Range<u64>>,
    pool: Pool,
    faults: u64,
    flags: PteFlags,
}

impl Default for Pager {
    fn default() -> Self {
        Self::new()
    }
}

impl Pager {
    /// A disarmed pager.
    pub const fn new() -> Self {
        Self {
            area: None,
            pool: Pool { frames: [PhysAddr::new(0); POOL_CAPACITY], count: 0 },
            faults: 0,
            flags: PteFlags::empty(),
        }
    }

    /// Arms the pager for `area` (page aligned) with `frames`, which it owns until
    /// [`disarm`](Self::disarm). Mappings are read-write and global, plus `flags`.
    ///
    /// # Safety
    /// `frames` are 4 KiB RAM frames the caller owns and hands over until `disarm`: nothing
    /// else uses them meanwhile, for the pager zeroes them and makes them pages and page
    /// tables of the tree it is given at each fault.
    pub unsafe fn arm(
        &mut self,
        area: Range<VirtAddr>,
        frames: &[PhysAddr],
        flags: PteFlags,
    ) -> Result<(), PagerError> {
        if self.area.is_some() {
            return Err(PagerError::Armed);
        }
        if frames.len() > POOL_CAPACITY {
            return Err(PagerError::TooManyFrames(frames.len()));
        }
        let (start, end) = (area.start.as_u64(), area.end.as_u64());
        if start >= end || start % 4096 != 0 || end % 4096 != 0 {
            return Err(PagerError::BadArea);
        }
        if let Some(&frame) = frames.iter().find(|frame| frame.as_u64() % 4096 != 0) {
            return Err(PagerError::BadFrame(frame));
        }
        self.pool.frames[..frames.len()].copy_from_slice(frames);
        self.pool.count = frames.len();
        self.area = Some(start..end);
        self.faults = 0;
        self.flags = flags & PteFlags::PERMISSIONS;
        Ok(())
    }

    /// Disarms the pager; returns how many faults it handled and the frames it did not
    /// use, which are the caller's again.
    pub fn disarm(&mut self) -> Disarmed {
        self.area = None;
        let pool = self.pool;
        self.pool.count = 0;
        Disarmed { faults: self.faults, pool }
    }

    /// Handles a not-present fault at `addr` on the tree rooted at `root`: maps a zeroed
    /// pool frame there if `addr` lies in the armed area. Whether it did; if not, the fault
    /// is someone else's (and nothing changed).
    ///
    /// # Safety
    /// As for [`Mapper::new`]: `root` and every table below it are page tables in `memory`.
    pub unsafe fn handle_fault(
        &mut self,
        root: PhysAddr,
        memory: &mut impl PagerMemory,
        addr: VirtAddr,
    ) -> bool {
        if !self.area.as_ref().is_some_and(|area| area.contains(&addr.as_u64())) {
            return false;
        }
        let Some(frame) = self.pool.take() else { return false };
        // SAFETY: a pool frame: aligned (checked by `arm`) and the pager's (its contract).
        unsafe { memory.zero(frame) };
        let (page, frame_4k) = (
            VirtPage::containing(addr, PageSize::Size4K),
            Frame::containing(frame, PageSize::Size4K),
        );
        let flags = PteFlags::WRITABLE | PteFlags::GLOBAL | self.flags;
        // SAFETY: the caller's contract; the pool's tables are made tables before use.
        let mut tree = unsafe { Mapper::new(root, PoolTables { pool: &mut self.pool, memory }) };
        match tree.map(page, frame_4k, flags) {
            Ok(flush) => {
                // The page was not present: no TLB holds it.
                flush.ignore();
                self.faults += 1;
                true
            }
            Err(_) => {
                // No frame left for a table, or the page is mapped after all: not ours.
                self.pool.put(frame);
                false
            }
        }
    }
}

/// Page tables from the pool, for one fault's mapping.
struct PoolTables<'a, M> {
    pool: &'a mut Pool,
    memory: &'a mut M,
}

impl<M: PagerMemory> TableMemory for PoolTables<'_, M> {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [shared::pte::PageTableEntry; 512] {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.memory.entries(table) }
    }
}

impl<M: PagerMemory> TableAlloc for PoolTables<'_, M> {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        // SAFETY: the mapper asks only for tables of the tree it walks, which is the tree
        // `handle_fault` was given (its contract) plus tables made from the pool.
        unsafe { self.memory.used(table) }
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let frame = self.pool.take()?;
        // SAFETY: a pool frame, as in `handle_fault`.
        unsafe { self.memory.make_table(frame) };
        Some(frame)
    }

    fn free_table(&mut self, table: PhysAddr) {
        // A map never frees a table; were it to, the frame is the pool's again.
        self.pool.put(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Arena;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    const AREA: u64 = 0xffff_e8ff_0000_0000;

    fn setup(pool: usize) -> (Pager, Mapper<Arena>, Vec<PhysAddr>) {
        let mut tree = Mapper::create(Arena::default()).expect("root");
        let frames = tree.memory.pool(pool);
        (Pager::new(), tree, frames)
    }

    /// A fault on the arena tree rooted at `root`.
    fn fault(pager: &mut Pager, root: PhysAddr, memory: &mut Arena, addr: VirtAddr) -> bool {
        // SAFETY: `root` is the arena tree's root, whose tables are all arena tables.
        unsafe { pager.handle_fault(root, memory, addr) }
    }

    /// Arms `pager` with arena frames (from [`Arena::pool`], or made up: the arena only
    /// records what the pager does with them).
    fn arm(
        pager: &mut Pager,
        area: Range<VirtAddr>,
        frames: &[PhysAddr],
        flags: PteFlags,
    ) -> Result<(), PagerError> {
        // SAFETY: the arena's `PagerMemory` writes only into its own vectors.
        unsafe { pager.arm(area, frames, flags) }
    }

    fn area(pages: u64) -> Range<VirtAddr> {
        VirtAddr::new(AREA)..VirtAddr::new(AREA + pages * 4096)
    }

    #[test]
    fn first_touches_map_zeroed_frames_one_fault_per_page() {
        let (mut pager, mut tree, frames) = setup(11);
        arm(&mut pager, area(8), &frames, PteFlags::NO_EXECUTE).expect("arms");
        let root = tree.root();
        for page in 0..8 {
            let addr = VirtAddr::new(AREA + page * 4096 + 8 * page);
            assert!(fault(&mut pager, root, &mut tree.memory, addr), "page {page}");
            let t = tree.translate(addr).expect("mapped now");
            assert!(t.flags.contains(PteFlags::WRITABLE | PteFlags::NO_EXECUTE));
            assert_eq!(tree.memory.zeroed.last(), Some(&t.phys.align_down(4096).as_u64()));
        }
        let disarmed = pager.disarm();
        assert_eq!(disarmed.faults, 8);
        // Eight pages and three tables (PDPT, PD, PT) came from the pool.
        assert_eq!(tree.memory.made_tables.len(), 3);
        assert_eq!(disarmed.unused().len(), 0);
        assert!(!fault(&mut pager, root, &mut tree.memory, VirtAddr::new(AREA)), "disarmed");
    }

    #[test]
    fn faults_outside_the_area_or_past_the_pool_are_not_the_pagers() {
        let (mut pager, mut tree, frames) = setup(5);
        let root = tree.root();
        assert!(!fault(&mut pager, root, &mut tree.memory, VirtAddr::new(AREA)), "not armed");
        arm(&mut pager, area(4), &frames, PteFlags::empty()).expect("arms");
        assert_eq!(arm(&mut pager, area(4), &frames, PteFlags::empty()), Err(PagerError::Armed));
        let outside = VirtAddr::new(AREA + 4 * 4096);
        assert!(!fault(&mut pager, root, &mut tree.memory, outside));
        // Three tables and two pages use up the pool: the third page finds nothing.
        for page in 0..2 {
            assert!(fault(&mut pager, root, &mut tree.memory, VirtAddr::new(AREA + page * 4096)));
        }
        assert!(!fault(&mut pager, root, &mut tree.memory, VirtAddr::new(AREA + 2 * 4096)));
        assert_eq!(pager.disarm().faults, 2);
        let mut big = Pager::new();
        let many = [PhysAddr::new(0); POOL_CAPACITY + 1];
        assert_eq!(
            arm(&mut big, area(1), &many, PteFlags::empty()),
            Err(PagerError::TooManyFrames(65))
        );
        assert_eq!(arm(&mut big, area(0), &[], PteFlags::empty()), Err(PagerError::BadArea));
        let crooked = PhysAddr::new(0x8000_0010);
        assert_eq!(
            arm(&mut big, area(1), &[crooked], PteFlags::empty()),
            Err(PagerError::BadFrame(crooked))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn every_frame_is_a_page_a_table_or_handed_back(
            touches in proptest::collection::vec(0u64..1024, 1..80),
            pool in 0usize..=POOL_CAPACITY,
        ) {
            let (mut pager, mut tree, frames) = setup(pool);
            arm(&mut pager, area(1024), &frames, PteFlags::empty()).expect("arms");
            let root = tree.root();
            let mut pages = BTreeSet::new();
            for page in touches {
                let addr = VirtAddr::new(AREA + page * 4096);
                if tree.translate(addr).is_some() {
                    continue; // Mapped: the CPU would not fault again.
                }
                if fault(&mut pager, root, &mut tree.memory, addr) {
                    prop_assert!(tree.translate(addr).is_some());
                    pages.insert(page);
                }
            }
            let disarmed = pager.disarm();
            prop_assert_eq!(disarmed.faults, pages.len() as u64);
            let used = pages.len() + tree.memory.made_tables.len();
            prop_assert_eq!(used + disarmed.unused().len(), frames.len(), "frames lost or made up");
            let mapped: BTreeSet<u64> = pages.iter().filter_map(|p| tree.translate(VirtAddr::new(AREA + p * 4096))).map(|t| t.phys.as_u64()).collect();
            prop_assert_eq!(mapped.len(), pages.len(), "two pages share a frame");
        }
    }
}
