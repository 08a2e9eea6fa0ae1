//! Host stand-ins for the kernel's memory, shared by the unit tests of the paging, vmalloc,
//! demand-paging, copy-on-write and reclaim modules.

use crate::anon::{AnonMemory, HUGE_PAGES};
use crate::pager::PagerMemory;
use crate::paging::{PageTableEntry, TableAlloc, TableMemory, Tlb};
use crate::swap_map::SwapMap;
use crate::vmalloc::VmallocMemory;
use shared::addr::{PhysAddr, VirtAddr};
use shared::page::Page;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::vec::Vec;

/// "Physical" address of the arena's first table.
const BASE: u64 = 0x1000_0000;
/// "Physical" address of the first data frame the arena hands out (never dereferenced).
const FRAMES: u64 = 0x8000_0000;

/// Page tables in host memory (table `i` at "physical" `BASE + 4096 × i`), and data frames
/// that are only numbers, counted while they are out.
#[derive(Default)]
pub struct Arena {
    tables: Vec<[PageTableEntry; 512]>,
    used: Vec<u64>,
    free: Vec<usize>,
    /// Tables allocated now.
    pub live: usize,
    /// Data frames handed out and not given back.
    pub frames_out: BTreeSet<u64>,
    next_frame: u64,
    /// Frames handed out before `alloc_frame` fails (`None`: never).
    pub frame_limit: Option<usize>,
    /// Live tables at which `alloc_table` fails (`None`: never).
    pub table_limit: Option<usize>,
    /// Frames zeroed by the pager, in order.
    pub zeroed: Vec<u64>,
    /// Frames made into page tables by the pager.
    pub made_tables: Vec<u64>,
}

impl Arena {
    fn index(table: u64) -> usize {
        usize::try_from((table - BASE) / 4096).expect("small arena")
    }

    /// `count` frames for the pager's pool: arena tables, so that the pager can make any of
    /// them a table.
    pub fn pool(&mut self, count: usize) -> Vec<PhysAddr> {
        (0..count).map(|_| self.alloc_table().expect("arena tables never run out")).collect()
    }

    /// A data frame, as a vmalloc area would get it.
    pub fn frame(&mut self) -> PhysAddr {
        self.next_frame += 1;
        let frame = FRAMES + 4096 * self.next_frame;
        self.frames_out.insert(frame);
        PhysAddr::new(frame)
    }
}

impl TableMemory for Arena {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        &mut self.tables[Self::index(table.as_u64())]
    }
}

impl TableAlloc for Arena {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        &mut self.used[Self::index(table.as_u64())]
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        if self.table_limit.is_some_and(|limit| self.live >= limit) {
            return None;
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.tables.push([PageTableEntry::UNUSED; 512]);
            self.used.push(0);
            self.tables.len() - 1
        });
        self.tables[index] = [PageTableEntry::UNUSED; 512];
        self.used[index] = 0;
        self.live += 1;
        Some(PhysAddr::new(BASE + 4096 * index as u64))
    }

    fn free_table(&mut self, table: PhysAddr) {
        let index = Self::index(table.as_u64());
        let empty = self.tables[index].iter().all(|&e| e == PageTableEntry::UNUSED);
        assert!(empty, "freeing a table that is not empty");
        self.free.push(index);
        self.live -= 1;
    }
}

impl VmallocMemory for Arena {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        if self.frame_limit.is_some_and(|limit| self.frames_out.len() >= limit) {
            return None;
        }
        Some(self.frame())
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        assert!(self.frames_out.remove(&frame.as_u64()), "{frame:#x} was not handed out");
    }
}

/// The pager's pool holds arena tables (see [`Arena::pool`]), so any of its frames can
/// become a table.
// SAFETY: every write is into the arena's own vectors, indexed (and so bounds-checked) by
// the address.
unsafe impl PagerMemory for Arena {
    unsafe fn zero(&mut self, frame: PhysAddr) {
        self.zeroed.push(frame.as_u64());
    }

    unsafe fn make_table(&mut self, frame: PhysAddr) {
        let index = Self::index(frame.as_u64());
        self.tables[index] = [PageTableEntry::UNUSED; 512];
        self.used[index] = 0;
        self.made_tables.push(frame.as_u64());
    }

    unsafe fn used(&mut self, table: PhysAddr) -> &mut u64 {
        TableAlloc::used(self, table)
    }
}

/// The host inspector's walker reads the same tables as guest-physical memory.
impl shared::walk::PhysMem for Arena {
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        let table = self.tables.get(usize::try_from(gpa.checked_sub(BASE)? / 4096).ok()?)?;
        Some(table[usize::try_from(gpa % 4096 / 8).ok()?].raw())
    }
}

/// A TLB that records what it is asked to invalidate: `Some(page)` or `None` for all.
#[derive(Default)]
pub struct Recorder(pub RefCell<Vec<Option<u64>>>);

impl Tlb for Recorder {
    fn flush_page(&self, virt: VirtAddr) {
        self.0.borrow_mut().push(Some(virt.as_u64()));
    }

    fn flush_all(&self) {
        self.0.borrow_mut().push(None);
    }
}

impl Recorder {
    /// Whether the page at `virt` was invalidated, by itself or by a full flush.
    pub fn flushed(&self, virt: u64) -> bool {
        self.0.borrow().iter().any(|f| f.is_none_or(|page| page == virt))
    }
}

/// Memory for anonymous pages: tables and frames from an [`Arena`], a descriptor and one
/// word of content per frame, the LRU lists, and, once `swap` is set, a swap device whose
/// slots hold a word each.
#[derive(Default)]
pub struct AnonArena {
    /// Tables and frames.
    pub arena: Arena,
    /// The descriptors, by frame address.
    pub pages: BTreeMap<u64, Page>,
    /// Each frame's content, by frame address.
    pub content: BTreeMap<u64, u64>,
    /// Huge blocks handed out so far (they come from their own region).
    pub huge_blocks: u64,
    /// The LRU lists.
    pub lruvec: shared::mm::Lruvec,
    /// The swap map and cache (`None`: no device).
    pub swap: Option<SwapMap>,
    /// The device: each written slot's content.
    pub device: BTreeMap<u64, u64>,
    /// Write requests the device took (one per batch).
    pub write_requests: u64,
    /// The reverse-map group new pages record.
    pub group: u32,
}

/// Runs `f` on the tree at `root`, with the memory lent to a mapper for the call.
pub fn with_tree<R>(
    memory: &mut AnonArena,
    root: PhysAddr,
    f: impl FnOnce(&mut crate::paging::Mapper<AnonArena>) -> R,
) -> R {
    // SAFETY: the callers' roots are roots this memory's arena allocated, and the trees
    // below them were only ever changed through mappers over this memory.
    let mut tree = unsafe { crate::paging::Mapper::new(root, core::mem::take(memory)) };
    let result = f(&mut tree);
    *memory = tree.memory;
    result
}

/// Where huge blocks come from: 2 MiB aligned, above the arena's frames.
const HUGE_BASE: u64 = 0x40_0000_0000;

impl crate::lru::LruMemory for AnonArena {
    fn lru_page(&mut self, pfn: u64) -> Option<&mut Page> {
        Some(self.pages.entry(pfn << 12).or_default())
    }
    fn lruvec(&mut self) -> &mut shared::mm::Lruvec {
        &mut self.lruvec
    }
}

impl TableMemory for AnonArena {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.arena.entries(table) }
    }
}

impl TableAlloc for AnonArena {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        TableAlloc::used(&mut self.arena, table)
    }
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        self.arena.alloc_table()
    }
    fn free_table(&mut self, table: PhysAddr) {
        self.arena.free_table(table);
    }
    fn swap_entry_dropped(&mut self, entry: PageTableEntry) {
        crate::reclaim::drop_entry(self, entry);
    }
    fn swap_entry_copied(&mut self, entry: PageTableEntry) {
        crate::reclaim::dup_entry(self, entry);
    }
}

impl VmallocMemory for AnonArena {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        self.arena.alloc_frame()
    }
    fn free_frame(&mut self, frame: PhysAddr) {
        self.content.remove(&frame.as_u64());
        self.arena.free_frame(frame);
    }
}

impl AnonMemory for AnonArena {
    fn page(&mut self, frame: PhysAddr) -> Option<&mut Page> {
        Some(self.pages.entry(frame.as_u64()).or_default())
    }
    fn anon_vma(&self) -> u32 {
        self.group
    }
    fn zero_frame(&mut self, frame: PhysAddr) -> bool {
        self.content.insert(frame.as_u64(), 0);
        true
    }
    fn copy_frame(&mut self, from: PhysAddr, to: PhysAddr) {
        let word = self.content[&from.as_u64()];
        self.content.insert(to.as_u64(), word);
    }
    fn alloc_huge(&mut self) -> Option<PhysAddr> {
        let room = |limit: usize| self.arena.frames_out.len() as u64 + HUGE_PAGES <= limit as u64;
        if !self.arena.frame_limit.is_none_or(room) {
            return None;
        }
        let block = HUGE_BASE + self.huge_blocks * (2 << 20);
        self.huge_blocks += 1;
        self.arena.frames_out.extend((0..HUGE_PAGES).map(|p| block + p * 4096));
        Some(PhysAddr::new(block))
    }
    fn free_huge(&mut self, block: PhysAddr) {
        for page in 0..HUGE_PAGES {
            let frame = block.as_u64() + page * 4096;
            assert!(self.arena.frames_out.remove(&frame), "{frame:#x} was not handed out");
            self.content.remove(&frame);
        }
    }
    fn split_huge(&mut self, _block: PhysAddr) {
        // Its pages are in `frames_out` one by one already.
    }
    fn swap_map(&mut self) -> Option<&mut SwapMap> {
        self.swap.as_mut()
    }
    fn swap_write(&mut self, pages: &[(PhysAddr, u64)]) -> bool {
        self.write_requests += 1;
        for &(frame, slot) in pages {
            let word = self.content.get(&frame.as_u64()).copied().unwrap_or(0);
            self.device.insert(slot, word);
        }
        true
    }
    fn swap_read(&mut self, frame: PhysAddr, slot: u64) -> bool {
        let Some(&word) = self.device.get(&slot) else { return false };
        self.content.insert(frame.as_u64(), word);
        true
    }
}
