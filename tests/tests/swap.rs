//! The swap device (`vmm run --swap-file PATH --swap SIZE`): pages the guest writes to
//! slots land in the host file at slot × 4 KiB and come back intact; a slot past the end
//! is refused; every bad set-up fails before the guest runs, in one sentence.

use kvm_mm_tests::{boot, config, new_vm, temp_path, user_reports};
use shared::layout::{GIB, MIB};
use vmm::config::{ConfigError, SwapConfig};
use vmm::inspect::swap::{self, PageSource, SwapFile};
use vmm::outcome::exit_code;
use vmm::swap::SwapError;
use vmm::{Error, ExitReason, Report, VmConfig};

/// What `swap-device` writes to slot `slot` (guest/src/bin/kernel/swap.rs).
fn pattern(slot: u64, word: u64) -> u64 {
    slot << 32 ^ word ^ 0x5157_4150_0000_0000
}

fn with_swap(workload: &str, path: &std::path::Path, size: u64) -> VmConfig {
    VmConfig { swap: Some(SwapConfig { path: path.to_path_buf(), size }), ..config(workload) }
}

#[test]
fn pages_go_to_their_slots_in_the_host_file_and_come_back() {
    let path = temp_path("swap-device.swap");
    let outcome = boot(&with_swap("swap-device", &path, 4 * MIB));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert!(
        outcome.console.contains("swap: device of 1024 slots (4096 KiB)"),
        "{}",
        outcome.console
    );
    let checks: Vec<(&str, bool)> = outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::Test { name, passed, .. } => Some((name.as_str(), *passed)),
            _ => None,
        })
        .collect();
    assert_eq!(checks, [("swap pages round trip", true), ("swap slot past the end refused", true)]);
    // The two calls past the end, refused by the VMM with the reason.
    let refused = outcome
        .reports
        .iter()
        .filter(|r| matches!(r, Report::Malformed { problem, .. } if problem.contains("swap slot 1024 is past the device's end (1024 slots)")))
        .count();
    assert_eq!(refused, 2);
    // The host file holds each page at its slot: both ends of the device checked here.
    let file = std::fs::read(&path).expect("the swap file");
    assert_eq!(file.len() as u64, 4 * MIB);
    for (slot, page) in [(0u64, &file[..4096]), (1023, &file[1023 * 4096..])] {
        let words =
            page.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
        assert!((0..).zip(words).all(|(word, value)| value == pattern(slot, word)), "slot {slot}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn meminfo_shows_the_swap_device() {
    let path = temp_path("meminfo.swap");
    let inspect = vec![vmm::inspect::Command::Meminfo];
    let outcome = boot(&VmConfig { inspect, ..with_swap("boot", &path, 4 * MIB) });
    let at_exit = outcome.inspections.iter().find(|i| i.at == "exit").expect("inspected");
    let Ok(vmm::inspect::Output::Meminfo(m)) = &at_exit.result else { panic!("{at_exit:?}") };
    assert_eq!((m.swap_total, m.swap_free), (4096, 4096), "nothing swapped out yet");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn without_a_device_the_workload_says_how_to_get_one() {
    let outcome = boot(&config("swap-device"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 1 });
    assert!(
        outcome.console.contains("no swap device; run with --swap-file PATH --swap SIZE"),
        "{}",
        outcome.console
    );
}

#[test]
fn each_bad_set_up_fails_before_the_guest_runs_in_one_sentence() {
    let path = temp_path("bad.swap");
    let refuse = |config: &VmConfig| match vmm::run(config) {
        Ok(outcome) => panic!("expected a refusal, the guest ran: {:?}", outcome.exit),
        Err(err) => err,
    };
    // Sizes: usage errors that say what to give.
    for (size, text) in [
        (MIB + 512, "--swap 1049088 is not a multiple of 4 KiB"),
        (512 * 1024, "--swap 512K is below the smallest swap device; give at least 1M"),
        (65 * GIB, "--swap 65G is above the largest swap device; give at most 64G"),
    ] {
        let err = refuse(&with_swap("boot", &path, size));
        assert!(matches!(err, Error::Swap(_)), "{err}");
        assert!(err.to_string().starts_with(text), "{err}");
        assert_eq!(err.exit_code(), exit_code::USAGE, "{err}");
    }
    // Files: host errors.
    let err = refuse(&with_swap("boot", std::path::Path::new("/nonexistent/dir/x.swap"), MIB));
    assert!(matches!(err, Error::Swap(SwapError::Create { .. })), "{err}");
    assert!(err.to_string().ends_with("check the directory exists and is writable"), "{err}");
    assert_eq!(err.exit_code(), exit_code::HOST);
    let err = refuse(&with_swap("boot", &std::env::temp_dir(), MIB));
    assert!(matches!(err, Error::Swap(SwapError::IsDirectory { .. })), "{err}");
    let err = refuse(&with_swap("boot", std::path::Path::new("/dev/full"), MIB));
    assert!(matches!(err, Error::Swap(SwapError::Write { .. })), "{err}");
    // The guest's `swap=` is the VMM's to set.
    let mut config = with_swap("boot", &path, MIB);
    config.cmdline.push_str(" swap=9");
    let err = refuse(&config);
    assert!(matches!(err, Error::Config(ConfigError::SwapOnCmdline)), "{err}");
    assert!(!path.exists(), "nothing was created for a refused set-up");
}

/// The word `swap-pattern` writes at `addr` (guest/src/bin/user/swap_pattern.rs).
fn swap_pattern(addr: u64) -> u64 {
    addr.rotate_left(17) ^ 0x5a5a_0000_5a5a_0000
}

/// What the host reads of one page of pid 1 with `read`, as words, and where it came from.
fn read_page(
    view: &mut vmm::inspect::View<'_, '_>,
    file: &SwapFile,
    virt: u64,
) -> (Vec<u64>, PageSource) {
    let memory = swap::read(view, Some(file), 1, virt, 4096).expect("reads the page");
    let bytes: Vec<u8> = (0..memory.hex.len() / 2)
        .map(|i| u8::from_str_radix(&memory.hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let words =
        bytes.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8"))).collect();
    (words, memory.pages[0].clone())
}

/// `swap-pattern` in a 32 MiB guest touching 40 MiB: what does not fit goes to swap (the
/// host file holds it, meminfo counts the slots, `check` is clean with swap entries in
/// the tables), every word comes back, and the slots are free once the process is gone.
/// At the checkpoint the host reads the pattern back itself, from RAM and from the swap
/// file, and its pagemap, smaps and status agree on what is swapped.
#[test]
fn swap_pattern_gets_every_word_back_from_swap() {
    use vmm::inspect::{process, Command, Inspector, Output, RamReader};
    let path = temp_path("swap-pattern.swap");
    let inspect = vec![Command::Meminfo, Command::Check, Command::Vmstat];
    let mut config =
        VmConfig { inspect, mem_size: 32 * MIB, ..with_swap("swap-pattern", &path, 64 * MIB) };
    config.cmdline.push_str(" ops=40");
    config.timeout = Some(std::time::Duration::from_secs(600));
    let mut seen = None;
    let outcome = new_vm(&config)
        .run_with(|stop| {
            if stop.checkpoint.tag != shared::hypercall::checkpoint::USER || seen.is_some() {
                return;
            }
            let file = SwapFile::open(&path).expect("the swap file");
            let mut inspector = Inspector::new(RamReader::mapped(stop.memory));
            seen = Some(inspector.snapshot(|view| {
                let pagemap = process::pagemap(view, 1, None)?;
                let smaps = process::smaps(view, 1)?;
                let status = process::status(view, 1)?;
                // The pattern's areas are its 1 MiB VMAs: the first of their pages in swap,
                // and the last in RAM.
                let mm = process::task(view, 1)?.mm;
                let vmas = process::vmas(view, &mm)?;
                let in_area = |virt: u64| {
                    vmas.iter().any(|v| v.len() == MIB && (v.start..v.end).contains(&virt))
                };
                let pages: Vec<_> = pagemap.iter().filter(|p| in_area(p.virt)).collect();
                let swapped = pages.iter().find(|p| p.swap_slot.is_some()).map(|p| p.virt);
                let resident = pages.iter().rev().find(|p| p.present).map(|p| p.virt);
                let reads =
                    [swapped, resident].map(|virt| virt.map(|v| (v, read_page(view, &file, v))));
                Ok((pagemap, smaps, status, reads))
            }));
        })
        .expect("the guest runs");
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert_eq!(user_reports(&outcome), ["mib=40 pages=10240 bad_words=0"]);
    let at = |tag: &str, kind: &str| {
        outcome
            .inspections
            .iter()
            .find(|i| i.at.contains(tag) && i.command == kind)
            .unwrap_or_else(|| panic!("no {kind} at {tag}: {:?}", outcome.inspections))
            .result
            .clone()
    };
    // At the checkpoint, after the writes: a good part of the 40 MiB is in swap.
    let Ok(Output::Meminfo(m)) = at("user", "meminfo") else { panic!("meminfo") };
    let swapped = (m.swap_total - m.swap_free) / 4;
    assert!(swapped >= 2048, "only {swapped} pages in swap: {m:?}");
    let Ok(Output::Check(report)) = at("user", "check") else { panic!("check") };
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // The host file holds at least that many pages of the pattern (non-zero pages).
    let file = std::fs::read(&path).expect("the swap file");
    let written = file.chunks_exact(4096).filter(|page| page.iter().any(|&b| b != 0)).count();
    assert!(written as u64 >= swapped, "{written} pages written, {swapped} in use");
    // The host's own view: one swap entry per slot in use (nothing is shared), in the
    // pagemap, smaps and status alike; and the pattern read back from the file and RAM.
    let (pagemap, smaps, status, reads) = seen.expect("a checkpoint").expect("inspects");
    let entries = pagemap.iter().filter(|p| p.swap_slot.is_some()).count() as u64;
    assert_eq!(entries, swapped);
    assert_eq!(smaps.iter().map(|e| e.swap).sum::<u64>(), swapped * 4);
    assert_eq!(smaps.iter().map(|e| e.swap_pss).sum::<u64>(), swapped * 4);
    assert_eq!(status.vm_swap, swapped * 4);
    let [Some((out_at, (out_words, out_from))), Some((in_at, (in_words, in_from)))] = reads else {
        panic!("a page in swap and one in RAM: {reads:?}")
    };
    assert!(matches!(out_from, PageSource::Swap { virt, .. } if virt == out_at), "{out_from:?}");
    assert!(matches!(in_from, PageSource::Ram { virt, .. } if virt == in_at), "{in_from:?}");
    for (base, words) in [(out_at, out_words), (in_at, in_words)] {
        let expected: Vec<u64> = (0..512).map(|i| swap_pattern(base + 8 * i)).collect();
        assert_eq!(words, expected, "the page at {base:#x}");
    }
    // At the end every slot is free again, and nothing is out of place; what went out
    // came back as major faults.
    let Ok(Output::Meminfo(m)) = at("exit", "meminfo") else { panic!("meminfo") };
    assert_eq!(m.swap_free, m.swap_total, "{m:?}");
    let Ok(Output::Check(report)) = at("exit", "check") else { panic!("check") };
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let Ok(Output::Vmstat(v)) = at("exit", "vmstat") else { panic!("vmstat") };
    assert!(v.events.pswpout >= swapped && v.events.pswpin >= swapped, "{v:?}");
    assert_eq!(v.events.pgmajfault, v.events.pswpin, "one page read per major fault");
    let _ = std::fs::remove_file(&path);
}

/// `swap-cow` in a 16 MiB guest: parent and child share 18 MiB copy-on-write while it goes
/// to swap and comes back. The child's reads put the first area in the swap cache, and the
/// parent's reads of it come from there: no read of the device. `check` holds every slot's
/// count to the entries of both trees at each checkpoint.
#[test]
fn copy_on_write_sharers_are_swapped_out_and_read_back_once() {
    use vmm::inspect::{Command, Output};
    let path = temp_path("swap-cow.swap");
    let inspect = vec![Command::Check, Command::Vmstat];
    let mut config =
        VmConfig { inspect, mem_size: 16 * MIB, ..with_swap("swap-cow", &path, 32 * MIB) };
    config.cmdline.push_str(" ops=18");
    config.timeout = Some(std::time::Duration::from_secs(600));
    let outcome = boot(&config);
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    let mut reports = user_reports(&outcome);
    reports.sort_unstable();
    assert_eq!(
        reports,
        ["child mib=18 pages=4608 bad_words=0", "parent mib=18 pages=4608 bad_words=0"]
    );
    let vmstats: Vec<shared::mm::VmEvents> = outcome
        .inspections
        .iter()
        .filter(|i| i.command == "vmstat" && i.at.contains("(user)"))
        .map(|i| match &i.result {
            Ok(Output::Vmstat(v)) => v.events,
            other => panic!("{other:?}"),
        })
        .collect();
    // Checkpoints: after the writes; the child has read the first area; the parent has.
    let [written, child, parent] = vmstats[..] else { panic!("{vmstats:?}") };
    assert!(written.pswpout >= 1024, "{written:?}");
    assert!(child.pswpin >= written.pswpin + 256, "the child read the first area: {child:?}");
    assert!(parent.pgfault >= child.pgfault + 256, "{parent:?}");
    assert_eq!(parent.pswpin, child.pswpin, "the parent's reads came from the swap cache");
    for inspection in outcome.inspections.iter().filter(|i| i.command == "check") {
        let Ok(Output::Check(report)) = &inspection.result else { panic!("{inspection:?}") };
        assert!(report.findings.is_empty(), "at {}: {:#?}", inspection.at, report.findings);
    }
    let _ = std::fs::remove_file(&path);
}

/// `thp` in a 32 MiB guest touching 40 MiB in transparent huge pages: reclaim splits
/// them (each 2 MiB mapping into a table of 512 entries, the block into 512 pages) and
/// swaps their pages out; the pattern comes back intact, and `check` is clean at every
/// checkpoint with split blocks, swap entries and the new tables counted.
#[test]
fn huge_pages_are_split_and_swapped_out_under_pressure() {
    use vmm::inspect::{Command, Output};
    let path = temp_path("thp.swap");
    let inspect = vec![Command::Check, Command::Vmstat];
    let mut config = VmConfig { inspect, mem_size: 32 * MIB, ..with_swap("thp", &path, 64 * MIB) };
    config.cmdline.push_str(" ops=40");
    config.timeout = Some(std::time::Duration::from_secs(600));
    let outcome = boot(&config);
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert_eq!(user_reports(&outcome), ["mib=40 pages=10240 munmap=0 mprotect=0 intact=1"]);
    let thp_faults = outcome.reports.iter().find_map(|r| match r {
        Report::Process(p) if p.pid == 1 => Some(p.thp_faults),
        _ => None,
    });
    assert!(
        thp_faults.is_some_and(|faults| faults >= 10),
        "huge pages were mapped: {thp_faults:?}"
    );
    for inspection in &outcome.inspections {
        match &inspection.result {
            Ok(Output::Check(report)) => {
                assert!(report.findings.is_empty(), "at {}: {:#?}", inspection.at, report.findings)
            }
            Ok(Output::Vmstat(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    let Some(Ok(Output::Vmstat(v))) =
        outcome.inspections.iter().rev().find(|i| i.command == "vmstat").map(|i| &i.result)
    else {
        panic!("no vmstat")
    };
    assert!(v.events.pswpout >= 2048, "huge pages' pages went out: {v:?}");
    assert!(v.events.pswpin > 0, "and came back: {v:?}");
    let _ = std::fs::remove_file(&path);
}
