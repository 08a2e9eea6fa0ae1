//! The OOM killer: when a fault finds no memory and reclaim cannot free any, the process
//! of highest badness is killed with Linux's line, the kill is reported to the host, and
//! at the `oom` checkpoint before it the host computes the same victim and figures from
//! guest RAM alone.

use kvm_mm_tests::{boot, config, temp_path, user_reports};
use shared::hypercall::{checkpoint, OomKillReport};
use vmm::config::SwapConfig;
use vmm::inspect::process::Oom;
use vmm::inspect::{Command, Output};
use vmm::{ExitReason, Outcome, Report, VmConfig};

/// A 32 MiB guest running `workload`, the host inspecting at every checkpoint.
fn guest(workload: &str) -> VmConfig {
    VmConfig {
        mem_size: 32 << 20,
        inspect: vec![Command::Oom, Command::Check, Command::Vmstat, Command::Swaps],
        timeout: Some(std::time::Duration::from_secs(600)),
        ..config(workload)
    }
}

/// The run's one kill report, with the victim's name.
fn the_kill(outcome: &Outcome) -> (String, OomKillReport) {
    let kills: Vec<_> = outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::OomKill { name, kill } => Some((name.clone(), *kill)),
            _ => None,
        })
        .collect();
    assert_eq!(kills.len(), 1, "{kills:?}");
    kills[0].clone()
}

/// The output of `command` at the inspection point `at` (`oom`, `exit`, …).
fn inspected<'a>(outcome: &'a Outcome, at: &str, command: &str) -> &'a Output {
    let inspection = outcome
        .inspections
        .iter()
        .find(|i| i.at.contains(at) && i.command == command)
        .unwrap_or_else(|| panic!("no {command} at {at}"));
    inspection.result.as_ref().unwrap_or_else(|err| panic!("{command} at {at}: {err}"))
}

/// What every OOM run must show: the victim the host picks at the `oom` checkpoint is the
/// one killed, with the figures the kernel reported, after a fault of `trigger`; `check`
/// is clean there and at exit; the victim died of SIGKILL; and the kill is counted.
fn assert_kill_matches_the_host(outcome: &Outcome, victim: u32, trigger: u32) -> OomKillReport {
    let (name, kill) = the_kill(outcome);
    assert_eq!(kill.pid, victim, "{kill:?}");
    assert_eq!(kill.trigger_pid, trigger, "whose fault ran out of memory");
    let at_oom = format!("({})", checkpoint::name(checkpoint::OOM));
    let Output::Oom(Oom { totalpages, tasks, victim: chosen }) = inspected(outcome, &at_oom, "oom")
    else {
        panic!("oom output")
    };
    assert_eq!(*chosen, Some(victim), "{tasks:#?}");
    assert_eq!(*totalpages, kill.totalpages);
    let seen = tasks.iter().find(|t| t.pid == victim).expect("the victim listed");
    assert_eq!(name, seen.comm);
    assert_eq!(Some(kill.points), seen.points, "{seen:?}");
    assert_eq!(kill.oom_score_adj, seen.oom_score_adj);
    assert_eq!(kill.oom_score_adj, 500, "the hog's own oom_score_adj");
    assert_eq!(kill.anon_rss_kib, seen.rss * 4);
    assert_eq!(kill.total_vm_kib, seen.total_vm * 4);
    assert_eq!(kill.pgtables_kib * 1024, seen.pgtables_bytes);
    assert_eq!(kill.swapents, seen.swapents);
    // The victim held most of the guest's 32 MiB.
    assert!(kill.anon_rss_kib > 16 << 10, "{kill:?}");
    for at in [at_oom.as_str(), "exit"] {
        let Output::Check(report) = inspected(outcome, at, "check") else { panic!("check") };
        assert!(report.findings.is_empty(), "at {at}: {:#?}", report.findings);
    }
    let Output::Vmstat(vmstat) = inspected(outcome, "exit", "vmstat") else { panic!("vmstat") };
    assert_eq!(vmstat.events.oom_kill, 1);
    let ended = outcome.reports.iter().find_map(|r| match r {
        Report::Process(p) if p.pid == victim => Some(*p),
        _ => None,
    });
    assert_eq!(ended.map(|p| (p.signal, p.exit_code)), Some((9, 0)), "killed by SIGKILL");
    let line = format!(
        "Out of memory: Killed process {victim} ({name}) total-vm:{}kB, anon-rss:{}kB, \
         file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:{}kB oom_score_adj:500",
        kill.total_vm_kib, kill.anon_rss_kib, kill.pgtables_kib
    );
    assert!(outcome.console.contains(&line), "{}", outcome.console);
    kill
}

#[test]
fn oom_kill_kills_the_hog_and_the_bystander_finishes() {
    let outcome = boot(&guest("oom-kill"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    // PID 1 forks the bystander (2), then the hog (3).
    assert_eq!(user_reports(&outcome), ["hog=3 hog_status=9 bystander=2 bystander_status=0"]);
    let kill = assert_kill_matches_the_host(&outcome, 3, 3);
    assert_eq!(kill.swapents, 0, "no swap device");
    // The bystander's badness was lowered (-200) and init is never picked.
    let Output::Oom(oom) = inspected(&outcome, "(oom)", "oom") else { panic!("oom") };
    let points: Vec<(u32, Option<i64>)> = oom.tasks.iter().map(|t| (t.pid, t.points)).collect();
    assert_eq!(points.len(), 3, "{points:?}");
    assert_eq!(points[0], (1, None));
    assert!(points[1].1.is_some_and(|p| p < 0), "{points:?}");
    // `--json` names the victim.
    let json = serde_json::to_value(&outcome).expect("serialises");
    let reports = json["reports"].as_array().expect("reports");
    let named = reports.iter().find(|r| r["report"] == "oom-kill").expect("an oom-kill report");
    assert_eq!((named["pid"].as_u64(), named["name"].as_str()), (Some(3), Some("oom-kill")));
}

#[test]
fn a_full_swap_device_hands_over_to_the_oom_killer() {
    let path = temp_path("oom-full.swap");
    let swap = Some(SwapConfig { path: path.clone(), size: 8 << 20 });
    let outcome = boot(&VmConfig { swap, ..guest("oom-kill") });
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    // The bystander's pages went to swap and came back intact (its status would count
    // the words that did not).
    assert_eq!(user_reports(&outcome), ["hog=3 hog_status=9 bystander=2 bystander_status=0"]);
    let kill = assert_kill_matches_the_host(&outcome, 3, 3);
    assert!(kill.swapents > 0, "the hog had pages in swap: {kill:?}");
    // Every slot was in use when the killer ran, and every one is free after.
    let Output::Swaps(full) = inspected(&outcome, "(oom)", "swaps") else { panic!("swaps") };
    assert_eq!((full[0].size_kib, full[0].used_kib), (8192, 8192), "{full:?}");
    assert_eq!(full[0].filename, path.display().to_string());
    let Output::Swaps(after) = inspected(&outcome, "exit", "swaps") else { panic!("swaps") };
    assert_eq!(after[0].used_kib, 0, "{after:?}");
    let Output::Vmstat(v) = inspected(&outcome, "exit", "vmstat") else { panic!("vmstat") };
    assert!(v.events.pswpout >= 2048, "{v:?}");
    assert!(v.events.pgsteal_kswapd + v.events.pgsteal_direct >= 2048, "{v:?}");
    let _ = std::fs::remove_file(&path);
}

/// The victim need not be the process whose fault ran out: here a hog (adj 500) waits,
/// runnable but not running, holding three quarters of RAM, when a grower's fault finds
/// none. The hog is killed, and the grower's fault is retried, served, and the grower
/// touches the rest of its half and exits cleanly.
#[test]
fn the_killer_kills_a_waiting_hog_and_the_faulting_process_goes_on() {
    let outcome = boot(&guest("oom-retry"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    // PID 1 forks the hog (2), then the grower (3).
    assert_eq!(user_reports(&outcome), ["hog=2 hog_status=9 grower=3 grower_status=0"]);
    assert_kill_matches_the_host(&outcome, 2, 3);
    let grower = outcome.reports.iter().find_map(|r| match r {
        Report::Process(p) if p.pid == 3 => Some(*p),
        _ => None,
    });
    assert_eq!(grower.map(|p| (p.signal, p.exit_code)), Some((0, 0)), "the grower finished");
}

#[test]
fn alloc_oom_is_a_kill_not_a_panic() {
    let outcome = boot(&guest("alloc-oom"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert_eq!(user_reports(&outcome), ["hog=2 hog_status=9 bystander=0 bystander_status=0"]);
    let (name, kill) = the_kill(&outcome);
    assert_eq!((name.as_str(), kill.pid, kill.trigger_pid), ("alloc-oom", 2, 2));
    let hog = outcome.reports.iter().find_map(|r| match r {
        Report::Process(p) if p.pid == 2 => Some(p.signal),
        _ => None,
    });
    assert_eq!(hog, Some(9), "killed by SIGKILL");
    // Every page came back: the kernel's own check after the run.
    let given_back = outcome.reports.iter().any(|r| {
        matches!(r, Report::Test { name, passed: true, .. } if name == "process memory given back")
    });
    assert!(given_back, "{:?}", outcome.reports);
}
