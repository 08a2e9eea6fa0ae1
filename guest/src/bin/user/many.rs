//! `many-processes`: 100 processes of 100 VMAs each, alive at once at a checkpoint, for
//! the host's `ps`, `maps` and `check` at scale. The parent maps 95 one-page areas (which
//! with its image, stack and a shared page make 100 VMAs) and touches them, forks 99
//! children, which wait on a flag in shared memory, yielding, and stops at a checkpoint;
//! then it raises the flag and reaps them all.
#![no_std]
#![no_main]

#[macro_use]
mod rt;

use rt::syscall;
use shared::syscall::*;

/// Processes alive at the checkpoint.
const PROCESSES: u64 = 100;
/// One-page areas the parent maps (its other VMAs: three image segments, the stack and
/// the flag).
const AREAS: u64 = 95;
/// Where the areas go, one page apart so that none merge.
const BASE: u64 = 0x5000_0000;

fn main() -> i32 {
    let flag = rt::mmap(1, PROT_READ | PROT_WRITE, MAP_SHARED);
    if flag < 0 {
        return 1;
    }
    let flag = flag as *mut u64;
    for i in 0..AREAS {
        let addr = BASE + 2 * i * 4096;
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
        if syscall(SYS_MMAP, [addr, 4096, PROT_READ | PROT_WRITE, flags, u64::MAX, 0]) < 0 {
            return 1;
        }
        // SAFETY: the page was just mapped read-write.
        unsafe { core::ptr::write_volatile(addr as *mut u64, i) };
    }
    for _ in 1..PROCESSES {
        match rt::fork() {
            0 => {
                // SAFETY: the flag page is shared and mapped read-write in every process.
                while unsafe { core::ptr::read_volatile(flag) } == 0 {
                    syscall(SYS_SCHED_YIELD, [0; 6]);
                }
                rt::exit(0);
            }
            child if child < 0 => return 1,
            _ => {}
        }
    }
    syscall(SYS_KVM_MM_CHECKPOINT, [0; 6]);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(flag, 1) };
    let mut reaped = 0;
    while rt::wait(-1).0 > 0 {
        reaped += 1;
    }
    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!("processes={PROCESSES} areas={AREAS} reaped={reaped}"),
    );
    rt::report(line.as_bytes());
    i32::from(reaped != PROCESSES - 1)
}
