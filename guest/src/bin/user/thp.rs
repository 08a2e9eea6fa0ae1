//! `thp`: touches `ops=` MiB (64 by default) of anonymous memory, one word a page, so that
//! the kernel can serve it with transparent huge pages; stops at a checkpoint for the host
//! (`smaps` shows them as AnonHugePages); then cuts two of them, with a `munmap` of one
//! page and an `mprotect` of half of another, which splits them, and checks that every
//! word it wrote is still there. Last, a child writes into a third huge page it shares
//! with its parent (copy-on-write of the whole 2 MiB) and stops at a checkpoint, with
//! whole, split and shared huge pages for the host to check; the parent's words stay. The
//! kernel's report counts the faults.
#![no_std]
#![no_main]

#[macro_use]
mod rt;

use rt::syscall;
use shared::syscall::*;

const HUGE: u64 = 2 << 20;
const PAGE: u64 = 4096;

/// The word written at the start of page `index`.
fn pattern(index: u64) -> u64 {
    index ^ 0x7e57_0000_0000
}

fn main() -> i32 {
    let mib = rt::arg_value("ops").unwrap_or(64).max(4);
    let len = mib << 20;
    // One huge page more than asked, so that an aligned run of `len` fits inside.
    let addr = rt::mmap((len + HUGE) / PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    if addr < 0 {
        println!("thp: mmap of {mib} MiB failed: {addr}");
        return 1;
    }
    let base = (addr as u64).next_multiple_of(HUGE);
    let pages = len / PAGE;
    let word = |index: u64| (base + index * PAGE) as *mut u64;
    for index in 0..pages {
        // SAFETY: inside the area just mapped read-write.
        unsafe { core::ptr::write_volatile(word(index), pattern(index)) };
    }
    syscall(SYS_KVM_MM_CHECKPOINT, [0; 6]);

    // A hole in the first huge page, and the second half of the second made read-only.
    let hole = 10;
    let unmapped = syscall(SYS_MUNMAP, [base + hole * PAGE, PAGE, 0, 0, 0, 0]);
    let read_only = HUGE / PAGE + HUGE / PAGE / 2;
    let protected = syscall(SYS_MPROTECT, [base + read_only * PAGE, HUGE / 2, PROT_READ, 0, 0, 0]);
    let mut intact = true;
    for index in (0..pages).filter(|&i| i != hole) {
        // SAFETY: mapped and readable (all but the hole).
        intact &= unsafe { core::ptr::read_volatile(word(index)) } == pattern(index);
    }
    // The split pages are still writable where their VMA says so.
    // SAFETY: the page after the hole is mapped read-write.
    unsafe { core::ptr::write_volatile(word(hole + 1), pattern(hole + 1)) };

    // A child's write to the third huge page copies it whole; the parent's stays.
    let third = 2 * HUGE / PAGE + 5;
    let child = rt::fork();
    if child == 0 {
        // SAFETY: mapped read-write, shared copy-on-write with the parent.
        unsafe { core::ptr::write_volatile(word(third), 0) };
        syscall(SYS_KVM_MM_CHECKPOINT, [0; 6]);
        rt::exit(0);
    }
    let (reaped, status) = rt::wait(child);
    // SAFETY: mapped and readable.
    intact &= reaped == child
        && status == 0
        && unsafe { core::ptr::read_volatile(word(third)) } == pattern(third);

    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            "mib={mib} pages={pages} munmap={unmapped} mprotect={protected} intact={}",
            u8::from(intact)
        ),
    );
    rt::report(line.as_bytes());
    i32::from(!(intact && unmapped == 0 && protected == 0))
}
