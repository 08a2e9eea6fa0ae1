//! Guest RAM in host memory, and the guest library's memory traits over it.
//!
//! ```text
//! Ram                  the bytes, guest-physical address = offset, 8-byte aligned words
//!   Memmap             `struct page`s at the memory map's physical base (buddy, slabs)
//! BootTables           page tables from memblock while the tree is built (as the kernel's)
//! KernelTables         page tables and vmalloc frames from the buddy allocator afterwards
//! ImagePages           slab pages from the buddy allocator at PAGE_OFFSET + pfn × 4096,
//!                      so every freelist link in RAM is a guest virtual address
//! ```
//!
//! Everything is bounds-checked safe code over the one buffer: the `unsafe` of the guest
//! library's traits is about raw memory the kernel reaches through its direct map, which
//! here is a slice index.

use guest::buddy::{Buddy, Memmap};
use guest::memblock::Memblock;
use guest::paging::{PageTableEntry, TableAlloc, TableMemory, Tlb};
use guest::slab::SlabPages;
use guest::vmalloc::VmallocMemory;
use shared::addr::{PhysAddr, VirtAddr};
use shared::layout::{PAGE_OFFSET, PAGE_SIZE};
use shared::page::{Page, ZoneType, PAGE_STRUCT_SIZE, PG_TABLE};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A guest address or length as an index into host memory.
pub fn index(value: u64) -> usize {
    usize::try_from(value).expect("a 64-bit host")
}

/// Guest RAM from guest-physical 0.
#[derive(Clone)]
pub struct Ram {
    /// The bytes, as words so that every 8-byte aligned address is aligned on the host.
    words: Vec<u64>,
    /// The memory map once placed: physical address of pfn 0's `struct page`, and the
    /// frames it describes.
    memmap: Option<(u64, u64)>,
}

impl Ram {
    /// `bytes` of zeroed RAM (as the VMM hands it over).
    pub fn new(bytes: u64) -> Self {
        Self { words: vec![0; index(bytes / 8)], memmap: None }
    }

    /// Bytes of RAM.
    pub fn size(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    /// All of RAM.
    pub fn bytes(&self) -> &[u8] {
        self.words.as_bytes()
    }

    /// `len` bytes at guest-physical `phys`.
    pub fn range(&self, phys: u64, len: u64) -> &[u8] {
        self.bytes().get(index(phys)..index(phys + len)).expect("inside RAM")
    }

    /// `len` bytes at guest-physical `phys`, writable.
    pub fn range_mut(&mut self, phys: u64, len: u64) -> &mut [u8] {
        self.words.as_mut_bytes().get_mut(index(phys)..index(phys + len)).expect("inside RAM")
    }

    /// The value at `phys`.
    pub fn read<T: FromBytes>(&self, phys: u64) -> T {
        T::read_from_bytes(self.range(phys, size_of::<T>() as u64)).expect("sized")
    }

    /// Writes `value` at `phys`.
    pub fn write<T: IntoBytes + Immutable + ?Sized>(&mut self, phys: u64, value: &T) {
        let bytes = value.as_bytes();
        self.range_mut(phys, bytes.len() as u64).copy_from_slice(bytes);
    }

    /// The value at `phys` (aligned for `T`), in place.
    pub fn get_mut<T: FromBytes + IntoBytes + KnownLayout>(&mut self, phys: u64) -> &mut T {
        T::mut_from_bytes(self.range_mut(phys, size_of::<T>() as u64)).expect("aligned")
    }

    /// The 512 entries of the page table at `table`.
    pub fn table(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        self.get_mut(table.as_u64())
    }

    /// Places the memory map: `pfns` `struct page`s from physical `base`.
    pub fn place_memmap(&mut self, base: u64, pfns: u64) {
        self.memmap = Some((base, pfns));
    }

    /// Physical address of `pfn`'s `struct page`.
    pub fn page_phys(&self, pfn: u64) -> u64 {
        let (base, _) = self.memmap.expect("the memory map is placed");
        base + pfn * PAGE_STRUCT_SIZE as u64
    }
}

impl Memmap for Ram {
    fn page(&mut self, pfn: u64) -> Option<&mut Page> {
        let (_, pfns) = self.memmap?;
        (pfn < pfns).then(|| self.page_phys(pfn)).map(|phys| self.get_mut(phys))
    }
}

/// The kernel's tree read or changed in RAM, for the census and for locating entries.
pub struct RamTables<'a>(pub &'a mut Ram);

impl TableMemory for RamTables<'_> {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        self.0.table(table)
    }
}

/// Page tables from memblock while the tree is built, as the kernel's `BootTables`: their
/// used counts are not kept (the census takes them).
pub struct BootTables<'a> {
    /// Where tables come from.
    pub memblock: &'a mut Memblock,
    /// Where they live.
    pub ram: &'a mut Ram,
    scratch: u64,
}

impl<'a> BootTables<'a> {
    /// Tables from `memblock`, in `ram`.
    pub fn new(memblock: &'a mut Memblock, ram: &'a mut Ram) -> Self {
        Self { memblock, ram, scratch: 0 }
    }
}

impl TableMemory for BootTables<'_> {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        self.ram.table(table)
    }
}

impl TableAlloc for BootTables<'_> {
    fn used(&mut self, _table: PhysAddr) -> &mut u64 {
        &mut self.scratch
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let table = self.memblock.alloc(PAGE_SIZE, PAGE_SIZE, shared::layout::BOOT_MAP_SIZE)?;
        self.ram.range_mut(table, PAGE_SIZE).fill(0);
        Some(PhysAddr::new(table))
    }

    fn free_table(&mut self, _table: PhysAddr) {
        // Building only maps: nothing empties.
    }
}

/// Page tables and vmalloc frames from the buddy allocator, used counts in the tables'
/// `struct page`s: the kernel's `KernelTables`.
pub struct KernelTables<'a>(pub &'a mut Buddy<Ram>);

impl TableMemory for KernelTables<'_> {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        self.0.memmap.table(table)
    }
}

impl TableAlloc for KernelTables<'_> {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        &mut self.0.memmap.page(table.pfn()).expect("a table in RAM").private
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let table = PhysAddr::new(self.0.alloc_page(ZoneType::Normal)? * PAGE_SIZE);
        self.0.memmap.range_mut(table.as_u64(), PAGE_SIZE).fill(0);
        let page = self.0.memmap.page(table.pfn())?;
        page.flags |= PG_TABLE;
        page.private = 0;
        Some(table)
    }

    fn free_table(&mut self, table: PhysAddr) {
        if let Some(page) = self.0.memmap.page(table.pfn()) {
            page.flags &= !PG_TABLE;
            page.private = 0;
        }
        self.0.free_page(table.pfn()).expect("a table from the buddy allocator");
    }
}

impl VmallocMemory for KernelTables<'_> {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        Some(PhysAddr::new(self.0.alloc_page(ZoneType::Normal)? * PAGE_SIZE))
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        self.0.free_page(frame.pfn()).expect("a vmalloc frame");
    }
}

/// No TLB: the tree is built in memory no CPU has loaded.
pub struct NoTlb;

impl Tlb for NoTlb {
    fn flush_page(&self, _virt: VirtAddr) {}
    fn flush_all(&self) {}
}

/// Slab pages from the buddy allocator, at their direct-map addresses.
pub struct ImagePages<'a>(pub &'a mut Buddy<Ram>);

impl ImagePages<'_> {
    fn phys(addr: u64) -> u64 {
        addr.checked_sub(PAGE_OFFSET).expect("a direct-map address")
    }
}

// SAFETY: every block the buddy allocator hands out is a range of `Ram`, reached here at
// PAGE_OFFSET + pfn × 4096 by a bounds-checked index, and nothing but the slab allocator
// touches it while it holds the block; `pfn` inverts `address`.
unsafe impl SlabPages for ImagePages<'_> {
    fn alloc_pages(&mut self, order: u32) -> Option<u64> {
        self.0.alloc_pages(order, ZoneType::Normal)
    }

    fn free_pages(&mut self, pfn: u64, order: u32) -> bool {
        self.0.free_pages(pfn, order).is_ok()
    }

    fn page(&mut self, pfn: u64) -> Option<&mut Page> {
        self.0.memmap.page(pfn)
    }

    fn address(&self, pfn: u64) -> u64 {
        PAGE_OFFSET + pfn * PAGE_SIZE
    }

    fn pfn(&self, addr: u64) -> u64 {
        addr.wrapping_sub(PAGE_OFFSET) / PAGE_SIZE
    }

    unsafe fn read_word(&self, addr: u64) -> u64 {
        self.0.memmap.read(Self::phys(addr))
    }

    unsafe fn write_word(&mut self, addr: u64, value: u64) {
        self.0.memmap.write(Self::phys(addr), &value);
    }

    unsafe fn fill(&mut self, addr: u64, len: u64, byte: u8) {
        self.0.memmap.range_mut(Self::phys(addr), len).fill(byte);
    }

    unsafe fn find_other(&self, addr: u64, len: u64, byte: u8) -> Option<u64> {
        let bytes = self.0.memmap.range(Self::phys(addr), len);
        bytes.iter().position(|&b| b != byte).map(|at| addr + at as u64)
    }

    unsafe fn copy(&mut self, from: u64, to: u64, len: u64) {
        let bytes = self.0.memmap.range(Self::phys(from), len).to_vec();
        self.0.memmap.range_mut(Self::phys(to), len).copy_from_slice(&bytes);
    }
}
