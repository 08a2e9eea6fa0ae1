use super::*;
use proptest::prelude::*;
use shared::page::{NR_ORDERS, PAGES_PER_SECTION, PAGE_SHIFT, SECTION_SHIFT};
use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;
use std::{format, vec};

/// A sparse memory map: one `Vec<Page>` per present section, as the kernel's vmemmap.
#[derive(Default)]
pub struct SparseMemmap {
    sections: BTreeMap<u64, Vec<Page>>,
}

impl SparseMemmap {
    pub fn with_sections(sections: &[u64]) -> Self {
        let mut map = Self::default();
        for &section in sections {
            map.sections.insert(section, vec![Page::default(); SECTION_PAGES]);
        }
        map
    }
}

impl Memmap for SparseMemmap {
    fn page(&mut self, pfn: u64) -> Option<&mut Page> {
        let section = pfn >> (SECTION_SHIFT - PAGE_SHIFT);
        self.sections.get_mut(&section)?.get_mut((pfn % PAGES_PER_SECTION) as usize)
    }
}

const NORMAL: u64 = 1 << 20;
const SECTION_PAGES: usize = 1 << (SECTION_SHIFT - PAGE_SHIFT);

/// Present memory: DMA [16, 4096), DMA32 [4096, 12288), Normal [2^20, 2^20 + 4096).
const PRESENT: [(u64, u64); 2] = [(16, 12_288), (NORMAL, NORMAL + 4096)];
/// Reserved inside it (never handed to the allocator): [6000, 6100), and the Normal
/// zone's last 100 frames.
const RESERVED: [(u64, u64); 2] = [(6000, 6100), (NORMAL + 3996, NORMAL + 4096)];

fn reserved(pfn: u64) -> bool {
    RESERVED.iter().any(|&(start, end)| (start..end).contains(&pfn))
}

fn allocator() -> Buddy<SparseMemmap> {
    let mut buddy = Buddy::new(SparseMemmap::with_sections(&[0, NORMAL / PAGES_PER_SECTION]));
    for (start, end) in PRESENT {
        buddy.add_present(start, end);
    }
    for (start, end) in [(16, 6000), (6100, 12_288), (NORMAL, NORMAL + 3996)] {
        buddy.hand_off(start, end);
    }
    buddy.setup_watermarks();
    buddy
}

fn nr_free(buddy: &Buddy<SparseMemmap>) -> Vec<[u64; NR_ORDERS]> {
    buddy.zones.iter().map(|z| z.free_area.map(|a| a.nr_free)).collect()
}

#[test]
fn hand_off_uses_maximal_aligned_blocks() {
    let mut buddy = Buddy::new(SparseMemmap::with_sections(&[0]));
    buddy.add_present(0, 4096);
    buddy.hand_off(3, 2051);
    // 3 | 4..8 | 8..16 | … | 1024..2048 | 2048..2050 | 2050
    let dma = &buddy.zones[0];
    let counts: Vec<u64> = dma.free_area.iter().map(|a| a.nr_free).collect();
    assert_eq!(counts, [2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert_eq!((dma.free, dma.managed, dma.present, dma.spanned()), (2048, 2048, 4096, 4096));
    buddy.check().expect("invariants");
}

#[test]
fn freeing_merges_back_to_the_boot_state() {
    let mut buddy = allocator();
    let boot = nr_free(&buddy);
    let a = buddy.alloc(0, ZoneType::Dma, Watermark::None).expect("page");
    let b = buddy.alloc(3, ZoneType::Dma, Watermark::None).expect("block");
    assert_eq!(b % 8, 0);
    buddy.check().expect("invariants after split");
    buddy.free(a, 0).expect("valid free");
    buddy.free(b, 3).expect("valid free");
    buddy.check().expect("invariants after merge");
    assert_eq!(nr_free(&buddy), boot);
}

#[test]
fn allocation_falls_back_from_normal_and_honours_the_zone_limit() {
    let mut buddy = allocator();
    let normal = buddy.alloc(2, ZoneType::Normal, Watermark::Min).expect("block");
    assert_eq!(ZoneType::of_pfn(normal), ZoneType::Normal);
    let dma = buddy.alloc(2, ZoneType::Dma, Watermark::Min).expect("block");
    assert_eq!(ZoneType::of_pfn(dma), ZoneType::Dma);
    // Exhaust Normal: the next Normal request falls back to DMA32.
    while buddy.alloc(0, ZoneType::Normal, Watermark::None).is_some_and(|pfn| pfn >= NORMAL) {}
    let fallback = buddy.alloc(0, ZoneType::Normal, Watermark::Min).expect("fallback");
    assert_eq!(ZoneType::of_pfn(fallback), ZoneType::Dma32);
}

#[test]
fn watermarks_keep_min_pages_for_emergencies() {
    let mut buddy = allocator();
    let dma = buddy.zones[0].watermarks;
    assert!(0 < dma.min && dma.min < dma.low && dma.low < dma.high, "{dma:?}");
    while buddy.alloc(0, ZoneType::Dma, Watermark::Min).is_some() {}
    assert_eq!(buddy.zones[0].free, dma.min, "normal allocations stop at min");
    assert!(buddy.alloc(0, ZoneType::Dma, Watermark::None).is_some(), "emergency allocation");
}

#[test]
fn lower_zones_keep_a_reserve_against_allocations_that_could_go_higher() {
    let mut buddy = allocator();
    // Managed: DMA 4080, DMA32 8092, Normal 3996 pages; ratios 256, 256, 32.
    assert_eq!(buddy.zones[0].lowmem_reserve, [0, 8092 / 256, (8092 + 3996) / 256]);
    assert_eq!(buddy.zones[1].lowmem_reserve, [0, 0, 3996 / 256]);
    assert_eq!(buddy.zones[2].lowmem_reserve, [0, 0, 0]);
    // Empty Normal and DMA32: a Normal allocation then falls back to DMA, but only down
    // to min plus DMA's reserve against Normal allocations.
    while buddy.alloc(0, ZoneType::Normal, Watermark::None).is_some_and(|pfn| pfn >= 4096) {}
    let dma = buddy.zones[0].watermarks;
    let reserve = buddy.zones[0].lowmem_reserve[ZoneType::Normal as usize];
    // (Without watermarks, the loop's last page came from DMA.)
    assert!(buddy.zones[0].free < 4080, "it reached DMA");
    while buddy.alloc(0, ZoneType::Normal, Watermark::Min).is_some() {}
    assert_eq!(buddy.zones[0].free, dma.min + reserve, "Normal allocations stop above the reserve");
    // A DMA allocation may go on down to min.
    while buddy.alloc(0, ZoneType::Dma, Watermark::Min).is_some() {}
    assert_eq!(buddy.zones[0].free, dma.min);
    buddy.check().expect("invariants");
}

#[test]
fn the_fast_path_keeps_the_low_watermark_and_the_slow_path_goes_to_min() {
    let mut buddy = allocator();
    let normal = buddy.zones[2].watermarks;
    // Order-4 blocks skip the per-CPU lists: the buddy lists' counts are exact.
    let mut taken = 0;
    while let Some(pfn) = buddy.alloc_pages(4, ZoneType::Normal) {
        taken += 1;
        if pfn < NORMAL {
            break;
        }
    }
    // Normal gave blocks while it stayed above low, then the lower zones took over
    // (each far above its own low mark) before Normal went below low.
    assert!(taken > 1);
    assert!(
        buddy.zones[2].free + 16 > normal.low,
        "{} free, low {}",
        buddy.zones[2].free,
        normal.low
    );
    assert!(buddy.alloc(4, ZoneType::Normal, Watermark::High).is_some(), "DMA32 is above high");
}

#[test]
fn bad_frees_are_named_and_change_nothing() {
    let mut buddy = allocator();
    let block = buddy.alloc(2, ZoneType::Dma32, Watermark::Min).expect("block");
    let before = nr_free(&buddy);
    assert_eq!(
        buddy.free(block, 1),
        Err(FreeError::WrongOrder { pfn: block, allocated: 2, given: 1 })
    );
    assert!(matches!(buddy.free(block + 1, 0), Err(FreeError::NotAllocated { .. })), "tail page");
    assert!(matches!(buddy.free(6050, 0), Err(FreeError::NotAllocated { .. })), "reserved page");
    assert_eq!(buddy.free(block + 2, 2), Err(FreeError::Misaligned { pfn: block + 2, order: 2 }));
    assert_eq!(buddy.free(20_000, 0), Err(FreeError::Invalid { pfn: 20_000 }), "a hole");
    assert_eq!(nr_free(&buddy), before);
    buddy.free(block, 2).expect("valid free");
    assert!(matches!(buddy.free(block, 2), Err(FreeError::DoubleFree { .. })));
    let page = buddy.alloc_page(ZoneType::Dma32).expect("page");
    buddy.free_page(page).expect("valid free");
    assert!(
        matches!(buddy.free_page(page), Err(FreeError::DoubleFree { .. })),
        "per-CPU double free"
    );
    let block = buddy.alloc_pages(3, ZoneType::Dma32).expect("block");
    assert_eq!(
        buddy.free_pages(block, 2),
        Err(FreeError::WrongOrder { pfn: block, allocated: 3, given: 2 })
    );
    buddy.free_pages(block, 3).expect("valid free");
    assert!(matches!(buddy.free(block, 3), Err(FreeError::DoubleFree { .. })), "on a list");
    // A slab's or a page table's block is its owner's to free.
    for flag in [shared::page::PG_SLAB, shared::page::PG_TABLE] {
        let block = buddy.alloc_pages(1, ZoneType::Dma32).expect("block");
        buddy.memmap.page(block).expect("a descriptor").flags |= flag;
        let before = nr_free(&buddy);
        assert!(matches!(buddy.free_pages(block, 1), Err(FreeError::InUse { .. })), "{flag:#x}");
        assert!(matches!(buddy.free(block, 1), Err(FreeError::InUse { .. })), "{flag:#x}");
        assert_eq!(nr_free(&buddy), before);
        buddy.memmap.page(block).expect("a descriptor").flags &= !flag;
        buddy.free_pages(block, 1).expect("the owner's free");
    }
    buddy.check().expect("invariants");
}

#[test]
fn per_cpu_lists_refill_and_drain_in_batches() {
    let mut buddy = allocator();
    let boot = nr_free(&buddy);
    for order in 0..PCP_ORDERS {
        let free = buddy.nr_free_pages();
        let block = buddy.alloc_pages(order, ZoneType::Dma32).expect("block");
        let list = |buddy: &Buddy<SparseMemmap>| buddy.zones[1].pcp[order as usize].count;
        assert_eq!(list(&buddy), pcp_batch(order) as u64 - 1, "order {order}: one batch");
        assert_eq!(buddy.nr_free_pages(), free - (1 << order));
        let blocks: Vec<u64> = (0..pcp_high(order) + 10)
            .filter_map(|_| buddy.alloc_pages(order, ZoneType::Dma32))
            .collect();
        buddy.free_pages(block, order).expect("valid free");
        for &pfn in &blocks {
            buddy.free_pages(pfn, order).expect("valid free");
            assert!(list(&buddy) <= pcp_high(order) as u64, "order {order}: drained at high");
        }
        assert_eq!(buddy.nr_free_pages(), free);
        buddy.check().expect("invariants");
    }
    // Orders above the lists go straight to the buddy lists.
    let large = buddy.alloc_pages(PCP_ORDERS, ZoneType::Dma32).expect("block");
    buddy.free_pages(large, PCP_ORDERS).expect("valid free");
    buddy.drain_pcp();
    assert_eq!(nr_free(&buddy), boot);
}

/// Takes everything the DMA zone's buddy lists give above min.
fn exhaust_dma(buddy: &mut Buddy<SparseMemmap>) {
    for order in (0..=MAX_ORDER).rev() {
        while buddy.alloc(order, ZoneType::Dma, Watermark::Min).is_some() {}
    }
    assert_eq!(buddy.zones[0].free, buddy.zones[0].watermarks.min);
}

#[test]
fn a_failing_allocation_drains_the_per_cpu_lists_and_tries_again() {
    // One page through the order-0 list leaves the rest of its batch there. With the zone
    // at min, an order-3 block can only come from those pages, merged back.
    let mut buddy = allocator();
    buddy.alloc_page(ZoneType::Dma).expect("page");
    assert_eq!(buddy.zones[0].pcp[0].count, PCP_BATCH as u64 - 1);
    exhaust_dma(&mut buddy);
    buddy.alloc_pages(3, ZoneType::Dma).expect("an order-3 block from the drained pages");
    assert_eq!(buddy.zones[0].pcp[0].count, 0, "the order-0 list was drained");
    buddy.check().expect("invariants");

    // Above the per-CPU orders too: two order-3 buddies on their list make an order-4 block.
    let mut buddy = allocator();
    let block = buddy.alloc_pages(3, ZoneType::Dma).expect("block");
    exhaust_dma(&mut buddy);
    buddy.free_pages(block, 3).expect("valid free");
    assert!(buddy.zones[0].pcp[3].count >= 2);
    buddy.alloc_pages(4, ZoneType::Dma).expect("an order-4 block from the drained blocks");
    buddy.check().expect("invariants");
}

#[test]
fn integer_square_root() {
    for n in [0u64, 1, 2, 3, 4, 15, 16, 17, 1 << 40, u64::MAX] {
        let root = isqrt(n);
        assert!(u128::from(root) * u128::from(root) <= u128::from(n));
        assert!(u128::from(root + 1) * u128::from(root + 1) > u128::from(n));
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc { order: u32, zone: u32 },
    AllocPages { order: u32, zone: u32 },
    Free { index: usize, per_cpu: bool },
    BadFree { index: usize, offset: u64, order: u32 },
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..=MAX_ORDER, 0u32..3).prop_map(|(order, zone)| Op::Alloc { order, zone }),
        4 => (0u32..6, 0u32..3).prop_map(|(order, zone)| Op::AllocPages { order, zone }),
        6 => (any::<usize>(), any::<bool>()).prop_map(|(index, per_cpu)| Op::Free { index, per_cpu }),
        1 => (any::<usize>(), 0u64..4, 0u32..4).prop_map(|(index, offset, order)| Op::BadFree { index, offset, order }),
        1 => Just(Op::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]
    #[test]
    fn random_sequences_keep_every_invariant(ops in proptest::collection::vec(op(), 1..120)) {
        let mut buddy = allocator();
        let boot = nr_free(&buddy);
        let managed: u64 = buddy.zones.iter().map(|z| z.managed).sum();
        // Live blocks: (pfn, order). Any block may be freed either way.
        let mut live: Vec<(u64, u32)> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc { order, zone } => {
                    if let Some(pfn) = buddy.alloc(order, ZoneType::ALL[zone as usize], Watermark::Min) {
                        prop_assert!(ZoneType::of_pfn(pfn) <= ZoneType::ALL[zone as usize]);
                        live.push((pfn, order));
                    }
                }
                Op::AllocPages { order, zone } => {
                    if let Some(pfn) = buddy.alloc_pages(order, ZoneType::ALL[zone as usize]) {
                        prop_assert!(ZoneType::of_pfn(pfn) <= ZoneType::ALL[zone as usize]);
                        live.push((pfn, order));
                    }
                }
                Op::Free { index, per_cpu } if !live.is_empty() => {
                    let (pfn, order) = live.swap_remove(index % live.len());
                    if per_cpu { buddy.free_pages(pfn, order) } else { buddy.free(pfn, order) }.expect("valid free");
                }
                Op::BadFree { index, offset, order } if !live.is_empty() => {
                    let (pfn, _) = live[index % live.len()];
                    let target = pfn + offset;
                    let valid = live.iter().any(|&(p, o)| p == target && o == order);
                    if !valid {
                        prop_assert!(buddy.free(target, order).is_err(), "bad free of {target:#x} order {order} accepted");
                    }
                }
                Op::Free { .. } | Op::BadFree { .. } => {}
                Op::Drain => buddy.drain_pcp(),
            }
            if let Err(err) = buddy.check() {
                return Err(TestCaseError::fail(format!("{err:?}")));
            }
            // Live blocks are disjoint, aligned, and never touch a reserved range.
            let mut pages = BTreeSet::new();
            for &(pfn, order) in &live {
                prop_assert_eq!(pfn % (1 << order), 0);
                for page in pfn..pfn + (1 << order) {
                    prop_assert!(pages.insert(page), "page {:#x} in two live blocks", page);
                    prop_assert!(!reserved(page), "page {:#x} is reserved but was allocated", page);
                }
            }
            // free + per-CPU + allocated = managed.
            prop_assert_eq!(buddy.nr_free_pages() + pages.len() as u64, managed);
        }
        for (pfn, order) in live {
            buddy.free_pages(pfn, order).expect("valid free");
        }
        buddy.drain_pcp();
        prop_assert_eq!(nr_free(&buddy), boot, "everything freed: the boot state again");
        // Every page that does not head a free block is back in the zero state.
        for pfn in PRESENT.iter().flat_map(|&(start, end)| start..end) {
            let page = *buddy.memmap.page(pfn).expect("present");
            if page.flags & PG_BUDDY == 0 {
                prop_assert_eq!((page.flags, page.order, page.refcount), (0, 0, 0), "pfn {:#x}", pfn);
            }
        }
    }
}

#[test]
fn known_zero_memory_stays_marked_until_used_and_reporting_marks_it_again() {
    use shared::page::PG_ZERO;
    let mut buddy = allocator();
    // Boot memory is known zero: a block from it says so, and loses the mark.
    let (pfn, zero) = buddy.alloc_pages_zero(0, ZoneType::Normal).expect("a page");
    assert!(zero);
    assert_eq!(buddy.memmap.page(pfn).expect("present").flags & PG_ZERO, 0);
    let (block, zero) = buddy.alloc_pages_zero(9, ZoneType::Normal).expect("a huge block");
    assert!(zero, "split from a zero block: zero");
    // Used memory comes back dirty, and taints what it merges with.
    buddy.free_pages(block, 9).expect("frees");
    buddy.free_pages(pfn, 0).expect("frees");
    buddy.drain_pcp();
    let head = buddy.memmap.page(block).expect("present");
    assert!(head.flags & PG_ZERO == 0 || head.flags & PG_BUDDY == 0, "the freed block is dirty");
    // Reporting offers the large free blocks that are not known zero, and marks those
    // the host took.
    let mut offered = Vec::new();
    let pages = buddy.report_free(9, &mut |pfn, order| {
        offered.push((pfn, order));
        true
    });
    assert!(!offered.is_empty());
    assert_eq!(pages, offered.iter().map(|&(_, order)| 1u64 << order).sum::<u64>());
    for &(pfn, _) in &offered {
        assert_ne!(buddy.memmap.page(pfn).expect("present").flags & PG_ZERO, 0);
    }
    assert_eq!(buddy.report_free(9, &mut |_, _| true), 0, "nothing left to report");
    buddy.check().expect("the lists are sound");
}
