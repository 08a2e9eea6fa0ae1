use super::*;
use proptest::prelude::*;
use shared::addr::{PhysAddr, VirtAddr};
use shared::pte::{table_index, ADDR_MASK};
use std::collections::BTreeMap;
use std::vec::Vec;

const WRITABLE: PteFlags = PteFlags::WRITABLE;
const NO_EXECUTE: PteFlags = PteFlags::NO_EXECUTE;
const GLOBAL: PteFlags = PteFlags::GLOBAL;
const NONE: PteFlags = PteFlags::empty();

use crate::testing::{Arena, Recorder};

fn mapper() -> Mapper<Arena> {
    Mapper::create(Arena::default()).expect("root table")
}

fn va(addr: u64) -> VirtAddr {
    VirtAddr::new(addr)
}

fn pa(addr: u64) -> PhysAddr {
    PhysAddr::new(addr)
}

/// Maps one page given raw addresses.
fn map(
    m: &mut Mapper<Arena>,
    virt: u64,
    phys: u64,
    size: PageSize,
    flags: PteFlags,
) -> Result<Flush, MapError> {
    m.map(VirtPage::new(va(virt), size)?, Frame::new(pa(phys), size)?, flags)
}

/// Unmaps a raw address: (physical, size, flush).
fn unmap(m: &mut Mapper<Arena>, virt: u64) -> Result<(u64, PageSize, Flush), MapError> {
    m.unmap(va(virt)).map(|(frame, flush)| (frame.start().as_u64(), frame.size(), flush))
}

const SIZES: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

#[test]
fn maps_translates_and_unmaps_every_size() {
    let mut m = mapper();
    let base = 0xffff_8880_0000_0000u64;
    for (i, size) in SIZES.into_iter().enumerate() {
        let virt = base + (i as u64 + 1) * (1 << 30);
        let phys = 0x4000_0000 * (i as u64 + 1);
        map(&mut m, virt, phys, size, WRITABLE | NO_EXECUTE).expect("maps").ignore();
        let t = m.translate(va(virt + size.bytes() - 8)).expect("mapped");
        assert_eq!((t.phys.as_u64(), t.size), (phys + size.bytes() - 8, size));
        assert_eq!(t.flags & PteFlags::PERMISSIONS, WRITABLE | NO_EXECUTE);
    }
    for (i, size) in SIZES.into_iter().enumerate() {
        let virt = base + (i as u64 + 1) * (1 << 30);
        let (phys, got, flush) =
            unmap(&mut m, virt + size.bytes() / 2).expect("unmaps the whole page");
        assert_eq!((phys, got), (0x4000_0000 * (i as u64 + 1), size));
        assert_eq!(flush, Flush::pages(virt, 1, size));
        flush.ignore();
        assert_eq!(m.translate(va(virt)), None);
    }
    // The root, and the PDPT under the upper-half PML4 entry, which is never freed.
    assert_eq!(m.memory.live, 2, "only the root and the kernel half's PDPT are left");
}

#[test]
fn map_range_uses_the_largest_pages_alignment_allows() {
    let mut m = mapper();
    // 4 KiB up to the 2 MiB boundary, 2 MiB pages up to 1 GiB, one 1 GiB page, then 4 KiB.
    let virt = (1 << 30) - (2 << 20) - 8192;
    let len = 8192 + (2 << 20) + (1 << 30) + 4096;
    m.map_range(va(virt), pa(virt), len, WRITABLE, PageSize::Size1G).expect("maps").ignore();
    let size_at = |m: &mut Mapper<Arena>, v: u64| m.translate(va(v)).map(|t| t.size);
    assert_eq!(size_at(&mut m, virt), Some(PageSize::Size4K));
    assert_eq!(size_at(&mut m, (1 << 30) - (2 << 20)), Some(PageSize::Size2M));
    assert_eq!(size_at(&mut m, 1 << 30), Some(PageSize::Size1G));
    assert_eq!(size_at(&mut m, 2 << 30), Some(PageSize::Size4K));
    assert_eq!(size_at(&mut m, (2 << 30) + 4096), None);
    let mut capped = mapper();
    capped.map_range(va(0), pa(0), 4 << 20, NONE, PageSize::Size4K).expect("maps").ignore();
    assert_eq!(size_at(&mut capped, 2 << 20), Some(PageSize::Size4K));
    m.unmap_range(va(virt), len).expect("unmaps").ignore();
    assert_eq!(m.memory.live, 1);
}

#[test]
fn stats_count_tables_and_pages_of_each_size() {
    let mut m = mapper();
    assert_eq!(m.stats(), TreeStats { tables: [1, 0, 0, 0], pages: [0; 3] });
    // 1 GiB page, then 2 MiB pages to 1 GiB + 4 MiB, then 3 pages of 4 KiB.
    m.map_range(va(1 << 30), pa(1 << 30), (1 << 30) + (4 << 20) + 3 * 4096, NONE, PageSize::Size1G)
        .expect("maps")
        .ignore();
    assert_eq!(m.stats(), TreeStats { tables: [1, 1, 1, 1], pages: [3, 2, 1] });
}

#[test]
fn conflicts_are_named() {
    let mut m = mapper();
    map(&mut m, 2 << 20, 0, PageSize::Size2M, NONE).expect("maps").ignore();
    assert_eq!(
        map(&mut m, (2 << 20) + 4096, 0, PageSize::Size4K, NONE),
        Err(MapError::ParentEntryHugePage { virt: (2 << 20) + 4096 })
    );
    assert_eq!(
        map(&mut m, 2 << 20, 0, PageSize::Size2M, NONE),
        Err(MapError::AlreadyMapped { virt: 2 << 20 })
    );
    assert_eq!(
        map(&mut m, 4096 + 1, 0, PageSize::Size4K, NONE),
        Err(MapError::Misaligned { addr: 4097 })
    );
    // A non-canonical address cannot even be made: the type stops it before the mapper.
    assert_eq!(VirtAddr::try_new(1 << 47), None);
    let (page, frame) =
        (VirtPage::containing(va(0), PageSize::Size2M), Frame::containing(pa(0), PageSize::Size4K));
    assert_eq!(m.map(page, frame, NONE), Err(MapError::SizeMismatch));
    assert_eq!(unmap(&mut m, 8 << 20), Err(MapError::NotMapped { virt: 8 << 20 }));
}

#[test]
fn protect_splits_only_what_the_range_cuts() {
    let mut m = mapper();
    map(&mut m, 1 << 30, 0, PageSize::Size1G, WRITABLE).expect("maps").ignore();
    let flush = m.protect(va((1 << 30) + (4 << 20) + 4096), 4096, NO_EXECUTE).expect("protects");
    assert!(flush.is_everything(), "split pages and the page itself: a full flush");
    flush.ignore();
    let t = m.translate(va((1 << 30) + (4 << 20) + 4096)).expect("mapped");
    assert_eq!(
        (t.size, t.flags & PteFlags::PERMISSIONS, t.phys.as_u64()),
        (PageSize::Size4K, NO_EXECUTE, (4 << 20) + 4096)
    );
    let neighbour = m.translate(va((1 << 30) + (4 << 20))).expect("mapped");
    assert_eq!(
        (neighbour.size, neighbour.flags & PteFlags::PERMISSIONS),
        (PageSize::Size4K, WRITABLE)
    );
    let far = m.translate(va((1 << 30) + (64 << 20))).expect("mapped");
    assert_eq!(
        (far.size, far.flags & PteFlags::PERMISSIONS, far.phys.as_u64()),
        (PageSize::Size2M, WRITABLE, 64 << 20)
    );
}

#[test]
fn walk_records_each_level() {
    let mut m = mapper();
    map(&mut m, 0x40_0000_0000, 0x1234_5000, PageSize::Size4K, WRITABLE).expect("maps").ignore();
    // The shared walker, which the mapper's own translations use, over the mapper's tables.
    let root = m.root().as_u64();
    let walk = shared::walk::walk(&mut m.memory, root, 0x40_0000_0008);
    assert_eq!(walk.len, 4);
    assert_eq!(walk.steps[0].entry_addr, root + 8 * table_index(0x40_0000_0000, 4) as u64);
    assert_eq!(walk.steps[3].entry.raw() & ADDR_MASK, 0x1234_5000);
    assert_eq!(walk.result.map(|t| t.phys), Ok(0x1234_5008));
    // Another PML4 slot: the walk stops at the first level.
    let miss = shared::walk::walk(&mut m.memory, root, 0x80_0000_0000);
    assert_eq!((miss.len, miss.result), (1, Err(shared::walk::Stop::NotPresent(4))));
}

#[test]
fn flushes_are_per_page_below_the_threshold() {
    let tlb = Recorder::default();
    Flush::pages(0x1000, 3, PageSize::Size4K).flush(&tlb);
    assert_eq!(*tlb.0.borrow(), [Some(0x1000), Some(0x2000), Some(0x3000)]);
    let tlb = Recorder::default();
    Flush::pages(0, FLUSH_ALL_THRESHOLD + 1, PageSize::Size4K).flush(&tlb);
    assert_eq!(*tlb.0.borrow(), [None]);
    let joined =
        Flush::pages(0x1000, 1, PageSize::Size4K).and(Flush::pages(0x2000, 1, PageSize::Size4K));
    assert_eq!(joined, Flush::pages(0x1000, 2, PageSize::Size4K));
    joined.ignore();
}

/// The model: pages by virtual address: (size, physical, permission flags).
type Model = BTreeMap<u64, (PageSize, u64, PteFlags)>;

fn model_lookup(model: &Model, virt: u64) -> Option<(u64, PageSize, u64, PteFlags)> {
    let (&start, &(size, phys, flags)) = model.range(..=virt).next_back()?;
    (virt < start + size.bytes()).then_some((start, size, phys, flags))
}

fn model_overlaps(model: &Model, virt: u64, len: u64) -> bool {
    model.range(..virt + len).next_back().is_some_and(|(&s, &(size, ..))| s + size.bytes() > virt)
}

#[derive(Clone, Debug)]
enum Op {
    Map { slot: u64, size: usize, phys: u64, flags: PteFlags },
    MapRange { page: u64, pages: u64, max: usize },
    Unmap { pick: usize },
    UnmapRange { pick: usize, count: usize },
    Protect { pick: usize, offset: u64, pages: u64, flags: PteFlags },
}

const WINDOW: u64 = 16 << 30;

fn op() -> impl Strategy<Value = Op> {
    let flags = prop_oneof![
        Just(NONE),
        Just(WRITABLE),
        Just(WRITABLE | NO_EXECUTE),
        Just(NO_EXECUTE | GLOBAL)
    ];
    prop_oneof![
        4 => (any::<u64>(), prop_oneof![6 => Just(0usize), 3 => Just(1), 1 => Just(2)], 0u64..1024, flags.clone())
            .prop_map(|(slot, size, phys, flags)| Op::Map { slot, size, phys, flags }),
        2 => (0u64..(WINDOW >> 12), 1u64..1200, 0usize..3).prop_map(|(page, pages, max)| Op::MapRange { page, pages, max }),
        3 => any::<usize>().prop_map(|pick| Op::Unmap { pick }),
        1 => (any::<usize>(), 1usize..40).prop_map(|(pick, count)| Op::UnmapRange { pick, count }),
        2 => (any::<usize>(), any::<u64>(), 1u64..600, flags).prop_map(|(pick, offset, pages, flags)| Op::Protect { pick, offset, pages, flags }),
    ]
}

/// The pages `map_range` must choose: the largest that alignment and the remaining length allow.
fn model_range(virt: u64, len: u64, max: PageSize) -> Vec<(u64, PageSize)> {
    let mut pages = Vec::new();
    let mut at = virt;
    while at < virt + len {
        let size = SIZES
            .into_iter()
            .rev()
            .find(|s| *s <= max && at % s.bytes() == 0 && virt + len - at >= s.bytes())
            .unwrap_or(PageSize::Size4K);
        pages.push((at, size));
        at += size.bytes();
    }
    pages
}

/// The host's walker (`shared::walk`) against the model: every page translates, with its
/// size and effective write and no-execute permissions, and an enumeration of the whole
/// space yields exactly the model's pages, in order.
fn check_host_walker(m: &mut Mapper<Arena>, model: &Model) -> Result<(), TestCaseError> {
    use shared::walk::{for_each_leaf, translate, Leaf, Visitor, ALL_ADDRESSES};
    let root = m.root().as_u64();
    for (&virt, &(size, phys, flags)) in model {
        let t = translate(&mut m.memory, root, virt + size.bytes() - 1)
            .map_err(|stop| TestCaseError::fail(std::format!("{virt:#x}: {stop}")))?;
        prop_assert_eq!((t.phys, t.page_size), (phys + size.bytes() - 1, size.bytes()));
        prop_assert_eq!(t.flags.contains(WRITABLE), flags.contains(WRITABLE), "W at {:#x}", virt);
        prop_assert_eq!(
            t.flags.contains(NO_EXECUTE),
            flags.contains(NO_EXECUTE),
            "NX at {:#x}",
            virt
        );
    }
    struct Leaves(Vec<(u64, PageSize, u64)>);
    impl Visitor for Leaves {
        fn leaf(&mut self, leaf: Leaf) -> bool {
            let size = SIZES.into_iter().find(|s| s.bytes() == leaf.size).expect("a page size");
            self.0.push((leaf.virt, size, leaf.phys));
            true
        }
    }
    let mut leaves = Leaves(Vec::new());
    let mut budget = 1 << 24;
    for_each_leaf(&mut m.memory, root, ALL_ADDRESSES, &mut budget, &mut leaves)
        .map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
    let expected: Vec<(u64, PageSize, u64)> =
        model.iter().map(|(&virt, &(size, phys, _))| (virt, size, phys)).collect();
    prop_assert_eq!(leaves.0, expected);
    Ok(())
}

fn check(m: &mut Mapper<Arena>, model: &Model) -> Result<(), TestCaseError> {
    check_host_walker(m, model)?;
    // A sequential sweep agrees with single translations.
    if let Some((&first, _)) = model.iter().next() {
        let mut swept = Vec::new();
        m.translate_each(va(first), 1024, |virt, t| swept.push((virt, t)));
        for (virt, t) in swept {
            prop_assert_eq!(t, m.translate(virt), "sweep at {:#x}", virt);
        }
    }
    for (&virt, &(size, phys, flags)) in model {
        for offset in [0, size.bytes() / 2 + 8, size.bytes() - 1] {
            let t = m.translate(va(virt + offset));
            prop_assert_eq!(
                t.map(|t| (t.phys.as_u64(), t.size, t.flags & PteFlags::PERMISSIONS)),
                Some((phys + offset, size, flags)),
                "at {:#x}",
                virt + offset
            );
        }
        // Just past the page: either another model page or unmapped.
        let after = virt + size.bytes();
        if model_lookup(model, after).is_none() && after < WINDOW {
            prop_assert_eq!(m.translate(va(after)), None, "past the page at {:#x}", after);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn random_map_unmap_protect_agree_with_the_model(ops in proptest::collection::vec(op(), 1..50)) {
        let mut m = mapper();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Map { slot, size, phys, flags } => {
                    let size = SIZES[size];
                    let virt = slot % (WINDOW / size.bytes()) * size.bytes();
                    let phys = phys * size.bytes();
                    let result = map(&mut m, virt, phys, size, flags);
                    if model_overlaps(&model, virt, size.bytes()) {
                        prop_assert!(result.is_err(), "mapping over {:#x} succeeded", virt);
                    } else {
                        prop_assert_eq!(result, Ok(Flush::NONE));
                        model.insert(virt, (size, phys, flags));
                    }
                }
                Op::MapRange { page, pages, max } => {
                    let (virt, len) = (page << 12, (pages << 12).min(WINDOW - (page << 12)));
                    if len == 0 || model_overlaps(&model, virt, len) {
                        continue;
                    }
                    m.map_range(va(virt), pa(virt), len, WRITABLE, SIZES[max]).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?.ignore();
                    for (at, size) in model_range(virt, len, SIZES[max]) {
                        model.insert(at, (size, at, WRITABLE));
                    }
                }
                Op::Unmap { pick } => {
                    if model.is_empty() { continue; }
                    let (&virt, &(size, phys, _)) = model.iter().nth(pick % model.len()).expect("non-empty");
                    let (got_phys, got_size, flush) = unmap(&mut m, virt + size.bytes() / 2).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
                    flush.ignore();
                    prop_assert_eq!((got_phys, got_size), (phys, size));
                    model.remove(&virt);
                }
                Op::UnmapRange { pick, count } => {
                    if model.is_empty() { continue; }
                    // Up to `count` model pages that follow each other without a gap.
                    let pages: Vec<(u64, u64)> = model.iter().skip(pick % model.len()).map(|(&v, &(s, ..))| (v, s.bytes())).take(count).collect();
                    let mut end = pages[0].0;
                    let run: Vec<u64> = pages.iter().take_while(|&&(v, len)| { let ok = v == end; end = v + len; ok }).map(|&(v, _)| v).collect();
                    let (start, last) = (run[0], *run.last().expect("one page"));
                    let len = last + model[&last].0.bytes() - start;
                    m.unmap_range(va(start), len).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?.ignore();
                    for v in run {
                        model.remove(&v);
                    }
                }
                Op::Protect { pick, offset, pages, flags } => {
                    if model.is_empty() { continue; }
                    let (&virt, &(size, ..)) = model.iter().nth(pick % model.len()).expect("non-empty");
                    let start = virt + (offset % (size.bytes() >> 12)) * 4096;
                    let len = (pages * 4096).min(virt + size.bytes() - start);
                    m.protect(va(start), len, flags).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?.ignore();
                    // Model: split every page the range cuts, then set the flags.
                    let mut at = start;
                    while at < start + len {
                        let (page, psize, phys, old) = model_lookup(&model, at).expect("mapped");
                        if page < start || page + psize.bytes() > start + len {
                            model.remove(&page);
                            let small = match psize { PageSize::Size1G => PageSize::Size2M, _ => PageSize::Size4K };
                            for i in 0..512 {
                                model.insert(page + i * small.bytes(), (small, phys + i * small.bytes(), old));
                            }
                            continue;
                        }
                        model.insert(page, (psize, phys, flags & PteFlags::PERMISSIONS));
                        at = page + psize.bytes();
                    }
                }
            }
            check(&mut m, &model)?;
        }
        // Unmapping everything frees every table but the root.
        let pages: Vec<u64> = model.keys().copied().collect();
        for virt in pages {
            unmap(&mut m, virt).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?.2.ignore();
        }
        prop_assert_eq!(m.memory.live, 1, "page tables left allocated");
    }
}

#[test]
fn unmap_range_refuses_a_huge_page_that_straddles_its_ends_and_changes_nothing() {
    let mut m = mapper();
    let base = 0xffff_c900_0000_0000u64;
    map(&mut m, base, 0x20_0000, PageSize::Size2M, WRITABLE).expect("maps").ignore();
    let cuts = [(base, 4096, base + 4096), (base + 4096, 4096, base + 4096)];
    for (start, len, edge) in cuts {
        assert_eq!(m.unmap_range(va(start), len), Err(MapError::Misaligned { addr: edge }));
        assert_eq!(m.translate(va(base)).map(|t| t.size), Some(PageSize::Size2M), "still mapped");
    }
    m.unmap_range(va(base), PageSize::Size2M.bytes()).expect("the whole page").ignore();
    assert!(m.translate(va(base)).is_none());
}

#[test]
fn unmap_present_skips_holes_frees_emptied_tables_and_keeps_the_rest() {
    let mut m = mapper();
    let user = PteFlags::USER | WRITABLE;
    // Scattered pages in three PD ranges, one 2 MiB page, and one page outside the range.
    let pages = [0x40_0000u64, 0x40_3000, 0x7f_ffe0_0000, 0x7fff_ffff_d000];
    for (i, &virt) in pages.iter().enumerate() {
        map(&mut m, virt, 0x100_0000 + i as u64 * 4096, PageSize::Size4K, user)
            .expect("maps")
            .ignore();
    }
    map(&mut m, 0x20_0000_0000, 0x4000_0000, PageSize::Size2M, user).expect("maps").ignore();
    let tables_before = m.memory.live;
    let mut freed = Vec::new();
    let flush = m
        .unmap_present(va(0x40_0000), 0x7fff_ffff_c000 - 0x40_0000, &mut |_, f| {
            freed.push((f.start().as_u64(), f.size()))
        })
        .expect("a user range");
    freed.sort();
    assert_eq!(
        freed,
        [
            (0x100_0000, PageSize::Size4K),
            (0x100_1000, PageSize::Size4K),
            (0x100_2000, PageSize::Size4K),
            (0x4000_0000, PageSize::Size2M)
        ]
    );
    assert!(flush.is_everything(), "scattered pages: one flush of everything");
    assert!(m.translate(va(0x7fff_ffff_d000)).is_some(), "the page past the range stays");
    // Left: root, and the PDPT, PD and PT of the remaining page.
    assert_eq!(m.memory.live, 4, "tables before: {tables_before}");
    assert!(matches!(
        m.unmap_present(va(0xffff_8880_0000_0000), 4096, &mut |_, _| {}),
        Err(MapError::Misaligned { .. })
    ));
}

#[test]
fn copy_present_shares_every_leaf_and_write_protects_both_trees() {
    let mut m = mapper();
    let user = PteFlags::USER | WRITABLE;
    let pages = [(0x40_0000u64, user), (0x40_1000, PteFlags::USER), (0x7fff_ffff_d000, user)];
    for (i, &(virt, flags)) in pages.iter().enumerate() {
        map(&mut m, virt, 0x100_0000 + i as u64 * 4096, PageSize::Size4K, flags)
            .expect("maps")
            .ignore();
    }
    map(&mut m, 0x20_0000_0000, 0x4000_0000, PageSize::Size2M, user).expect("maps").ignore();
    let child = m.memory.alloc_table().expect("a root");
    let mut shared = Vec::new();
    let flush = m
        .copy_present(child, va(0), 1 << 47, true, &mut |_, frame| {
            shared.push((frame.start().as_u64(), frame.size()))
        })
        .expect("copies");
    shared.sort();
    assert_eq!(shared.len(), 4, "{shared:?}");
    assert_eq!(shared[3], (0x4000_0000, PageSize::Size2M));
    assert_ne!(flush, Flush::NONE, "writable leaves were protected");
    // SAFETY: `child` is a root in the same arena, filled by `copy_present`.
    let mut copy = unsafe { Mapper::new(child, core::mem::take(&mut m.memory)) };
    for virt in [0x40_0000, 0x40_1000, 0x7fff_ffff_d000, 0x20_0010_0000] {
        let theirs = copy.translate(va(virt)).expect("copied");
        assert!(!theirs.flags.contains(WRITABLE), "{virt:#x} read-only in the child");
        assert!(theirs.flags.contains(PteFlags::USER));
        m.memory = core::mem::take(&mut copy.memory);
        let ours = m.translate(va(virt)).expect("kept");
        assert_eq!((ours.phys, ours.size, ours.flags), (theirs.phys, theirs.size, theirs.flags));
        copy.memory = core::mem::take(&mut m.memory);
    }
    // The child's used counts are right: unmapping all of it frees every table but its root.
    let mut freed = 0;
    copy.unmap_present(va(0), 1 << 47, &mut |_, _| freed += 1).expect("unmaps").ignore();
    assert_eq!(freed, 4);
    assert_eq!(copy.stats().tables, [1, 0, 0, 0]);
}

#[test]
fn copy_present_without_write_protect_keeps_rights_and_copies_only_the_range() {
    let mut m = mapper();
    let user = PteFlags::USER | WRITABLE;
    for virt in [0x40_0000u64, 0x40_1000, 0x40_2000] {
        map(&mut m, virt, virt, PageSize::Size4K, user).expect("maps").ignore();
    }
    let child = m.memory.alloc_table().expect("a root");
    let mut count = 0;
    let flush = m.copy_present(child, va(0x40_1000), 0x1000, false, &mut |_, _| count += 1);
    assert_eq!(flush.expect("copies"), Flush::NONE);
    assert_eq!(count, 1);
    // SAFETY: as above.
    let mut copy = unsafe { Mapper::new(child, core::mem::take(&mut m.memory)) };
    assert!(copy.translate(va(0x40_0000)).is_none());
    assert!(copy.translate(va(0x40_1000)).expect("copied").flags.contains(WRITABLE));
    assert!(copy.translate(va(0x40_2000)).is_none());
    // A second copy into the same tree finds the leaf taken.
    m.memory = core::mem::take(&mut copy.memory);
    assert_eq!(
        m.copy_present(child, va(0x40_1000), 0x1000, false, &mut |_, _| {}),
        Err(MapError::AlreadyMapped { virt: 0x40_1000 })
    );
    // A huge page the range cuts is refused.
    map(&mut m, 0x60_0000, 0x60_0000, PageSize::Size2M, user).expect("maps").ignore();
    assert_eq!(
        m.copy_present(child, va(0x60_1000), 0x1000, false, &mut |_, _| {}),
        Err(MapError::ParentEntryHugePage { virt: 0x60_0000 })
    );
}

#[test]
fn copy_present_out_of_table_memory_leaves_a_child_that_tears_down() {
    let mut m = mapper();
    let user = PteFlags::USER | WRITABLE;
    // Two pages a PML4 slot apart: the second needs three new child tables.
    for virt in [0x40_0000u64, 0x80_0000_0000] {
        map(&mut m, virt, 0x100_0000, PageSize::Size4K, user).expect("maps").ignore();
    }
    let child = m.memory.alloc_table().expect("a root");
    m.memory.table_limit = Some(m.memory.live + 3);
    let mut shared = 0;
    let result = m.copy_present(child, va(0), 1 << 47, true, &mut |_, _| shared += 1);
    assert_eq!(result, Err(MapError::NoTableMemory));
    assert_eq!(shared, 1, "the first page was copied and shared");
    m.memory.table_limit = None;
    // SAFETY: as above.
    let mut copy = unsafe { Mapper::new(child, core::mem::take(&mut m.memory)) };
    let mut freed = 0;
    copy.unmap_present(va(0), 1 << 47, &mut |_, _| freed += 1).expect("unmaps").ignore();
    assert_eq!((freed, copy.stats().tables), (1, [1, 0, 0, 0]));
}

#[test]
fn update_present_skips_holes_and_splits_what_the_range_cuts() {
    let mut m = mapper();
    let user = PteFlags::USER | WRITABLE;
    map(&mut m, 0x40_0000, 0x40_0000, PageSize::Size4K, user).expect("maps").ignore();
    map(&mut m, 0x40_2000, 0x40_2000, PageSize::Size4K, user).expect("maps").ignore();
    map(&mut m, 0x60_0000, 0x60_0000, PageSize::Size2M, user).expect("maps").ignore();
    let mut seen = Vec::new();
    let flush = m
        .update_present(va(0x40_0000), 0x20_1000, &mut |_, at, size, entry| {
            seen.push((at, size));
            PageTableEntry::new(entry.addr(), entry.flags() - WRITABLE)
        })
        .expect("updates");
    assert_eq!(
        seen,
        [
            (0x40_0000, PageSize::Size4K),
            (0x40_2000, PageSize::Size4K),
            (0x60_0000, PageSize::Size4K)
        ]
    );
    assert_ne!(flush, Flush::NONE);
    assert!(!m.translate(va(0x60_0000)).expect("mapped").flags.contains(WRITABLE));
    let rest = m.translate(va(0x60_1000)).expect("the split keeps the rest");
    assert_eq!((rest.size, rest.phys), (PageSize::Size4K, pa(0x60_1000)));
    assert!(rest.flags.contains(WRITABLE));
    // An unchanged entry needs no flush.
    let flush = m.update_present(va(0x40_0000), 0x1000, &mut |_, _, _, e| e).expect("updates");
    assert_eq!(flush, Flush::NONE);
}

#[test]
fn update_leaf_changes_one_entry_in_place_and_flushes_only_a_change() {
    let mut m = mapper();
    map(&mut m, 0x40_0000, 0x10_0000, PageSize::Size4K, PteFlags::USER).expect("maps").ignore();
    let (size, flush) = m
        .update_leaf(va(0x40_1234 - 0x1000), |_, entry, size| {
            *entry = PageTableEntry::new(pa(0x20_0000), entry.flags() | WRITABLE);
            size
        })
        .expect("mapped");
    assert_eq!(size, PageSize::Size4K);
    assert_eq!(flush, Flush::pages(0x40_0000, 1, PageSize::Size4K));
    let now = m.translate(va(0x40_0000)).expect("mapped");
    assert_eq!((now.phys, now.flags.contains(WRITABLE)), (pa(0x20_0000), true));
    let (_, unchanged) = m.update_leaf(va(0x40_0000), |_, _, _| ()).expect("mapped");
    assert_eq!(unchanged, Flush::NONE);
    assert!(m.update_leaf(va(0x50_0000), |_, _, _| ()).is_none());
}

#[test]
fn preallocated_upper_entries_never_change_again() {
    let mut m = mapper();
    let base = 0xffff_c900_0000_0000u64;
    // Three PML4 entries' worth (512 GiB each), the first one cut.
    let made = m.preallocate_upper(va(base + (1 << 30)), 2 << 39).expect("tables");
    assert_eq!(made, 3);
    assert_eq!(m.preallocate_upper(va(base), 3 << 39).expect("tables"), 0, "all there");
    let live = m.memory.live;
    // A mapping below one of them comes and goes; its PDPT stays, and so does the entry.
    let pml4 = |m: &mut Mapper<Arena>| {
        let root = m.root();
        // SAFETY: the root of this mapper's own tree.
        let entries = unsafe { m.memory.entries(root) };
        entries[table_index(base, 4)]
    };
    let before = pml4(&mut m);
    map(&mut m, base, 0x10_0000, PageSize::Size4K, WRITABLE).expect("maps").ignore();
    unmap(&mut m, base).expect("unmaps").2.ignore();
    assert_eq!(pml4(&mut m), before);
    assert_eq!(m.memory.live, live, "the PD and PT went, the PDPT stayed");
    assert!(m.preallocate_upper(va(0x40_0000), 4096).is_err(), "the lower half is the process's");
}
