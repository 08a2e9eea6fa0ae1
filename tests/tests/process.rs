//! User processes end to end: a program loaded from its ELF image runs at CPL3, makes
//! system calls through the trampoline, takes demand-zero faults, forks children that
//! share its pages copy-on-write, reaps them with `wait4`, survives children the kernel
//! kills for bad accesses, and gives every page back when the last process exits.

use kvm_mm_tests::{boot, config, user_reports};
use shared::hypercall::ProcessReport;
use shared::syscall::SyscallEntry;
use vmm::{ExitReason, Outcome, Report};

/// The kernel's reports of the processes that ended, in the order they ended.
fn process_reports(outcome: &Outcome) -> Vec<ProcessReport> {
    outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::Process(p) => Some(*p),
            _ => None,
        })
        .collect()
}

/// The guest's own checks, by name.
fn checks(outcome: &Outcome) -> Vec<(&str, bool)> {
    outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::Test { name, passed, .. } => Some((name.as_str(), *passed)),
            _ => None,
        })
        .collect()
}

#[test]
fn user_hello_runs_its_system_calls_and_gives_its_memory_back() {
    let outcome = boot(&config("user-hello"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert!(outcome.console.contains("hello from user space: pid 1\n"), "{}", outcome.console);

    // What the program saw, checked in user mode and reported through our system call.
    let user = user_reports(&outcome);
    assert_eq!(user, ["pid=1 heap=1 mmap=1 munmap=0 ebadf=-9 enosys=-38"]);

    let process = process_reports(&outcome);
    let [p] = process.as_slice() else { panic!("one process report: {process:?}") };
    assert_eq!((p.pid, p.ppid, p.exit_code, p.signal), (1, 0, 0, 0));
    assert_eq!((p.cow_copies, p.cow_reused), (0, 0), "no fork, no copy-on-write");
    // getpid, brk ×2, mmap, munmap, write ×4 (two lines, a bad fd), ENOSYS, report,
    // exit_group: the program's calls, counted by the kernel.
    assert_eq!(p.syscalls, 11);
    // 4 heap pages and 16 mmap pages on first touch, and every page of the image, which
    // comes from the ELF file on first touch too. The stack's top page (the arguments) is
    // filled at load.
    assert_eq!(p.page_faults, 20 + image_pages());
    // Each new page was zeroed, or known zero already (RAM never written since boot).
    let new_pages = p.pages_zeroed + p.pages_known_zero;
    assert_eq!(new_pages, p.page_faults + 1, "faults, and the stack");
    assert_eq!(p.hiwater_rss_pages, new_pages, "no page was freed before the end");
    // Image (3 segments), heap, stack; the mmap area was unmapped.
    assert_eq!(p.map_count, 5);

    // The entry the probe chose is in the boot log and the report.
    let entry = SyscallEntry::from_raw(p.syscall_entry).expect("a known entry");
    assert_ne!(entry, SyscallEntry::Unprobed);
    assert!(outcome.console.contains(&format!("syscall entry: {} (probed)", entry.name())));

    // Exit gave back every page and table (the kernel's own check, reported as a test).
    assert_eq!(checks(&outcome), [("process memory given back", true)]);
}

/// Pages of `fork-cow`'s area, children it forks to write it, and pages each writes.
const AREA_PAGES: u64 = 64;
const WRITERS: usize = 4;
const PER_WRITER: u64 = AREA_PAGES / WRITERS as u64;

#[test]
fn fork_cow_copies_exactly_the_pages_written_after_each_fork() {
    let outcome = boot(&config("fork-cow"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    // Checked in user mode: each child saw the parent's pattern and kept its writes to
    // itself, the parent's pages came through intact, and wait4 gave exit statuses.
    assert_eq!(
        user_reports(&outcome),
        ["children_ok=4/4 parent_intact=1 rewritten=1 status=0x700 echild=-10"]
    );
    let reports = process_reports(&outcome);
    // The writers, the child that exits with 7, then the parent: each reaped in turn.
    let pids: Vec<(u32, u32, i32)> = reports.iter().map(|p| (p.pid, p.ppid, p.exit_code)).collect();
    assert_eq!(pids, [(2, 1, 0), (3, 1, 0), (4, 1, 0), (5, 1, 0), (6, 1, 7), (1, 0, 0)]);
    let (writers, rest) = reports.split_at(WRITERS);
    let (last_child, parent) = (&rest[0], &rest[1]);
    // Every process uses one stack page, shared again at each fork. The parent writes it
    // first (returning from fork), so the parent copies it and the child, its last sharer
    // by then, keeps it.
    let forks = WRITERS as u64 + 1;
    for child in writers {
        // Its slice of the area, which the parent (asleep in wait4) still maps: one copy
        // per page written. Every other fault was a first touch of a page of the image
        // the parent had not touched (the child's own code), which comes from the file.
        assert_eq!((child.cow_copies, child.cow_reused), (PER_WRITER, 1), "{child:?}");
        let first_touches = child.page_faults - child.cow_copies - child.cow_reused;
        let new_pages = child.pages_zeroed + child.pages_known_zero;
        assert_eq!(first_touches, new_pages, "{child:?}");
        assert!(new_pages <= image_pages(), "{child:?}");
    }
    assert_eq!((last_child.cow_copies, last_child.cow_reused), (0, 1));
    // The parent: the stack page once per fork; then, every child gone, it rewrites the
    // whole area and keeps each page, copying none.
    assert_eq!((parent.cow_copies, parent.cow_reused), (forks, AREA_PAGES));
    let copies: u64 = reports.iter().map(|p| p.cow_copies).sum();
    assert_eq!(copies, AREA_PAGES + forks, "copies = pages written while shared");
    // When every process has exited, the allocators are back where they were.
    assert_eq!(checks(&outcome), [("process memory given back", true)]);
}

#[test]
fn user_hostile_children_are_killed_with_the_right_signal_and_bad_calls_fail() {
    let outcome = boot(&config("user-hostile"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    let user = user_reports(&outcome);
    let [report] = user.as_slice() else { panic!("one user report: {user:?}") };
    let results: Vec<(&str, i64)> = report
        .split_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name, value.parse().expect("a number"))
        })
        .collect();
    let (segv, ill, fpe) = (11, 4, 8);
    let (efault, einval, enomem, echild) = (-14, -22, -12, -10);
    assert_eq!(
        results,
        [
            // Bad accesses, each in a child: the signal wait4 reported.
            ("null-read", segv),
            ("kernel-write", segv),
            ("kernel-jump", segv),
            ("stack-exec", segv),
            ("text-write", segv),
            ("prot-none-read", segv),
            ("stack-guard", segv),
            ("privileged", segv),
            ("ud2", ill),
            ("divide-by-zero", fpe),
            // Bad system-call arguments: Linux's errors.
            ("wait4-kernel-status", efault),
            ("wait4-read-only-status", efault),
            ("reaped-all", echild),
            ("madvise-dontneed-text", 0),
            ("mprotect-wrapping", enomem),
            ("madvise-hint-unmapped", enomem),
            ("brk-wrapping", 0),
            ("write-prot-none-buf", efault),
            ("write-kernel-buf", efault),
            ("write-unmapped-buf", efault),
            ("mmap-no-sharing", einval),
            ("mmap-zero-len", einval),
            ("mmap-fixed-kernel", enomem),
            ("mmap-huge", enomem),
            ("munmap-misaligned", einval),
            ("mprotect-unmapped", enomem),
            ("mprotect-kernel", enomem),
            ("madvise-bad-advice", einval),
            ("wait4-no-child", echild),
            ("report-kernel-buf", efault),
        ]
    );
    // The kernel's side: a report per killed child with the signal and, for page faults,
    // the address; and Linux's line on the console.
    let killed: Vec<(u32, u64)> = process_reports(&outcome)
        .iter()
        .filter(|p| p.signal != 0)
        .map(|p| (p.signal, p.fault_address))
        .collect();
    let (page_offset, kernel_text) =
        (shared::layout::PAGE_OFFSET, shared::layout::KERNEL_VIRT_BASE);
    assert_eq!(killed.len(), 10, "{killed:?}");
    assert_eq!(&killed[..3], [(11, 0), (11, page_offset), (11, kernel_text)]);
    assert_eq!(&killed[7..], [(11, 0), (4, 0), (8, 0)]);
    for line in [
        "user-hostile[2]: segfault at 0x0 ip",
        "error 4 (no VMA) in [image]",
        &format!("user-hostile[3]: segfault at {page_offset:#x}"),
        &format!("user-hostile[4]: segfault at {kernel_text:#x} ip {kernel_text:#018x}"),
        "(access denied by the VMA) in [stack]",
        "traps: user-hostile[9] general protection fault ip:",
        "traps: user-hostile[10] trap invalid opcode ip:",
        "traps: user-hostile[11] trap divide error ip:",
        "user-hostile done: the kernel survived",
    ] {
        assert!(outcome.console.contains(line), "{line:?} in:\n{}", outcome.console);
    }
    assert_eq!(checks(&outcome), [("process memory given back", true)]);
}

/// Pages of the `user-hello` image's segments, from its ELF file.
fn image_pages() -> u64 {
    let program = guest::elf::Program::parse(vmm::vm::USER_HELLO).expect("a valid image");
    program.segments().iter().map(|s| (s.pages().1 - s.pages().0) / 4096).sum()
}

#[test]
fn mmap_stress_matches_its_model_over_ten_thousand_operations() {
    let config = config("mmap-stress");
    let cmdline = format!("{} seed=7 ops=10000", config.cmdline);
    let outcome = boot(&vmm::VmConfig { cmdline, ..config });
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    let user = user_reports(&outcome);
    let [report] = user.as_slice() else { panic!("one user report: {user:?}") };
    let counts: Vec<(&str, u64)> = report
        .split_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name, value.parse().expect("a number"))
        })
        .collect();
    let count = |name: &str| counts.iter().find(|(n, _)| *n == name).map(|&(_, v)| v);
    assert_eq!(
        (count("seed"), count("ops"), count("mismatches")),
        (Some(7), Some(10_000), Some(0))
    );
    // Every kind of operation ran many times, errors included.
    for kind in ["mmap", "munmap", "mprotect", "madvise", "reads", "writes", "refused"] {
        assert!(count(kind).is_some_and(|n| n >= 400), "{kind} in {report}");
    }
    // Each probe's child was killed; the parent was not.
    let processes = process_reports(&outcome);
    let probes = count("probes").expect("probes");
    assert!(probes >= 20, "{report}");
    let (parent, children): (Vec<&ProcessReport>, Vec<&ProcessReport>) =
        processes.iter().partition(|p| p.pid == 1);
    assert_eq!(children.len() as u64, probes);
    assert!(children.iter().all(|c| c.signal == 11 && c.ppid == 1), "{children:?}");
    assert_eq!((parent[0].exit_code, parent[0].signal), (0, 0));
    assert_eq!(checks(&outcome), [("process memory given back", true)]);
}

#[test]
fn user_cost_times_each_kind_of_round_trip_from_user_mode() {
    let outcome = boot(&config("user-cost"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    let user = user_reports(&outcome);
    let [report] = user.as_slice() else { panic!("one user report: {user:?}") };
    let cycles: Vec<(&str, u64)> = report
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name, value.parse().expect("a number")))
        .collect();
    let names: Vec<&str> = cycles.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["rounds", "getpid", "demand-zero", "cow", "empty", "loop"], "{report}");
    // Not a timing check: a round trip through the kernel takes longer than no round trip.
    let empty = cycles[4].1;
    assert!(cycles[1..4].iter().all(|&(_, c)| c > empty), "{report}");
    // The child's timed writes were copies: the parent still mapped every page.
    let processes = process_reports(&outcome);
    let child = processes.iter().find(|p| p.pid == 2).expect("the child's report");
    assert!(child.cow_copies >= 256, "{child:?}");
    assert_eq!(checks(&outcome), [("process memory given back", true)]);
}

#[test]
fn syscall_fuzz_gets_linux_errors_and_leaves_a_clean_kernel() {
    let config = config("syscall-fuzz");
    let cmdline = format!("{} seed=1 ops=2000", config.cmdline);
    let inspect = vec![vmm::inspect::Command::Check];
    let outcome = boot(&vmm::VmConfig { cmdline, inspect, ..config });
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    let user = user_reports(&outcome);
    let [report] = user.as_slice() else { panic!("one user report: {user:?}") };
    let counts: Vec<(&str, u64)> = report
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name, value.parse().expect("a number")))
        .collect();
    let count = |name: &str| counts.iter().find(|(n, _)| *n == name).map_or(0, |&(_, v)| v);
    assert!(count("calls") >= 2000, "{report}");
    // Every failure was one of the errors Linux gives that call, and each kind came up.
    assert_eq!((count("other"), count("unexpected")), (0, 0), "{report}");
    for errno in ["EINVAL", "EFAULT", "ENOMEM", "EBADF", "ECHILD", "EEXIST", "ENOSYS"] {
        assert!(count(errno) > 0, "{errno} in {report}");
    }
    assert!(count("ok") > 0, "{report}");
    // The host's check at exit finds nothing, and the allocators are as they were.
    let at_exit = outcome.inspections.iter().find(|i| i.at == "exit").expect("inspected at exit");
    match &at_exit.result {
        Ok(vmm::inspect::Output::Check(report)) => assert!(report.ok(), "{:#?}", report.findings),
        other => panic!("{other:?}"),
    }
    assert_eq!(checks(&outcome), [("process memory given back", true)]);
}

#[test]
fn the_timer_preempts_processes_that_spin_in_user_mode() {
    let outcome = boot(&config("preempt"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert!(
        outcome.console.contains("timer: x2APIC one-shot, 10 ms slices"),
        "{}",
        outcome.console
    );
    // Three processes took three turns each, every one passed on while the taker spun.
    assert_eq!(user_reports(&outcome), ["passes=9 children_ok=2/2"]);
    let reports = process_reports(&outcome);
    let pids: Vec<(u32, u32, i32)> = reports.iter().map(|p| (p.pid, p.ppid, p.exit_code)).collect();
    assert_eq!(pids, [(2, 1, 0), (3, 1, 0), (1, 0, 0)]);
    for p in &reports {
        // After each of its turns but the last, a process spins (no call, no fault) until
        // the timer takes the CPU from it: at least two preemptions each.
        assert!(p.nonvoluntary_switches >= 2, "{p:?}");
    }
    let [first, second, parent] = reports.as_slice() else { unreachable!() };
    // The children's only system call is their exit, and they never waited; the parent
    // slept in wait4 (at least for the first child, which still had a turn to take).
    for child in [first, second] {
        assert_eq!((child.syscalls, child.voluntary_switches), (1, 0), "{child:?}");
    }
    assert!((1..=2).contains(&parent.voluntary_switches), "{parent:?}");
    assert_eq!(checks(&outcome), [("process memory given back", true)]);
}
