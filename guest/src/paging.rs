//! x86_64 4-level page tables (Intel SDM vol. 3, 4.5): map, unmap, protect, translate.
//!
//! ```text
//! virtual address   [63..48 sign] [47..39 PML4] [38..30 PDPT] [29..21 PD] [20..12 PT] [11..0]
//! leaf              PDPT entry with PS: 1 GiB   PD entry with PS: 2 MiB   PT entry: 4 KiB
//! ```
//!
//! The [`Mapper`] works on tables reached through a [`TableMemory`], so the same code runs
//! on the kernel's live tables (through the direct map) and on a host arena in tests and
//! benchmarks. Each table's count of used entries is kept beside it (in the kernel, in the
//! table page's `struct page`), so that unmapping frees a table the moment it empties
//! without scanning it. Translation reads the tables through `shared::walk`, the walker the
//! host inspector uses.
//!
//! Every change returns a `#[must_use]` [`Flush`]: the caller flushes the TLB for exactly
//! what changed (per page, or all of it past [`FLUSH_ALL_THRESHOLD`] pages) or says why it
//! need not, so a forgotten flush does not compile quietly.

use shared::addr::{PhysAddr, VirtAddr};
use shared::walk::{self, PhysMem};

/// Present.
pub const PRESENT: u64 = walk::PTE_PRESENT;
/// Writable.
pub const WRITABLE: u64 = walk::PTE_WRITABLE;
/// Reachable from user mode.
pub const USER: u64 = walk::PTE_USER;
/// Write-through caching.
pub const WRITE_THROUGH: u64 = walk::PTE_PWT;
/// Caching disabled.
pub const NO_CACHE: u64 = walk::PTE_PCD;
/// Accessed (set by the CPU).
pub const ACCESSED: u64 = walk::PTE_ACCESSED;
/// Dirty (set by the CPU, leaves only).
pub const DIRTY: u64 = walk::PTE_DIRTY;
/// Page size: the PDPT or PD entry is a leaf.
pub const HUGE: u64 = walk::PTE_HUGE;
/// Global: kept in the TLB across CR3 loads (needs CR4.PGE).
pub const GLOBAL: u64 = walk::PTE_GLOBAL;
/// No execute (needs EFER.NXE).
pub const NO_EXECUTE: u64 = walk::PTE_NX;

/// Physical-address bits of an entry.
pub const ADDR_MASK: u64 = walk::PTE_ADDR_MASK;
/// The flag bits a mapping's permissions are made of.
pub const PERMISSION_FLAGS: u64 = WRITABLE | USER | WRITE_THROUGH | NO_CACHE | GLOBAL | NO_EXECUTE;

/// Past this many pages a range change flushes the whole TLB instead of page by page.
pub const FLUSH_ALL_THRESHOLD: u64 = 32;

/// The size of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageSize {
    /// 4 KiB, in a page table.
    Size4K,
    /// 2 MiB, in a page directory.
    Size2M,
    /// 1 GiB, in a page-directory-pointer table.
    Size1G,
}

impl PageSize {
    /// Bytes in a page.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }

    /// The table level that holds the leaf (1 = PT, 2 = PD, 3 = PDPT).
    pub const fn level(self) -> u32 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }

    fn at_level(level: u32) -> Self {
        match level {
            1 => Self::Size4K,
            2 => Self::Size2M,
            _ => Self::Size1G,
        }
    }

    fn of_bytes(bytes: u64) -> Self {
        match bytes {
            0x1000 => Self::Size4K,
            0x20_0000 => Self::Size2M,
            _ => Self::Size1G,
        }
    }
}

/// A virtual page: an aligned start and a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    start: VirtAddr,
    size: PageSize,
}

impl Page {
    /// The page starting at `start`, which must be aligned to `size`.
    pub fn new(start: VirtAddr, size: PageSize) -> Result<Self, MapError> {
        if start.is_aligned(size.bytes()) {
            Ok(Self { start, size })
        } else {
            Err(MapError::Misaligned { addr: start.as_u64() })
        }
    }

    /// The page of `size` that holds `addr`.
    pub fn containing(addr: VirtAddr, size: PageSize) -> Self {
        Self { start: addr.align_down(size.bytes()), size }
    }

    /// First address.
    pub fn start(self) -> VirtAddr {
        self.start
    }

    /// Size.
    pub fn size(self) -> PageSize {
        self.size
    }
}

/// A physical page frame: an aligned start and a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    start: PhysAddr,
    size: PageSize,
}

impl Frame {
    /// The frame starting at `start`, which must be aligned to `size`.
    pub fn new(start: PhysAddr, size: PageSize) -> Result<Self, MapError> {
        if start.is_aligned(size.bytes()) {
            Ok(Self { start, size })
        } else {
            Err(MapError::Misaligned { addr: start.as_u64() })
        }
    }

    /// The frame of `size` that holds `addr`.
    pub fn containing(addr: PhysAddr, size: PageSize) -> Self {
        Self { start: addr.align_down(size.bytes()), size }
    }

    /// First address.
    pub fn start(self) -> PhysAddr {
        self.start
    }

    /// Size.
    pub fn size(self) -> PageSize {
        self.size
    }
}

/// Index of `virt` in its table at `level` (4 = PML4 … 1 = PT).
#[inline]
pub const fn table_index(virt: u64, level: u32) -> usize {
    ((virt >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Whether `virt` is canonical (bits 63..47 all equal).
#[inline]
pub const fn is_canonical(virt: u64) -> bool {
    let top = virt >> 47;
    top == 0 || top == 0x1_ffff
}

/// The page tables' memory, for reading (translate, through `shared::walk`) and writing entries.
pub trait TableMemory {
    /// The 512 entries of the table at physical address `table`.
    fn entries(&mut self, table: PhysAddr) -> &mut [u64; 512];
}

/// Page-table memory that can also allocate and free tables and count their entries, for
/// changing the tree (map, unmap, protect).
pub trait TableAlloc: TableMemory {
    /// The count of used entries of the table at `table`.
    fn used(&mut self, table: PhysAddr) -> &mut u64;
    /// A new table, zeroed, with a used count of zero.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// Gives back a table whose entries are all zero.
    fn free_table(&mut self, table: PhysAddr);
}

/// Invalidates TLB entries.
pub trait Tlb {
    /// Invalidates the translation of one page (`invlpg`).
    fn flush_page(&self, virt: VirtAddr);
    /// Invalidates every non-global translation (reloading CR3).
    fn flush_all(&self);
}

/// What a change asks of the TLB. Dropping it without [`Flush::flush`] or
/// [`Flush::ignore`] is a compile-time warning.
#[must_use = "the TLB may still hold the old translation: call flush() or ignore()"]
#[derive(Debug, PartialEq, Eq)]
pub struct Flush {
    start: u64,
    pages: u64,
    page_bytes: u64,
}

impl Flush {
    /// Nothing to flush.
    pub const NONE: Flush = Flush { start: 0, pages: 0, page_bytes: 0 };

    fn pages(start: u64, pages: u64, size: PageSize) -> Self {
        Self { start, pages, page_bytes: size.bytes() }
    }

    /// Merges two flushes into one covering both (by flushing everything if they are
    /// not one contiguous run of equal pages).
    pub fn and(self, other: Flush) -> Flush {
        if self.pages == 0 {
            return other;
        }
        if other.pages == 0 {
            return self;
        }
        let contiguous = self.page_bytes == other.page_bytes
            && self.start + self.pages * self.page_bytes == other.start;
        if contiguous {
            Flush { pages: self.pages + other.pages, ..self }
        } else {
            Flush { start: 0, pages: u64::MAX, page_bytes: 0 }
        }
    }

    /// Invalidates what changed: page by page, or everything past the threshold.
    pub fn flush(self, tlb: &impl Tlb) {
        if self.pages > FLUSH_ALL_THRESHOLD {
            tlb.flush_all();
        } else {
            for page in 0..self.pages {
                tlb.flush_page(VirtAddr::new_truncate(self.start + page * self.page_bytes));
            }
        }
    }

    /// Skips the flush: for tables that are not live (not in CR3), or entries that were
    /// not present before (the TLB never caches those).
    pub fn ignore(self) {}
}

/// Why a change could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address is not aligned to the page size, or not canonical.
    Misaligned {
        /// The offending address.
        addr: u64,
    },
    /// No memory for a page table.
    NoTableMemory,
    /// The page is already mapped.
    AlreadyMapped {
        /// The virtual address.
        virt: u64,
    },
    /// A larger page covers the address (and the operation does not split).
    ParentEntryHugePage {
        /// The virtual address.
        virt: u64,
    },
    /// A page and a frame of different sizes.
    SizeMismatch,
    /// Nothing is mapped at the address.
    NotMapped {
        /// The virtual address.
        virt: u64,
    },
}

/// A translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address the virtual address maps to.
    pub phys: PhysAddr,
    /// The size of the page it lies in.
    pub size: PageSize,
    /// The leaf entry's flags (the address bits cleared).
    pub flags: u64,
}

/// What a tree holds: tables per level and leaves per page size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Tables: PML4, PDPT, PD, PT.
    pub tables: [u64; 4],
    /// Leaves: 4 KiB, 2 MiB, 1 GiB.
    pub pages: [u64; 3],
}

/// A 4-level page-table tree and the operations on it.
pub struct Mapper<M> {
    root: u64,
    /// The tables' memory.
    pub memory: M,
}

impl<M: TableMemory> Mapper<M> {
    /// A mapper over the tree whose PML4 is at physical `root`.
    pub fn new(root: PhysAddr, memory: M) -> Self {
        Self { root: root.as_u64(), memory }
    }

    fn entries(&mut self, table: u64) -> &mut [u64; 512] {
        self.memory.entries(table_addr(table))
    }

    /// Physical address of the PML4 (the CR3 value).
    pub fn root(&self) -> PhysAddr {
        table_addr(self.root)
    }

    /// Translates `virt`.
    pub fn translate(&mut self, virt: VirtAddr) -> Option<Translation> {
        self.translate_raw(virt.as_u64())
    }

    fn translate_raw(&mut self, virt: u64) -> Option<Translation> {
        let mapping = walk::translate(&mut Tables(&mut self.memory), self.root, virt).ok()?;
        Some(Translation {
            // Below 2^52: the walker masks the entry's address bits.
            phys: PhysAddr::new(mapping.phys),
            size: PageSize::of_bytes(mapping.page_size),
            flags: mapping.leaf & !ADDR_MASK,
        })
    }

    /// Calls `f` with each 4 KiB page of `[virt, virt + pages × 4 KiB)` and its translation,
    /// walking from the root once per table instead of once per page: a sequential sweep.
    pub fn translate_each(
        &mut self,
        virt: VirtAddr,
        pages: u64,
        mut f: impl FnMut(VirtAddr, Option<Translation>),
    ) {
        let virt = virt.as_u64();
        let end = virt + pages * PageSize::Size4K.bytes();
        let mut at = virt;
        while at < end {
            match self.leaf_of(at) {
                Some((table, 1)) => {
                    let first = table_index(at, 1);
                    let count = run_length(first, (end - at) >> 12);
                    let entries = &self.entries(table)[first..first + count];
                    for (i, &entry) in entries.iter().enumerate() {
                        let page = at + ((i as u64) << 12);
                        let translation = (entry & PRESENT != 0).then_some(Translation {
                            phys: table_addr(entry),
                            size: PageSize::Size4K,
                            flags: entry & !ADDR_MASK,
                        });
                        f(VirtAddr::new_truncate(page), translation);
                    }
                    at += (count as u64) << 12;
                }
                _ => {
                    f(VirtAddr::new_truncate(at), self.translate_raw(at));
                    at += PageSize::Size4K.bytes();
                }
            }
        }
    }

    /// Counts the tree's tables and leaves (a fixed four levels deep, so bounded work).
    pub fn stats(&mut self) -> TreeStats {
        let mut stats = TreeStats { tables: [1, 0, 0, 0], pages: [0; 3] };
        let present = |e: &u64| *e & PRESENT != 0;
        let pml4 = *self.entries(self.root);
        for &e4 in pml4.iter().filter(|e| present(e)) {
            stats.tables[1] += 1;
            let pdpt = *self.entries(e4 & ADDR_MASK);
            for &e3 in pdpt.iter().filter(|e| present(e)) {
                if e3 & HUGE != 0 {
                    stats.pages[2] += 1;
                    continue;
                }
                stats.tables[2] += 1;
                let pd = *self.entries(e3 & ADDR_MASK);
                for &e2 in pd.iter().filter(|e| present(e)) {
                    if e2 & HUGE != 0 {
                        stats.pages[1] += 1;
                        continue;
                    }
                    stats.tables[3] += 1;
                    stats.pages[0] +=
                        self.entries(e2 & ADDR_MASK).iter().filter(|e| present(e)).count() as u64;
                }
            }
        }
        stats
    }

    /// The table and level of the leaf entry mapping `virt`.
    fn leaf_of(&mut self, virt: u64) -> Option<(u64, u32)> {
        let walk = walk::walk(&mut Tables(&mut self.memory), self.root, virt);
        walk.result.ok()?;
        let leaf = walk.steps[walk.len.checked_sub(1)?];
        Some((leaf.entry_addr & ADDR_MASK, u32::from(leaf.level)))
    }
}

impl<M: TableAlloc> Mapper<M> {
    /// A mapper over a new, empty tree.
    pub fn create(mut memory: M) -> Option<Self> {
        let root = memory.alloc_table()?.as_u64();
        Some(Self { root, memory })
    }

    fn used(&mut self, table: u64) -> &mut u64 {
        self.memory.used(table_addr(table))
    }

    fn alloc_table_raw(&mut self) -> Option<u64> {
        self.memory.alloc_table().map(PhysAddr::as_u64)
    }

    /// Maps `page` to `frame`, which must be of the same size.
    pub fn map(&mut self, page: Page, frame: Frame, flags: u64) -> Result<Flush, MapError> {
        if page.size != frame.size {
            return Err(MapError::SizeMismatch);
        }
        self.map_raw(page.start.as_u64(), frame.start.as_u64(), page.size, flags)
    }

    fn map_raw(
        &mut self,
        virt: u64,
        phys: u64,
        size: PageSize,
        flags: u64,
    ) -> Result<Flush, MapError> {
        check_aligned(virt, phys, size.bytes())?;
        let table = self.table_for(virt, size.level())?;
        let index = table_index(virt, size.level());
        let entry = &mut self.entries(table)[index];
        if *entry & PRESENT != 0 {
            return Err(MapError::AlreadyMapped { virt });
        }
        let huge = if size == PageSize::Size4K { 0 } else { HUGE };
        *entry = phys | (flags & PERMISSION_FLAGS) | PRESENT | huge;
        *self.used(table) += 1;
        // The entry was not present: no TLB holds it.
        Ok(Flush::NONE)
    }

    /// Maps `[virt, virt + len)` to `[phys, phys + len)` with the largest pages, up to
    /// `max`, that alignment allows. All of the range must be unmapped. Runs of equal
    /// pages are written one table at a time, with a single walk per table.
    pub fn map_range(
        &mut self,
        virt: VirtAddr,
        phys: PhysAddr,
        len: u64,
        flags: u64,
        max: PageSize,
    ) -> Result<Flush, MapError> {
        let (virt, phys) = (virt.as_u64(), phys.as_u64());
        check_aligned(virt, phys, PageSize::Size4K.bytes())?;
        check_aligned(len, 0, PageSize::Size4K.bytes())?;
        let mut offset = 0;
        while offset < len {
            let (v, p, left) = (virt + offset, phys + offset, len - offset);
            let size = [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K]
                .into_iter()
                .find(|s| *s <= max && (v | p) % s.bytes() == 0 && left >= s.bytes())
                .unwrap_or(PageSize::Size4K);
            // As many pages of this size as fit in this table and in the range. A table's
            // end is where the next larger page could start, so the choice is made again there.
            let level = size.level();
            let first = table_index(v, level);
            let count = run_length(first, left / size.bytes());
            let table = self.table_for(v, level)?;
            let entries = &mut self.entries(table)[first..first + count];
            if let Some(taken) = entries.iter().position(|e| *e & PRESENT != 0) {
                return Err(MapError::AlreadyMapped { virt: v + taken as u64 * size.bytes() });
            }
            let huge = if size == PageSize::Size4K { 0 } else { HUGE };
            let mut frame = p | (flags & PERMISSION_FLAGS) | PRESENT | huge;
            for entry in entries.iter_mut() {
                *entry = frame;
                frame += size.bytes();
            }
            *self.used(table) += count as u64;
            offset += count as u64 * size.bytes();
        }
        // None of the entries was present: no TLB holds them.
        Ok(Flush::NONE)
    }

    /// Unmaps the page that maps `virt` (of whatever size), freeing tables that empty.
    /// Returns the frame it mapped.
    pub fn unmap(&mut self, virt: VirtAddr) -> Result<(Frame, Flush), MapError> {
        let virt = virt.as_u64();
        let (path, level) = self.path_to_leaf(virt).ok_or(MapError::NotMapped { virt })?;
        let table = path[level as usize - 1];
        let entry = core::mem::take(&mut self.entries(table)[table_index(virt, level)]);
        self.release(&path, virt, level, 1);
        let size = PageSize::at_level(level);
        let frame = Frame { start: table_addr(entry).align_down(size.bytes()), size };
        Ok((frame, Flush::pages(virt & !(size.bytes() - 1), 1, size)))
    }

    /// Unmaps every page in `[virt, virt + len)`; pages must not straddle the range's ends.
    /// Runs of pages in one table are cleared in one pass.
    pub fn unmap_range(&mut self, virt: VirtAddr, len: u64) -> Result<Flush, MapError> {
        let virt = virt.as_u64();
        let mut flush = Flush::NONE;
        let mut at = virt;
        while at < virt + len {
            let (path, level) = self.path_to_leaf(at).ok_or(MapError::NotMapped { virt: at })?;
            let size = PageSize::at_level(level);
            let first = table_index(at, level);
            let page = at & !(size.bytes() - 1);
            // The leaves of this size from here on in this table, inside the range (at
            // least the one mapping `at`).
            let most = run_length(first, ((virt + len).saturating_sub(page) / size.bytes()).max(1));
            let table = path[level as usize - 1];
            let run = &self.entries(table)[first..first + most];
            let leaf = |e: &&u64| **e & PRESENT != 0 && (level == 1 || **e & HUGE != 0);
            let count = run.iter().take_while(leaf).count() as u64;
            self.clear_entries(&path, at, level, count);
            flush = flush.and(Flush::pages(page, count, size));
            at = page + count * size.bytes();
        }
        Ok(flush)
    }

    /// Changes the permissions of `[virt, virt + len)` (4 KiB aligned) to `flags`, splitting
    /// huge pages that the range cuts. Every page of the range must be mapped.
    pub fn protect(&mut self, virt: VirtAddr, len: u64, flags: u64) -> Result<Flush, MapError> {
        let virt = virt.as_u64();
        check_aligned(virt, 0, PageSize::Size4K.bytes())?;
        check_aligned(len, 0, PageSize::Size4K.bytes())?;
        let mut flush = Flush::NONE;
        let mut at = virt;
        while at < virt + len {
            let (table, level) = self.leaf_of(at).ok_or(MapError::NotMapped { virt: at })?;
            let size = PageSize::at_level(level);
            let page = at & !(size.bytes() - 1);
            if page < virt || page + size.bytes() > virt + len {
                // The range cuts this huge page: split it and look again.
                self.split(table, at, level)?.ignore();
                flush = flush.and(Flush::pages(page, 1, size));
                continue;
            }
            let entry = &mut self.entries(table)[table_index(at, level)];
            *entry = (*entry & !PERMISSION_FLAGS) | (flags & PERMISSION_FLAGS);
            flush = flush.and(Flush::pages(page, 1, size));
            at = page + size.bytes();
        }
        Ok(flush)
    }

    /// The table holding `virt`'s entry at `level`, creating the tables above as needed.
    fn table_for(&mut self, virt: u64, level: u32) -> Result<u64, MapError> {
        if !is_canonical(virt) {
            return Err(MapError::Misaligned { addr: virt });
        }
        let mut table = self.root;
        for upper in (level + 1..=4).rev() {
            let index = table_index(virt, upper);
            let entry = self.entries(table)[index];
            table = if entry & PRESENT == 0 {
                let new = self.alloc_table_raw().ok_or(MapError::NoTableMemory)?;
                // Intermediate entries grant everything; leaves restrict.
                self.entries(table)[index] = new | PRESENT | WRITABLE | USER;
                *self.used(table) += 1;
                new
            } else if entry & HUGE != 0 {
                return Err(MapError::ParentEntryHugePage { virt });
            } else {
                entry & ADDR_MASK
            };
        }
        Ok(table)
    }

    /// Replaces the huge page at `level` covering `virt` by a table of 512 pages of the
    /// next size down with the same flags.
    fn split(&mut self, table: u64, virt: u64, level: u32) -> Result<Flush, MapError> {
        let index = table_index(virt, level);
        let entry = self.entries(table)[index];
        let child = self.alloc_table_raw().ok_or(MapError::NoTableMemory)?;
        let small = PageSize::at_level(level - 1);
        let base = entry & ADDR_MASK & !(PageSize::at_level(level).bytes() - 1);
        let flags = entry & !ADDR_MASK & !HUGE;
        let leaf_huge = if small == PageSize::Size4K { 0 } else { HUGE };
        for (i, slot) in self.entries(child).iter_mut().enumerate() {
            *slot = (base + i as u64 * small.bytes()) | flags | leaf_huge;
        }
        *self.used(child) = 512;
        self.entries(table)[index] = child | PRESENT | WRITABLE | USER;
        let size = PageSize::at_level(level);
        Ok(Flush::pages(virt & !(size.bytes() - 1), 1, size))
    }

    /// The tables from the root down to the leaf mapping `virt` (`path[level - 1]` is the
    /// table at `level`), and the leaf's level.
    #[inline]
    fn path_to_leaf(&mut self, virt: u64) -> Option<([u64; 4], u32)> {
        let mut path = [0u64; 4];
        let mut table = self.root;
        for level in (1..=4).rev() {
            path[level as usize - 1] = table;
            let entry = self.entries(table)[table_index(virt, level)];
            if entry & PRESENT == 0 {
                return None;
            }
            if level == 1 || (level <= 3 && entry & HUGE != 0) {
                return Some((path, level));
            }
            table = entry & ADDR_MASK;
        }
        None
    }

    /// Clears `count` entries from `virt`'s at `level` (tables on `path`), then releases
    /// them.
    fn clear_entries(&mut self, path: &[u64; 4], virt: u64, level: u32, count: u64) {
        let first = table_index(virt, level);
        self.entries(path[level as usize - 1])[first..first + run_length(first, count)].fill(0);
        self.release(path, virt, level, count);
    }

    /// Takes `count` cleared entries off the used count of the table at `level` on `path`;
    /// frees each table that empties and clears its entry in the table above (never the
    /// root).
    #[inline]
    fn release(&mut self, path: &[u64; 4], virt: u64, level: u32, count: u64) {
        let mut level = level;
        let mut count = count;
        loop {
            let table = path[level as usize - 1];
            let used = self.used(table);
            *used -= count;
            if *used > 0 || level == 4 {
                return;
            }
            self.memory.free_table(table_addr(table));
            level += 1;
            self.entries(path[level as usize - 1])[table_index(virt, level)] = 0;
            count = 1;
        }
    }
}

/// Entries from index `first` to the end of a table, at most `pages`.
fn run_length(first: usize, pages: u64) -> usize {
    (512 - first).min(usize::try_from(pages).unwrap_or(usize::MAX))
}

/// The table (or frame) address in an entry, or a table's own address.
/// A tree's tables as physical memory, for the shared walker (`shared::walk`), which both
/// the guest and the host inspector use.
struct Tables<'a, M>(&'a mut M);

impl<M: TableMemory> PhysMem for Tables<'_, M> {
    #[inline]
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        // The walker reads entries of tables it reached from the root: aligned, below 2^52.
        Some(self.0.entries(table_addr(gpa))[(gpa % 4096 / 8) as usize])
    }
}

#[inline]
fn table_addr(entry: u64) -> PhysAddr {
    // Masked to bits 12..51: always a physical address.
    PhysAddr::new(entry & ADDR_MASK)
}

fn check_aligned(virt: u64, phys: u64, align: u64) -> Result<(), MapError> {
    if virt % align != 0 {
        return Err(MapError::Misaligned { addr: virt });
    }
    if phys % align != 0 {
        return Err(MapError::Misaligned { addr: phys });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
