//! A guest's RAM built on the host by the guest's own memory managers (`guest` lib),
//! laid out as the inspector finds a booted kvm-mm guest's, so that it can be inspected,
//! corrupted and fuzzed without KVM.
//!
//! ```text
//! physical                                  kernel virtual
//! 0x6000         vmcoreinfo                 PAGE_OFFSET + phys       direct map of memblock
//! [0, 1 MiB)     reserved                                            memory: RW NX, text and
//! 2 MiB          kernel image: text,                                 rodata frames read-only
//!                rodata, data (zones,       KERNEL_VIRT_BASE + phys  the image: text RX,
//!                memblock, e820, slab                                rodata R NX, data RW NX
//!                caches and their names)    VMEMMAP_BASE             the memory map, 2 MiB page
//! top of RAM     page tables, memory map    VMALLOC_START            vmalloc areas, an ioremap
//! the rest       the buddy allocator's: page blocks, per-CPU lists, slabs of two kmalloc
//!                families (plain, and `slub_debug` with a quarantined slab), vmalloc frames
//! ```
//!
//! [`build`] follows the kernel's `mm::setup::init`: e820 → memblock → the tree (direct
//! map, image, vmemmap) from memblock → census of the tables' `struct page`s → buddy
//! allocator → population → the kernel-owned structures copied into the image's data
//! pages, slab pages pointed at those copies, and vmcoreinfo written last. What the host
//! allocators held is kept beside the bytes as the truth the inspector must find.

use super::ram::{index, BootTables, ImagePages, KernelTables, NoTlb, Ram, RamTables};
use guest::buddy::{Buddy, Memmap};
use guest::e820::E820Map;
use guest::memblock::{Memblock, MAX_REGIONS};
use guest::paging::{Frame, Mapper, PageSize, PteFlags, VirtPage};
use guest::slab::{Kmalloc, KmemCache, SlabPages};
use guest::vmalloc::Vmalloc;
use shared::addr::{PhysAddr, VirtAddr};
use shared::boot::{E820Entry, E820_MAX_ENTRIES, E820_TYPE_RAM};
use shared::layout::{
    HIGH_MEMORY, KERNEL_PHYS_START, KERNEL_VIRT_BASE, MIB, PAGE_OFFSET, PAGE_SIZE, VMALLOC_END,
    VMALLOC_START, VMEMMAP_BASE,
};
use shared::mm::{Region, SlabCache, Zone};
use shared::page::{ZoneType, PAGE_STRUCT_SIZE, PG_SLAB};
use shared::vmcoreinfo::{
    RamRange, VmCoreInfo, PAGING_NX, VMCOREINFO_ADDR, VMCOREINFO_MAGIC, VMCOREINFO_VERSION,
};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Bytes of guest RAM: one range at guest-physical 0, file offset 0.
pub const RAM_BYTES: u64 = 32 * MIB;
/// Pages of kernel text, read-only data and data (the structures vmcoreinfo points at).
const TEXT_PAGES: u64 = 16;
const RODATA_PAGES: u64 = 8;
const DATA_PAGES: u64 = 40;
/// An even sequence count: a guest that has changed its allocators and is at rest.
pub const SEQ: u64 = 42;
/// Device memory the image maps with `ioremap` (the local APIC's page and the next).
pub const IOREMAP_PHYS: u64 = 0xfee0_0000;
/// The `slub_debug` kmalloc family's names: this prefix and the plain family's name.
pub const DEBUG_PREFIX: &str = "debug-";

const RW: PteFlags = PteFlags::WRITABLE.union(PteFlags::GLOBAL).union(PteFlags::NO_EXECUTE);
const RO: PteFlags = PteFlags::GLOBAL.union(PteFlags::NO_EXECUTE);

/// The kernel image's sections, physical.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// Text (and image) start.
    pub start: u64,
    /// Read-only data start.
    pub rodata: u64,
    /// Data start.
    pub data: u64,
    /// Image end.
    pub end: u64,
}

/// A range the image maps: `len` bytes from `virt` to `phys` with leaf `flags`.
#[derive(Clone, Copy, Debug)]
pub struct Mapped {
    /// First virtual address.
    pub virt: u64,
    /// First physical address.
    pub phys: u64,
    /// Bytes.
    pub len: u64,
    /// The leaf flags asked for (present and PS added by the mapper).
    pub flags: PteFlags,
}

/// A slab cache as the image holds it.
#[derive(Clone, Debug)]
pub struct Cache {
    /// Kernel virtual address of its copy in the image's data.
    pub addr: u64,
    /// Its state, as written there.
    pub raw: SlabCache,
    /// Its name.
    pub name: String,
}

/// A live kmalloc object.
#[derive(Clone, Copy, Debug)]
pub struct Object {
    /// Index of its cache in [`Image::caches`].
    pub cache: usize,
    /// Its direct-map address.
    pub addr: u64,
}

/// A vmalloc area: its first address and the frames of its pages.
#[derive(Clone, Debug)]
pub struct Area {
    /// First address.
    pub virt: u64,
    /// Frames, one per page (physical).
    pub frames: Vec<u64>,
}

/// The image and the truth about it.
#[derive(Clone)]
pub struct Image {
    /// Guest RAM.
    pub ram: Ram,
    /// vmcoreinfo as written (write changes back with [`Image::update_info`]).
    pub info: VmCoreInfo,
    /// The kernel image's sections.
    pub kernel: Kernel,
    /// The sanitised e820 map.
    pub e820: Vec<E820Entry>,
    /// memblock's memory regions.
    pub memory: Vec<Region>,
    /// memblock's reserved regions.
    pub reserved: Vec<Region>,
    /// The zones, as the buddy allocator left them.
    pub zones: Vec<Zone>,
    /// The slab caches: the plain kmalloc family, then the `slub_debug` one.
    pub caches: Vec<Cache>,
    /// What was mapped, in mapping order.
    pub mappings: Vec<Mapped>,
    /// Physical addresses of every page table.
    pub tables: Vec<u64>,
    /// Allocated page blocks (pfn, order) that are neither slabs, tables nor vmalloc
    /// frames: `alloc_pages` blocks and large kmalloc blocks.
    pub blocks: Vec<(u64, u32)>,
    /// Live kmalloc objects.
    pub objects: Vec<Object>,
    /// Live vmalloc areas.
    pub vmalloc: Vec<Area>,
    /// The ioremap area's first address (it maps [`IOREMAP_PHYS`], 2 pages).
    pub ioremap: u64,
    /// The slab taken out of service (cache index, pfn).
    pub quarantined: (usize, u64),
    /// Physical address of the memory map.
    pub memmap: u64,
}

impl Image {
    /// A fresh copy of the sound image (built once per test process).
    pub fn sound() -> Image {
        static IMAGE: OnceLock<Image> = OnceLock::new();
        IMAGE.get_or_init(build).clone()
    }

    /// Frames RAM has a `struct page` for.
    pub fn max_pfn(&self) -> u64 {
        self.info.max_pfn
    }

    /// Physical address behind a kernel virtual address of the direct map, the image or
    /// the vmemmap (the linear regions).
    pub fn phys_of(&self, virt: u64) -> u64 {
        if virt >= KERNEL_VIRT_BASE {
            virt - KERNEL_VIRT_BASE
        } else if virt >= VMEMMAP_BASE {
            self.memmap + (virt - VMEMMAP_BASE)
        } else {
            assert!((PAGE_OFFSET..VMALLOC_START).contains(&virt), "{virt:#x} is not linear");
            virt - PAGE_OFFSET
        }
    }

    /// Changes vmcoreinfo and writes it back.
    pub fn update_info(&mut self, change: impl FnOnce(&mut VmCoreInfo)) {
        change(&mut self.info);
        self.ram.write(VMCOREINFO_ADDR, &self.info);
    }
}

/// Bump allocation in the kernel image's data pages.
struct Data {
    next: u64,
    end: u64,
}

impl Data {
    fn take(&mut self, bytes: u64) -> u64 {
        let at = self.next.next_multiple_of(8);
        self.next = at + bytes;
        assert!(self.next <= self.end, "the image's data pages are full");
        at
    }
}

/// The kmalloc families: the plain one, and one with `slub_debug`. Boxed: slabs record
/// their cache's host address (until `finalize` points them at the image's copies), so
/// the caches must not move.
struct Families {
    plain: Box<Kmalloc>,
    debug: Box<Kmalloc>,
}

impl Families {
    /// Every cache with its name in the image, plain family first.
    fn caches(&self) -> impl Iterator<Item = (&KmemCache, String)> {
        let plain = self.plain.caches.iter().map(|c| (c, c.name().to_string()));
        let debug = self.debug.caches.iter().map(|c| (c, format!("{DEBUG_PREFIX}{}", c.name())));
        plain.chain(debug)
    }

    /// The cache index in [`Image::caches`] of a family's size class.
    fn index(debug: bool, class: usize) -> usize {
        class + if debug { guest::slab::KMALLOC_SIZES.len() } else { 0 }
    }
}

/// Builds the image (see the module documentation).
pub fn build() -> Image {
    let mut ram = Ram::new(RAM_BYTES);
    let e820 = E820Map::sanitize(&vmm::memory::default_e820(RAM_BYTES)).expect("a sane map");
    let mut memblock = Memblock::new();
    for entry in e820.entries().iter().filter(|e| e.typ == E820_TYPE_RAM) {
        // Whole pages only, as the kernel's setup.
        let base = entry.addr.next_multiple_of(PAGE_SIZE);
        let end = (entry.addr + entry.size) / PAGE_SIZE * PAGE_SIZE;
        memblock.add(base, end - base).expect("room");
    }
    let start = KERNEL_PHYS_START;
    let kernel = Kernel {
        start,
        rodata: start + TEXT_PAGES * PAGE_SIZE,
        data: start + (TEXT_PAGES + RODATA_PAGES) * PAGE_SIZE,
        end: start + (TEXT_PAGES + RODATA_PAGES + DATA_PAGES) * PAGE_SIZE,
    };
    memblock.reserve(0, HIGH_MEMORY).expect("room");
    memblock.reserve(kernel.start, kernel.end - kernel.start).expect("room");
    let max_pfn = memblock.memory.regions().last().map_or(0, |r| r.end() / PAGE_SIZE);

    let mut mappings = Vec::new();
    let (root, memmap) = build_tree(&mut memblock, &mut ram, kernel, max_pfn, &mut mappings);
    ram.place_memmap(memmap, max_pfn);
    census(root, &mut ram);

    let mut buddy = Buddy::new(ram);
    for region in memblock.memory.regions() {
        buddy.add_present(region.base / PAGE_SIZE, region.end() / PAGE_SIZE);
    }
    for free in memblock.free_ranges() {
        buddy.hand_off(free.base.div_ceil(PAGE_SIZE), free.end() / PAGE_SIZE);
    }
    buddy.setup_watermarks();

    let mut families = Families {
        plain: Box::new(Kmalloc::new(false).expect("the plain kmalloc caches")),
        debug: Box::new(Kmalloc::new(true).expect("the debug kmalloc caches")),
    };
    let blocks = populate_pages(&mut buddy);
    let Slabs { objects, large, quarantined } = populate_slabs(&mut buddy, &mut families);
    let (vmalloc, ioremap) = populate_vmalloc(&mut buddy, root, &mut mappings);

    let mut image = Image {
        ram: Ram::new(0),
        info: VmCoreInfo::default(),
        kernel,
        e820: e820.entries().to_vec(),
        memory: memblock.memory.regions().to_vec(),
        reserved: memblock.reserved.regions().to_vec(),
        zones: buddy.zones.to_vec(),
        caches: Vec::new(),
        mappings,
        tables: Vec::new(),
        blocks: blocks.into_iter().chain(large).collect(),
        objects,
        vmalloc,
        ioremap,
        quarantined,
        memmap,
    };
    finalize(&mut image, buddy, &families, root);
    image
}

/// The kernel's tree, as its `tables::build`: the direct map of memblock memory (the
/// image's text and rodata frames read-only), the image at its link address, and the
/// memory map in one 2 MiB page from memblock. Returns the root and the memory map's
/// physical address.
fn build_tree(
    memblock: &mut Memblock,
    ram: &mut Ram,
    kernel: Kernel,
    max_pfn: u64,
    mappings: &mut Vec<Mapped>,
) -> (u64, u64) {
    let mut plan = Vec::new();
    for region in memblock.memory.regions() {
        let (start, end) = (region.base, region.end());
        let cut = |at: u64| at.clamp(start, end);
        for (from, to, flags) in [
            (start, cut(kernel.start), RW),
            (cut(kernel.start), cut(kernel.data), RO),
            (cut(kernel.data), end, RW),
        ] {
            if from < to {
                plan.push((
                    Mapped { virt: PAGE_OFFSET + from, phys: from, len: to - from, flags },
                    PageSize::Size1G,
                ));
            }
        }
    }
    for (from, to, flags) in [
        (kernel.start, kernel.rodata, PteFlags::GLOBAL),
        (kernel.rodata, kernel.data, RO),
        (kernel.data, kernel.end, RW),
    ] {
        plan.push((
            Mapped { virt: KERNEL_VIRT_BASE + from, phys: from, len: to - from, flags },
            PageSize::Size4K,
        ));
    }
    let mut tree = Mapper::create(BootTables::new(memblock, ram)).expect("a root table");
    for (m, max) in plan {
        let (virt, phys) = (VirtAddr::new(m.virt), PhysAddr::new(m.phys));
        tree.map_range(virt, phys, m.len, m.flags, max).expect("mapped").ignore();
        mappings.push(m);
    }
    // The memory map: one 2 MiB page, as the kernel backs each section's 2 MiB of it.
    let chunk = PageSize::Size2M.bytes();
    assert!(max_pfn * PAGE_STRUCT_SIZE as u64 <= chunk, "one chunk describes the image");
    let memmap = tree.memory.memblock.alloc(chunk, chunk, u64::MAX).expect("room for the map");
    let page = VirtPage::new(VirtAddr::new(VMEMMAP_BASE), PageSize::Size2M).expect("aligned");
    let frame = Frame::new(PhysAddr::new(memmap), PageSize::Size2M).expect("aligned");
    tree.map(page, frame, RW).expect("mapped").ignore();
    mappings.push(Mapped { virt: VMEMMAP_BASE, phys: memmap, len: chunk, flags: RW });
    (tree.root().as_u64(), memmap)
}

/// As the kernel's `BootTree::census` does when it reads the tables: every table's
/// `struct page` gets `PG_TABLE` and its used entries in `private`.
fn census(root: u64, ram: &mut Ram) {
    let mut counts = Vec::new();
    // SAFETY: `root` is the tree `build_tree` made in this RAM: it and every table a
    // present non-leaf entry names are page tables there.
    let mut tree = unsafe { Mapper::new(PhysAddr::new(root), RamTables(ram)) };
    tree.for_each_table(|table, _, used| counts.push((table.pfn(), used)));
    for (pfn, used) in counts {
        let page = ram.page(pfn).expect("a table in RAM");
        page.flags |= shared::page::PG_TABLE;
        page.private = used;
    }
}

/// Blocks of orders 0 to 5 from the buddy allocator (orders 0-3 through the per-CPU
/// lists), some of DMA; one of each order freed again, so that per-CPU lists hold freed
/// blocks too. Returns the blocks still held.
fn populate_pages(buddy: &mut Buddy<Ram>) -> Vec<(u64, u32)> {
    let mut held = Vec::new();
    for order in 0..=5 {
        for _ in 0..3 {
            held.push((buddy.alloc_pages(order, ZoneType::Normal).expect("memory"), order));
        }
    }
    for order in [0, 2] {
        held.push((buddy.alloc_pages(order, ZoneType::Dma).expect("DMA memory"), order));
    }
    for order in 0..=5 {
        let at = held.iter().position(|&(_, o)| o == order).expect("one of each order");
        let (pfn, _) = held.remove(at);
        buddy.free_pages(pfn, order).expect("a block we hold");
    }
    held
}

/// What [`populate_slabs`] leaves.
struct Slabs {
    /// Live objects.
    objects: Vec<Object>,
    /// Large kmalloc blocks: (pfn, order).
    large: Vec<(u64, u32)>,
    /// The slab taken out of service: (cache index, pfn).
    quarantined: (usize, u64),
}

/// Objects of both kmalloc families, every third (plain) or fourth (debug) freed so
/// that partial lists exist, a whole slab emptied, a full slab, large kmalloc blocks, and a
/// use-after-free that takes a debug slab out of service.
fn populate_slabs(buddy: &mut Buddy<Ram>, families: &mut Families) -> Slabs {
    let mut pages = ImagePages(buddy);
    let mut objects = Vec::new();
    let plain: [(u64, usize); 7] =
        [(8, 40), (64, 200), (96, 90), (192, 70), (512, 30), (2048, 12), (8000, 5)];
    let debug: [(u64, usize); 4] = [(16, 50), (100, 30), (128, 40), (1000, 10)];
    for (kmalloc, sizes, every, is_debug) in
        [(&mut families.plain, &plain[..], 3, false), (&mut families.debug, &debug[..], 4, true)]
    {
        for &(size, count) in sizes {
            let class = Kmalloc::class(size).expect("a size class");
            let cache = Families::index(is_debug, class);
            let mut these = Vec::new();
            for _ in 0..count {
                let addr = kmalloc.kmalloc(&mut pages, size).expect("sound").expect("memory");
                these.push(addr);
            }
            for (n, &addr) in these.iter().enumerate() {
                if n % every == every - 1 {
                    // SAFETY: an object this kmalloc allocated above, freed once.
                    unsafe { kmalloc.kfree(&mut pages, addr) }.expect("a live object");
                } else {
                    objects.push(Object { cache, addr });
                }
            }
        }
    }
    // Empty the first slab of kmalloc-512 (eight objects): an empty slab on its partial
    // list.
    let class = Kmalloc::class(512).expect("a size class");
    let first_slab = objects
        .iter()
        .find(|o| o.cache == class)
        .map(|o| pages.pfn(o.addr))
        .expect("kmalloc-512 objects");
    let emptied: Vec<u64> = objects
        .iter()
        .filter(|o| o.cache == class && pages.pfn(o.addr) == first_slab)
        .map(|o| o.addr)
        .collect();
    for &addr in &emptied {
        // SAFETY: live objects of the plain family, each freed once.
        unsafe { families.plain.kfree(&mut pages, addr) }.expect("a live object");
    }
    objects.retain(|o| !emptied.contains(&o.addr));

    // A full slab, on no list: kmalloc-256 filled, and one object more in a new slab.
    let class = Kmalloc::class(256).expect("a size class");
    let (_, per_slab) = families.plain.caches[class].geometry();
    for _ in 0..=per_slab {
        let addr = families.plain.kmalloc(&mut pages, 256).expect("sound").expect("memory");
        objects.push(Object { cache: Families::index(false, class), addr });
    }

    // Large allocations: whole page blocks.
    let mut large = Vec::new();
    for size in [20_000, 70_000] {
        let addr = families.plain.kmalloc(&mut pages, size).expect("sound").expect("memory");
        let pfn = pages.pfn(addr);
        large.push((pfn, pages.page(pfn).expect("a page").order));
    }

    // A write after free in a debug object: the next allocation finds the poison
    // damaged and takes the slab out of service.
    let class = Kmalloc::class(128).expect("a size class");
    let cache = Families::index(true, class);
    let victim = families.debug.kmalloc(&mut pages, 128).expect("sound").expect("memory");
    let slab = pages.pfn(victim);
    // SAFETY: the object just allocated, freed once.
    unsafe { families.debug.kfree(&mut pages, victim) }.expect("a live object");
    // SAFETY: inside the freed object's payload, in a live slab.
    unsafe { pages.write_word(victim + 8, 0x0bad_f00d) };
    let caught = families.debug.kmalloc(&mut pages, 128).expect_err("the damage is found");
    assert_eq!(caught.kind, guest::slab::SlabErrorKind::PoisonOverwritten);
    Slabs { objects, large, quarantined: (cache, slab) }
}

/// vmalloc areas (one freed, and its hole partly reused) and an ioremap of device
/// memory, in the kernel's tree with tables and frames from the buddy allocator.
fn populate_vmalloc(
    buddy: &mut Buddy<Ram>,
    root: u64,
    mappings: &mut Vec<Mapped>,
) -> (Vec<Area>, u64) {
    let mut vmalloc = Vmalloc::new(VirtAddr::new(VMALLOC_START), VirtAddr::new(VMALLOC_END), true);
    // SAFETY: `root` is the tree built in this RAM, whose tables are RAM pages; no other
    // mapper of it is live.
    let mut tree = unsafe { Mapper::new(PhysAddr::new(root), KernelTables(buddy)) };
    let mut alloc = |vmalloc: &mut Vmalloc, bytes: u64| {
        vmalloc.vmalloc(&mut tree, &NoTlb, bytes).expect("vmalloc").as_u64()
    };
    let a = alloc(&mut vmalloc, 5 * PAGE_SIZE);
    let b = alloc(&mut vmalloc, 20 * PAGE_SIZE + 100);
    let c = alloc(&mut vmalloc, PAGE_SIZE);
    vmalloc.vfree(&mut tree, &NoTlb, VirtAddr::new(b)).expect("an area");
    let d = vmalloc.vmalloc(&mut tree, &NoTlb, 3 * PAGE_SIZE).expect("vmalloc").as_u64();
    let io_len = 2 * PAGE_SIZE;
    let io = vmalloc
        .ioremap(&mut tree, PhysAddr::new(IOREMAP_PHYS), io_len, false)
        .expect("ioremap")
        .as_u64();
    let mut areas = Vec::new();
    for virt in [a, c, d] {
        let (start, pages) = vmalloc.area_of(VirtAddr::new(virt)).expect("a live area");
        let frames: Vec<u64> = (0..pages)
            .map(|p| {
                let at = VirtAddr::new(start.as_u64() + p * PAGE_SIZE);
                tree.translate(at).expect("mapped").phys.as_u64()
            })
            .collect();
        for (p, &frame) in frames.iter().enumerate() {
            let virt = virt + p as u64 * PAGE_SIZE;
            mappings.push(Mapped { virt, phys: frame, len: PAGE_SIZE, flags: RW });
        }
        areas.push(Area { virt, frames });
    }
    let flags = RW | PteFlags::NO_CACHE;
    mappings.push(Mapped { virt: io, phys: IOREMAP_PHYS, len: io_len, flags });
    areas.sort_by_key(|a| a.virt);
    (areas, io)
}

/// Copies the kernel-owned structures into the image's data pages, points slab pages at
/// the copies of their caches, and writes vmcoreinfo.
fn finalize(image: &mut Image, buddy: Buddy<Ram>, families: &Families, root: u64) {
    let Buddy { memmap: mut ram, zones, .. } = buddy;
    let mut data = Data { next: image.kernel.data, end: image.kernel.end };
    let virt = |phys: u64| KERNEL_VIRT_BASE + phys;

    let zones_at = data.take(size_of_val(&zones) as u64);
    ram.write(zones_at, &zones);
    let region_array = (MAX_REGIONS * size_of::<Region>()) as u64;
    let memory_at = data.take(region_array);
    ram.write(memory_at, image.memory.as_slice());
    let reserved_at = data.take(region_array);
    ram.write(reserved_at, image.reserved.as_slice());
    let e820_at = data.take((E820_MAX_ENTRIES * size_of::<E820Entry>()) as u64);
    ram.write(e820_at, image.e820.as_slice());

    let stride = size_of::<KmemCache>() as u64;
    let count = families.caches().count() as u64;
    let caches_at = data.take(count * stride);
    let mut by_host = HashMap::new();
    for (i, (cache, name)) in (0u64..).zip(families.caches()) {
        let name_at = data.take(name.len() as u64);
        ram.range_mut(name_at, name.len() as u64).copy_from_slice(name.as_bytes());
        let raw =
            SlabCache { name_addr: virt(name_at), name_len: name.len() as u64, ..*cache.raw() };
        let addr = virt(caches_at + i * stride);
        ram.write(caches_at + i * stride, &raw);
        by_host.insert(std::ptr::from_ref(cache) as u64, addr);
        image.caches.push(Cache { addr, raw, name });
    }
    for pfn in 0..image.memory.last().map_or(0, |r| r.end() / PAGE_SIZE) {
        let page = ram.page(pfn).expect("a struct page");
        if page.flags & PG_SLAB != 0 {
            page.slab_cache = by_host[&page.slab_cache];
        }
    }

    let mut tables = Vec::new();
    // SAFETY: as in `census`: the tree built in this RAM.
    let mut tree = unsafe { Mapper::new(PhysAddr::new(root), RamTables(&mut ram)) };
    tree.for_each_table(|table, _, _| tables.push(table.as_u64()));
    image.tables = tables;

    let mut info = VmCoreInfo {
        magic: VMCOREINFO_MAGIC,
        version: VMCOREINFO_VERSION,
        nr_ram: 1,
        seq: SEQ,
        cr3: root,
        page_offset: PAGE_OFFSET,
        vmemmap: VMEMMAP_BASE,
        max_pfn: image.memory.last().map_or(0, |r| r.end() / PAGE_SIZE),
        kernel_start: image.kernel.start,
        kernel_end: image.kernel.end,
        kernel_rodata: image.kernel.rodata,
        kernel_data: image.kernel.data,
        paging_flags: PAGING_NX,
        vmalloc_start: VMALLOC_START,
        vmalloc_end: VMALLOC_END,
        zones: virt(zones_at),
        nr_zones: zones.len() as u64,
        memblock_memory: virt(memory_at),
        memblock_memory_cnt: image.memory.len() as u64,
        memblock_reserved: virt(reserved_at),
        memblock_reserved_cnt: image.reserved.len() as u64,
        e820: virt(e820_at),
        e820_cnt: image.e820.len() as u64,
        slab_caches: virt(caches_at),
        slab_cache_stride: stride,
        nr_slab_caches: count,
        ..VmCoreInfo::default()
    };
    info.ram[0] = RamRange { guest_addr: 0, size: ram.size(), file_offset: 0 };
    ram.write(VMCOREINFO_ADDR, &info);
    image.info = info;
    image.ram = ram;
    assert!(index(data.next) <= index(image.kernel.end));
}
