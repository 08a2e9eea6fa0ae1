//! `fork-cow`: copy-on-write across `fork`. The parent fills an anonymous area with a
//! pattern and forks children one at a time; each child checks it sees the parent's
//! pattern, writes its own share of the pages and checks the rest are untouched, while the
//! parent waits. Afterwards the parent finds its own pages as it left them and, as their
//! last sharer, rewrites them all without a copy. A last child exits with a status the
//! parent checks, and `wait4` without children fails.
//!
//! Each child writes [`PER_CHILD`] pages its parent still maps: exactly that many copies.
//! The kernel counts copies and reuses per process (its `ProcessReport`); the end-to-end
//! test holds them to these numbers.
#![no_std]
#![no_main]
#![expect(clippy::cast_possible_truncation, reason = "user programs are x86_64: usize is 64 bits")]

#[macro_use]
mod rt;

use rt::syscall;
use shared::syscall::*;

/// Pages of the shared area.
const PAGES: u64 = 64;
/// Children forked, one after the other.
const CHILDREN: u64 = 4;
/// Pages each child writes: its own slice of the area.
const PER_CHILD: u64 = PAGES / CHILDREN;

/// Word `word` of page `page` in generation `generation` of the pattern.
fn pattern(generation: u64, page: u64, word: u64) -> u64 {
    generation << 56 ^ page << 20 ^ word ^ 0x5a5a_0000_0000
}

/// Writes generation `generation` into pages `pages` of the area.
fn fill(area: &mut [u64], pages: core::ops::Range<u64>, generation: u64) {
    for page in pages {
        for word in 0..512 {
            area[(page * 512 + word) as usize] = pattern(generation, page, word);
        }
    }
}

/// Whether pages `pages` hold generation `generation`.
fn holds(area: &[u64], pages: core::ops::Range<u64>, generation: u64) -> bool {
    pages.into_iter().all(|page| {
        (0..512).all(|word| area[(page * 512 + word) as usize] == pattern(generation, page, word))
    })
}

/// Child `index`: sees generation 0, writes generation `index + 1` into its slice. The
/// first child then stops at a checkpoint, where the host may inspect both processes.
fn child(area: &mut [u64], index: u64) -> i32 {
    let saw_parent = holds(area, 0..PAGES, 0);
    let mine = index * PER_CHILD..(index + 1) * PER_CHILD;
    fill(area, mine.clone(), index + 1);
    if index == 0 {
        syscall(SYS_KVM_MM_CHECKPOINT, [0; 6]);
    }
    let kept_rest = holds(area, 0..mine.start, 0) && holds(area, mine.end..PAGES, 0);
    let ok = saw_parent && holds(area, mine, index + 1) && kept_rest;
    i32::from(!ok)
}

fn main() -> i32 {
    let pid = syscall(SYS_GETPID, [0; 6]);
    let addr = rt::mmap(PAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    if addr < 0 {
        println!("fork-cow: mmap failed: {addr}");
        return 1;
    }
    // SAFETY: the kernel just mapped PAGES read-write pages at `addr` for this process.
    let area = unsafe { rt::words(addr as u64, PAGES) };
    fill(area, 0..PAGES, 0);

    let mut children_ok = 0;
    for index in 0..CHILDREN {
        let child_pid = rt::fork();
        if child_pid == 0 {
            let parent_seen = syscall(SYS_GETPPID, [0; 6]) == pid;
            rt::exit(if parent_seen { child(area, index) } else { 2 });
        }
        let (reaped, status) = rt::wait(child_pid);
        children_ok += u64::from(child_pid > 0 && reaped == child_pid && status == 0);
    }
    // The children's writes went to their copies.
    let intact = holds(area, 0..PAGES, 0);
    // Every sharer is gone: the parent keeps each page as it writes it.
    fill(area, 0..PAGES, 9);
    let rewritten = holds(area, 0..PAGES, 9);

    // A child's exit code comes back through wait4's status (bits 8–15).
    let last = rt::fork();
    if last == 0 {
        rt::exit(7);
    }
    let (_, status) = rt::wait(-1);
    let (no_child, _) = rt::wait(-1);

    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            "children_ok={children_ok}/{CHILDREN} parent_intact={} rewritten={} status={status:#x} echild={no_child}",
            u8::from(intact),
            u8::from(rewritten)
        ),
    );
    rt::report(line.as_bytes());
    println!("fork-cow done");
    let ok = children_ok == CHILDREN && intact && rewritten && status == 7 << 8;
    i32::from(!(ok && no_child == -ECHILD))
}
