//! The [`Mapper`]: map, unmap, protect and translate on a 4-level tree.

use super::{Flush, Frame, MapError, TableAlloc, TableMemory, Translation, TreeStats, VirtPage};
use shared::addr::{PhysAddr, VirtAddr};
use shared::pte::{table_index, PageSize, PageTableEntry, PteFlags, ADDR_MASK, ENTRIES};
use shared::walk::{self, PhysMem};

/// Intermediate entries grant everything; leaves restrict.
/// End of the lower (user) half of the address space.
const LOWER_HALF_END: u64 = 1 << 47;
/// Start of the upper (kernel) half.
const UPPER_HALF_START: u64 = 0xffff_8000_0000_0000;
const TABLE_FLAGS: PteFlags = PteFlags::PRESENT.union(PteFlags::WRITABLE).union(PteFlags::USER);

/// A 4-level page-table tree and the operations on it.
///
/// Its invariant: the root, and every address in a present non-leaf entry of the tree,
/// is a page table in `memory` ([`TableMemory::entries`]' contract). [`Mapper::create`]
/// establishes it; [`Mapper::new`] takes it from the caller; every change keeps it.
pub struct Mapper<M> {
    root: PhysAddr,
    /// The tables' memory.
    pub memory: M,
}

impl<M: TableMemory> Mapper<M> {
    /// A mapper over the tree whose PML4 is at physical `root`.
    ///
    /// # Safety
    /// `root` must be a page table in `memory`, and so must every address in a present
    /// non-leaf entry of the tree below it.
    pub unsafe fn new(root: PhysAddr, memory: M) -> Self {
        Self { root, memory }
    }

    /// The entries of `table`, which must be the root or read from a present non-leaf
    /// entry of the tree: every caller walks down from the root.
    #[inline]
    fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; ENTRIES] {
        // SAFETY: the type's invariant makes every such address a page table in `memory`.
        unsafe { self.memory.entries(table) }
    }

    /// Physical address of the PML4 (the CR3 value).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Points the mapper at another tree in the same memory (the reverse map visits every
    /// tree that may map a page); returns the root it had.
    ///
    /// # Safety
    /// As for [`Mapper::new`]: `root` is a page table in `memory`, and so is every address
    /// in a present non-leaf entry below it.
    pub unsafe fn set_root(&mut self, root: PhysAddr) -> PhysAddr {
        core::mem::replace(&mut self.root, root)
    }

    /// The level-1 entry for `virt`, present or not (a swap entry, say); `None` where no
    /// page table covers it or a huge page maps it.
    pub fn pte(&mut self, virt: VirtAddr) -> Option<&mut PageTableEntry> {
        let virt = virt.as_u64();
        let mut table = self.root;
        for level in (2..=4).rev() {
            let entry = self.entries(table)[table_index(virt, level)];
            if !entry.is_present() || entry.is_leaf(level) {
                return None;
            }
            table = entry.addr();
        }
        Some(&mut self.entries(table)[table_index(virt, 1)])
    }

    /// Translates `virt`.
    #[inline]
    pub fn translate(&mut self, virt: VirtAddr) -> Option<Translation> {
        self.translate_raw(virt.as_u64())
    }

    #[inline]
    fn translate_raw(&mut self, virt: u64) -> Option<Translation> {
        let mapping =
            walk::translate(&mut Tables(&mut self.memory), self.root.as_u64(), virt).ok()?;
        Some(Translation {
            // Below 2^52: the walker masks the entry's address bits.
            phys: PhysAddr::new_masked(mapping.phys),
            size: PageSize::from_bytes(mapping.page_size).unwrap_or(PageSize::Size4K),
            flags: mapping.leaf.flags(),
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
                        let translation = entry.is_present().then_some(Translation {
                            phys: entry.addr(),
                            size: PageSize::Size4K,
                            flags: entry.flags(),
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

    /// Calls `f` with every table of the tree, its level (4 = the root) and its count of
    /// present entries: a fixed four levels deep, so bounded work.
    pub fn for_each_table(&mut self, mut f: impl FnMut(PhysAddr, u8, u64)) {
        self.visit_tables(self.root, 4, &mut |table, level, entries| {
            f(table, level, entries.iter().filter(|e| e.is_present()).count() as u64)
        });
    }

    /// Calls `f` with each table from `table` down, its level and its entries, each table
    /// read in place once by `f` and once more for its children above level 1.
    fn visit_tables(
        &mut self,
        table: PhysAddr,
        level: u8,
        f: &mut impl FnMut(PhysAddr, u8, &[PageTableEntry; ENTRIES]),
    ) {
        f(table, level, self.entries(table));
        if level == 1 {
            return;
        }
        for index in 0..ENTRIES {
            let entry = self.entries(table)[index];
            if entry.is_present() && !entry.is_leaf(level) {
                self.visit_tables(entry.addr(), level - 1, f);
            }
        }
    }

    /// The table and level of the leaf entry mapping `virt`.
    fn leaf_of(&mut self, virt: u64) -> Option<(PhysAddr, u8)> {
        let walk = walk::walk(&mut Tables(&mut self.memory), self.root.as_u64(), virt);
        walk.result.ok()?;
        let leaf = walk.steps[walk.len.checked_sub(1)?];
        Some((PhysAddr::new_masked(leaf.entry_addr & ADDR_MASK), leaf.level))
    }
}

impl<M: TableAlloc> Mapper<M> {
    /// Counts the tree's tables (by level) and leaves (by page size), in one walk that
    /// reads no entry of a table whose used count is zero (the kernel half's preallocated
    /// tables are mostly empty, and an emulated guest pays for every entry read).
    pub fn stats(&mut self) -> TreeStats {
        let mut stats = TreeStats::default();
        let root = self.root;
        self.count_tables(root, 4, &mut stats);
        stats
    }

    fn count_tables(&mut self, table: PhysAddr, level: u8, stats: &mut TreeStats) {
        stats.tables[4 - usize::from(level)] += 1;
        if *self.used(table) == 0 {
            return;
        }
        for index in 0..ENTRIES {
            let entry = self.entries(table)[index];
            if !entry.is_present() {
                continue;
            }
            if entry.is_leaf(level) {
                stats.pages[usize::from(level) - 1] += 1;
            } else {
                self.count_tables(entry.addr(), level - 1, stats);
            }
        }
    }

    /// A mapper over a new, empty tree.
    pub fn create(mut memory: M) -> Option<Self> {
        let root = memory.alloc_table()?;
        Some(Self { root, memory })
    }

    #[inline]
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        self.memory.used(table)
    }

    /// Maps `page` to `frame`, which must be of the same size.
    pub fn map(
        &mut self,
        page: VirtPage,
        frame: Frame,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
        if page.size() != frame.size() {
            return Err(MapError::SizeMismatch);
        }
        let (virt, size) = (page.start().as_u64(), page.size());
        let table = self.table_for(virt, size.level())?;
        let entry = &mut self.entries(table)[table_index(virt, size.level())];
        // A swap entry is as taken as a mapping: its slot would leak.
        if entry.raw() != 0 {
            return Err(MapError::AlreadyMapped { virt });
        }
        *entry = leaf_entry(frame.start(), size, flags);
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
        flags: PteFlags,
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
            if let Some(taken) = entries.iter().position(|e| e.is_present()) {
                return Err(MapError::AlreadyMapped { virt: v + taken as u64 * size.bytes() });
            }
            let mut frame = leaf_entry(PhysAddr::new_masked(p), size, flags).raw();
            for entry in entries.iter_mut() {
                *entry = PageTableEntry::from_raw(frame);
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
        let table = path[usize::from(level) - 1];
        let entry = core::mem::take(&mut self.entries(table)[table_index(virt, level)]);
        self.release(&path, virt, level, 1);
        let size = PageSize::at_level(level);
        let frame = Frame::containing(entry.addr(), size);
        Ok((frame, Flush::pages(virt & !(size.bytes() - 1), 1, size)))
    }

    /// Unmaps every page in `[virt, virt + len)`. A page that straddles either end of the
    /// range is refused (`Misaligned` at that end) before anything changes: `protect`
    /// splits huge pages, unmap does not. Runs of pages in one table are cleared in one
    /// pass.
    pub fn unmap_range(&mut self, virt: VirtAddr, len: u64) -> Result<Flush, MapError> {
        let virt = virt.as_u64();
        for (at, edge) in [(virt, virt), (virt + len.max(1) - 1, virt + len)] {
            // The page mapping `at` straddles `edge` unless the edge is aligned to its size.
            if let Some((_, level)) = self.leaf_of(at) {
                if edge % PageSize::at_level(level).bytes() != 0 {
                    return Err(MapError::Misaligned { addr: edge });
                }
            }
        }
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
            let table = path[usize::from(level) - 1];
            let run = &self.entries(table)[first..first + most];
            let count = run.iter().take_while(|e| e.is_present() && e.is_leaf(level)).count();
            let count = count as u64;
            self.clear_entries(&path, at, level, count);
            flush = flush.and(Flush::pages(page, count, size));
            at = page + count * size.bytes();
        }
        Ok(flush)
    }

    /// Unmaps whatever is mapped in `[virt, virt + len)` of the lower (user) half, skipping
    /// holes a table at a time, handing each leaf's frame to `freed` (with the tables'
    /// memory, which may free it), clearing each swap entry (the memory's
    /// [`TableAlloc::swap_entry_dropped`] gives its slot reference back) and freeing the
    /// tables that empty (never the root). The range is page aligned; a leaf is taken
    /// whole. This is how a process's pages go at `munmap` and exit: demand paging leaves
    /// holes.
    pub fn unmap_present(
        &mut self,
        virt: VirtAddr,
        len: u64,
        freed: &mut impl FnMut(&mut M, Frame),
    ) -> Result<Flush, MapError> {
        let (start, end) = user_range(virt, len)?;
        let mut flush = Flush::NONE;
        let root = self.root;
        self.clear_present(root, 4, 0, (start, end), freed, &mut flush);
        Ok(flush)
    }

    fn clear_present(
        &mut self,
        table: PhysAddr,
        level: u8,
        base: u64,
        (start, end): (u64, u64),
        freed: &mut impl FnMut(&mut M, Frame),
        flush: &mut Flush,
    ) {
        let span = shared::pte::entry_span(level);
        for index in entry_indices(base, span, (start, end)) {
            let i = index as u64;
            let entry = self.entries(table)[index];
            if !entry.is_present() {
                if level == 1 && entry.raw() != 0 {
                    // A swap entry: its slot loses this reference.
                    self.memory.swap_entry_dropped(entry);
                    self.entries(table)[index] = PageTableEntry::UNUSED;
                    *self.used(table) -= 1;
                }
                continue;
            }
            let at = base + i * span;
            if entry.is_leaf(level) {
                let size = PageSize::at_level(level);
                freed(&mut self.memory, Frame::containing(entry.addr(), size));
                *flush = core::mem::replace(flush, Flush::NONE).and(Flush::pages(at, 1, size));
            } else {
                let child = entry.addr();
                self.clear_present(child, level - 1, at, (start, end), freed, flush);
                if *self.used(child) != 0 {
                    continue;
                }
                self.memory.free_table(child);
            }
            self.entries(table)[index] = PageTableEntry::UNUSED;
            *self.used(table) -= 1;
        }
    }

    /// Copies the leaves present in `[virt, virt + len)` of the lower half into the tree
    /// whose root is `child` (a root in this memory, say from `alloc_table`; its tables
    /// are made as needed), as `fork` copies a VMA. With `write_protect` both copies lose
    /// `WRITABLE` (copy-on-write). `share` sees each leaf's frame once, to take the child's
    /// reference. Returns the flush the source tree needs.
    ///
    /// On [`MapError::NoTableMemory`] the child holds the leaves copied so far, each
    /// shared, so tearing it down as usual undoes the copy.
    pub fn copy_present(
        &mut self,
        child: PhysAddr,
        virt: VirtAddr,
        len: u64,
        write_protect: bool,
        share: &mut impl FnMut(&mut M, Frame),
    ) -> Result<Flush, MapError> {
        let range = user_range(virt, len)?;
        let mut flush = Flush::NONE;
        let root = self.root;
        self.copy_level((root, child), 4, 0, range, write_protect, share, &mut flush)?;
        Ok(flush)
    }

    #[expect(clippy::too_many_arguments, reason = "one recursion step of `copy_present`")]
    fn copy_level(
        &mut self,
        (src, dst): (PhysAddr, PhysAddr),
        level: u8,
        base: u64,
        range: (u64, u64),
        write_protect: bool,
        share: &mut impl FnMut(&mut M, Frame),
        flush: &mut Flush,
    ) -> Result<(), MapError> {
        if level == 1 {
            return self.copy_leaves((src, dst), base, range, write_protect, share, flush);
        }
        let span = shared::pte::entry_span(level);
        let mut copied = 0;
        let mut result = Ok(());
        for index in entry_indices(base, span, range) {
            let entry = self.entries(src)[index];
            if !entry.is_present() {
                continue;
            }
            let at = base + index as u64 * span;
            let target = self.entries(dst)[index];
            if entry.is_leaf(level) {
                if at < range.0 || at + span > range.1 {
                    result = Err(MapError::ParentEntryHugePage { virt: at });
                    break;
                }
                if target.is_present() {
                    result = Err(MapError::AlreadyMapped { virt: at });
                    break;
                }
                let mut leaf = entry;
                if write_protect && entry.flags().contains(PteFlags::WRITABLE) {
                    leaf = PageTableEntry::new(entry.addr(), entry.flags() - PteFlags::WRITABLE);
                    self.entries(src)[index] = leaf;
                    let size = PageSize::at_level(level);
                    *flush = core::mem::replace(flush, Flush::NONE).and(Flush::pages(at, 1, size));
                }
                share(&mut self.memory, Frame::containing(leaf.addr(), PageSize::at_level(level)));
                self.entries(dst)[index] = leaf;
                copied += 1;
                continue;
            }
            let table = if !target.is_present() {
                let Some(new) = self.memory.alloc_table() else {
                    result = Err(MapError::NoTableMemory);
                    break;
                };
                self.entries(dst)[index] = PageTableEntry::new(new, TABLE_FLAGS);
                copied += 1;
                new
            } else if target.is_leaf(level) {
                result = Err(MapError::ParentEntryHugePage { virt: at });
                break;
            } else {
                target.addr()
            };
            result = self.copy_level(
                (entry.addr(), table),
                level - 1,
                at,
                range,
                write_protect,
                share,
                flush,
            );
            if result.is_err() {
                break;
            }
        }
        *self.used(dst) += copied;
        result
    }

    /// `copy_level` for a page table, whose entries are all leaves: entry by entry, over
    /// the range's part of the table only, so that a sparse range costs what it maps (an
    /// emulated guest pays per instruction, and a 4 KiB copy is 512 of them), and with
    /// one flush for the table's part of the range.
    fn copy_leaves(
        &mut self,
        (src, dst): (PhysAddr, PhysAddr),
        base: u64,
        range: (u64, u64),
        write_protect: bool,
        share: &mut impl FnMut(&mut M, Frame),
        flush: &mut Flush,
    ) -> Result<(), MapError> {
        // A table without used entries (fork's new tables) has nothing to collide with.
        let fresh = *self.used(dst) == 0;
        let clear = if write_protect { !PteFlags::WRITABLE.bits() } else { u64::MAX };
        let indices = entry_indices(base, PageSize::Size4K.bytes(), range);
        let mut protected = false;
        let mut copied = 0;
        let mut result = Ok(());
        for index in indices.clone() {
            let entry = self.entries(src)[index];
            if entry.raw() == 0 {
                continue;
            }
            if !fresh && self.entries(dst)[index].raw() != 0 {
                result = Err(MapError::AlreadyMapped { virt: base + index as u64 * 4096 });
                break;
            }
            if !entry.is_present() {
                // A swap entry: the child names the slot too.
                self.memory.swap_entry_copied(entry);
                self.entries(dst)[index] = entry;
                copied += 1;
                continue;
            }
            let leaf = PageTableEntry::from_raw(entry.raw() & clear);
            if leaf != entry {
                self.entries(src)[index] = leaf;
                protected = true;
            }
            share(&mut self.memory, Frame::containing(leaf.addr(), PageSize::Size4K));
            self.entries(dst)[index] = leaf;
            copied += 1;
        }
        if protected {
            // The table's part of the range (pages that were not writable are flushed for
            // nothing, which is harmless).
            let start = base + indices.start as u64 * 4096;
            let run = indices.len() as u64;
            *flush = core::mem::replace(flush, Flush::NONE).and(Flush::pages(
                start,
                run,
                PageSize::Size4K,
            ));
        }
        *self.used(dst) += copied;
        result
    }

    /// Rewrites each leaf present in `[virt, virt + len)` of the lower half with what
    /// `update` makes of it (given the tables' memory, the leaf's address and size and the
    /// entry), splitting huge pages that the range cuts; holes are skipped. `update` must
    /// keep the entry present and its frame. Returns the flush for the entries changed.
    pub fn update_present(
        &mut self,
        virt: VirtAddr,
        len: u64,
        update: &mut impl FnMut(&mut M, u64, PageSize, PageTableEntry) -> PageTableEntry,
    ) -> Result<Flush, MapError> {
        let range = user_range(virt, len)?;
        let mut flush = Flush::NONE;
        let root = self.root;
        self.update_level(root, 4, 0, range, update, &mut flush)?;
        Ok(flush)
    }

    fn update_level(
        &mut self,
        table: PhysAddr,
        level: u8,
        base: u64,
        range: (u64, u64),
        update: &mut impl FnMut(&mut M, u64, PageSize, PageTableEntry) -> PageTableEntry,
        flush: &mut Flush,
    ) -> Result<(), MapError> {
        let span = shared::pte::entry_span(level);
        for index in entry_indices(base, span, range) {
            let mut entry = self.entries(table)[index];
            if !entry.is_present() {
                continue;
            }
            let at = base + index as u64 * span;
            if entry.is_leaf(level) && level > 1 && (at < range.0 || at + span > range.1) {
                // The range cuts this huge page: split it and go into the new table.
                self.split(table, at, level)?;
                *flush = core::mem::replace(flush, Flush::NONE).and(Flush::pages(
                    at,
                    1,
                    PageSize::at_level(level),
                ));
                entry = self.entries(table)[index];
            }
            if entry.is_leaf(level) {
                let size = PageSize::at_level(level);
                let new = update(&mut self.memory, at, size, entry);
                if new != entry {
                    self.entries(table)[index] = new;
                    *flush = core::mem::replace(flush, Flush::NONE).and(Flush::pages(at, 1, size));
                }
            } else {
                self.update_level(entry.addr(), level - 1, at, range, update, flush)?;
            }
        }
        Ok(())
    }

    /// Runs `update` on the leaf entry that maps `virt` (given the tables' memory, a copy
    /// of the entry to change, and the page size), in one walk, and stores the entry back.
    /// Returns what `update` returned and the flush the change needs; `None` if nothing
    /// maps `virt`. `update` must leave the entry present (copy-on-write changes a page's
    /// rights or frame this way).
    pub fn update_leaf<R>(
        &mut self,
        virt: VirtAddr,
        update: impl FnOnce(&mut M, &mut PageTableEntry, PageSize) -> R,
    ) -> Option<(R, Flush)> {
        let virt = virt.as_u64();
        let (path, level) = self.path_to_leaf(virt)?;
        let (table, index) = (path[usize::from(level) - 1], table_index(virt, level));
        let size = PageSize::at_level(level);
        let old = self.entries(table)[index];
        let mut entry = old;
        let result = update(&mut self.memory, &mut entry, size);
        if entry == old {
            return Some((result, Flush::NONE));
        }
        self.entries(table)[index] = entry;
        let page = virt & !(size.bytes() - 1);
        Some((result, Flush::pages(page, 1, size)))
    }

    /// Whether nothing is mapped where `page` would go: its entry and every entry above it
    /// absent, or tables (so `map` of it would not be refused).
    pub fn is_unmapped(&mut self, page: VirtPage) -> bool {
        let virt = page.start().as_u64();
        let mut table = self.root;
        for level in (page.size().level()..=4).rev() {
            let entry = self.entries(table)[table_index(virt, level)];
            if !entry.is_present() {
                return true;
            }
            if level == page.size().level() || entry.is_leaf(level) {
                return false;
            }
            table = entry.addr();
        }
        true
    }

    /// Replaces the 2 MiB leaf that maps `virt` by a page table of 512 entries with its
    /// rights, mapping the same frames; `None` if a 4 KiB page (or nothing huge) maps it.
    /// The flush covers the huge page.
    pub fn split_huge_leaf(&mut self, virt: VirtAddr) -> Result<Option<Flush>, MapError> {
        let virt = virt.as_u64();
        let Some((path, level)) = self.path_to_leaf(virt) else { return Ok(None) };
        if level != 2 {
            return Ok(None);
        }
        self.split(path[1], virt, 2)?;
        let page = virt & !(PageSize::Size2M.bytes() - 1);
        Ok(Some(Flush::pages(page, 1, PageSize::Size2M)))
    }

    /// Gives every PML4 entry of `[virt, virt + len)` in the upper (kernel) half a table,
    /// as Linux's `preallocate_vmalloc_pages` does at boot. With [`release`](Self::release)
    /// never freeing such a table, those entries never change again, so a process tree,
    /// which copies the upper half when it is made, sees every later kernel mapping there.
    /// Returns the tables made.
    pub fn preallocate_upper(&mut self, virt: VirtAddr, len: u64) -> Result<u64, MapError> {
        let (start, end) = (virt.as_u64(), virt.as_u64().saturating_add(len));
        if start < UPPER_HALF_START || len == 0 {
            return Err(MapError::Misaligned { addr: start });
        }
        let root = self.root;
        let (first, last) = (table_index(start, 4), table_index(end - 1, 4));
        let mut made = 0;
        for index in first..=last {
            if self.entries(root)[index].is_present() {
                continue;
            }
            let table = self.memory.alloc_table().ok_or(MapError::NoTableMemory)?;
            self.entries(root)[index] = PageTableEntry::new(table, TABLE_FLAGS);
            *self.used(root) += 1;
            made += 1;
        }
        Ok(made)
    }

    /// Changes the permissions of `[virt, virt + len)` (4 KiB aligned) to `flags`, splitting
    /// huge pages that the range cuts. Every page of the range must be mapped.
    pub fn protect(
        &mut self,
        virt: VirtAddr,
        len: u64,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
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
                self.split(table, at, level)?;
                flush = flush.and(Flush::pages(page, 1, size));
                continue;
            }
            let entry = &mut self.entries(table)[table_index(at, level)];
            let kept = entry.flags() - PteFlags::PERMISSIONS;
            *entry = PageTableEntry::new(entry.addr(), kept | (flags & PteFlags::PERMISSIONS));
            flush = flush.and(Flush::pages(page, 1, size));
            at = page + size.bytes();
        }
        Ok(flush)
    }

    /// The table holding `virt`'s entry at `level`, creating the tables above as needed.
    fn table_for(&mut self, virt: u64, level: u8) -> Result<PhysAddr, MapError> {
        if !VirtAddr::is_canonical(virt) {
            return Err(MapError::Misaligned { addr: virt });
        }
        let mut table = self.root;
        for upper in (level + 1..=4).rev() {
            let index = table_index(virt, upper);
            let entry = self.entries(table)[index];
            table = if !entry.is_present() {
                let new = self.memory.alloc_table().ok_or(MapError::NoTableMemory)?;
                self.entries(table)[index] = PageTableEntry::new(new, TABLE_FLAGS);
                *self.used(table) += 1;
                new
            } else if entry.is_leaf(upper) {
                return Err(MapError::ParentEntryHugePage { virt });
            } else {
                entry.addr()
            };
        }
        Ok(table)
    }

    /// Replaces the huge page at `level` covering `virt` by a table of 512 pages of the
    /// next size down with the same flags. The caller flushes the huge page.
    fn split(&mut self, table: PhysAddr, virt: u64, level: u8) -> Result<(), MapError> {
        let index = table_index(virt, level);
        let entry = self.entries(table)[index];
        let child = self.memory.alloc_table().ok_or(MapError::NoTableMemory)?;
        let small = PageSize::at_level(level - 1);
        let base = entry.addr().align_down(PageSize::at_level(level).bytes());
        let flags = entry.flags() - PteFlags::HUGE;
        for (i, slot) in self.entries(child).iter_mut().enumerate() {
            let frame = PhysAddr::new_masked(base.as_u64() + i as u64 * small.bytes());
            *slot = leaf_entry(frame, small, flags);
        }
        *self.used(child) = ENTRIES as u64;
        self.entries(table)[index] = PageTableEntry::new(child, TABLE_FLAGS);
        Ok(())
    }

    /// The tables from the root down to the leaf mapping `virt` (`path[level - 1]` is the
    /// table at `level`), and the leaf's level.
    #[inline]
    fn path_to_leaf(&mut self, virt: u64) -> Option<([PhysAddr; 4], u8)> {
        let mut path = [PhysAddr::new(0); 4];
        let mut table = self.root;
        for level in (1..=4).rev() {
            path[usize::from(level) - 1] = table;
            let entry = self.entries(table)[table_index(virt, level)];
            if !entry.is_present() {
                return None;
            }
            if entry.is_leaf(level) {
                return Some((path, level));
            }
            table = entry.addr();
        }
        None
    }

    /// Clears `count` entries from `virt`'s at `level` (tables on `path`), then releases
    /// them.
    fn clear_entries(&mut self, path: &[PhysAddr; 4], virt: u64, level: u8, count: u64) {
        let first = table_index(virt, level);
        let table = path[usize::from(level) - 1];
        self.entries(table)[first..first + run_length(first, count)].fill(PageTableEntry::UNUSED);
        self.release(path, virt, level, count);
    }

    /// Takes `count` cleared entries off the used count of the table at `level` on `path`;
    /// frees each table that empties and clears its entry in the table above (never the
    /// root, and never a table a PML4 entry of the upper half points to: those entries
    /// are shared by every process tree and never change, see
    /// [`preallocate_upper`](Self::preallocate_upper)).
    #[inline]
    fn release(&mut self, path: &[PhysAddr; 4], virt: u64, level: u8, count: u64) {
        let mut level = level;
        let mut count = count;
        loop {
            let table = path[usize::from(level) - 1];
            let used = self.used(table);
            *used -= count;
            if *used > 0 || level == 4 || (level == 3 && virt >= UPPER_HALF_START) {
                return;
            }
            self.memory.free_table(table);
            level += 1;
            let parent = path[usize::from(level) - 1];
            self.entries(parent)[table_index(virt, level)] = PageTableEntry::UNUSED;
            count = 1;
        }
    }
}

/// A leaf entry of `size` for `frame` with the permission bits of `flags`.
#[inline]
fn leaf_entry(frame: PhysAddr, size: PageSize, flags: PteFlags) -> PageTableEntry {
    let huge = if size == PageSize::Size4K { PteFlags::empty() } else { PteFlags::HUGE };
    PageTableEntry::new(frame, (flags & PteFlags::PERMISSIONS) | PteFlags::PRESENT | huge)
}

/// `[virt, virt + len)` as bounds, if it lies in the lower half and starts on a page.
fn user_range(virt: VirtAddr, len: u64) -> Result<(u64, u64), MapError> {
    let (start, end) = (virt.as_u64(), virt.as_u64().saturating_add(len));
    if end > LOWER_HALF_END || start % PageSize::Size4K.bytes() != 0 {
        return Err(MapError::Misaligned { addr: start });
    }
    Ok((start, end))
}

/// The indices of a table at `base` whose entries (each `span` bytes) meet `[start, end)`,
/// which meets the table's span.
#[inline]
fn entry_indices(base: u64, span: u64, (start, end): (u64, u64)) -> core::ops::Range<usize> {
    // Both bounds lie in [0, 512]: the range is clipped to this table's span.
    let first = usize::try_from((start.max(base) - base) / span).unwrap_or(ENTRIES);
    let last = (end.min(base + span * ENTRIES as u64).max(base) - base).div_ceil(span);
    first..usize::try_from(last).unwrap_or(ENTRIES).max(first)
}

/// Entries from index `first` to the end of a table, at most `pages`.
#[inline]
fn run_length(first: usize, pages: u64) -> usize {
    (ENTRIES - first).min(usize::try_from(pages).unwrap_or(usize::MAX))
}

/// A tree's tables as physical memory, for the shared walker (`shared::walk`), which both
/// the guest and the host inspector use.
struct Tables<'a, M>(&'a mut M);

impl<M: TableMemory> PhysMem for Tables<'_, M> {
    #[inline]
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        let table = PhysAddr::new_masked(gpa & ADDR_MASK);
        // SAFETY: the walker reads entries of the root and of tables it reached through
        // present non-leaf entries: tables, by the mapper's invariant.
        Some(unsafe { self.0.entries(table) }[(gpa % 4096 / 8) as usize].raw())
    }
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
