//! `swap-pattern`: touches `mib=` MiB of anonymous memory (twice the guest's RAM, which
//! the kernel passes) with a pattern, every word, then reads every word back: most of it
//! must have gone to swap and come back. Between the two it stops at a checkpoint for
//! the host. The memory is mapped in 1 MiB areas with a
//! `PROT_NONE` page between them, so that no area holds a transparent huge page: every
//! page is a 4 KiB page from its first fault, and the figures count pages, not splits
//! (`thp`'s areas test the splitting). The kernel's report counts the faults; its vmstat
//! counts the pages swapped.
//!
//! With `fork=1` (`swap-cow`) the process forks after the checkpoint: parent and child
//! share every page copy-on-write, swapped out or not (fork copies swap entries, and the
//! reverse map unmaps a shared page from both trees). Then, in turn:
//!
//! ```text
//! child    reads the first area: each slot both still name comes back into the swap
//!          cache; checkpoint
//! parent   reads the first area: every page from the swap cache, none from the device;
//!          checkpoint; then reads everything
//! child    reads everything, reports, exits
//! parent   reports
//! ```
//!
//! Each reports "child …" or "parent …" with its count of bad words.
#![no_std]
#![no_main]

#[macro_use]
mod rt;

use rt::syscall;
use shared::syscall::*;

const PAGE: u64 = 4096;
/// Pages in one area.
const AREA: u64 = 256;

/// The word at address `addr`.
fn pattern(addr: u64) -> u64 {
    addr.rotate_left(17) ^ 0x5a5a_0000_5a5a_0000
}

fn main() -> i32 {
    let mib = rt::arg_value("mib").unwrap_or(64).max(1);
    let areas = mib;
    // One reservation for all, then each area made read-write inside it, a guard page
    // (PROT_NONE, a VMA of its own) after each.
    let stride = (AREA + 1) * PAGE;
    let base = rt::mmap(areas * (AREA + 1), PROT_NONE, MAP_PRIVATE);
    if base < 0 {
        println!("swap-pattern: reserving {mib} MiB failed: {base}");
        return 1;
    }
    let base = base as u64;
    for area in 0..areas {
        let at = base + area * stride;
        let flags = MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS;
        let mapped =
            syscall(SYS_MMAP, [at, AREA * PAGE, PROT_READ | PROT_WRITE, flags, u64::MAX, 0]);
        if mapped != at as i64 {
            println!("swap-pattern: mapping area {area} failed: {mapped}");
            return 1;
        }
    }
    for area in 0..areas {
        // SAFETY: an area mapped read-write just now, only reached through this slice.
        let words = unsafe { rt::words(base + area * stride, AREA) };
        let start = base + area * stride;
        for (i, word) in (0..).zip(words.iter_mut()) {
            *word = pattern(start + i * 8);
        }
    }
    // Most of it is in swap now: the host looks (meminfo, check) before it comes back.
    syscall(SYS_KVM_MM_CHECKPOINT, [0; 6]);
    if rt::arg_value("fork") != Some(1) {
        let bad = bad_words(base, 0..areas);
        report("", mib, areas, bad);
        return i32::from(bad != 0);
    }
    // Two flags in a page both processes share: the child has read; the parent has.
    let flags = match rt::SharedFlags::new() {
        Ok(flags) => flags,
        Err(err) => {
            println!("swap-pattern: no shared page: {err}");
            return 1;
        }
    };
    let child = rt::fork();
    if child < 0 {
        println!("swap-pattern: fork failed: {child}");
        return 1;
    }
    if child == 0 {
        let mut bad = bad_words(base, 0..1);
        // Both processes hold their entries, the first area in the swap cache.
        syscall(SYS_KVM_MM_CHECKPOINT, [0; 6]);
        flags.set(0);
        flags.wait_for(1);
        bad += bad_words(base, 0..areas);
        report("child ", mib, areas, bad);
        return i32::from(bad != 0);
    }
    flags.wait_for(0);
    let mut bad = bad_words(base, 0..1);
    // The first area came from the swap cache: the host compares the swap-ins.
    syscall(SYS_KVM_MM_CHECKPOINT, [0; 6]);
    bad += bad_words(base, 0..areas);
    flags.set(1);
    let (_, status) = rt::wait(child);
    report("parent ", mib, areas, bad);
    i32::from(bad != 0 || status != 0)
}

/// Words of the areas `areas` (in that order) from `base` that do not hold their pattern.
fn bad_words(base: u64, areas: impl Iterator<Item = u64>) -> u64 {
    let stride = (AREA + 1) * PAGE;
    let mut bad = 0u64;
    for area in areas {
        // SAFETY: an area mapped read-write by `main`, only read through this slice.
        let words = unsafe { rt::words(base + area * stride, AREA) };
        let start = base + area * stride;
        for (i, word) in (0..).zip(words.iter()) {
            bad += u64::from(*word != pattern(start + i * 8));
        }
    }
    bad
}

/// Reports "[who]mib=.. pages=.. bad_words=..".
fn report(who: &str, mib: u64, areas: u64, bad: u64) {
    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!("{who}mib={mib} pages={} bad_words={bad}", areas * AREA),
    );
    rt::report(line.as_bytes());
}
