//! `user-hello`: the first user program. Prints a greeting with its PID, grows its heap
//! with `brk`, maps anonymous memory, writes and checks a pattern in both, and reports
//! what it saw to the host.
#![no_std]
#![no_main]

#[macro_use]
mod rt;

use rt::syscall;
use shared::syscall::*;

/// Pages of the anonymous mapping it writes.
const PAGES: u64 = 16;

fn main() -> i32 {
    let pid = syscall(SYS_GETPID, [0; 6]);
    println!("hello from user space: pid {pid}");

    // The heap: brk(0) is the current break; move it up by 4 pages and write there.
    let base = syscall(SYS_BRK, [0; 6]) as u64;
    let top = syscall(SYS_BRK, [base + 4 * 4096, 0, 0, 0, 0, 0]) as u64;
    let heap_ok = top == base + 4 * 4096 && fill_and_check(base, 4, 0x1111);

    let len = PAGES * 4096;
    let prot = PROT_READ | PROT_WRITE;
    let addr = syscall(SYS_MMAP, [0, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, u64::MAX, 0]);
    let mmap_ok = addr > 0 && fill_and_check(addr as u64, PAGES, 0x2222);
    let unmapped = syscall(SYS_MUNMAP, [addr as u64, len, 0, 0, 0, 0]);
    let bad_fd = syscall(SYS_WRITE, [7, 0, 0, 0, 0, 0]);
    let bad_nr = syscall(4242, [0; 6]);

    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            "pid={pid} heap={} mmap={} munmap={unmapped} ebadf={bad_fd} enosys={bad_nr}",
            u8::from(heap_ok),
            u8::from(mmap_ok)
        ),
    );
    let report = line.as_bytes();
    rt::report(report);
    println!("user-hello done");
    if heap_ok && mmap_ok && unmapped == 0 && bad_fd == -EBADF && bad_nr == -ENOSYS {
        0
    } else {
        1
    }
}

/// Writes a pattern into `pages` pages at `addr` (each first touch is a demand-zero
/// fault), then checks that the pages were zero before and hold the pattern after.
fn fill_and_check(addr: u64, pages: u64, seed: u64) -> bool {
    let words = (pages * 4096 / 8) as usize;
    // SAFETY: the kernel mapped `pages` pages read-write at `addr` for this process.
    let memory = unsafe { core::slice::from_raw_parts_mut(addr as *mut u64, words) };
    let zero = memory.iter().step_by(512).all(|&w| w == 0);
    for (i, word) in memory.iter_mut().enumerate() {
        *word = seed ^ i as u64;
    }
    zero && memory.iter().enumerate().all(|(i, &w)| w == seed ^ i as u64)
}
