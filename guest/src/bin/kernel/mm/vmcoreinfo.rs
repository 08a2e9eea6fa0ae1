//! Publishes the `vmcoreinfo` descriptor (`shared::vmcoreinfo`) and keeps its sequence
//! counter.
//!
//! Life cycle: the VMM writes the RAM ranges before boot; [`publish`] fills in the rest
//! once the memory managers sit at their final address (`mm::global::install`), writing
//! the magic last; from then on [`global::with`](super::global::with) brackets every use
//! of the memory managers with [`begin_change`] and [`end_change`], so a host reader can
//! tell a snapshot taken mid-change from a good one.

use super::direct_map;
use super::setup::Mm;
use super::tables::KernelImage;
use core::sync::atomic::{compiler_fence, Ordering};
use guest::e820::E820Map;
use shared::layout::{PAGE_OFFSET, PAGE_SIZE, VMALLOC_END, VMALLOC_START, VMEMMAP_BASE};
use shared::vmcoreinfo::{
    VmCoreInfo, PAGING_NX, VMCOREINFO_ADDR, VMCOREINFO_MAGIC, VMCOREINFO_VERSION,
};

fn descriptor() -> *mut VmCoreInfo {
    direct_map(VMCOREINFO_ADDR) as *mut VmCoreInfo
}

/// Fills the descriptor from `mm` (at its final address), the sanitised e820 map (which
/// lives as long as the kernel runs), then sets the magic.
pub fn publish(mm: &Mm, e820: &E820Map) {
    let info = descriptor();
    let cr3 = mm.root().as_u64();
    let image = KernelImage::get();
    let memory = mm.memblock.memory.regions();
    let reserved = mm.memblock.reserved.regions();
    let max_pfn = memory.last().map_or(0, |r| r.end() / PAGE_SIZE);
    let caches = &mm.kmalloc.caches;
    // SAFETY: the descriptor's page is RAM in the first MiB, reserved from every allocator
    // and mapped by the direct map; only this module writes it, and the VMM's fields
    // (`nr_ram`, `ram`) are left alone.
    unsafe {
        let set = |field: *mut u64, value: u64| field.write_volatile(value);
        set(&raw mut (*info).cr3, cr3);
        set(&raw mut (*info).page_offset, PAGE_OFFSET);
        set(&raw mut (*info).vmemmap, VMEMMAP_BASE);
        set(&raw mut (*info).max_pfn, max_pfn);
        set(&raw mut (*info).kernel_start, KernelImage::phys(image.text));
        set(&raw mut (*info).kernel_end, KernelImage::phys(image.end));
        set(&raw mut (*info).kernel_rodata, KernelImage::phys(image.rodata));
        set(&raw mut (*info).kernel_data, KernelImage::phys(image.data));
        set(&raw mut (*info).paging_flags, if crate::cpu::has_nx() { PAGING_NX } else { 0 });
        set(&raw mut (*info).vmalloc_start, VMALLOC_START);
        set(&raw mut (*info).vmalloc_end, VMALLOC_END);
        set(&raw mut (*info).zones, mm.buddy.zones.as_ptr() as u64);
        set(&raw mut (*info).nr_zones, mm.buddy.zones.len() as u64);
        set(&raw mut (*info).memblock_memory, memory.as_ptr() as u64);
        set(&raw mut (*info).memblock_memory_cnt, memory.len() as u64);
        set(&raw mut (*info).memblock_reserved, reserved.as_ptr() as u64);
        set(&raw mut (*info).memblock_reserved_cnt, reserved.len() as u64);
        set(&raw mut (*info).e820, e820.entries().as_ptr() as u64);
        set(&raw mut (*info).e820_cnt, e820.entries().len() as u64);
        set(&raw mut (*info).slab_caches, caches.as_ptr() as u64);
        set(&raw mut (*info).slab_cache_stride, size_of_val(&caches[0]) as u64);
        set(&raw mut (*info).nr_slab_caches, caches.len() as u64);
        let (tasks, nr_tasks) = crate::process::tasks_address();
        set(&raw mut (*info).tasks, tasks);
        set(&raw mut (*info).nr_tasks, nr_tasks);
        set(&raw mut (*info).nr_swap_slots, mm.swap.slots());
        let map = mm.swap.counts();
        set(&raw mut (*info).swap_map, if map.is_empty() { 0 } else { map.as_ptr() as u64 });
        set(&raw mut (*info).lruvec, &raw const mm.buddy.lruvec as u64);
        set(&raw mut (*info).vm_events, &raw const mm.events as u64);
        (&raw mut (*info).version).write_volatile(VMCOREINFO_VERSION);
        compiler_fence(Ordering::Release);
        set(&raw mut (*info).magic, VMCOREINFO_MAGIC);
    }
    log::debug!("vmcoreinfo at {VMCOREINFO_ADDR:#x} (phys), memory managers at {:p}", mm);
}

fn bump() {
    // SAFETY: as in `publish`; the kernel runs on one CPU, so a plain increment is atomic
    // with respect to itself, and the fences keep the allocator's stores inside the bracket.
    unsafe {
        let seq = &raw mut (*descriptor()).seq;
        compiler_fence(Ordering::SeqCst);
        seq.write_volatile(seq.read_volatile().wrapping_add(1));
        compiler_fence(Ordering::SeqCst);
    }
}

/// The allocators are about to change: the counter turns odd.
pub fn begin_change() {
    bump();
}

/// The change is complete: the counter turns even.
pub fn end_change() {
    bump();
}
