//! Host inspection from outside the guest: the inspector's view (read through guest RAM
//! and the guest's own page tables) against what the guest reports about itself, `check`
//! after real workloads, and corruptions injected through the RAM file that `check` must
//! name.

use kvm_mm_tests::{boot, config, new_vm, temp_path};
use shared::hypercall::checkpoint;
use shared::layout::PAGE_OFFSET;
use shared::page::{PAGE_STRUCT_SIZE, PG_BUDDY};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vmm::inspect::check::CheckReport;
use vmm::inspect::{state, Command, InspectError, Inspection, Inspector, Output, RamReader, View};
use vmm::{ExitReason, Outcome, VmConfig};

fn inspected(workload: &str, extra: &str, mem_file: Option<PathBuf>) -> Outcome {
    let config = VmConfig {
        cmdline: format!("workload={workload} {extra}"),
        mem_file,
        inspect: Command::NAMES.iter().filter_map(|name| Command::named(name)).collect(),
        ..config(workload)
    };
    let outcome = boot(&config);
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    outcome
}

fn at<'a>(outcome: &'a Outcome, when: &str, command: &str) -> &'a Output {
    let found =
        outcome.inspections.iter().find(|i: &&Inspection| i.at == when && i.command == command);
    match found.map(|i| &i.result) {
        Some(Ok(output)) => output,
        Some(Err(err)) => panic!("{command} at {when} failed: {err}"),
        None => panic!("no {command} at {when}"),
    }
}

fn check_at<'a>(outcome: &'a Outcome, when: &str) -> &'a CheckReport {
    match at(outcome, when, "check") {
        Output::Check(report) => report,
        other => panic!("{other:?}"),
    }
}

fn assert_clean(report: &CheckReport) {
    assert!(report.ok(), "check found problems: {:#?}", report.findings);
    let total: u64 = report.pages.iter().map(|c| c.pages).sum();
    assert_eq!(total, report.ram_pages, "every RAM page has exactly one owner");
}

/// The host's reading of the allocators equals the guest's own report of them.
fn assert_host_matches_guest(outcome: &Outcome) {
    let Output::Buddyinfo(zones) = at(outcome, "exit", "buddyinfo") else { panic!() };
    assert_eq!(zones, &outcome.zones(), "zones read by the host vs reported by the guest");
    let Output::Slabinfo(slabs) = at(outcome, "exit", "slabinfo") else { panic!() };
    let reported = outcome.slabs();
    assert_eq!(slabs, &reported, "slab caches read by the host vs reported by the guest");
    let Output::E820(map) = at(outcome, "exit", "e820") else { panic!() };
    assert_eq!(Some(map.as_slice()), outcome.e820());
}

#[test]
fn every_inspection_runs_at_each_checkpoint_and_at_exit() {
    let outcome = inspected("boot", "", None);
    for when in ["checkpoint 2 (booted)", "exit"] {
        for name in Command::NAMES {
            at(&outcome, when, name);
        }
    }
    // Nothing is inspected before BOOTED, when vmcoreinfo is published.
    let early = outcome.inspections.iter().filter(|i| i.at.starts_with("checkpoint 1"));
    assert_eq!(early.count(), 0, "inspected before the guest published vmcoreinfo");
    // In `--json`, a result is `output` or `error` beside `at` and `command`.
    let json = serde_json::to_value(&outcome.inspections).expect("serialisable");
    let keys = |i: &serde_json::Value| {
        let mut keys: Vec<_> = i.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys.join(",")
    };
    let list = json.as_array().expect("a list");
    assert!(list.iter().all(|i| ["at,command,output", "at,command,error"].contains(&&*keys(i))));
    let e820 = list.iter().find(|i| i["at"] == "exit" && i["command"] == "e820").expect("e820");
    assert_eq!(e820["output"]["e820"], serde_json::to_value(outcome.e820()).expect("e820"));
    assert_clean(check_at(&outcome, "exit"));
    assert_host_matches_guest(&outcome);
    let Output::Pagetable(dump) = at(&outcome, "exit", "pagetable") else { panic!() };
    let direct = dump.runs.iter().find(|r| r.start == PAGE_OFFSET + (1 << 20)).expect("direct map");
    assert!(direct.writable && !direct.user, "{direct:?}");
}

#[test]
fn check_passes_after_the_selftest() {
    let outcome = inspected("selftest", "slub_debug", None);
    assert_clean(check_at(&outcome, "exit"));
    assert_host_matches_guest(&outcome);
}

#[test]
fn check_passes_after_stress() {
    let outcome = inspected("stress", "seed=7 ops=150", None);
    assert_clean(check_at(&outcome, "checkpoint 2 (booted)"));
    assert_clean(check_at(&outcome, "exit"));
    assert_host_matches_guest(&outcome);
}

/// A guest left holding pages, per-CPU pages, slabs and vmalloc areas, in a RAM file.
fn populated(name: &str) -> (Outcome, PathBuf) {
    let path = temp_path(name);
    let outcome = inspected("populate", "seed=3 ops=240 slub_debug", Some(path.clone()));
    (outcome, path)
}

fn inspect_file(path: &Path, command: &Command) -> Output {
    let ram = RamReader::open_file(path).expect("a RAM file");
    Inspector::new(ram).run(command).expect("inspects")
}

/// Reads what `read` returns from one consistent snapshot of the RAM file.
fn read_file<T>(path: &Path, read: impl FnMut(&mut View<'_, '_>) -> Result<T, InspectError>) -> T {
    let ram = RamReader::open_file(path).expect("a RAM file");
    Inspector::new(ram).snapshot(read).expect("inspects")
}

/// Guest-physical address of frame `pfn`'s free-list (or partial-list) `next` link.
fn next_link(view: &mut View<'_, '_>, pfn: u64) -> Result<u64, InspectError> {
    view.phys(view.page_addr(pfn) + std::mem::offset_of!(shared::page::Page, next) as u64)
}

#[test]
fn check_accounts_for_a_populated_guest_in_process_and_out_of_process() {
    let (outcome, path) = populated("populated");
    let report = check_at(&outcome, "exit");
    assert_clean(report);
    let pages = |owner: &str| report.pages.iter().find(|c| c.owner == owner).map_or(0, |c| c.pages);
    assert!(pages("slab") > 0 && pages("per-CPU lists") > 0 && pages("other allocated") > 0);
    let slabs: u64 = report.caches.iter().map(|c| c.slabs).sum();
    let guest_slabs: u64 = outcome.slabs().iter().map(|s| s.num_slabs).sum();
    assert_eq!(slabs, guest_slabs);
    assert_host_matches_guest(&outcome);
    // Another process sees the same through the file.
    let Output::Check(from_file) = inspect_file(&path, &Command::Check) else { panic!() };
    assert_eq!(&from_file, report);
    let _ = std::fs::remove_file(&path);
}

/// Writes `value` at guest-physical `gpa` of a RAM file (below 3 GiB, file offset = gpa).
fn poke(path: &Path, gpa: u64, value: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).expect("writable RAM file");
    file.write_all_at(&value.to_le_bytes(), gpa).expect("written");
}

fn findings(path: &Path) -> Vec<String> {
    match inspect_file(path, &Command::Check) {
        Output::Check(report) => report.findings.into_iter().map(|f| f.text).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn check_names_a_corrupted_free_list() {
    let (_, path) = populated("free-list");
    // The head of the DMA32 zone's order-10 list: make its next link point at itself.
    let (head, next_gpa) = read_file(&path, |view| {
        let head = state::raw_zones(view)?[1].free_area[10].head;
        assert!(view.page(head)?.flags & PG_BUDDY != 0);
        Ok((head, next_link(view, head)?))
    });
    poke(&path, next_gpa, head);
    let found = findings(&path);
    assert!(
        found
            .iter()
            .any(|f| f.contains("zone DMA32 order 10 free list") && f.contains("met twice")),
        "{found:#?}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn check_names_a_per_cpu_block_with_the_wrong_order() {
    let (_, path) = populated("per-cpu");
    // The oldest block on DMA32's first non-empty per-CPU list above order 0: give its
    // `struct page` the order below (the 8 bytes at `refcount` are refcount and order).
    let (pfn, order, gpa) = read_file(&path, |view| {
        let zones = state::raw_zones(view)?;
        let (list, order) = zones[1]
            .pcp
            .iter()
            .zip(0u32..)
            .skip(1)
            .find(|(l, _)| l.count > 0)
            .expect("a per-CPU block above order 0");
        let pfn = list.pfns()[0];
        let refcount = std::mem::offset_of!(shared::page::Page, refcount) as u64;
        Ok((pfn, order, view.phys(view.page_addr(pfn) + refcount)?))
    });
    poke(&path, gpa, u64::from(order - 1) << 32);
    let found = findings(&path);
    let expected = format!("zone DMA32: per-CPU block {pfn:#x} of order {order} is misaligned");
    assert!(found.iter().any(|f| f.starts_with(&expected)), "{found:#?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn check_names_a_corrupted_slab_freelist() {
    let (_, path) = populated("slab-freelist");
    let (name, slab, object, free_offset) = read_file(&path, |view| {
        let caches = state::caches(view)?;
        let cache =
            caches.iter().find(|c| c.raw.cpu_freelist != 0).expect("a cache with free objects");
        let raw = cache.raw;
        Ok((cache.name.clone(), raw.cpu_slab, raw.cpu_freelist, u64::from(raw.free_offset)))
    });
    // The first free object's link now points into the middle of another page.
    poke(&path, object - PAGE_OFFSET + free_offset, PAGE_OFFSET + 0x123_4568);
    let found = findings(&path);
    let expected = format!("cache {name} slab pfn {slab:#x}: freelist link 0xffff888001234568");
    assert!(found.iter().any(|f| f.starts_with(&expected)), "{expected}\n{found:#?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_snapshot_that_stays_torn_is_refused() {
    let (_, path) = populated("torn");
    // An odd sequence count: the guest is (as far as a reader can tell) mid-change.
    let seq_at = shared::vmcoreinfo::VMCOREINFO_ADDR
        + std::mem::offset_of!(shared::vmcoreinfo::VmCoreInfo, seq) as u64;
    poke(&path, seq_at, 41);
    let ram = RamReader::open_file(&path).expect("a RAM file");
    let mut inspector = Inspector::new(ram);
    inspector.max_tries = 5;
    let err = inspector.run(&Command::Buddyinfo).expect_err("torn");
    assert!(err.to_string().contains("no consistent snapshot in 5 tries"), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn page_decodes_a_free_block_head_and_a_slab() {
    let (outcome, path) = populated("page");
    let Output::Buddyinfo(zones) = at(&outcome, "exit", "buddyinfo") else { panic!() };
    assert!(zones.len() >= 2);
    let ram = RamReader::open_file(&path).expect("a RAM file");
    let mut inspector = Inspector::new(ram);
    let (head, slab) = inspector
        .snapshot(|view| {
            let zones = state::raw_zones(view)?;
            let caches = state::caches(view)?;
            let slab = caches.iter().find(|c| c.raw.cpu_slab != u64::MAX).map(|c| c.raw.cpu_slab);
            Ok((zones[1].free_area[10].head, slab.expect("a current slab")))
        })
        .expect("inspects");
    let Output::Page(free) = inspector.run(&Command::Page { pfn: head }).expect("decodes") else {
        panic!()
    };
    // Never written since boot: known zero too.
    assert_eq!(
        (free.flag_names.as_slice(), free.order, free.zone.as_deref()),
        (&["buddy", "zero"][..], 10, Some("DMA32"))
    );
    assert_eq!(free.addr, shared::layout::VMEMMAP_BASE + head * PAGE_STRUCT_SIZE as u64);
    let Output::Page(slab) = inspector.run(&Command::Page { pfn: slab }).expect("decodes") else {
        panic!()
    };
    assert!(slab.flag_names.contains(&"slab"), "{slab:?}");
    assert!(slab.slab_cache_name.as_deref().is_some_and(|n| n.starts_with("kmalloc-")), "{slab:?}");
    let beyond = inspector.run(&Command::Page { pfn: 1 << 40 }).expect_err("no such pfn");
    assert!(beyond.to_string().contains("beyond the guest's last page frame"), "{beyond}");
    let _ = std::fs::remove_file(&path);
}

/// A guest under stress, inspected from another reader of its RAM file at each of its
/// progress checkpoints, where it waits for the host: every snapshot is consistent and
/// clean, and they differ, since the guest kept working between them.
#[test]
fn a_guest_under_stress_is_inspected_at_its_progress_checkpoints_through_its_ram_file() {
    let path = temp_path("live");
    let (ops, every) = (400, 100);
    let config = VmConfig {
        mem_file: Some(path.clone()),
        cmdline: format!("workload=stress seed=11 ops={ops} progress={every}"),
        ..config("stress")
    };
    let mut snapshots = Vec::new();
    let outcome = new_vm(&config)
        .run_with(|stop| {
            if stop.checkpoint.tag != checkpoint::PROGRESS {
                return;
            }
            // Not the VMM's own mapping: the file, as `vmm inspect` reads it.
            let ram = RamReader::open_file(&path).expect("the RAM file");
            let snapshot = Inspector::new(ram)
                .snapshot(|view| Ok((vmm::inspect::check::check(view)?, state::zones(view)?)))
                .expect("a guest waiting at a checkpoint is consistent");
            snapshots.push(snapshot);
        })
        .expect("the guest runs");
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert_eq!(snapshots.len(), (ops / every) as usize, "one snapshot per progress checkpoint");
    for (report, _) in &snapshots {
        assert_clean(report);
    }
    let free: Vec<u64> =
        snapshots.iter().map(|(_, zones)| zones.iter().map(|z| z.free + z.pcp).sum()).collect();
    assert!(free.windows(2).any(|w| w[0] != w[1]), "the guest was changing: {free:?}");
    let _ = std::fs::remove_file(&path);
}

/// A RAM file that shrinks under a reader (say a new `vmm run --mem-file` on it after its
/// guest exited) is an error for the reader, never SIGBUS: the inspector reads files with
/// `pread`, not through a mapping.
#[test]
fn a_ram_file_that_shrinks_under_the_inspector_is_an_error_not_a_crash() {
    let (_, path) = populated("shrinks");
    let ram = RamReader::open_file(&path).expect("a RAM file");
    let mut inspector = Inspector::new(ram);
    inspector.run(&Command::Check).expect("whole, it inspects");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| file.set_len(1 << 20))
        .expect("truncated");
    let err = inspector.run(&Command::Check).expect_err("shrunk");
    assert!(matches!(err, InspectError::FileShrank { .. }), "{err}");
    assert!(err.to_string().contains("shrank while it was being read"), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn check_names_a_looping_slab_partial_list() {
    let (_, path) = populated("partial");
    let (name, slab, next_gpa) = read_file(&path, |view| {
        let caches = state::caches(view)?;
        let cache = caches.iter().find(|c| c.raw.partial != u64::MAX).expect("a partial slab");
        Ok((cache.name.clone(), cache.raw.partial, next_link(view, cache.raw.partial)?))
    });
    poke(&path, next_gpa, slab);
    let found = findings(&path);
    let expected = format!("cache {name} partial list, slab 1 (pfn {slab:#x}): met twice");
    assert!(found.iter().any(|f| f.starts_with(&expected)), "{expected}\n{found:#?}");
    let _ = std::fs::remove_file(&path);
}
