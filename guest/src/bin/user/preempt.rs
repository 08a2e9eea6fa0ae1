//! `preempt`: processes that never trap hand a token round. The parent forks two children;
//! the three wait for their turn by spinning at CPL3 on a word of shared memory, with no
//! system call and no fault, then pass the token on. Only the timer can take the CPU from
//! a spinning process, so the passes between the processes' turns each need a preemption
//! (six of the nine: the first pass needs none, and the last two follow the parent's
//! `wait4` and a child's exit): the run finishes only if the kernel preempts. Each process gives up after about 20 s of spinning (`rdtsc`), so a
//! kernel without preemption fails the run instead of hanging it.
#![no_std]
#![no_main]
#![expect(clippy::cast_possible_truncation, reason = "user programs are x86_64: usize is 64 bits")]

#[macro_use]
mod rt;

use core::arch::x86_64::_rdtsc;
use core::sync::atomic::{AtomicU64, Ordering};
use shared::syscall::*;

/// Processes passing the token: the parent and its children.
const PROCESSES: u64 = 3;
/// Turns each process takes.
const ROUNDS: u64 = 3;
/// TSC cycles a process spins before it gives up (about 20 s at 3 GHz).
const PATIENCE: u64 = 1 << 36;

/// Takes process `index`'s turns; returns whether each came before its patience ran out.
fn take_turns(turn: &AtomicU64, index: u64) -> bool {
    for round in 0..ROUNDS {
        let mine = round * PROCESSES + index;
        // SAFETY: `rdtsc` only reads the time-stamp counter.
        let start = unsafe { _rdtsc() };
        while turn.load(Ordering::Acquire) != mine {
            // SAFETY: as above.
            if unsafe { _rdtsc() } - start > PATIENCE {
                return false;
            }
            core::hint::spin_loop();
        }
        turn.store(mine + 1, Ordering::Release);
    }
    true
}

fn main() -> i32 {
    let shared = rt::mmap(1, PROT_READ | PROT_WRITE, MAP_SHARED);
    if shared < 0 {
        println!("preempt: mmap failed: {shared}");
        return 1;
    }
    // SAFETY: the kernel just mapped a read-write page at `shared`, which every process
    // forked from here shares; the word is only touched atomically.
    let turn = unsafe { &*(shared as *const AtomicU64) };
    let mut children = [0i64; PROCESSES as usize - 1];
    for (index, child) in (1..).zip(children.iter_mut()) {
        *child = rt::fork();
        if *child == 0 {
            rt::exit(i32::from(!take_turns(turn, index)));
        }
    }
    let mine_ok = take_turns(turn, 0);
    let mut children_ok = 0;
    for &child in &children {
        let (reaped, status) = rt::wait(child);
        children_ok += u64::from(child > 0 && reaped == child && status == 0);
    }
    let passes = turn.load(Ordering::Acquire);
    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!("passes={passes} children_ok={children_ok}/{}", PROCESSES - 1),
    );
    rt::report(line.as_bytes());
    println!("preempt done");
    i32::from(!(mine_ok && children_ok == PROCESSES - 1 && passes == PROCESSES * ROUNDS))
}
