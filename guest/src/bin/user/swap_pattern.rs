//! `swap-pattern`: touches `mib=` MiB of anonymous memory (twice the guest's RAM, which
//! the kernel passes) with a pattern, every word, then reads every word back: most of it
//! must have gone to swap and come back. Between the two it stops at a checkpoint for
//! the host. The memory is mapped in 1 MiB areas with a
//! `PROT_NONE` page between them, so that no area can hold a transparent huge page
//! (reclaim does not split those yet). The kernel's report counts the faults; its vmstat
//! counts the pages swapped.
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
    let mut bad = 0u64;
    for area in 0..areas {
        // SAFETY: as above.
        let words = unsafe { rt::words(base + area * stride, AREA) };
        let start = base + area * stride;
        for (i, word) in (0..).zip(words.iter()) {
            bad += u64::from(*word != pattern(start + i * 8));
        }
    }
    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!("mib={mib} pages={} bad_words={bad}", areas * AREA),
    );
    rt::report(line.as_bytes());
    i32::from(bad != 0)
}
