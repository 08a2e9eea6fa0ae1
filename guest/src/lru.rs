//! The anonymous LRU lists: every user page (or whole huge block) is on one of them, from
//! its first mapping until it is freed, threaded through `struct page` as Linux threads
//! `page->lru`.
//!
//! ```text
//! lruvec.lists[LRU_ACTIVE_ANON]    new pages, and pages found referenced again
//! lruvec.lists[LRU_INACTIVE_ANON]  head (newest) ⇄ … ⇄ tail (oldest): aged pages, where
//!                                  reclaim looks
//!
//! a first mapping      add: at the active head (Linux before 5.9 did the same): the
//! or a swap-in         fault that maps a page sets its Accessed bit, so an inactive page
//!                      would always look referenced at its first scan; aging clears the
//!                      bit on the way to the inactive list, not counted as a scan, and
//!                      the inactive scan then sees only references made since
//! a huge block split   del the block's entry, add each page on the same list (at the
//!                      tail when reclaim splits it, to be reclaimed next: add_tail)
//! freed                del
//! ```
//!
//! `PG_LRU` says a page is on a list, `PG_ACTIVE` which one; `next` points towards the
//! tail and `prev` towards the head. The lists' page counts are Linux's
//! `NR_INACTIVE_ANON` and `NR_ACTIVE_ANON` (/proc/meminfo's `Inactive(anon)` and
//! `Active(anon)`). Reclaim (aging by the Accessed bit, taking from the inactive tail)
//! comes with the reverse mapping that finds a page's entries.

use shared::mm::{Lruvec, LRU_ACTIVE_ANON, LRU_INACTIVE_ANON, NR_LRU_LISTS};
use shared::page::{Page, NO_PFN, PG_ACTIVE, PG_LRU};

/// What the lists need: the descriptors they thread through, and their heads.
pub trait LruMemory {
    /// The descriptor of page frame `pfn`, if it has one.
    fn lru_page(&mut self, pfn: u64) -> Option<&mut Page>;
    /// The node's lists.
    fn lruvec(&mut self) -> &mut Lruvec;
}

/// Adds the entry at `pfn` (`pages` pages: 1, or 512 for a whole huge block) at the head
/// of list `lru`. An entry already on a list stays where it is.
pub fn add<M: LruMemory>(memory: &mut M, pfn: u64, pages: u64, lru: usize) {
    insert(memory, pfn, pages, lru, false);
}

/// Adds the entry at `pfn` (`pages` pages) at the tail of list `lru`, where reclaim looks
/// next (the pages of a huge block reclaim has just split). An entry already on a list
/// stays where it is.
pub fn add_tail<M: LruMemory>(memory: &mut M, pfn: u64, pages: u64, lru: usize) {
    insert(memory, pfn, pages, lru, true);
}

/// [`add`] (`at_tail` false) or [`add_tail`].
fn insert<M: LruMemory>(memory: &mut M, pfn: u64, pages: u64, lru: usize, at_tail: bool) {
    let Some(page) = memory.lru_page(pfn).filter(|p| p.flags & PG_LRU == 0) else {
        return;
    };
    let list = lru.min(NR_LRU_LISTS - 1);
    page.flags |= PG_LRU;
    if list == LRU_ACTIVE_ANON {
        page.flags |= PG_ACTIVE;
    } else {
        page.flags &= !PG_ACTIVE;
    }
    // `next` points towards the tail, `prev` towards the head.
    let lists = memory.lruvec().lists[list];
    let neighbour = if at_tail { lists.tail } else { lists.head };
    if let Some(page) = memory.lru_page(pfn) {
        (page.next, page.prev) = if at_tail { (NO_PFN, neighbour) } else { (neighbour, NO_PFN) };
    }
    if neighbour != NO_PFN {
        if let Some(old) = memory.lru_page(neighbour) {
            if at_tail {
                old.next = pfn;
            } else {
                old.prev = pfn;
            }
        }
    }
    let list = &mut memory.lruvec().lists[list];
    if at_tail {
        list.tail = pfn;
        if list.head == NO_PFN {
            list.head = pfn;
        }
    } else {
        list.head = pfn;
        if list.tail == NO_PFN {
            list.tail = pfn;
        }
    }
    list.nr_pages += pages;
}

/// Takes the entry at `pfn` (`pages` pages) off its list; returns whether it was on one.
pub fn del<M: LruMemory>(memory: &mut M, pfn: u64, pages: u64) -> bool {
    let Some(page) = memory.lru_page(pfn).filter(|p| p.flags & PG_LRU != 0) else {
        return false;
    };
    let list = if page.flags & PG_ACTIVE != 0 { LRU_ACTIVE_ANON } else { LRU_INACTIVE_ANON };
    let (next, prev) = (page.next, page.prev);
    page.flags &= !(PG_LRU | PG_ACTIVE);
    (page.next, page.prev) = (NO_PFN, NO_PFN);
    match memory.lru_page(prev).filter(|_| prev != NO_PFN) {
        Some(before) => before.next = next,
        None => memory.lruvec().lists[list].head = next,
    }
    match memory.lru_page(next).filter(|_| next != NO_PFN) {
        Some(after) => after.prev = prev,
        None => memory.lruvec().lists[list].tail = prev,
    }
    let list = &mut memory.lruvec().lists[list];
    list.nr_pages = list.nr_pages.saturating_sub(pages);
    true
}

/// The oldest entry of list `lru` (where reclaim looks), if any.
pub fn tail<M: LruMemory>(memory: &mut M, lru: usize) -> Option<u64> {
    let tail = memory.lruvec().lists[lru.min(NR_LRU_LISTS - 1)].tail;
    (tail != NO_PFN).then_some(tail)
}

/// Moves the entry at `pfn` (`pages` pages) to the head of list `lru`; returns whether it
/// was on a list (else nothing changes).
pub fn move_to<M: LruMemory>(memory: &mut M, pfn: u64, pages: u64, lru: usize) -> bool {
    let listed = del(memory, pfn, pages);
    if listed {
        add(memory, pfn, pages, lru);
    }
    listed
}

/// The entries of list `lru`, head to tail, at most `limit` of them (a list longer than
/// that is reported as broken).
pub fn entries<M: LruMemory>(
    memory: &mut M,
    lru: usize,
    limit: usize,
) -> Result<alloc::vec::Vec<u64>, &'static str> {
    let mut out = alloc::vec::Vec::new();
    let (mut pfn, mut prev) = (memory.lruvec().lists[lru.min(NR_LRU_LISTS - 1)].head, NO_PFN);
    while pfn != NO_PFN {
        if out.len() >= limit {
            return Err("an LRU list longer than its pages (a cycle?)");
        }
        let page = memory.lru_page(pfn).ok_or("an LRU entry without a struct page")?;
        if page.flags & PG_LRU == 0 || (page.flags & PG_ACTIVE != 0) != (lru == LRU_ACTIVE_ANON) {
            return Err("an LRU entry without PG_LRU, or on the wrong list for PG_ACTIVE");
        }
        if page.prev != prev {
            return Err("an LRU back link broken");
        }
        out.push(pfn);
        (prev, pfn) = (pfn, page.next);
    }
    if memory.lruvec().lists[lru.min(NR_LRU_LISTS - 1)].tail != prev {
        return Err("an LRU list's tail is not its last entry");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};
    use std::vec::Vec;

    #[derive(Default)]
    struct Memory {
        pages: BTreeMap<u64, Page>,
        lruvec: Lruvec,
    }

    impl LruMemory for Memory {
        fn lru_page(&mut self, pfn: u64) -> Option<&mut Page> {
            (pfn < 64).then(|| self.pages.entry(pfn).or_default())
        }
        fn lruvec(&mut self) -> &mut Lruvec {
            &mut self.lruvec
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add { pfn: u64, active: bool },
        AddTail { pfn: u64, active: bool },
        Del { pfn: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..64u64, any::<bool>()).prop_map(|(pfn, active)| Op::Add { pfn, active }),
            (0..64u64, any::<bool>()).prop_map(|(pfn, active)| Op::AddTail { pfn, active }),
            (0..64u64).prop_map(|pfn| Op::Del { pfn }),
        ]
    }

    /// Pages per entry in the tests: even frames are huge blocks' heads.
    fn pages(pfn: u64) -> u64 {
        if pfn % 2 == 0 {
            512
        } else {
            1
        }
    }

    proptest! {
        /// Against two deques: after every operation the lists hold exactly the model's
        /// entries in its order, their links and flags agree, and the page counts add up.
        #[test]
        fn lists_match_a_model(ops in proptest::collection::vec(op(), 1..200)) {
            let mut memory = Memory::default();
            let mut model: [VecDeque<u64>; 2] = [VecDeque::new(), VecDeque::new()];
            for op in ops {
                let on = |model: &[VecDeque<u64>; 2], pfn| model.iter().position(|l| l.contains(&pfn));
                match op {
                    Op::Add { pfn, active } => {
                        add(&mut memory, pfn, pages(pfn), usize::from(active));
                        if on(&model, pfn).is_none() {
                            model[usize::from(active)].push_front(pfn);
                        }
                    }
                    Op::AddTail { pfn, active } => {
                        add_tail(&mut memory, pfn, pages(pfn), usize::from(active));
                        if on(&model, pfn).is_none() {
                            model[usize::from(active)].push_back(pfn);
                        }
                    }
                    Op::Del { pfn } => {
                        let was = on(&model, pfn);
                        prop_assert_eq!(del(&mut memory, pfn, pages(pfn)), was.is_some());
                        if let Some(list) = was {
                            model[list].retain(|&p| p != pfn);
                        }
                    }
                }
                for lru in [LRU_INACTIVE_ANON, LRU_ACTIVE_ANON] {
                    let listed = entries(&mut memory, lru, 64).map_err(TestCaseError::fail)?;
                    prop_assert_eq!(&listed, &model[lru].iter().copied().collect::<Vec<_>>());
                    let counted: u64 = listed.iter().map(|&p| pages(p)).sum();
                    prop_assert_eq!(memory.lruvec.lists[lru].nr_pages, counted);
                }
            }
        }
    }
}
