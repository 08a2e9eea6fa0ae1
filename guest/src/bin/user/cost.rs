//! `user-cost`: what a system call and a page fault cost a program, timed from user mode
//! with `rdtsc` (which runs natively at CPL3): `getpid` round trips, first touches of
//! anonymous pages (demand-zero faults), and, in a child, writes to those pages while the
//! parent still maps them (copy-on-write faults that copy). The child reports the median
//! cycles of each kind, so that one slow round trip (a host preemption) does not skew it,
//! and the cycles per million rounds of `shared::workload::compute_loop`, which
//! `guest/benches/compute.rs` times natively on the host: CPL3 against native.
#![no_std]
#![no_main]

#[macro_use]
mod rt;

use core::arch::x86_64::_rdtsc;
use rt::syscall;
use shared::syscall::*;

/// Round trips of each kind.
const ROUNDS: usize = 256;

/// Cycles each round of `round` took, sorted: the median is in the middle.
fn time(mut round: impl FnMut(usize)) -> [u64; ROUNDS] {
    let mut cycles = [0; ROUNDS];
    for (i, slot) in cycles.iter_mut().enumerate() {
        // SAFETY: `rdtsc` only reads the time-stamp counter.
        let start = unsafe { _rdtsc() };
        round(i);
        // SAFETY: as above.
        *slot = unsafe { _rdtsc() } - start;
    }
    cycles.sort_unstable();
    cycles
}

fn main() -> i32 {
    let getpid = time(|_| {
        syscall(SYS_GETPID, [0; 6]);
    });
    let empty = time(|_| {});
    let area = rt::mmap(ROUNDS as u64, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    if area < 0 {
        return 1;
    }
    let page = |i: usize| (area as u64 + i as u64 * 4096) as *mut u64;
    // SAFETY: `area` holds ROUNDS read-write pages of this process.
    let fault = time(|i| unsafe { core::ptr::write_volatile(page(i), 1) });
    // The parent sleeps in wait4, still mapping every page, while its child writes them.
    let child = rt::fork();
    if child < 0 {
        return 1;
    }
    if child > 0 {
        let (reaped, status) = rt::wait(child);
        return i32::from(reaped != child || status != 0);
    }
    // SAFETY: as above; the pages are shared with the parent, read-only until written.
    let cow = time(|i| unsafe { core::ptr::write_volatile(page(i), 2) });
    let median = |cycles: &[u64; ROUNDS]| cycles[ROUNDS / 2];
    // Sixteen runs of a million rounds; the fastest is the CPU's speed (the others met a
    // host interruption).
    let mut loop_cycles = u64::MAX;
    for run in 0..16 {
        // SAFETY: `rdtsc` only reads the time-stamp counter.
        let start = unsafe { _rdtsc() };
        core::hint::black_box(shared::workload::compute_loop(1_000_000, run));
        // SAFETY: as above.
        loop_cycles = loop_cycles.min(unsafe { _rdtsc() } - start);
    }
    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            "rounds={ROUNDS} cycles: getpid={} demand-zero={} cow={} empty={} loop={loop_cycles}",
            median(&getpid),
            median(&fault),
            median(&cow),
            median(&empty)
        ),
    );
    rt::report(line.as_bytes());
    println!("user-cost: {}", core::str::from_utf8(line.as_bytes()).unwrap_or("?"));
    0
}
