//! The slab allocator inside the guest, confirmed from outside: kmalloc's caches as the
//! host reads them from guest RAM against the guest's own report, and each misuse
//! `slub_debug` detects, found by the host's `check` in guest RAM while the damage is there
//! and before the guest looks, then RAM sound again once the guest has dealt with it.

use kvm_mm_tests::{boot, config};
use std::sync::OnceLock;
use vmm::inspect::check::{CheckReport, FindingKind};
use vmm::inspect::{Command, Output};
use vmm::{ExitReason, Outcome};

/// The `slab-misuse` workload with `check` and `slabinfo` at every checkpoint.
fn misuse() -> &'static Outcome {
    static OUTCOME: OnceLock<Outcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        let outcome = boot(&vmm::VmConfig {
            inspect: ["check", "slabinfo"].into_iter().filter_map(Command::named).collect(),
            ..config("slab-misuse")
        });
        assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
        outcome
    })
}

/// The progress checkpoints of `slab-misuse`, by position (its module doc): one with the
/// damage in RAM, then one after the guest's detection, for each overflow and the write
/// after free; one after each refused free.
const KMALLOC_REDZONE: (usize, usize) = (0, 1);
const RIGHT_REDZONE: (usize, usize) = (2, 3);
const WRITE_AFTER_FREE: (usize, usize) = (4, 5);
const DOUBLE_FREE: usize = 6;
const BAD_FREE: usize = 7;

/// Where the `n`th progress checkpoint's inspections are (`None`: at exit).
fn label(n: Option<usize>) -> String {
    let Some(n) = n else { return "exit".into() };
    let mut progress: Vec<&str> = Vec::new();
    for inspection in &misuse().inspections {
        let at = inspection.at.as_str();
        if at.ends_with("(progress)") && progress.last() != Some(&at) {
            progress.push(at);
        }
    }
    assert_eq!(progress.len(), BAD_FREE + 1, "the workload's checkpoints: {progress:?}");
    progress[n].to_string()
}

fn output<'a>(outcome: &'a Outcome, checkpoint: Option<usize>, command: &str) -> &'a Output {
    let at = label(checkpoint);
    let inspection = outcome.inspections.iter().find(|i| i.at == at && i.command == command);
    match inspection.map(|i| &i.result) {
        Some(Ok(output)) => output,
        Some(Err(err)) => panic!("{command} at {at}: {err}"),
        None => panic!("no {command} at {at}"),
    }
}

fn check(checkpoint: Option<usize>) -> &'static CheckReport {
    match output(misuse(), checkpoint, "check") {
        Output::Check(report) => report,
        other => panic!("{other:?}"),
    }
}

/// kmalloc-64's active objects, as the host reads them.
fn kmalloc_64_active(checkpoint: usize) -> u64 {
    let Output::Slabinfo(caches) = output(misuse(), Some(checkpoint), "slabinfo") else {
        panic!("not slabinfo")
    };
    let cache = caches.iter().find(|c| c.name() == "kmalloc-64").expect("kmalloc-64");
    cache.active_objs
}

/// The guest's report of the step named `name`: it passed, and its detail (the
/// allocator's error) names the object; returns that address.
fn guest_detected(name: &str, described: &str) -> u64 {
    let tests = misuse().tests();
    let (_, passed, detail) = tests
        .iter()
        .find(|(n, ..)| *n == name)
        .unwrap_or_else(|| panic!("the guest did not report {name:?}"));
    assert!(passed, "{name}: {detail}");
    assert!(detail.contains(described), "{name}: {detail}");
    let hex = detail.rsplit("object 0x").next().expect("an object address");
    u64::from_str_radix(hex.trim(), 16).unwrap_or_else(|_| panic!("{name}: {detail}"))
}

/// At `damaged`, `check` names exactly one finding, of `kind`, at `object`; at `after`,
/// RAM is sound again.
fn host_saw(kind: FindingKind, object: u64, cache: &str, (damaged, after): (usize, usize)) {
    let report = check(Some(damaged));
    assert_eq!(report.findings.len(), 1, "at {}: {:#?}", label(Some(damaged)), report.findings);
    let finding = &report.findings[0];
    assert_eq!(finding.kind, kind, "{finding:?}");
    assert!(
        finding.text.contains(&format!("{object:#x}")) && finding.text.contains(cache),
        "the host names another object than the guest's {object:#x} in {cache}: {}",
        finding.text
    );
    let report = check(Some(after));
    assert!(report.ok(), "at {}: {:#?}", label(Some(after)), report.findings);
}

#[test]
fn a_write_past_the_requested_size_is_in_guest_ram_until_the_guest_reports_it() {
    let object = guest_detected(
        "slab misuse: a write past the requested size",
        "kmalloc-32: kmalloc Redzone overwritten",
    );
    host_saw(FindingKind::SlabKmallocRedzone, object, "kmalloc-32", KMALLOC_REDZONE);
}

#[test]
fn a_write_past_the_object_is_in_guest_ram_until_the_guest_reports_it() {
    let object = guest_detected(
        "slab misuse: a write past the object",
        "kmalloc-64: Right Redzone overwritten",
    );
    host_saw(FindingKind::SlabRightRedzone, object, "kmalloc-64", RIGHT_REDZONE);
}

#[test]
fn a_write_after_free_is_in_guest_ram_until_the_guest_quarantines_its_slab() {
    let object =
        guest_detected("slab misuse: a write after free", "kmalloc-64: Poison overwritten");
    host_saw(FindingKind::SlabPoisonOverwritten, object, "kmalloc-64", WRITE_AFTER_FREE);
    // The damaged slab is out of service: on kmalloc-64's quarantine list, in RAM.
    let report = check(Some(WRITE_AFTER_FREE.1));
    let cache = report.caches.iter().find(|c| c.name == "kmalloc-64").expect("kmalloc-64");
    assert_eq!(cache.quarantined, 1, "{cache:?}");
}

#[test]
fn a_refused_double_free_leaves_guest_ram_sound_and_counts_unchanged() {
    guest_detected("slab misuse: a double free", "kmalloc-64: Object already free");
    // One allocation and one free since the previous checkpoint; the refused free
    // changed nothing, and no freelist holds the object twice.
    assert_eq!(kmalloc_64_active(DOUBLE_FREE), kmalloc_64_active(WRITE_AFTER_FREE.1));
    let report = check(Some(DOUBLE_FREE));
    assert!(report.ok(), "{:#?}", report.findings);
}

#[test]
fn a_refused_free_inside_an_object_leaves_guest_ram_sound_and_counts_unchanged() {
    guest_detected("slab misuse: a free inside an object", "free of a pointer inside an object");
    assert_eq!(kmalloc_64_active(BAD_FREE), kmalloc_64_active(DOUBLE_FREE));
    let report = check(Some(BAD_FREE));
    assert!(report.ok(), "{:#?}", report.findings);
}

#[test]
fn the_host_reads_the_caches_the_guest_reports() {
    let outcome = misuse();
    let Output::Slabinfo(host) = output(outcome, None, "slabinfo") else { panic!("slabinfo") };
    assert_eq!(host, &outcome.slabs(), "slab caches read by the host vs reported by the guest");
    // Linux's kmalloc caches (`kmalloc_info`, with KMALLOC_MIN_SIZE 8).
    let linux = ["8", "16", "32", "64", "96", "128", "192", "256", "512", "1k", "2k", "4k", "8k"];
    let names: Vec<&str> = host.iter().map(|c| c.name()).collect();
    let expected: Vec<String> = linux.iter().map(|size| format!("kmalloc-{size}")).collect();
    assert_eq!(names, expected);
    let report = check(None);
    assert!(report.ok(), "{:#?}", report.findings);
    // Every misused object was freed in the end: what kmalloc-64 still counts in use is
    // the quarantined slab, every object of it written off.
    let cache = report.caches.iter().find(|c| c.name == "kmalloc-64").expect("kmalloc-64");
    assert_eq!(cache.quarantined, 1, "{cache:?}");
    let kmalloc_64 = host.iter().find(|c| c.name() == "kmalloc-64").expect("kmalloc-64");
    assert_eq!(kmalloc_64.active_objs, kmalloc_64.objperslab, "{kmalloc_64:?}");
}
