//! `oom-kill`: a hog and a bystander. The bystander (`oom_score_adj` -200) writes a
//! pattern over 64 pages and waits; the hog (`oom_score_adj` 500) touches `mib=` MiB, more
//! than RAM and swap hold, until the OOM killer kills it. Then the bystander checks its
//! pattern, which may have gone to swap and come back, and exits. With `bystander=0` there
//! is only the hog (`alloc-oom`).
//!
//! With `grower=1` (`oom-retry`) the killer's victim is not the process whose fault ran
//! out: see [`hog_and_grower`].
//!
//! The parent is init, which the OOM killer never picks. It reports
//! "hog=PID hog_status=S bystander=PID bystander_status=S" (statuses as `wait4` gives
//! them: 9 for SIGKILL, the exit code in bits 8–15 otherwise, which for the bystander is
//! the number of words it found changed, at most 100; PID 0 for no bystander) and exits 0
//! when the hog was killed by SIGKILL and the bystander finished cleanly.
//!
//! The hog maps 1 MiB areas one after the other, so that no area holds a transparent
//! huge page: each page it touches costs a fault, and the kill comes after as many faults
//! as pages, however reclaim treats huge pages.
#![no_std]
#![no_main]

#[macro_use]
mod rt;

use rt::syscall;
use shared::syscall::*;

const PAGE: u64 = 4096;
/// The bystander's pages.
const BYSTANDER_PAGES: u64 = 64;
/// Pages of one hog area.
const AREA: u64 = 256;

/// The word the bystander keeps at `addr`.
fn pattern(addr: u64) -> u64 {
    addr.rotate_left(29) ^ 0xb157_a4de_0000_0001
}

/// The shared flags: the bystander's pattern (or the hog's memory) is in place; the hog is
/// gone; the grower is done.
const READY: usize = 0;
const HOG_GONE: usize = 1;
const GROWER_DONE: usize = 2;

fn oom_score_adj(value: i64) -> i64 {
    syscall(SYS_KVM_MM_OOM_SCORE_ADJ, [value as u64, 0, 0, 0, 0, 0])
}

/// The bystander: its pattern, then a wait for the hog's end, then the check. Returns the
/// words that differ (or 1 000 000 when it could not start).
fn bystander(flags: rt::SharedFlags) -> u64 {
    if oom_score_adj(1001) != -EINVAL || oom_score_adj(-1001) != -EINVAL {
        println!("oom-kill: an oom_score_adj out of range was taken");
        return 1_000_000;
    }
    if oom_score_adj(-200) != 0 {
        return 1_000_000;
    }
    let base = rt::mmap(BYSTANDER_PAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    if base < 0 {
        return 1_000_000;
    }
    let base = base as u64;
    // SAFETY: pages mapped read-write just now, only reached through this slice.
    let words = unsafe { rt::words(base, BYSTANDER_PAGES) };
    for (i, word) in (0..).zip(words.iter_mut()) {
        *word = pattern(base + i * 8);
    }
    flags.set(READY);
    flags.wait_for(HOG_GONE);
    (0..).zip(words.iter()).filter(|&(i, word)| *word != pattern(base + i * 8)).count() as u64
}

/// Touches `mib` MiB of fresh 1 MiB areas, a page at a time; `false` if an area could not
/// be mapped.
fn touch(who: &str, mib: u64) -> bool {
    for area in 0..mib {
        let at = rt::mmap(AREA, PROT_READ | PROT_WRITE, MAP_PRIVATE);
        if at < 0 {
            println!("oom-kill: the {who}'s area {area} could not be mapped: {at}");
            return false;
        }
        for page in 0..AREA {
            // SAFETY: a page of the area just mapped read-write.
            unsafe { core::ptr::write_volatile((at as u64 + page * PAGE) as *mut u64, page) };
        }
    }
    true
}

/// The hog: touches `mib` MiB until killed. Returns only if it was not.
fn hog(mib: u64) -> i32 {
    if oom_score_adj(500) != 0 || !touch("hog", mib) {
        return 2;
    }
    3
}

/// `grower=1` (`oom-retry`): a hog (`oom_score_adj` 500) takes three quarters of the
/// `mib` MiB of RAM and waits; then a grower touches half of it. The grower's fault runs
/// out of memory, the OOM killer kills the waiting hog, not the grower, and the grower's
/// fault is retried and served. Reports "hog=PID hog_status=S grower=PID grower_status=S".
fn hog_and_grower(mib: u64, flags: rt::SharedFlags) -> i32 {
    let hog_pid = rt::fork();
    if hog_pid == 0 {
        if oom_score_adj(500) != 0 || !touch("hog", mib * 3 / 4) {
            rt::exit(2);
        }
        flags.set(READY);
        // Waits, runnable, for the kill (or, if none came, for the grower's end).
        flags.wait_for(GROWER_DONE);
        rt::exit(3);
    }
    flags.wait_for(READY);
    let grower_pid = rt::fork();
    if grower_pid == 0 {
        let touched = touch("grower", mib / 2);
        flags.set(GROWER_DONE);
        rt::exit(if touched { 0 } else { 2 });
    }
    let (_, hog_status) = rt::wait(hog_pid);
    let (_, grower_status) = rt::wait(grower_pid);
    report(hog_pid, hog_status, ("grower", grower_pid, grower_status))
}

/// Reports "hog=PID hog_status=S OTHER=PID OTHER_status=S" and returns the exit code: 0
/// when the hog died of SIGKILL and the other process exited cleanly.
fn report(hog_pid: i64, hog_status: u32, (other, pid, status): (&str, i64, u32)) -> i32 {
    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!("hog={hog_pid} hog_status={hog_status} {other}={pid} {other}_status={status}"),
    );
    rt::report(line.as_bytes());
    i32::from(hog_status != 9 || status != 0)
}

fn main() -> i32 {
    let mib = rt::arg_value("mib").unwrap_or(64).max(1);
    let with_bystander = rt::arg_value("bystander").unwrap_or(1) != 0;
    let flags = match rt::SharedFlags::new() {
        Ok(flags) => flags,
        Err(err) => {
            println!("oom-kill: no shared page: {err}");
            return 1;
        }
    };
    if rt::arg_value("grower") == Some(1) {
        return hog_and_grower(mib, flags);
    }
    let mut bystander_pid = 0;
    if with_bystander {
        bystander_pid = rt::fork();
        if bystander_pid == 0 {
            let bad = bystander(flags);
            rt::exit(i32::try_from(bad.min(100)).unwrap_or(100));
        }
        flags.wait_for(READY);
    }
    let hog_pid = rt::fork();
    if hog_pid == 0 {
        rt::exit(hog(mib));
    }
    let (_, hog_status) = rt::wait(hog_pid);
    flags.set(HOG_GONE);
    let (_, bystander_status) = if with_bystander { rt::wait(bystander_pid) } else { (0, 0) };
    report(hog_pid, hog_status, ("bystander", bystander_pid, bystander_status))
}
