//! `workload=stress seed=N ops=N`: random allocations and frees of random orders and zone
//! limits, half through `alloc_pages` / `free_pages` (per-CPU lists up to order 3), half
//! on the buddy lists directly. Each block is filled with a pattern when allocated and
//! checked when freed; no two live blocks may overlap; at the end, with everything freed
//! and the per-CPU lists drained, the free lists must be exactly the boot state again.
//!
//! Each allocator call takes the memory managers on its own (`mm::global::with`), and the
//! patterns are written and checked outside: so vmcoreinfo's sequence counter is even
//! between operations, and a host can inspect the guest while the workload runs.

use crate::hypercall;
use crate::mm::direct_map;
use crate::mm::global::with;
use crate::selftest::snapshot;
use guest::buddy::Watermark;
use guest::cmdline::Options;
use guest::rng::Rng;
use log::{error, info};
use shared::hypercall::{ReportKind, StressReport};
use shared::layout::PAGE_SIZE;
use shared::page::{ZoneType, NR_ZONES};

/// Blocks live at once.
const MAX_LIVE: usize = 128;
/// Largest order the workload allocates (32 pages, so filling stays cheap in the guest).
const MAX_STRESS_ORDER: u32 = 5;

/// A live block.
#[derive(Clone, Copy, Default)]
struct Block {
    pfn: u64,
    order: u32,
    /// Allocated and freed through `alloc_pages` / `free_pages`.
    per_cpu: bool,
    pattern: u64,
}

/// Runs the workload; returns whether every check passed.
pub fn run(options: &Options) -> bool {
    let (seed, ops) = (options.seed, options.ops);
    let boot = with(|mm| snapshot(mm));
    let mut rng = Rng::new(seed);
    let mut live = [Block::default(); MAX_LIVE];
    let (mut nlive, mut live_pages) = (0usize, 0u64);
    let mut report = StressReport { seed, ops: u64::from(ops), ..StressReport::default() };
    let mut ok = true;
    for op in 0..ops {
        crate::workload::progress(options, op);
        if nlive < MAX_LIVE && (nlive == 0 || rng.below(100) < 55) {
            let order = if rng.below(100) < 40 {
                0
            } else {
                1 + u32::try_from(rng.below(u64::from(MAX_STRESS_ORDER))).unwrap_or(0)
            };
            let highest = ZoneType::ALL[rng.index(NR_ZONES)];
            let per_cpu = rng.below(2) == 0;
            let pfn = with(|mm| {
                if per_cpu {
                    mm.buddy.alloc_pages(order, highest)
                } else {
                    mm.buddy.alloc(order, highest, Watermark::Min)
                }
            });
            let Some(pfn) = pfn else {
                report.failed_allocations += 1;
                continue;
            };
            let block = Block { pfn, order, per_cpu, pattern: rng.next_u64() | 1 };
            if let Some(other) = live[..nlive].iter().find(|b| overlaps(b, &block)) {
                error!(
                    "stress: block at pfn {pfn:#x} order {order} overlaps live pfn {:#x}",
                    other.pfn
                );
                ok = false;
            }
            if ZoneType::of_pfn(pfn) > highest {
                error!("stress: pfn {pfn:#x} is above the zone limit {}", highest.name());
                ok = false;
            }
            fill(&block);
            live[nlive] = block;
            nlive += 1;
            live_pages += 1 << order;
            report.allocations += 1;
            report.max_live_pages = report.max_live_pages.max(live_pages);
        } else {
            let index = rng.index(nlive);
            let block = live[index];
            live[index] = live[nlive - 1];
            nlive -= 1;
            live_pages -= 1 << block.order;
            ok &= release(&block);
            report.frees += 1;
        }
    }
    for block in &live[..nlive] {
        ok &= release(block);
        report.frees += 1;
    }
    let (end, checked) = with(|mm| {
        mm.buddy.drain_pcp();
        (snapshot(mm), mm.buddy.check())
    });
    let restored = end == boot;
    if !restored {
        error!("stress: the free lists differ from the boot state after freeing everything");
    }
    if let Err(err) = checked {
        error!("stress: invariant broken: {err:?}");
        ok = false;
    }
    report.restored = u64::from(restored);
    ok &= restored;
    info!(
        "stress: seed {seed}, {ops} ops: {} allocations, {} frees, {} refused, at most {} pages live: {}",
        report.allocations,
        report.frees,
        report.failed_allocations,
        report.max_live_pages,
        if ok { "ok" } else { "FAILED" }
    );
    hypercall::report_value(ReportKind::Stress, &report);
    hypercall::report_test("stress: patterns intact, no overlaps, boot state restored", ok, "");
    let slab_ok = kmalloc_phase(&mut rng, ops);
    hypercall::report_test(
        "stress: kmalloc patterns intact, no overlaps, every page back",
        slab_ok,
        "",
    );
    ok && slab_ok
}

/// The kmalloc phase: `ops` random kmallocs (1–2048 bytes, now and then 8–24 KiB from
/// pages) and kfrees, each allocation filled with a pattern and checked when freed, none
/// overlapping another live one; then everything freed and the caches shrunk, and the
/// free lists must be what they were before the phase.
fn kmalloc_phase(rng: &mut Rng, ops: u32) -> bool {
    let before = with(|mm| snapshot(mm));
    // Live allocations: (address, size, pattern).
    let mut live = [(0u64, 0u64, 0u64); MAX_LIVE];
    let mut nlive = 0;
    let (mut ok, mut allocations) = (true, 0u64);
    for _ in 0..ops {
        if nlive < MAX_LIVE && (nlive == 0 || rng.below(100) < 55) {
            let size =
                if rng.below(20) == 0 { 8192 + rng.below(16384) } else { 1 + rng.below(2048) };
            let allocated = with(|mm| {
                let (kmalloc, mut pages) = mm.slab();
                kmalloc.kmalloc(&mut pages, size)
            });
            let Ok(Some(addr)) = allocated else {
                error!("stress: kmalloc({size}) failed");
                ok = false;
                continue;
            };
            if let Some(&(other, other_size, _)) =
                live[..nlive].iter().find(|&&(a, s, _)| a < addr + size && addr < a + s)
            {
                error!("stress: kmalloc({size}) at {addr:#x} overlaps {other:#x}+{other_size}");
                ok = false;
            }
            let pattern = rng.next_u64() | 1;
            fill_words(addr, size / 8, pattern);
            live[nlive] = (addr, size, pattern);
            nlive += 1;
            allocations += 1;
        } else {
            let index = rng.index(nlive);
            let (addr, size, pattern) = live[index];
            live[index] = live[nlive - 1];
            nlive -= 1;
            if !words_intact(addr, size / 8, pattern) {
                error!("stress: the {size}-byte allocation at {addr:#x} lost its pattern");
                ok = false;
            }
            if let Err(err) = kfree(addr) {
                error!("stress: {err}");
                ok = false;
            }
        }
    }
    for &(addr, size, pattern) in &live[..nlive] {
        ok &= words_intact(addr, size / 8, pattern);
        ok &= kfree(addr).is_ok();
    }
    let after = with(|mm| {
        let (kmalloc, mut pages) = mm.slab();
        for cache in &mut kmalloc.caches {
            cache.shrink(&mut pages);
        }
        mm.buddy.drain_pcp();
        snapshot(mm)
    });
    if after != before {
        error!("stress: the free lists differ after freeing every kmalloc allocation");
        ok = false;
    }
    info!("stress: {allocations} kmallocs, {}", if ok { "ok" } else { "FAILED" });
    ok
}

/// Frees a live allocation of the phase (each is freed once).
fn kfree(addr: u64) -> Result<(), guest::slab::SlabError> {
    with(|mm| {
        let (kmalloc, mut pages) = mm.slab();
        // SAFETY: `addr` is a live kmalloc allocation of this phase, freed once.
        unsafe { kmalloc.kfree(&mut pages, addr) }
    })
}

fn overlaps(a: &Block, b: &Block) -> bool {
    a.pfn < b.pfn + (1 << b.order) && b.pfn < a.pfn + (1 << a.order)
}

/// Words in a block.
fn words(block: &Block) -> u64 {
    (PAGE_SIZE << block.order) / 8
}

/// Fills the block with its pattern.
fn fill(block: &Block) {
    fill_words(direct_map(block.pfn * PAGE_SIZE), words(block), block.pattern);
}

/// Whether the whole block still holds its pattern.
fn intact(block: &Block) -> bool {
    words_intact(direct_map(block.pfn * PAGE_SIZE), words(block), block.pattern)
}

/// Writes `pattern` to `count` words at `addr` (`rep stosq`: one emulated instruction).
fn fill_words(addr: u64, count: u64, pattern: u64) {
    // SAFETY: the caller owns `count` words at `addr` (a fresh allocation), mapped RAM.
    unsafe {
        core::arch::asm!(
            "rep stosq",
            inout("rdi") addr => _,
            inout("rcx") count => _,
            in("rax") pattern,
            options(nostack, preserves_flags),
        );
    }
}

/// Whether `count` words at `addr` all hold `pattern` (`repe scasq`).
fn words_intact(addr: u64, count: u64, pattern: u64) -> bool {
    if count == 0 {
        return true;
    }
    let left: u64;
    // SAFETY: the caller owns `count` words at `addr` (a live allocation), mapped RAM;
    // `scasq` only reads them.
    unsafe {
        core::arch::asm!(
            "repe scasq",
            "jne 2f",
            "xor ecx, ecx",
            "jmp 3f",
            "2:",
            "mov ecx, 1",
            "3:",
            inout("rdi") addr => _,
            inout("rcx") count => left,
            in("rax") pattern,
            options(nostack, readonly),
        );
    }
    left == 0
}

/// Checks the pattern and frees the block; returns whether both went well.
fn release(block: &Block) -> bool {
    let mut ok = intact(block);
    if !ok {
        error!("stress: block at pfn {:#x} order {} lost its pattern", block.pfn, block.order);
    }
    let freed = with(|mm| {
        if block.per_cpu {
            mm.buddy.free_pages(block.pfn, block.order)
        } else {
            mm.buddy.free(block.pfn, block.order)
        }
    });
    if let Err(err) = freed {
        error!("stress: {err}");
        ok = false;
    }
    ok
}
