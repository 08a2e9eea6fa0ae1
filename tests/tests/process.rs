//! User processes end to end: a program loaded from its ELF image runs at CPL3, makes
//! system calls through the trampoline, takes demand-zero faults, and gives every page back
//! when it exits.

use kvm_mm_tests::{boot, config};
use shared::hypercall::ProcessReport;
use shared::syscall::SyscallEntry;
use vmm::{ExitReason, Report};

#[test]
fn user_hello_runs_its_system_calls_and_gives_its_memory_back() {
    let outcome = boot(&config("user-hello"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert!(outcome.console.contains("hello from user space: pid 1\n"), "{}", outcome.console);

    // What the program saw, checked in user mode and reported through our system call.
    let user: Vec<&str> = outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::User { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(user, ["pid=1 heap=1 mmap=1 munmap=0 ebadf=-9 enosys=-38"]);

    let process: Vec<ProcessReport> = outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::Process(p) => Some(*p),
            _ => None,
        })
        .collect();
    let [p] = process.as_slice() else { panic!("one process report: {process:?}") };
    assert_eq!((p.pid, p.exit_code, p.signal), (1, 0, 0));
    // getpid, brk ×2, mmap, munmap, write ×4 (two lines, a bad fd), ENOSYS, report,
    // exit_group: the program's calls, counted by the kernel.
    assert_eq!(p.syscalls, 11);
    // 4 heap pages and 16 mmap pages on first touch, and the stack's first page; the image
    // is filled at load.
    assert_eq!(p.page_faults, 21);
    assert_eq!(p.pages_zeroed, p.page_faults + image_pages(), "faults plus the image");
    assert_eq!(p.hiwater_rss_pages, p.pages_zeroed, "no page was freed before the end");
    // Image (3 segments), heap, stack; the mmap area was unmapped.
    assert_eq!(p.map_count, 5);

    // The entry the probe chose is in the boot log and the report.
    let entry = SyscallEntry::from_raw(p.syscall_entry).expect("a known entry");
    assert_ne!(entry, SyscallEntry::Unprobed);
    assert!(outcome.console.contains(&format!("syscall entry: {} (probed)", entry.name())));

    // Exit gave back every page and table (the kernel's own check, reported as a test).
    let checks: Vec<(&str, bool)> = outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::Test { name, passed, .. } => Some((name.as_str(), *passed)),
            _ => None,
        })
        .collect();
    assert_eq!(checks, [("process memory given back", true)]);
}

/// Pages of the `user-hello` image's segments, from its ELF file.
fn image_pages() -> u64 {
    let program = guest::elf::Program::parse(vmm::vm::USER_HELLO).expect("a valid image");
    program.segments().iter().map(|s| (s.pages().1 - s.pages().0) / 4096).sum()
}
