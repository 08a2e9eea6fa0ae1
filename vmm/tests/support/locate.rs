//! Where things are in an image, read from its bytes (so that they reflect earlier
//! changes): words, `struct page`s, zones, slab caches, slabs and their freelists, and
//! page-table entries, each with the guest-physical address to corrupt.

use super::image::Image;
use shared::layout::{PAGE_OFFSET, PAGE_SIZE};
use shared::mm::{FreeArea, SlabCache, Zone, ZONE_SIZE};
use shared::page::{Page, ZoneType, NO_PFN, PG_HEAD, PG_SLAB};
use shared::pte::PteFlags;
use shared::walk::{walk, PhysMem};

impl PhysMem for super::ram::Ram {
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        (gpa.checked_add(8)? <= self.size()).then(|| self.read(gpa))
    }
}

impl Image {
    /// The word at `phys`.
    pub fn word(&self, phys: u64) -> u64 {
        self.ram.read(phys)
    }

    /// Writes the word at `phys`.
    pub fn set_word(&mut self, phys: u64, value: u64) {
        self.ram.write(phys, &value);
    }

    /// Physical address of `pfn`'s `struct page`.
    pub fn page_phys(&self, pfn: u64) -> u64 {
        self.ram.page_phys(pfn)
    }

    /// `pfn`'s `struct page`.
    pub fn page(&self, pfn: u64) -> Page {
        self.ram.read(self.page_phys(pfn))
    }

    /// Changes `pfn`'s `struct page`.
    pub fn update_page(&mut self, pfn: u64, change: impl FnOnce(&mut Page)) {
        let phys = self.page_phys(pfn);
        change(self.ram.get_mut(phys));
    }

    /// Physical address of zone `zone` (0 = DMA).
    pub fn zone_phys(&self, zone: usize) -> u64 {
        self.phys_of(self.info.zones) + (zone * ZONE_SIZE) as u64
    }

    /// Zone `zone`.
    pub fn zone(&self, zone: usize) -> Zone {
        self.ram.read(self.zone_phys(zone))
    }

    /// Changes zone `zone`.
    pub fn update_zone(&mut self, zone: usize, change: impl FnOnce(&mut Zone)) {
        let phys = self.zone_phys(zone);
        change(self.ram.get_mut(phys));
    }

    /// Physical address of zone `zone`'s free list of `order`: its head, then `nr_free`.
    pub fn free_area_phys(&self, zone: usize, order: u32) -> u64 {
        let area = std::mem::offset_of!(Zone, free_area) + order as usize * size_of::<FreeArea>();
        self.zone_phys(zone) + area as u64
    }

    /// Physical address of memblock region `index` of `memory` or, if not, `reserved`
    /// (the arrays have room for `MAX_REGIONS`, past their counts).
    pub fn region_phys(&self, memory: bool, index: u64) -> u64 {
        let array = if memory { self.info.memblock_memory } else { self.info.memblock_reserved };
        self.phys_of(array) + index * size_of::<shared::mm::Region>() as u64
    }

    /// Zone `zone`'s name.
    pub fn zone_name(zone: usize) -> &'static str {
        ZoneType::ALL[zone].name()
    }

    /// The blocks on zone `zone`'s free list of `order`, head first.
    pub fn free_list(&self, zone: usize, order: u32) -> Vec<u64> {
        self.chain(self.zone(zone).free_area[order as usize].head)
    }

    /// The pages linked by `next` from `head`, bounded by the page frames (so a list
    /// already corrupted into a loop ends).
    fn chain(&self, head: u64) -> Vec<u64> {
        let mut pages = Vec::new();
        let mut pfn = head;
        while pfn != NO_PFN && (pages.len() as u64) < self.info.max_pfn {
            pages.push(pfn);
            pfn = self.page(pfn).next;
        }
        pages
    }

    /// The first (zone, order) whose free list holds at least `count` blocks.
    pub fn free_list_with(&self, count: usize) -> (usize, u32) {
        (0..self.zones.len())
            .flat_map(|zone| (0..=shared::page::MAX_ORDER).map(move |order| (zone, order)))
            .find(|&(zone, order)| self.free_list(zone, order).len() >= count)
            .expect("a long enough free list")
    }

    /// The lowest order whose free list in zone `zone` holds at least `count` blocks.
    pub fn free_order(&self, zone: usize, count: usize) -> u32 {
        (0..=shared::page::MAX_ORDER)
            .find(|&order| self.free_list(zone, order).len() >= count)
            .expect("a long enough free list")
    }

    /// The first per-CPU list (zone, order) with a block, of order `min_order` or above.
    pub fn pcp_list(&self, min_order: u32) -> (usize, u32) {
        (0..self.zones.len())
            .flat_map(|zone| (min_order..shared::mm::PCP_ORDERS).map(move |order| (zone, order)))
            .find(|&(zone, order)| self.zone(zone).pcp[order as usize].count > 0)
            .expect("a per-CPU block")
    }

    /// Physical address of cache `cache`'s state.
    pub fn cache_phys(&self, cache: usize) -> u64 {
        self.phys_of(self.info.slab_caches) + cache as u64 * self.info.slab_cache_stride
    }

    /// Cache `cache`'s state.
    pub fn cache(&self, cache: usize) -> SlabCache {
        self.ram.read(self.cache_phys(cache))
    }

    /// Changes cache `cache`'s state.
    pub fn update_cache(&mut self, cache: usize, change: impl FnOnce(&mut SlabCache)) {
        let phys = self.cache_phys(cache);
        change(self.ram.get_mut(phys));
    }

    /// The index of the cache named `name`.
    pub fn cache_named(&self, name: &str) -> usize {
        self.caches.iter().position(|c| c.name == name).expect("a cache of that name")
    }

    /// The slabs of cache `cache`, by pfn, from the memory map.
    pub fn slabs(&self, cache: usize) -> Vec<u64> {
        let addr = self.caches[cache].addr;
        (0..self.max_pfn())
            .filter(|&pfn| {
                let page = self.page(pfn);
                page.flags & (PG_SLAB | PG_HEAD) == PG_SLAB | PG_HEAD && page.slab_cache == addr
            })
            .collect()
    }

    /// Cache `cache`'s partial list, head first.
    pub fn partial(&self, cache: usize) -> Vec<u64> {
        self.chain(self.cache(cache).partial)
    }

    /// The free objects of slab `slab` of cache `cache`, in freelist order.
    pub fn free_objects(&self, cache: usize, slab: u64) -> Vec<u64> {
        let raw = self.cache(cache);
        let mut object =
            if slab == raw.cpu_slab { raw.cpu_freelist } else { self.page(slab).slab_freelist };
        let mut objects = Vec::new();
        while object != 0 {
            objects.push(object);
            object = self.word(self.link_phys(cache, object));
        }
        objects
    }

    /// Physical address of free object `object`'s freelist link.
    pub fn link_phys(&self, cache: usize, object: u64) -> u64 {
        object - PAGE_OFFSET + u64::from(self.cache(cache).free_offset)
    }

    /// A slab of cache `cache` that is neither current nor quarantined, with at least
    /// `free` free objects and `used` objects in use.
    pub fn slab_with(&self, cache: usize, free: usize, used: u16) -> u64 {
        let raw = self.cache(cache);
        self.slabs(cache)
            .into_iter()
            .filter(|&slab| slab != raw.cpu_slab && slab != self.quarantined.1)
            .find(|&slab| {
                self.free_objects(cache, slab).len() >= free && self.page(slab).slab_inuse >= used
            })
            .expect("such a slab")
    }

    /// The first cache (plain family first) with a partial list of at least `len` slabs.
    pub fn cache_with_partial(&self, len: usize) -> usize {
        (0..self.caches.len())
            .find(|&cache| self.partial(cache).len() >= len)
            .expect("a cache with such a partial list")
    }

    /// A full slab of cache `cache` (on no list, not current, not quarantined).
    pub fn full_slab(&self, cache: usize) -> Option<u64> {
        let raw = self.cache(cache);
        self.slabs(cache).into_iter().find(|&slab| {
            let page = self.page(slab);
            slab != raw.cpu_slab
                && slab != self.quarantined.1
                && page.slab_inuse == page.slab_objects
        })
    }

    /// An allocated page block of `order` that is only that (no slab, table or vmalloc).
    pub fn block(&self, order: u32) -> u64 {
        self.blocks.iter().find(|&&(_, o)| o == order).map(|&(pfn, _)| pfn).expect("a block")
    }

    /// The largest free block: (pfn, order).
    pub fn largest_free_block(&self) -> (u64, u32) {
        (0..=shared::page::MAX_ORDER)
            .rev()
            .find_map(|order| {
                (0..self.zones.len())
                    .find_map(|zone| self.free_list(zone, order).first().map(|&pfn| (pfn, order)))
            })
            .expect("free memory")
    }

    /// Physical address of the entry at `level` (4 = PML4 … 1 = PT) on the walk of
    /// `virt`, which must reach that level.
    pub fn entry(&mut self, virt: u64, level: u8) -> u64 {
        let w = walk(&mut self.ram, self.info.cr3, virt);
        w.steps[..w.len]
            .iter()
            .find(|s| s.level == level)
            .map(|s| s.entry_addr)
            .expect("the walk reaches that level")
    }

    /// Physical address and level of the leaf entry that maps `virt`.
    pub fn leaf(&mut self, virt: u64) -> (u64, u8) {
        let w = walk(&mut self.ram, self.info.cr3, virt);
        assert!(w.result.is_ok(), "{virt:#x} is mapped: {:?}", w.result);
        let step = w.steps[w.len - 1];
        (step.entry_addr, step.level)
    }

    /// Points every PML4 entry back at the PML4: tables that alias each other.
    pub fn alias_every_pml4_entry(&mut self) {
        let root = self.info.cr3;
        let table = PteFlags::PRESENT | PteFlags::WRITABLE;
        for slot in 0..512 {
            self.set_word(root + 8 * slot, root | table.bits());
        }
    }

    /// The pfn of the page table at `level` on the walk of `virt`.
    pub fn table_of(&mut self, virt: u64, level: u8) -> u64 {
        self.entry(virt, level) / PAGE_SIZE
    }
}
