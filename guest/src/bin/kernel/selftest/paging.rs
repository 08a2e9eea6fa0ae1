//! The kernel's page tables: its own tree with W^X, the read-only alias of its text, and
//! the mapper at run time (map, split by protect, unmap, tables freed).

use super::{all_pages_back, detail, ensure, CheckResult};
use crate::extable;
use crate::mm::direct_map;
use crate::mm::setup::Mm;
use crate::mm::tables::{stack_guard, KernelImage, LocalTlb};
use guest::buddy::Watermark;
use guest::e820::E820Map;
use guest::paging::{Frame, PageSize, PteFlags, VirtPage};
use shared::addr::{PhysAddr, VirtAddr};
use shared::layout::{PAGE_SIZE, VMALLOC_END, ZERO_PAGE};
use shared::page::ZoneType;

/// A word in `.data`.
static mut SCRATCH: u64 = 1;

fn va(addr: u64) -> VirtAddr {
    VirtAddr::new(addr)
}

/// The writable and no-execute bits of a translation.
fn rights(t: guest::paging::Translation) -> PteFlags {
    t.flags & (PteFlags::WRITABLE | PteFlags::NO_EXECUTE)
}

pub fn own_tree(mm: &mut Mm, _: &E820Map) -> CheckResult {
    let mut tree = mm.tree();
    for (what, virt) in
        [("null", 0), ("identity-mapped zero page", ZERO_PAGE), ("stack guard", stack_guard())]
    {
        ensure!(tree.translate(va(virt)).is_none(), "the {what} address {virt:#x} is mapped");
    }
    let nx = if crate::cpu::has_nx() { PteFlags::NO_EXECUTE } else { PteFlags::empty() };
    let image = KernelImage::get();
    let text = tree.translate(va(own_tree as *const () as u64)).map(rights);
    ensure!(text == Some(PteFlags::empty()), "kernel text is not read-only executable: {text:?}");
    let ro = tree.translate(va(image.rodata)).map(rights);
    ensure!(ro == Some(nx), "rodata is not read-only no-execute: {ro:?}");
    let data = tree.translate(va(&raw const SCRATCH as u64)).map(rights);
    ensure!(data == Some(PteFlags::WRITABLE | nx), "data is not read-write no-execute: {data:?}");
    Ok(())
}

/// Linux write-protects every alias of the kernel's text and rodata: the direct map's
/// too, or a stray write through it would change code the image mapping calls read-only.
pub fn read_only_alias(mm: &mut Mm, _: &E820Map) -> CheckResult {
    let image = KernelImage::get();
    let mut tree = mm.tree();
    for (what, virt) in [("text", own_tree as *const () as u64), ("rodata", image.rodata)] {
        let alias = direct_map(KernelImage::phys(virt));
        let t = tree.translate(va(alias));
        ensure!(
            t.is_some_and(|t| !t.flags.contains(PteFlags::WRITABLE)),
            "the direct-map alias of the kernel's {what} at {alias:#x} is {t:?}"
        );
        // SAFETY: a byte of the kernel image, read through its own mapping; writing it back
        // unchanged is harmless should the alias prove writable after all.
        let byte = unsafe { (virt as *const u8).read_volatile() };
        // SAFETY: as above.
        let write = unsafe { extable::write_u8(va(alias), byte) };
        ensure!(
            write.is_err_and(|f| f.address == alias && f.error_code & 0b11 == 0b11),
            "a write through the {what} alias at {alias:#x} gave {write:?}, not a protection fault"
        );
    }
    Ok(())
}

pub fn runtime_mapper(mm: &mut Mm, _: &E820Map) -> CheckResult {
    // The top of the vmalloc area, far from any vmalloc allocation.
    let virt = VMALLOC_END - (1 << 30);
    let free = mm.buddy.nr_free_pages();
    let block = mm
        .buddy
        .alloc(9, ZoneType::Normal, Watermark::Min)
        .ok_or_else(|| detail(format_args!("no 2 MiB block")))?;
    let phys = block * PAGE_SIZE;
    let mut tree = mm.tree();
    let (page, frame) = (
        VirtPage::containing(va(virt), PageSize::Size2M),
        Frame::containing(PhysAddr::new(phys), PageSize::Size2M),
    );
    tree.map(page, frame, PteFlags::WRITABLE)
        .map_err(|e| detail(format_args!("map: {e}")))?
        .ignore();
    let huge = tree.translate(va(virt + 0x1234)).map(|t| (t.phys.as_u64(), t.size));
    ensure!(huge == Some((phys + 0x1234, PageSize::Size2M)), "2 MiB page translates to {huge:?}");
    tree.protect(va(virt + 0x1000), 0x1000, PteFlags::NO_EXECUTE)
        .map_err(|e| detail(format_args!("protect: {e}")))?
        .flush(&LocalTlb);
    let split = tree.translate(va(virt + 0x1000)).map(|t| t.size);
    let neighbour = tree
        .translate(va(virt + 0x20_0000 - 8))
        .map(|t| (t.phys.as_u64(), t.flags.contains(PteFlags::WRITABLE)));
    ensure!(split == Some(PageSize::Size4K), "the protected page is {split:?}");
    ensure!(
        neighbour == Some((phys + 0x20_0000 - 8, true)),
        "the rest of the block is {neighbour:?}"
    );
    tree.unmap_range(va(virt), 0x20_0000)
        .map_err(|e| detail(format_args!("unmap: {e}")))?
        .flush(&LocalTlb);
    ensure!(tree.translate(va(virt)).is_none(), "still mapped after unmap");
    mm.buddy.free(block, 9).map_err(|err| detail(format_args!("{err}")))?;
    all_pages_back(mm, free)
}
