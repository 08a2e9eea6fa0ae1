//! The VMA tree and set against a page-granular model.

use super::tree::VmaTree;
use super::*;
use proptest::prelude::*;
use shared::process::{VmaKind, VM_GROWSDOWN, VM_SHARED};
use std::collections::BTreeMap;
use std::vec::Vec;

const PAGE: u64 = 4096;
const BASE: u64 = 0x10_0000;

fn vma(start_page: u64, pages: u64, flags: u64, kind: VmaKind) -> Vma {
    Vma::new(BASE + start_page * PAGE, BASE + (start_page + pages) * PAGE, flags, kind)
}

#[test]
fn tree_grows_and_shrinks_through_every_height() {
    let mut tree = VmaTree::new();
    let mut indices = Vec::new();
    for i in 0..5000u64 {
        // Interleaved order: the upper half first, then the lower, so splits happen in the
        // middle of nodes as well as at their ends.
        let slot = if i < 2500 { 2 * i + 1 } else { 2 * (i - 2500) };
        indices.push((slot, tree.insert(vma(slot * 2, 1, 0, VmaKind::Anonymous))));
    }
    tree.validate().expect("tree invariants");
    assert!(tree.height() >= 3, "height {}", tree.height());
    let starts: Vec<u64> = tree.iter().map(|(_, v)| v.start).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(starts.len(), 5000);
    for &(slot, index) in &indices {
        let addr = BASE + slot * 2 * PAGE;
        assert_eq!(tree.find(addr), Some(index));
        assert_eq!(tree.find(addr - 1), Some(index), "the gap below belongs to the next VMA");
    }
    indices.sort_by_key(|&(slot, _)| (slot * 7919) % 5003);
    for (n, &(_, index)) in indices.iter().enumerate() {
        tree.remove(index);
        if n % 97 == 0 {
            tree.validate().expect("tree invariants");
        }
    }
    tree.validate().expect("tree invariants");
    assert!(tree.is_empty());
    assert_eq!(tree.height(), 1);
    assert_eq!(tree.find(0), None);
}

/// Inserts in ascending, descending and scattered order, checking the invariants after
/// every insert (the overflow to siblings moves entries between nodes at every level) and
/// every lookup at the end.
#[test]
fn inserts_in_any_order_keep_the_invariants_and_fill_nodes() {
    const N: u64 = 2000;
    /// The slot of the `i`th insert.
    type Order = fn(u64) -> u64;
    let orders: [(&str, Order); 3] =
        [("ascending", |i| i), ("descending", |i| N - 1 - i), ("scattered", |i| (i * 7919) % N)];
    for (name, order) in orders {
        let mut tree = VmaTree::new();
        let mut indices = Vec::new();
        for i in 0..N {
            let slot = order(i);
            indices.push((slot, tree.insert(vma(slot * 2, 1, 0, VmaKind::Anonymous))));
            tree.validate().unwrap_or_else(|err| panic!("{name}, insert {i}: {err}"));
        }
        for &(slot, index) in &indices {
            assert_eq!(tree.find(BASE + slot * 2 * PAGE), Some(index), "{name}");
        }
        assert_eq!(tree.find(BASE + N * 2 * PAGE), None, "{name}: past the last VMA");
    }
    // In order, nodes fill before they split: 10 000 VMAs make three levels (half-full
    // nodes would make four).
    let mut tree = VmaTree::new();
    for i in 0..10_000 {
        tree.insert(vma(i * 2, 1, 0, VmaKind::Anonymous));
    }
    tree.validate().expect("tree invariants");
    assert_eq!(tree.height(), 3);
}

/// `find` at and around every VMA while an in-order tree grows through a full root leaf
/// (32 VMAs) and a full root branch (32 full leaves): a root's last key may be at or below
/// the address, which `find` must not take for a node below the root, where it cannot be.
#[test]
fn find_answers_at_every_edge_while_the_root_fills() {
    let mut tree = VmaTree::new();
    let mut all = Vec::new();
    for i in 0..1100u64 {
        let v = vma(3 * i, 2, 0, VmaKind::Anonymous);
        let index = tree.insert(v);
        all.push((index, v));
        assert_eq!(tree.find(v.end), None, "{} VMAs: at the greatest end", i + 1);
        assert_eq!(tree.find(v.end - 1), Some(index), "{} VMAs: below the greatest end", i + 1);
        assert_eq!(tree.find(u64::MAX), None);
        if matches!(i + 1, 1 | 31 | 32 | 33 | 512 | 1024 | 1025 | 1100) {
            for (n, &(index, v)) in all.iter().enumerate() {
                assert_eq!(tree.find(v.start - 1), Some(index), "{} VMAs: the gap below", i + 1);
                assert_eq!(tree.find(v.start), Some(index));
                assert_eq!(tree.find(v.end - 1), Some(index));
                assert_eq!(tree.find(v.end), all.get(n + 1).map(|&(next, _)| next));
            }
        }
    }
    assert_eq!(tree.height(), 3);
}

#[test]
fn find_prev_is_the_last_vma_ending_at_or_below() {
    let mut tree = VmaTree::new();
    for i in 0..1200 {
        tree.insert(vma(4 * i, 2, 0, VmaKind::Anonymous));
    }
    assert_eq!(tree.height(), 3, "the walk goes through a branch below the root");
    for page in 0..4800 {
        let addr = BASE + page * PAGE;
        let expected = tree.iter().filter(|(_, v)| v.end <= addr).last().map(|(i, _)| i);
        assert_eq!(tree.find_prev(addr), expected, "page {page}");
    }
}

#[test]
fn map_merges_neighbours_and_refuses_overlap() {
    let mut vmas = Vmas::new();
    let rw = anon_flags(3);
    vmas.map(vma(0, 4, rw, VmaKind::Anonymous)).expect("free range");
    vmas.map(vma(8, 4, rw, VmaKind::Anonymous)).expect("free range");
    vmas.map(vma(4, 4, rw, VmaKind::Anonymous)).expect("free range");
    assert_eq!(vmas.iter().copied().collect::<Vec<_>>(), [vma(0, 12, rw, VmaKind::Anonymous)]);
    assert_eq!(vmas.map(vma(11, 2, rw, VmaKind::Anonymous)), Err(VmaError::Exists));
    // Image segments and different flags stay apart.
    vmas.map(vma(12, 1, rw, VmaKind::Image)).expect("free range");
    vmas.map(vma(13, 1, rw, VmaKind::Image)).expect("free range");
    vmas.map(vma(14, 1, anon_flags(1), VmaKind::Anonymous)).expect("free range");
    assert_eq!(vmas.count(), 4);
}

#[test]
fn unmap_splits_and_reports_the_removed_pieces() {
    let mut vmas = Vmas::new();
    let rw = anon_flags(3);
    vmas.map(vma(0, 10, rw, VmaKind::Anonymous)).expect("free range");
    vmas.map(vma(10, 10, anon_flags(1), VmaKind::Anonymous)).expect("free range");
    let mut removed = Vec::new();
    vmas.unmap(BASE + 5 * PAGE, BASE + 12 * PAGE, |v| removed.push(*v)).expect("unmapped");
    assert_eq!(
        removed,
        [vma(5, 5, rw, VmaKind::Anonymous), vma(10, 2, anon_flags(1), VmaKind::Anonymous)]
    );
    assert_eq!(
        vmas.iter().copied().collect::<Vec<_>>(),
        [vma(0, 5, rw, VmaKind::Anonymous), vma(12, 8, anon_flags(1), VmaKind::Anonymous)]
    );
    // Unmapping a hole is no error (Linux's munmap).
    vmas.unmap(BASE + 100 * PAGE, BASE + 101 * PAGE, |_| panic!("nothing to remove"))
        .expect("unmapped");
}

#[test]
fn protect_needs_the_whole_range_and_the_may_bits() {
    let mut vmas = Vmas::new();
    let read_only = VM_READ | VM_MAYREAD;
    vmas.map(vma(0, 4, read_only, VmaKind::Image)).expect("free range");
    vmas.map(vma(8, 4, anon_flags(1), VmaKind::Anonymous)).expect("free range");
    assert_eq!(vmas.protect(BASE, BASE + 4 * PAGE, 3), Err(VmaError::Access));
    assert_eq!(vmas.protect(BASE + 3 * PAGE, BASE + 9 * PAGE, 1), Err(VmaError::NotMapped));
    vmas.protect(BASE + 9 * PAGE, BASE + 10 * PAGE, 3).expect("protected");
    assert_eq!(vmas.count(), 4);
    vmas.protect(BASE + 8 * PAGE, BASE + 12 * PAGE, 3).expect("protected");
    assert_eq!(vmas.count(), 2, "one protection again: one VMA");
}

#[test]
fn the_map_count_limit_holds_for_map_split_and_protect() {
    let mut vmas = Vmas::with_max_count(2);
    let rw = anon_flags(3);
    vmas.map(vma(0, 10, rw, VmaKind::Anonymous)).expect("free range");
    vmas.map(vma(20, 10, rw, VmaKind::Anonymous)).expect("free range");
    assert_eq!(vmas.map(vma(40, 1, rw, VmaKind::Anonymous)), Err(VmaError::NoMemory));
    assert_eq!(vmas.unmap(BASE + PAGE, BASE + 2 * PAGE, |_| {}), Err(VmaError::NoMemory));
    assert_eq!(vmas.protect(BASE + PAGE, BASE + 2 * PAGE, 1), Err(VmaError::NoMemory));
    // Trimming an end needs no new VMA.
    vmas.unmap(BASE, BASE + PAGE, |_| {}).expect("unmapped");
    assert_eq!(vmas.count(), 2);
}

#[test]
fn bad_ranges_are_invalid() {
    let mut vmas = Vmas::new();
    let rw = anon_flags(3);
    assert_eq!(vmas.map(Vma::new(0x1000, 0x1000, rw, VmaKind::Anonymous)), Err(VmaError::Invalid));
    assert_eq!(vmas.map(Vma::new(0x1001, 0x3000, rw, VmaKind::Anonymous)), Err(VmaError::Invalid));
    let top = shared::process::TASK_SIZE;
    assert_eq!(vmas.map(Vma::new(top, top + PAGE, rw, VmaKind::Anonymous)), Err(VmaError::Invalid));
    assert_eq!(vmas.unmap(PAGE, 0, |_| {}), Err(VmaError::Invalid));
}

#[test]
fn top_down_areas_skip_vmas_and_the_stack_gap() {
    let mut vmas = Vmas::new();
    let high = BASE + 1000 * PAGE;
    let stack = VM_READ | VM_WRITE | VM_GROWSDOWN;
    vmas.map(Vma::new(high, high + 16 * PAGE, stack, VmaKind::Stack)).expect("free range");
    let guard = 256 * PAGE;
    let first = vmas.unmapped_area_topdown(4 * PAGE, BASE, high, guard).expect("a gap");
    assert_eq!(first, high - guard - 4 * PAGE);
    vmas.map(Vma::new(first, first + 4 * PAGE, anon_flags(3) | VM_SHARED, VmaKind::Anonymous))
        .expect("free range");
    let second = vmas.unmapped_area_topdown(4 * PAGE, BASE, high, guard).expect("a gap");
    assert_eq!(second, first - 4 * PAGE);
    assert_eq!(vmas.unmapped_area_topdown(2000 * PAGE, BASE, high, guard), None);
}

/// The page-granular model: page number → (flags, kind).
type Model = BTreeMap<u64, (u64, u32)>;

/// The model's minimal runs: what the VMAs must be.
fn runs(model: &Model) -> Vec<Vma> {
    let mut out: Vec<Vma> = Vec::new();
    for (&page, &(flags, kind)) in model {
        let start = BASE + page * PAGE;
        match out.last_mut() {
            Some(last) if last.end == start && last.flags == flags && last.kind == kind => {
                last.end += PAGE;
            }
            _ => out.push(Vma { start, end: start + PAGE, flags, kind, reserved: 0 }),
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Op {
    Map { page: u64, pages: u64, prot: u64, kind: u32 },
    Unmap { page: u64, pages: u64 },
    Protect { page: u64, pages: u64, prot: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    // Mostly short ranges, so that many VMAs fit; some long ones, which unmap or protect
    // many at once.
    let range = (0u64..400, prop_oneof![4 => 1u64..8, 1 => 8u64..64]);
    // Maps twice as often as the others, so that trees grow past one node.
    prop_oneof![
        2 => (range.clone(), 0u64..8, prop_oneof![Just(0u32), Just(2), Just(3)])
            .prop_map(|((page, pages), prot, kind)| Op::Map { page, pages, prot, kind }),
        1 => range.clone().prop_map(|(page, pages)| Op::Unmap { page, pages }),
        1 => (range, 0u64..8).prop_map(|((page, pages), prot)| Op::Protect { page, pages, prot }),
    ]
}

fn kind_of(raw: u32) -> VmaKind {
    VmaKind::from_raw(raw).unwrap_or(VmaKind::Anonymous)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn vmas_match_a_page_model(ops in proptest::collection::vec(op(), 1..200), max in 4usize..100) {
        let mut vmas = Vmas::with_max_count(max);
        let mut model = Model::new();
        for op in ops {
            let count = runs(&model).len();
            match op {
                Op::Map { page, pages, prot, kind } => {
                    let v = vma(page, pages, anon_flags(prot), kind_of(kind));
                    let busy = (page..page + pages).any(|p| model.contains_key(&p));
                    let expected = if busy {
                        Err(VmaError::Exists)
                    } else if count >= max {
                        Err(VmaError::NoMemory)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(vmas.map(v), expected);
                    if expected.is_ok() {
                        for p in page..page + pages {
                            model.insert(p, (v.flags, v.kind));
                        }
                    }
                }
                Op::Unmap { page, pages } => {
                    let (start, end) = (BASE + page * PAGE, BASE + (page + pages) * PAGE);
                    let splits = runs(&model).iter().any(|r| r.start < start && r.end > end);
                    let expected = if splits && count >= max { Err(VmaError::NoMemory) } else { Ok(()) };
                    let mut removed = 0;
                    prop_assert_eq!(vmas.unmap(start, end, |v| removed += v.len() / PAGE), expected);
                    if expected.is_ok() {
                        let before = model.len();
                        model.retain(|p, _| !(page..page + pages).contains(p));
                        prop_assert_eq!(removed, (before - model.len()) as u64);
                    }
                }
                Op::Protect { page, pages, prot } => {
                    let (start, end) = (BASE + page * PAGE, BASE + (page + pages) * PAGE);
                    let hole = (page..page + pages).any(|p| !model.contains_key(&p));
                    let splits = runs(&model)
                        .iter()
                        .map(|r| usize::from(r.start < start && r.end > start)
                            + usize::from(r.start < end && r.end > end))
                        .sum::<usize>();
                    let expected = if hole {
                        Err(VmaError::NotMapped)
                    } else if count + splits > max {
                        Err(VmaError::NoMemory)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(vmas.protect(start, end, prot), expected);
                    if expected.is_ok() {
                        for p in page..page + pages {
                            let entry = model.get_mut(&p).expect("mapped page");
                            entry.0 = entry.0 & !VM_ACCESS | prot_to_vm(prot);
                        }
                    }
                }
            }
            vmas.tree().validate().map_err(TestCaseError::fail)?;
            let actual: Vec<Vma> = vmas.iter().copied().collect();
            prop_assert_eq!(&actual, &runs(&model), "VMAs are the model's minimal runs");
            prop_assert_eq!(vmas.total_pages(), model.len() as u64, "total_vm");
            for page in (0..430).step_by(7) {
                let addr = BASE + page * PAGE + 17;
                let expected = model.get(&page).map(|_| page);
                prop_assert_eq!(vmas.lookup(addr).map(|v| v.start <= addr && addr < v.end), expected.map(|_| true));
            }
        }
    }
}
