//! vmalloc: virtually contiguous kernel memory made of page frames from anywhere, in the
//! vmalloc area (`shared::layout::VMALLOC_START..VMALLOC_END`).
//!
//! ```text
//! VMALLOC_START  [area 0 pages][guard][area 1 pages][guard]   …   VMALLOC_END
//! ```
//!
//! Each area is followed by an unmapped guard page, so running off its end faults. Areas
//! are kept sorted and placed first-fit. `vfree` unmaps an area (its page tables go back
//! to the buddy allocator as they empty), flushes the TLB, and frees its pages. `ioremap`
//! maps device (non-RAM) memory into an area the same way, uncached.

use super::direct_map;
use super::tables::RuntimeTables;
use super::vmemmap::Vmemmap;
use guest::buddy::{Buddy, Memmap};
use guest::paging::{
    Flush, Frame, Mapper, Page as VirtPage, PageSize, Tlb, GLOBAL, NO_CACHE, NO_EXECUTE, WRITABLE,
};
use shared::addr::{PhysAddr, VirtAddr};
use shared::layout::{PAGE_SIZE, VMALLOC_END, VMALLOC_START};
use shared::page::{Page, ZoneType};

/// Areas that can exist at once.
const MAX_AREAS: usize = 64;

#[derive(Clone, Copy, Default)]
struct Area {
    start: u64,
    pages: u64,
    /// Device memory: its frames are not the buddy allocator's.
    io: bool,
}

impl Area {
    /// End of the area including its guard page.
    fn end_with_guard(&self) -> u64 {
        self.start + (self.pages + 1) * PAGE_SIZE
    }
}

/// Why a vmalloc operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmallocError {
    /// Zero bytes were asked for.
    Empty,
    /// No room in the vmalloc area, or too many areas.
    NoSpace,
    /// The buddy allocator had no page.
    NoMemory,
    /// The address does not start an area.
    NotAnArea(u64),
}

/// The live areas.
pub struct Vmalloc {
    areas: [Area; MAX_AREAS],
    len: usize,
    nx: u64,
}

/// TLB invalidation on this CPU.
pub struct LocalTlb;

impl Tlb for LocalTlb {
    fn flush_page(&self, virt: VirtAddr) {
        x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(virt.as_u64()));
    }

    fn flush_all(&self) {
        x86_64::instructions::tlb::flush_all();
    }
}

fn tree(buddy: &mut Buddy<Vmemmap>) -> Mapper<RuntimeTables<'_>> {
    let cr3 = x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64();
    Mapper::new(PhysAddr::new(cr3), RuntimeTables { buddy })
}

impl Vmalloc {
    /// No areas; `nx` says whether the CPU has no-execute pages.
    pub const fn new(nx: bool) -> Self {
        Self {
            areas: [Area { start: 0, pages: 0, io: false }; MAX_AREAS],
            len: 0,
            nx: if nx { NO_EXECUTE } else { 0 },
        }
    }

    /// First-fit placement of `pages` pages and a guard page.
    fn place(&self, pages: u64) -> Result<(usize, u64), VmallocError> {
        let mut candidate = VMALLOC_START;
        for (index, area) in self.areas[..self.len].iter().enumerate() {
            if candidate + (pages + 1) * PAGE_SIZE <= area.start {
                return Ok((index, candidate));
            }
            candidate = area.end_with_guard();
        }
        if self.len == MAX_AREAS || candidate + (pages + 1) * PAGE_SIZE > VMALLOC_END {
            return Err(VmallocError::NoSpace);
        }
        Ok((self.len, candidate))
    }

    fn insert(&mut self, index: usize, area: Area) {
        self.areas.copy_within(index..self.len, index + 1);
        self.areas[index] = area;
        self.len += 1;
    }

    /// Allocates `size` bytes of virtually contiguous memory, read-write, not executable.
    pub fn vmalloc(&mut self, buddy: &mut Buddy<Vmemmap>, size: u64) -> Result<u64, VmallocError> {
        if size == 0 {
            return Err(VmallocError::Empty);
        }
        let pages = size.div_ceil(PAGE_SIZE);
        let (index, start) = self.place(pages)?;
        for page in 0..pages {
            let mapped =
                buddy.alloc_page(ZoneType::Normal).ok_or(VmallocError::NoMemory).and_then(|pfn| {
                    let flags = WRITABLE | GLOBAL | self.nx;
                    // The address was unmapped: no TLB holds it.
                    let virt = VirtPage::containing(
                        VirtAddr::new(start + page * PAGE_SIZE),
                        PageSize::Size4K,
                    );
                    let frame = Frame::containing(PhysAddr::new(pfn * PAGE_SIZE), PageSize::Size4K);
                    let mapping = tree(buddy).map(virt, frame, flags);
                    mapping.map(Flush::ignore).map_err(|_| {
                        let _ = buddy.free_page(pfn);
                        VmallocError::NoMemory
                    })
                });
            if let Err(err) = mapped {
                self.release(buddy, Area { start, pages: page, io: false });
                return Err(err);
            }
        }
        self.insert(index, Area { start, pages, io: false });
        Ok(start)
    }

    /// Maps `size` bytes of device memory at physical `phys` (page aligned) uncached;
    /// executable only if asked.
    pub fn ioremap(
        &mut self,
        buddy: &mut Buddy<Vmemmap>,
        phys: PhysAddr,
        size: u64,
        executable: bool,
    ) -> Result<u64, VmallocError> {
        let pages = size.div_ceil(PAGE_SIZE).max(1);
        let (index, start) = self.place(pages)?;
        let nx = if executable { 0 } else { self.nx };
        let mapping = tree(buddy).map_range(
            VirtAddr::new(start),
            phys,
            pages * PAGE_SIZE,
            WRITABLE | NO_CACHE | GLOBAL | nx,
            PageSize::Size4K,
        );
        // The range was unmapped: no TLB holds it.
        mapping.map(Flush::ignore).map_err(|_| VmallocError::NoMemory)?;
        self.insert(index, Area { start, pages, io: true });
        Ok(start)
    }

    /// Frees the area starting at `addr`.
    pub fn vfree(&mut self, buddy: &mut Buddy<Vmemmap>, addr: u64) -> Result<(), VmallocError> {
        let index = self.areas[..self.len]
            .iter()
            .position(|a| a.start == addr)
            .ok_or(VmallocError::NotAnArea(addr))?;
        let area = self.areas[index];
        self.areas.copy_within(index + 1..self.len, index);
        self.len -= 1;
        self.release(buddy, area);
        Ok(())
    }

    /// Unmaps an area's mapped pages, flushes them, and frees their frames.
    fn release(&mut self, buddy: &mut Buddy<Vmemmap>, area: Area) {
        for page in 0..area.pages {
            let virt = area.start + page * PAGE_SIZE;
            let Ok((frame, flush)) = tree(buddy).unmap(VirtAddr::new(virt)) else { continue };
            let phys = frame.start().as_u64();
            flush.flush(&LocalTlb);
            if !area.io {
                if let Err(err) = buddy.free_page(phys / PAGE_SIZE) {
                    log::error!("vfree: {err}");
                }
            }
        }
    }

    /// `vmalloc_to_page`: the `struct page` behind a vmalloc address.
    pub fn to_page<'b>(&self, buddy: &'b mut Buddy<Vmemmap>, addr: u64) -> Option<&'b mut Page> {
        let phys = tree(buddy).translate(VirtAddr::try_new(addr)?)?.phys.as_u64();
        buddy.memmap.page(phys / PAGE_SIZE)
    }

    /// The number of live areas.
    pub fn areas(&self) -> usize {
        self.len
    }
}

/// Writes `value` to every word of `[addr, addr + len)` and checks it reads back, through
/// the vmalloc mapping; then checks the first word through the direct map of its frame.
pub fn fill_and_check(buddy: &mut Buddy<Vmemmap>, addr: u64, len: u64, value: u64) -> bool {
    let words = len / 8;
    let word = |i: u64| (addr + 8 * i) as *mut u64;
    // SAFETY: `[addr, addr + len)` is a live vmalloc area the caller owns.
    unsafe {
        for i in 0..words {
            word(i).write_volatile(value ^ i);
        }
        if (0..words).any(|i| word(i).read_volatile() != value ^ i) {
            return false;
        }
    }
    let Some(phys) = tree(buddy).translate(VirtAddr::new(addr)).map(|t| t.phys.as_u64()) else {
        return false;
    };
    // SAFETY: the frame is RAM behind a live area, reached through the direct map.
    unsafe { (direct_map(phys) as *const u64).read_volatile() == value }
}
