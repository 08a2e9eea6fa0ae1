//! The mixed-order random workload, shared by the `buddy` benchmark (timed by criterion) and
//! the `buddy_mix` example (a plain loop for cachegrind and other profilers).
//!
//! Layout: [`Blocks`] is what an allocator must offer, implemented for ours (through the
//! per-CPU lists for orders 0–3), buddy_system_allocator's `FrameAllocator` and `Heap`, and
//! [`Counter`], an allocator that only counts; [`workload`] draws the operations; [`Mix`]
//! runs them on 256 slots: each operation frees its slot's block if the slot has one, else
//! allocates a block of the drawn order.
// The casts are of small constants and of values reduced modulo small bounds.
#![allow(clippy::cast_possible_truncation)]

use buddy_system_allocator::{FrameAllocator, Heap};
use guest::buddy::{Buddy, SliceMemmap};
use guest::rng::Rng;
use shared::page::{Page, ZoneType};
use std::alloc::Layout;
use std::hint::black_box;
use std::ops::Range;
use std::ptr::NonNull;

/// Page frames each allocator manages: 1 GiB.
pub const PAGES: u64 = 1 << 18;
/// Page frames from 4 GiB: ZONE_NORMAL.
pub const BASE_PFN: u64 = 1 << 20;
/// Slots of the mixed workload.
pub const SLOTS: usize = 256;
/// Operations per run of the mixed workload.
pub const OPS: usize = 4096;

/// An allocator of blocks of 2^order pages. Every implementation is `#[inline]`, so each
/// allocator is compiled into [`Mix::run`] the same way.
pub trait Blocks {
    /// What an allocation returns and a free takes.
    type Block: Copy;
    /// A block of 2^`order` pages; panics when memory runs out (the workload never fills it).
    fn alloc_block(&mut self, order: u32) -> Self::Block;
    /// Frees a block from [`Blocks::alloc_block`] of the same order.
    fn free_block(&mut self, block: Self::Block, order: u32);
}

/// Ours over [`PAGES`] page frames, handed off and with watermarks set.
pub fn ours() -> Buddy<SliceMemmap<'static>> {
    let pages: &'static mut [Page] =
        Box::leak(vec![Page::default(); PAGES as usize].into_boxed_slice());
    let mut buddy = Buddy::new(SliceMemmap { base_pfn: BASE_PFN, pages });
    buddy.add_present(BASE_PFN, BASE_PFN + PAGES);
    buddy.hand_off(BASE_PFN, BASE_PFN + PAGES);
    buddy.setup_watermarks();
    buddy
}

impl Blocks for Buddy<SliceMemmap<'static>> {
    type Block = u64;
    #[inline]
    fn alloc_block(&mut self, order: u32) -> u64 {
        self.alloc_pages(order, ZoneType::Normal).expect("block")
    }
    #[inline]
    fn free_block(&mut self, pfn: u64, order: u32) {
        self.free_pages(pfn, order).expect("valid free");
    }
}

/// buddy_system_allocator's frame allocator over the same page frames.
pub fn frame_allocator() -> FrameAllocator<32> {
    let mut frames = FrameAllocator::new();
    frames.add_frame(BASE_PFN as usize, (BASE_PFN + PAGES) as usize);
    frames
}

impl Blocks for FrameAllocator<32> {
    type Block = usize;
    #[inline]
    fn alloc_block(&mut self, order: u32) -> usize {
        self.alloc(1 << order).expect("frames")
    }
    #[inline]
    fn free_block(&mut self, frame: usize, order: u32) {
        self.dealloc(frame, 1 << order);
    }
}

/// buddy_system_allocator's byte heap over [`PAGES`] pages of real memory.
pub fn byte_heap() -> Heap<32> {
    let bytes = (PAGES as usize) * 4096;
    let layout = Layout::from_size_align(bytes, 4096).expect("valid layout");
    // SAFETY: a fresh allocation of `bytes` that is leaked, so the heap owns it for good.
    let start = unsafe { std::alloc::alloc(layout) } as usize;
    assert_ne!(start, 0, "cannot allocate the heap's memory");
    let mut heap = Heap::empty();
    // SAFETY: `start..start + bytes` is memory nothing else uses.
    unsafe { heap.add_to_heap(start, start + bytes) };
    heap
}

/// A block of 2^`order` pages, aligned to its size, as a `Heap` layout.
pub fn page_layout(order: u32) -> Layout {
    Layout::from_size_align(4096 << order, 4096 << order).expect("valid layout")
}

impl Blocks for Heap<32> {
    type Block = NonNull<u8>;
    #[inline]
    fn alloc_block(&mut self, order: u32) -> NonNull<u8> {
        self.alloc(page_layout(order)).expect("block")
    }
    #[inline]
    fn free_block(&mut self, ptr: NonNull<u8>, order: u32) {
        self.dealloc(ptr, page_layout(order));
    }
}

/// No allocator: allocations return a counter. What the workload's loop and slot
/// bookkeeping cost alone.
#[derive(Default)]
pub struct Counter(u64);

impl Blocks for Counter {
    type Block = u64;
    #[inline]
    fn alloc_block(&mut self, _order: u32) -> u64 {
        self.0 += 1;
        black_box(self.0)
    }
    #[inline]
    fn free_block(&mut self, block: u64, _order: u32) {
        black_box(block);
    }
}

/// The workload's operations: (slot, order if the slot is empty), orders uniform in
/// `orders`, from a fixed seed.
pub fn workload(orders: Range<u32>) -> Vec<(usize, u32)> {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let span = u64::from(orders.end - orders.start);
    (0..OPS)
        .map(|_| {
            let value = rng.next_u64();
            ((value % SLOTS as u64) as usize, orders.start + ((value >> 32) % span) as u32)
        })
        .collect()
}

/// An allocator and the blocks it has handed out, by slot.
pub struct Mix<A: Blocks> {
    allocator: A,
    slots: Vec<Option<(A::Block, u32)>>,
}

impl<A: Blocks> Mix<A> {
    /// `allocator` with every slot empty.
    pub fn new(allocator: A) -> Self {
        Self { allocator, slots: vec![None; SLOTS] }
    }

    /// Runs `ops` once; blocks still held stay in their slots for the next run, so runs
    /// after the first see a steady state.
    pub fn run(&mut self, ops: &[(usize, u32)]) {
        for &(slot, order) in ops {
            match self.slots[slot].take() {
                Some((block, order)) => self.allocator.free_block(block, order),
                None => self.slots[slot] = Some((self.allocator.alloc_block(order), order)),
            }
        }
    }
}
