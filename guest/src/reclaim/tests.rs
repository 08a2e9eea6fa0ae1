//! Reclaim against a model: random writes, reads, references, forks, unmaps, exits and
//! rounds of reclaim across the processes of one reverse-map group, on a small swap
//! device. After every step:
//!
//! - each process reads what it last wrote to each page, whether the page is in RAM, in
//!   the swap cache or only in its slot;
//! - every descriptor's mapcount equals the present entries that map it, and its refcount
//!   that plus one in the swap cache; no frame leaks;
//! - every slot's count equals the swap entries naming it, and a cached page holds what
//!   its slot holds;
//! - every mapped page is on exactly one LRU list, counted;
//! - each process's RSS and swap counters, kept as the kernel keeps them (its own changes,
//!   plus the deltas reclaim left in the reverse map), equal what its tables hold.

use super::*;
use crate::anon::{map_new, release, share, write_fault};
use crate::paging::{PageSize, TableAlloc, VirtPage};
use crate::swap_map::SwapMap;
use crate::testing::{with_tree, AnonArena as Memory};
use proptest::prelude::*;
use shared::page::PG_SWAPCACHE;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

const BASE: u64 = 0x40_0000;
const PAGES: u64 = 8;
/// Fewer slots than the pages four processes can hold: the device fills up.
const SLOTS: usize = 12;
const RW: PteFlags = PteFlags::USER.union(PteFlags::WRITABLE);

#[derive(Clone, Debug)]
enum Op {
    Write {
        process: usize,
        page: u64,
        value: u64,
    },
    Read {
        process: usize,
        page: u64,
    },
    /// The CPU sets the Accessed bit of the entry.
    Touch {
        process: usize,
        page: u64,
    },
    Fork {
        process: usize,
    },
    Unmap {
        process: usize,
        page: u64,
    },
    Exit {
        process: usize,
    },
    Reclaim {
        want: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let process = 0..4usize;
    let page = 0..PAGES;
    prop_oneof![
        4 => (process.clone(), page.clone(), 1..u64::MAX)
            .prop_map(|(process, page, value)| Op::Write { process, page, value }),
        3 => (process.clone(), page.clone()).prop_map(|(process, page)| Op::Read { process, page }),
        1 => (process.clone(), page.clone()).prop_map(|(process, page)| Op::Touch { process, page }),
        1 => process.clone().prop_map(|process| Op::Fork { process }),
        1 => (process.clone(), page).prop_map(|(process, page)| Op::Unmap { process, page }),
        1 => process.prop_map(|process| Op::Exit { process }),
        3 => (1..8u64).prop_map(|want| Op::Reclaim { want }),
    ]
}

/// A model process: what each page it maps reads, and its counters as the kernel keeps
/// them.
#[derive(Clone, Debug)]
struct Process {
    root: PhysAddr,
    model: BTreeMap<u64, u64>,
    rss: i64,
    swapents: i64,
}

fn virt(page: u64) -> VirtAddr {
    VirtAddr::new(BASE + page * 4096)
}

fn page_of(page: u64) -> VirtPage {
    VirtPage::new(virt(page), PageSize::Size4K).expect("aligned")
}

/// The level-1 entry for `page`, if a table holds one.
fn entry(memory: &mut Memory, root: PhysAddr, page: u64) -> Option<PageTableEntry> {
    with_tree(memory, root, |t| t.pte(virt(page)).copied())
}

/// A fault on `page` as the kernel serves it: a swap entry comes back first, then a
/// write maps a new page or breaks copy-on-write. Returns the frame mapped, if any.
fn fault(memory: &mut Memory, p: &mut Process, page: u64, write: bool) -> Option<PhysAddr> {
    let swapped = entry(memory, p.root, page).and_then(PageTableEntry::swap_slot).is_some();
    if swapped {
        let how = with_tree(memory, p.root, |t| swap_in(t, virt(page), RW)).expect("reads");
        assert!(how.is_some(), "a swap entry is swapped in");
        p.rss += 1;
        p.swapents -= 1;
    }
    let mapped = with_tree(memory, p.root, |t| t.translate(virt(page)));
    if !write {
        return mapped.map(|m| m.phys);
    }
    let frame = match mapped {
        None => {
            p.rss += 1;
            with_tree(memory, p.root, |t| map_new(t, page_of(page), RW)).expect("maps").frame
        }
        Some(m) if m.flags.contains(PteFlags::WRITABLE) => m.phys,
        Some(_) => with_tree(memory, p.root, |t| {
            write_fault(t, page_of(page), RW).expect("copies").1.ignore();
            t.translate(virt(page)).expect("mapped").phys
        }),
    };
    Some(frame)
}

/// Unmaps `[page, page + pages)` of `p`, counting what went as the kernel does.
fn unmap(memory: &mut Memory, p: &mut Process, first: u64, pages: u64) {
    for page in first..first + pages {
        match entry(memory, p.root, page) {
            Some(e) if e.is_present() => p.rss -= 1,
            Some(e) if e.swap_slot().is_some() => p.swapents -= 1,
            _ => {}
        }
        p.model.remove(&page);
    }
    with_tree(memory, p.root, |t| {
        t.unmap_present(virt(first), pages * 4096, &mut |m, frame| {
            release(m, frame);
        })
    })
    .expect("a user range")
    .ignore();
}

fn check(memory: &mut Memory, processes: &[Option<Process>]) -> Result<(), TestCaseError> {
    let mut mappings: BTreeMap<u64, u32> = BTreeMap::new();
    let mut named: BTreeMap<u64, u8> = BTreeMap::new();
    for p in processes.iter().flatten() {
        let (mut present, mut swapped) = (0i64, 0i64);
        for page in 0..PAGES {
            let e = entry(memory, p.root, page).unwrap_or(PageTableEntry::UNUSED);
            let value = p.model.get(&page).copied();
            if e.is_present() {
                present += 1;
                *mappings.entry(e.addr().as_u64()).or_default() += 1;
                prop_assert_eq!(Some(memory.content[&e.addr().as_u64()]), value, "page {}", page);
            } else if let Some(slot) = e.swap_slot() {
                swapped += 1;
                *named.entry(slot).or_default() += 1;
                prop_assert_eq!(
                    memory.device.get(&slot).copied(),
                    value,
                    "page {} in slot {}",
                    page,
                    slot
                );
            } else {
                prop_assert_eq!(e, PageTableEntry::UNUSED);
                prop_assert_eq!(value, None, "page {} is neither mapped nor swapped", page);
            }
        }
        prop_assert_eq!((p.rss, p.swapents), (present, swapped), "counters of {:?}", p.root);
    }
    let map = memory.swap.as_ref().expect("a device");
    for slot in 0..SLOTS as u64 {
        prop_assert_eq!(map.count(slot), named.get(&slot).copied().unwrap_or(0), "slot {}", slot);
    }
    prop_assert_eq!(map.used(), named.len() as u64);
    let mut held = Vec::new();
    for (&frame, page) in &memory.pages {
        if page.flags & PG_ANON == 0 {
            prop_assert!(!mappings.contains_key(&frame), "{:#x} mapped but not anonymous", frame);
            continue;
        }
        held.push(frame);
        let maps = mappings.get(&frame).copied().unwrap_or(0);
        let cached = page.flags & PG_SWAPCACHE != 0;
        prop_assert_eq!(
            (page.mapcount, page.refcount),
            (maps, maps + u32::from(cached)),
            "{:#x}",
            frame
        );
        prop_assert!(maps > 0, "{:#x} is anonymous but unmapped", frame);
        if cached {
            let slot = map.slot_of(frame >> 12);
            prop_assert!(
                slot.is_some_and(|s| map.count(s) > 0),
                "{:#x} cached for a free slot",
                frame
            );
            let slot = slot.unwrap_or_default();
            prop_assert_eq!(
                memory.device.get(&slot),
                memory.content.get(&frame),
                "cached {:#x}",
                frame
            );
        }
    }
    let out: Vec<u64> = memory.arena.frames_out.iter().copied().collect();
    prop_assert_eq!(out, held.clone(), "frames out = anonymous frames");
    let mut listed = Vec::new();
    for list in [LRU_INACTIVE_ANON, LRU_ACTIVE_ANON] {
        let entries = crate::lru::entries(memory, list, 1 << 16).map_err(TestCaseError::fail)?;
        prop_assert_eq!(memory.lruvec.lists[list].nr_pages, entries.len() as u64);
        listed.extend(entries.into_iter().map(|pfn| pfn << 12));
    }
    listed.sort_unstable();
    prop_assert_eq!(listed, held, "the LRU lists every anonymous page once");
    Ok(())
}

fn exit(memory: &mut Memory, rmap: &mut Rmap, mut p: Process) {
    unmap(memory, &mut p, 0, PAGES);
    rmap.remove(p.root);
    memory.free_table(p.root);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn reclaim_and_swap_in_agree_with_the_model(ops in proptest::collection::vec(op(), 1..100)) {
        let mut memory = Memory { swap: Some(SwapMap::new(SLOTS)), ..Memory::default() };
        // The tree reclaim starts from (the kernel's, in the kernel): no user pages.
        let home = memory.alloc_table().expect("a root");
        let mut rmap = Rmap::default();
        let first = memory.alloc_table().expect("a root");
        // SAFETY: a tree of this memory, removed from the map before it is freed.
        memory.group = unsafe { rmap.add(first, None) }.expect("room");
        let process = Process { root: first, model: BTreeMap::new(), rss: 0, swapents: 0 };
        let mut processes = vec![Some(process)];
        for op in ops {
            match op {
                Op::Write { process, page, value } => {
                    let Some(Some(p)) = processes.get_mut(process) else { continue };
                    let frame = fault(&mut memory, p, page, true).expect("mapped");
                    memory.content.insert(frame.as_u64(), value);
                    p.model.insert(page, value);
                }
                Op::Read { process, page } => {
                    let Some(Some(p)) = processes.get_mut(process) else { continue };
                    let frame = fault(&mut memory, p, page, false);
                    let read = frame.map(|f| memory.content[&f.as_u64()]);
                    prop_assert_eq!(read, p.model.get(&page).copied());
                }
                Op::Touch { process, page } => {
                    let Some(Some(p)) = processes.get(process) else { continue };
                    with_tree(&mut memory, p.root, |t| {
                        if let Some(e) = t.pte(virt(page)).filter(|e| e.is_present()) {
                            *e = PageTableEntry::from_raw(e.raw() | PteFlags::ACCESSED.bits());
                        }
                    });
                }
                Op::Fork { process } => {
                    let Some(Some(parent)) = processes.get(process) else { continue };
                    let mut child = parent.clone();
                    child.root = memory.alloc_table().expect("a root");
                    with_tree(&mut memory, parent.root, |t| {
                        t.copy_present(child.root, VirtAddr::new(0), 1 << 47, true, &mut |m, f| share(m, f))
                    })
                    .expect("copies")
                    .ignore();
                    // SAFETY: as for the first.
                    unsafe { rmap.add(child.root, Some(memory.group)) }.expect("room");
                    match processes.iter().position(Option::is_none) {
                        Some(free) => processes[free] = Some(child),
                        None => processes.push(Some(child)),
                    }
                }
                Op::Unmap { process, page } => {
                    let Some(Some(p)) = processes.get_mut(process) else { continue };
                    unmap(&mut memory, p, page, 1);
                }
                Op::Exit { process } => {
                    let Some(slot) = processes.get_mut(process) else { continue };
                    let Some(p) = slot.take() else { continue };
                    exit(&mut memory, &mut rmap, p);
                }
                Op::Reclaim { want } => {
                    let (done, flush) = with_tree(&mut memory, home, |t| shrink(t, &mut rmap, want, 4 * want));
                    flush.ignore();
                    prop_assert!(done.reclaimed <= want && done.scanned <= 4 * want, "{:?}", done);
                    prop_assert!(done.written <= done.reclaimed, "{:?}", done);
                }
            }
            // Every process takes in what reclaim did to its counters (the kernel does at
            // each fault and before it publishes them).
            for p in processes.iter_mut().flatten() {
                let deltas = rmap.take_deltas(p.root);
                p.rss += deltas.rss;
                p.swapents += deltas.swapents;
            }
            check(&mut memory, &processes)?;
        }
        for p in processes.into_iter().flatten() {
            exit(&mut memory, &mut rmap, p);
        }
        prop_assert!(memory.arena.frames_out.is_empty(), "every page freed");
        prop_assert_eq!(memory.swap.as_ref().map(SwapMap::used), Some(0), "every slot freed");
        memory.free_table(home);
        prop_assert_eq!(memory.arena.live, 0, "every table freed");
    }
}

/// Writes `pages` pages of a fresh process, each its page number plus one.
fn populated(pages: u64, slots: usize) -> (Memory, Rmap, PhysAddr, Process) {
    let mut memory = Memory { swap: Some(SwapMap::new(slots)), ..Memory::default() };
    let home = memory.alloc_table().expect("a root");
    let mut rmap = Rmap::default();
    let root = memory.alloc_table().expect("a root");
    // SAFETY: a tree of this memory, never freed in these tests.
    memory.group = unsafe { rmap.add(root, None) }.expect("room");
    let mut p = Process { root, model: BTreeMap::new(), rss: 0, swapents: 0 };
    for page in 0..pages {
        let frame = fault(&mut memory, &mut p, page, true).expect("mapped");
        memory.content.insert(frame.as_u64(), page + 1);
        p.model.insert(page, page + 1);
    }
    (memory, rmap, home, p)
}

#[test]
fn unreferenced_pages_go_out_in_batches_and_come_back_on_fault() {
    let (mut memory, mut rmap, home, mut p) = populated(PAGES, SLOTS);
    let (done, flush) = with_tree(&mut memory, home, |t| shrink(t, &mut rmap, PAGES, 4 * PAGES));
    flush.ignore();
    assert_eq!((done.reclaimed, done.written, done.scanned), (PAGES, PAGES, PAGES), "{done:?}");
    assert_eq!(memory.write_requests, 1, "one batch, one request");
    assert!(memory.arena.frames_out.is_empty());
    let deltas = rmap.take_deltas(p.root);
    assert_eq!((deltas.rss, deltas.swapents), (-(PAGES as i64), PAGES as i64));
    (p.rss, p.swapents) = (0, PAGES as i64);
    for page in 0..PAGES {
        let frame = fault(&mut memory, &mut p, page, false).expect("back");
        assert_eq!(memory.content[&frame.as_u64()], page + 1);
    }
    assert_eq!(memory.swap.as_ref().map(SwapMap::used), Some(0), "each slot freed by its swap-in");
}

#[test]
fn new_pages_start_active_and_age_onto_the_inactive_list_unreferenced() {
    let (mut memory, mut rmap, home, p) = populated(2, SLOTS);
    let lists = memory.lruvec.lists;
    assert_eq!((lists[LRU_ACTIVE_ANON].nr_pages, lists[LRU_INACTIVE_ANON].nr_pages), (2, 0));
    // The fault's own reference: what the CPU sets on first touch.
    for page in 0..2 {
        with_tree(&mut memory, p.root, |t| {
            let e = t.pte(virt(page)).expect("an entry");
            *e = PageTableEntry::from_raw(e.raw() | PteFlags::ACCESSED.bits());
        });
    }
    let moved = with_tree(&mut memory, home, |t| deactivate(t, &mut rmap, 2));
    assert_eq!(moved, 2);
    let lists = memory.lruvec.lists;
    assert_eq!((lists[LRU_ACTIVE_ANON].nr_pages, lists[LRU_INACTIVE_ANON].nr_pages), (0, 2));
    for page in 0..2 {
        let e = entry(&mut memory, p.root, page).expect("an entry");
        assert!(!e.flags().contains(PteFlags::ACCESSED), "aging clears the fault's reference");
    }
}

#[test]
fn a_page_referenced_after_aging_is_activated_not_reclaimed() {
    let (mut memory, mut rmap, home, p) = populated(2, SLOTS);
    with_tree(&mut memory, home, |t| deactivate(t, &mut rmap, 2));
    with_tree(&mut memory, p.root, |t| {
        let e = t.pte(virt(0)).expect("an entry");
        *e = PageTableEntry::from_raw(e.raw() | PteFlags::ACCESSED.bits());
    });
    let (done, flush) = with_tree(&mut memory, home, |t| shrink(t, &mut rmap, 2, 2));
    flush.ignore();
    assert_eq!((done.reclaimed, done.activated), (1, 1), "{done:?}");
    assert!(entry(&mut memory, p.root, 0).is_some_and(PageTableEntry::is_present));
    assert!(entry(&mut memory, p.root, 1).and_then(PageTableEntry::swap_slot).is_some());
}

#[test]
fn a_full_device_stops_reclaim_and_keeps_the_pages() {
    let (mut memory, mut rmap, home, p) = populated(4, 2);
    let (done, flush) = with_tree(&mut memory, home, |t| shrink(t, &mut rmap, 4, 16));
    flush.ignore();
    assert!(done.swap_full, "{done:?}");
    assert_eq!(done.reclaimed, 2, "as many as there are slots");
    let present = (0..4)
        .filter(|&page| entry(&mut memory, p.root, page).is_some_and(PageTableEntry::is_present));
    assert_eq!(present.count(), 2);
}

#[test]
fn a_huge_page_shared_by_two_is_split_and_reclaimed_from_both() {
    let mut memory = Memory { swap: Some(SwapMap::new(1024)), ..Memory::default() };
    let home = memory.alloc_table().expect("a root");
    let mut rmap = Rmap::default();
    let parent = memory.alloc_table().expect("a root");
    // SAFETY: trees of this memory, never freed in this test.
    memory.group = unsafe { rmap.add(parent, None) }.expect("room");
    let huge = VirtPage::new(VirtAddr::new(0x20_0000), PageSize::Size2M).expect("aligned");
    let block = with_tree(&mut memory, parent, |t| crate::anon::map_new_huge(t, huge, RW))
        .expect("a huge page")
        .frame;
    for page in 0..HUGE_PAGES {
        memory.content.insert(block.as_u64() + page * 4096, page + 7);
    }
    let child = memory.alloc_table().expect("a root");
    with_tree(&mut memory, parent, |t| {
        t.copy_present(child, VirtAddr::new(0), 1 << 47, true, &mut |m, f| share(m, f))
    })
    .expect("copies")
    .ignore();
    // SAFETY: as above.
    unsafe { rmap.add(child, Some(memory.group)) }.expect("room");
    let mut reclaimed = 0;
    for _ in 0..4 {
        let (done, flush) =
            with_tree(&mut memory, home, |t| shrink(t, &mut rmap, HUGE_PAGES, 4 * HUGE_PAGES));
        flush.ignore();
        reclaimed += done.reclaimed;
    }
    assert_eq!(reclaimed, HUGE_PAGES, "the block, split, went out page by page");
    assert!(memory.arena.frames_out.is_empty(), "and every frame of it is free");
    for root in [parent, child] {
        let deltas = rmap.take_deltas(root);
        assert_eq!(deltas, Deltas { rss: -512, swapents: 512, pgtables: 1 }, "{root:?}");
    }
    let map = memory.swap.as_ref().expect("a device");
    assert_eq!(map.used(), HUGE_PAGES);
    assert!((0..HUGE_PAGES).all(|slot| map.count(slot) == 2), "each slot named by both");
    // Both read every page back: the child from the device, the parent from the swap
    // cache the child's reads filled (while the child still maps them).
    for root in [child, parent] {
        for page in 0..HUGE_PAGES {
            let virt = VirtAddr::new(0x20_0000 + page * 4096);
            let how = with_tree(&mut memory, root, |t| swap_in(t, virt, RW)).expect("reads");
            assert!(how.is_some(), "page {page} was a swap entry");
            let frame = with_tree(&mut memory, root, |t| t.translate(virt)).expect("back").phys;
            assert_eq!(memory.content[&frame.as_u64()], page + 7, "page {page}");
        }
    }
    assert_eq!(memory.swap.as_ref().map(SwapMap::used), Some(0), "every slot freed");
}

#[test]
fn an_unevictable_page_stays_mapped_on_the_active_list() {
    let (mut memory, mut rmap, home, p) = populated(2, SLOTS);
    let frame = entry(&mut memory, p.root, 0).expect("mapped").addr();
    memory.pages.get_mut(&frame.as_u64()).expect("a descriptor").flags |=
        shared::page::PG_UNEVICTABLE;
    for _ in 0..3 {
        let (_, flush) = with_tree(&mut memory, home, |t| shrink(t, &mut rmap, 2, 8));
        flush.ignore();
    }
    assert!(entry(&mut memory, p.root, 0).is_some_and(PageTableEntry::is_present), "kept");
    assert!(entry(&mut memory, p.root, 1).and_then(PageTableEntry::swap_slot).is_some());
    let active = crate::lru::entries(&mut memory, LRU_ACTIVE_ANON, 16).expect("sound");
    assert_eq!(active, [frame.pfn()], "on the active list");
}
