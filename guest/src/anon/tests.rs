//! Copy-on-write against a model: random first touches, writes, forks, unmaps and exits
//! across processes. After every step each page's mapcount and refcount equal the
//! entries that map it, no frame leaks, every process reads what it wrote, and a write
//! copies exactly when its page is shared.

use super::*;
use crate::paging::TableAlloc;
use crate::testing::{with_tree, AnonArena as Memory};
use proptest::prelude::*;
use shared::addr::VirtAddr;
use shared::mm::LRU_ACTIVE_ANON;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

const BASE: u64 = 0x40_0000;
const PAGES: u64 = 6;
const RW: PteFlags = PteFlags::USER.union(PteFlags::WRITABLE);

#[derive(Clone, Debug)]
enum Op {
    Write { process: usize, page: u64, value: u64 },
    Fork { process: usize },
    Unmap { process: usize, page: u64 },
    Exit { process: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let process = 0..4usize;
    prop_oneof![
        4 => (process.clone(), 0..PAGES, any::<u64>())
            .prop_map(|(process, page, value)| Op::Write { process, page, value }),
        1 => process.clone().prop_map(|process| Op::Fork { process }),
        1 => (process.clone(), 0..PAGES).prop_map(|(process, page)| Op::Unmap { process, page }),
        1 => process.prop_map(|process| Op::Exit { process }),
    ]
}

/// A model process: for each page it maps, the page's identity (shared by the processes
/// that share the frame) and the value it reads.
type Model = BTreeMap<u64, (u64, u64)>;

fn page_of(page: u64) -> VirtPage {
    VirtPage::new(VirtAddr::new(BASE + page * 4096), PageSize::Size4K).expect("aligned")
}

/// Checks every descriptor against the entries that map its frame, the content each
/// process reads against its model, and that no frame leaks.
fn check(
    memory: &mut Memory,
    processes: &[Option<(PhysAddr, Model)>],
) -> Result<(), TestCaseError> {
    let mut mappings: BTreeMap<u64, u32> = BTreeMap::new();
    for (root, model) in processes.iter().flatten() {
        for page in 0..PAGES {
            let mapped = with_tree(memory, *root, |t| t.translate(page_of(page).start()));
            prop_assert_eq!(mapped.is_some(), model.contains_key(&page));
            if let (Some(mapped), Some(&(_, value))) = (mapped, model.get(&page)) {
                *mappings.entry(mapped.phys.as_u64()).or_default() += 1;
                prop_assert_eq!(memory.content[&mapped.phys.as_u64()], value);
            }
        }
    }
    for (&frame, page) in &memory.pages {
        let expected = mappings.get(&frame).copied().unwrap_or(0);
        if page.flags & PG_ANON != 0 {
            prop_assert_eq!((page.mapcount, page.refcount), (expected, expected), "{:#x}", frame);
        } else {
            prop_assert_eq!(expected, 0, "{:#x} is mapped but not anonymous", frame);
        }
    }
    let out: Vec<u64> = memory.arena.frames_out.iter().copied().collect();
    let mapped: Vec<u64> = mappings.keys().copied().collect();
    prop_assert_eq!(out, mapped.clone(), "frames out = frames mapped");
    // Every mapped page, and nothing else, is on the active LRU list (where a new page starts).
    let mut listed: Vec<u64> = crate::lru::entries(memory, LRU_ACTIVE_ANON, 1 << 16)
        .map_err(TestCaseError::fail)?
        .into_iter()
        .map(|pfn| pfn << 12)
        .collect();
    listed.sort_unstable();
    prop_assert_eq!(listed, mapped, "the LRU lists every mapped page once");
    prop_assert_eq!(memory.lruvec.lists[LRU_ACTIVE_ANON].nr_pages, mappings.len() as u64);
    Ok(())
}

fn exit(memory: &mut Memory, root: PhysAddr) {
    with_tree(memory, root, |t| {
        t.unmap_present(VirtAddr::new(0), 1 << 47, &mut |m, frame| {
            release(m, frame);
        })
    })
    .expect("a user range")
    .ignore();
    memory.free_table(root);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn copy_on_write_counts_agree_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut memory = Memory::default();
        let first = memory.alloc_table().expect("a root");
        let mut processes: Vec<Option<(PhysAddr, Model)>> = vec![Some((first, Model::new()))];
        let mut next_identity = 0;
        let (mut copies, mut expected_copies) = (0, 0);
        for op in ops {
            match op {
                Op::Write { process, page, value } => {
                    let Some(Some((root, model))) = processes.get(process) else { continue };
                    let root = *root;
                    let mapping = model.get(&page).copied();
                    let shared = mapping.is_some_and(|(identity, _)| {
                        processes.iter().flatten().filter(|(_, m)| {
                            m.get(&page).is_some_and(|&(i, _)| i == identity)
                        }).count() > 1
                    });
                    let done = with_tree(&mut memory, root, |t| {
                        let virt = page_of(page);
                        match t.translate(virt.start()) {
                            None => map_new(t, virt, RW).map(|new| (new.frame, None)),
                            Some(m) if m.flags.contains(PteFlags::WRITABLE) => Ok((m.phys, None)),
                            Some(_) => write_fault(t, virt, RW).map(|(how, flush)| {
                                flush.ignore();
                                let frame = t.translate(virt.start()).expect("mapped").phys;
                                (frame, Some(how))
                            }),
                        }
                    });
                    let (frame, how) = done.expect("memory never runs out here");
                    memory.content.insert(frame.as_u64(), value);
                    copies += u32::from(how == Some(WriteFault::Copied));
                    expected_copies += u32::from(shared);
                    let identity = if shared || mapping.is_none() {
                        next_identity += 1;
                        next_identity
                    } else {
                        mapping.map_or(0, |(identity, _)| identity)
                    };
                    if let Some(Some((_, model))) = processes.get_mut(process) {
                        model.insert(page, (identity, value));
                    }
                }
                Op::Fork { process } => {
                    let Some(Some((root, model))) = processes.get(process) else { continue };
                    let (root, model) = (*root, model.clone());
                    let child = memory.alloc_table().expect("a root");
                    with_tree(&mut memory, root, |t| {
                        t.copy_present(child, VirtAddr::new(0), 1 << 47, true, &mut |m, f| share(m, f))
                    })
                    .expect("copies")
                    .ignore();
                    match processes.iter().position(Option::is_none) {
                        Some(free) => processes[free] = Some((child, model)),
                        None => processes.push(Some((child, model))),
                    }
                }
                Op::Unmap { process, page } => {
                    let Some(Some((root, model))) = processes.get_mut(process) else { continue };
                    let root = *root;
                    model.remove(&page);
                    with_tree(&mut memory, root, |t| {
                        t.unmap_present(page_of(page).start(), 4096, &mut |m, frame| {
                            release(m, frame);
                        })
                    })
                    .expect("a user range")
                    .ignore();
                }
                Op::Exit { process } => {
                    let Some(slot) = processes.get_mut(process) else { continue };
                    let Some((root, _)) = slot.take() else { continue };
                    exit(&mut memory, root);
                }
            }
            check(&mut memory, &processes)?;
            prop_assert_eq!(copies, expected_copies, "a write copies exactly when shared");
        }
        for (root, _) in processes.into_iter().flatten() {
            exit(&mut memory, root);
        }
        prop_assert!(memory.arena.frames_out.is_empty(), "every page freed");
        prop_assert_eq!(memory.arena.live, 0, "every table freed");
    }
}

#[test]
fn a_shared_page_is_copied_once_and_its_last_sharer_reuses_it() {
    let mut memory = Memory::default();
    let parent = memory.alloc_table().expect("a root");
    let virt = page_of(0);
    let frame = with_tree(&mut memory, parent, |t| map_new(t, virt, RW)).expect("maps").frame;
    memory.content.insert(frame.as_u64(), 7);
    let child = memory.alloc_table().expect("a root");
    with_tree(&mut memory, parent, |t| {
        t.copy_present(child, VirtAddr::new(0), 1 << 47, true, &mut |m, f| share(m, f))
    })
    .expect("copies")
    .ignore();
    assert_eq!(memory.pages[&frame.as_u64()].mapcount, 2);
    let (how, _) = with_tree(&mut memory, child, |t| write_fault(t, virt, RW)).expect("served");
    assert_eq!(how, WriteFault::Copied);
    let copy = with_tree(&mut memory, child, |t| t.translate(virt.start())).expect("mapped");
    assert_ne!(copy.phys, frame);
    assert_eq!(memory.content[&copy.phys.as_u64()], 7, "the copy holds the old content");
    assert_eq!(memory.pages[&frame.as_u64()].mapcount, 1);
    let (how, _) = with_tree(&mut memory, parent, |t| write_fault(t, virt, RW)).expect("served");
    assert_eq!(how, WriteFault::Reused);
    let kept = with_tree(&mut memory, parent, |t| t.translate(virt.start())).expect("mapped");
    assert_eq!((kept.phys, kept.flags.contains(PteFlags::WRITABLE)), (frame, true));
}

#[test]
fn a_page_that_is_not_anonymous_is_never_made_writable_or_freed() {
    let mut memory = Memory::default();
    let root = memory.alloc_table().expect("a root");
    let trampoline = memory.alloc_frame().expect("a frame");
    let virt = page_of(1);
    with_tree(&mut memory, root, |t| {
        t.map(virt, Frame::new(trampoline, PageSize::Size4K).expect("aligned"), PteFlags::USER)
    })
    .expect("maps")
    .ignore();
    let refused = with_tree(&mut memory, root, |t| write_fault(t, virt, RW));
    assert!(matches!(refused, Err(AnonError::Map(MapError::NotMapped { .. }))));
    assert!(!release(&mut memory, Frame::containing(trampoline, PageSize::Size4K)));
    assert!(memory.arena.frames_out.contains(&trampoline.as_u64()), "still the kernel's");
}

#[test]
fn a_huge_page_is_shared_copied_whole_split_and_given_back() {
    let mut memory = Memory::default();
    let parent = memory.alloc_table().expect("a root");
    let huge = VirtPage::new(VirtAddr::new(0x20_0000), PageSize::Size2M).expect("aligned");
    let block = with_tree(&mut memory, parent, |t| map_new_huge(t, huge, RW)).expect("maps").frame;
    assert_eq!(memory.pages[&block.as_u64()].order, HUGE_ORDER);
    memory.content.insert(block.as_u64() + 4096, 5);
    // fork: one more mapping of the whole block, on its head.
    let child = memory.alloc_table().expect("a root");
    with_tree(&mut memory, parent, |t| {
        t.copy_present(child, VirtAddr::new(0), 1 << 47, true, &mut |m, f| share(m, f))
    })
    .expect("copies")
    .ignore();
    assert_eq!(memory.pages[&block.as_u64()].mapcount, 2);
    // The child writes: it gets a whole new block, a copy.
    let small = VirtPage::new(VirtAddr::new(0x20_1000), PageSize::Size4K).expect("aligned");
    let (how, _) = with_tree(&mut memory, child, |t| write_fault(t, small, RW)).expect("served");
    assert_eq!(how, WriteFault::Copied);
    let copy = with_tree(&mut memory, child, |t| t.translate(small.start())).expect("mapped");
    assert_eq!(copy.size, PageSize::Size2M);
    assert_ne!(copy.phys.as_u64() & !0x1f_ffff, block.as_u64());
    assert_eq!(memory.content[&copy.phys.as_u64()], 5, "copied with the block");
    assert_eq!(memory.pages[&block.as_u64()].mapcount, 1);
    // The parent splits its mapping (a partial munmap would): 512 pages, each mapped once.
    with_tree(&mut memory, parent, |t| split_leaf(t, small.start())).expect("splits").ignore();
    for page in 0..HUGE_PAGES {
        let p = memory.pages[&(block.as_u64() + page * 4096)];
        assert_eq!((p.flags & PG_ANON != 0, p.mapcount, p.order), (true, 1, 0), "page {page}");
    }
    let now = with_tree(&mut memory, parent, |t| t.translate(small.start())).expect("mapped");
    assert_eq!((now.size, now.phys.as_u64()), (PageSize::Size4K, block.as_u64() + 4096));
    // The LRU lists the child's block once (512 pages) and the parent's pages one by one.
    let listed = crate::lru::entries(&mut memory, LRU_ACTIVE_ANON, 1024).expect("sound");
    assert_eq!(listed.len() as u64, 1 + HUGE_PAGES);
    assert_eq!(memory.lruvec.lists[LRU_ACTIVE_ANON].nr_pages, 2 * HUGE_PAGES);
    // Everything goes back: the parent's pages one by one, the child's block whole.
    exit(&mut memory, parent);
    exit(&mut memory, child);
    assert_eq!(memory.lruvec.lists[LRU_ACTIVE_ANON], shared::mm::LruList::EMPTY);
    assert!(memory.arena.frames_out.is_empty(), "every page freed");
    assert_eq!(memory.arena.live, 0, "every table freed");
}

#[test]
fn a_huge_page_without_a_free_block_to_copy_to_is_split_and_copied_small() {
    let mut memory = Memory::default();
    let parent = memory.alloc_table().expect("a root");
    let huge = VirtPage::new(VirtAddr::new(0x20_0000), PageSize::Size2M).expect("aligned");
    let block = with_tree(&mut memory, parent, |t| map_new_huge(t, huge, RW)).expect("maps").frame;
    let child = memory.alloc_table().expect("a root");
    with_tree(&mut memory, parent, |t| {
        t.copy_present(child, VirtAddr::new(0), 1 << 47, true, &mut |m, f| share(m, f))
    })
    .expect("copies")
    .ignore();
    // No block left: the write splits the child's mapping and copies one page.
    memory.arena.frame_limit = Some(memory.arena.frames_out.len() + 1);
    let small = VirtPage::new(VirtAddr::new(0x20_3000), PageSize::Size4K).expect("aligned");
    let (how, _) = with_tree(&mut memory, child, |t| write_fault(t, small, RW)).expect("served");
    assert_eq!(how, WriteFault::Copied);
    let written = with_tree(&mut memory, child, |t| t.translate(small.start())).expect("mapped");
    assert_eq!(written.size, PageSize::Size4K);
    assert!(written.flags.contains(PteFlags::WRITABLE));
    // The block is split now: the page copied is the parent's alone, the others shared.
    assert_eq!(memory.pages[&(block.as_u64() + 3 * 4096)].mapcount, 1);
    assert_eq!(memory.pages[&(block.as_u64() + 4 * 4096)].mapcount, 2);
    memory.arena.frame_limit = None;
    exit(&mut memory, parent);
    exit(&mut memory, child);
    assert!(memory.arena.frames_out.is_empty(), "every page freed");
}

#[test]
fn a_huge_leaf_over_a_split_block_is_never_exclusive() {
    let mut memory = Memory::default();
    let parent = memory.alloc_table().expect("a root");
    let huge = VirtPage::new(VirtAddr::new(0x20_0000), PageSize::Size2M).expect("aligned");
    let block = with_tree(&mut memory, parent, |t| map_new_huge(t, huge, RW)).expect("maps").frame;
    assert!(exclusive(&mut memory, block, PageSize::Size2M), "whole, mapped once");
    let child = memory.alloc_table().expect("a root");
    with_tree(&mut memory, parent, |t| {
        t.copy_present(child, VirtAddr::new(0), 1 << 47, true, &mut |m, f| share(m, f))
    })
    .expect("copies")
    .ignore();
    assert!(!exclusive(&mut memory, block, PageSize::Size2M), "shared");
    // The child splits its mapping and lets its first page go: that page is the parent's
    // alone now, the others still shared, and the parent's huge leaf exclusive for none.
    with_tree(&mut memory, child, |t| split_leaf(t, huge.start())).expect("splits").ignore();
    with_tree(&mut memory, child, |t| {
        t.unmap_present(huge.start(), 4096, &mut |m, f| {
            release(m, f);
        })
    })
    .expect("unmaps")
    .ignore();
    assert_eq!(memory.pages[&block.as_u64()].mapcount, 1);
    assert!(!exclusive(&mut memory, block, PageSize::Size2M), "a split block never is");
    assert!(exclusive(&mut memory, block, PageSize::Size4K), "its first page alone is");
    exit(&mut memory, parent);
    exit(&mut memory, child);
    assert!(memory.arena.frames_out.is_empty(), "every page freed");
}
