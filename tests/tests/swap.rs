//! The swap device (`vmm run --swap-file PATH --swap SIZE`): pages the guest writes to
//! slots land in the host file at slot × 4 KiB and come back intact; a slot past the end
//! is refused; every bad set-up fails before the guest runs, in one sentence.

use kvm_mm_tests::{boot, config, temp_path, user_reports};
use shared::layout::{GIB, MIB};
use vmm::config::{ConfigError, SwapConfig};
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

/// `swap-pattern` in a 32 MiB guest touching 40 MiB: what does not fit goes to swap (the
/// host file holds it, meminfo counts the slots, `check` is clean with swap entries in
/// the tables), every word comes back, and the slots are free once the process is gone.
#[test]
fn swap_pattern_gets_every_word_back_from_swap() {
    use vmm::inspect::{Command, Output};
    let path = temp_path("swap-pattern.swap");
    let inspect = vec![Command::Meminfo, Command::Check];
    let mut config =
        VmConfig { inspect, mem_size: 32 * MIB, ..with_swap("swap-pattern", &path, 64 * MIB) };
    config.cmdline.push_str(" ops=40");
    config.timeout = Some(std::time::Duration::from_secs(600));
    let outcome = boot(&config);
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
    // At the end every slot is free again, and nothing is out of place.
    let Ok(Output::Meminfo(m)) = at("exit", "meminfo") else { panic!("meminfo") };
    assert_eq!(m.swap_free, m.swap_total, "{m:?}");
    let Ok(Output::Check(report)) = at("exit", "check") else { panic!("check") };
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let _ = std::fs::remove_file(&path);
}
