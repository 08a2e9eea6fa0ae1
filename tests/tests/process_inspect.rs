//! The host's view of processes, read through guest RAM at a checkpoint a user program
//! asked for (`fork-cow`'s first child, while its parent waits): `ps`, `maps` and `status`
//! against what the guest reported of itself, `check` clean, and each corruption of a
//! process's memory injected through the RAM file named by `check`.

use kvm_mm_tests::{config, new_vm, temp_path, user_reports};
use shared::hypercall::checkpoint;
use shared::process::{MmStruct, Task, Vma, VmaNode};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vmm::inspect::check::{CheckReport, FindingKind};
use vmm::inspect::process::{self, TaskInfo};
use vmm::inspect::{Command, InspectError, Inspection, Inspector, Output, RamReader, View};
use vmm::{ExitReason, Outcome, Report, VmConfig};

/// `fork-cow` with every inspection at each checkpoint, and its RAM as it was at the user
/// checkpoint: run once for every test here.
fn run() -> &'static (Outcome, Vec<u8>) {
    static RUN: OnceLock<(Outcome, Vec<u8>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let path = temp_path("procs-live");
        let mut ram = Vec::new();
        let config = VmConfig {
            mem_file: Some(path.clone()),
            inspect: Command::NAMES.iter().filter_map(|name| Command::named(name)).collect(),
            ..config("fork-cow")
        };
        let outcome = new_vm(&config)
            .run_with(|stop| {
                if stop.checkpoint.tag == checkpoint::USER {
                    ram = std::fs::read(&path).expect("the RAM file");
                }
            })
            .expect("the guest runs");
        assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
        let _ = std::fs::remove_file(&path);
        (outcome, ram)
    })
}

const AT: &str = "checkpoint 3 (user)";

fn at<'a>(outcome: &'a Outcome, command: &str) -> &'a Output {
    let found =
        outcome.inspections.iter().find(|i: &&Inspection| i.at == AT && i.command == command);
    match found.map(|i| &i.result) {
        Some(Ok(output)) => output,
        Some(Err(err)) => panic!("{command} at {AT} failed: {err}"),
        None => panic!("no {command} at {AT}"),
    }
}

#[test]
fn ps_lists_the_waiting_parent_and_the_running_child() {
    let (outcome, _) = run();
    let Output::Ps { tasks, .. } = at(outcome, "ps") else { panic!() };
    let rows: Vec<(u32, u32, &str, &str)> =
        tasks.iter().map(|t| (t.pid, t.ppid, t.state.as_str(), t.comm.as_str())).collect();
    assert_eq!(rows, [(1, 0, "IN", "fork-cow"), (2, 1, "RU", "fork-cow")]);
    for t in tasks {
        assert_eq!(t.vsz_kib, t.mm.total_vm * 4);
        assert!(t.rss_kib > 0 && t.rss_kib <= t.vsz_kib, "{t:?}");
    }
    let text = at(outcome, "ps").text();
    assert!(text.starts_with("   PID    PPID  CPU       TASK        ST  %MEM"), "{text}");
    // No process lives at the end.
    let exit = outcome.inspections.iter().find(|i| i.at == "exit" && i.command == "ps");
    let Some(Inspection { result: Ok(Output::Ps { tasks, .. }), .. }) = exit else { panic!() };
    assert!(tasks.is_empty(), "{tasks:?}");
}

#[test]
fn maps_equals_each_processes_own_report_of_its_vmas() {
    let (outcome, _) = run();
    let Output::Maps(maps) = at(outcome, "maps") else { panic!() };
    let reported: Vec<(u32, &Vec<Vma>)> = outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::Vmas { pid, vmas } => Some((*pid, vmas)),
            _ => None,
        })
        .collect();
    assert_eq!(reported.len(), 2, "one report per process");
    for (pid, vmas) in reported {
        let host = maps.iter().find(|m| m.pid == pid).expect("the host lists it");
        let lines: Vec<(u64, u64, String)> = host
            .lines
            .iter()
            .filter(|l| l.name != "[vdso]")
            .map(|l| (l.start, l.end, l.perms.clone()))
            .collect();
        let guest: Vec<(u64, u64, String)> = vmas
            .iter()
            .map(|v| (v.start, v.end, String::from_utf8_lossy(&v.perms()).into_owned()))
            .collect();
        assert_eq!(lines, guest, "pid {pid}");
        assert_eq!(host.lines.last().map(|l| l.name.as_str()), Some("[vdso]"));
    }
    let text = at(outcome, "maps").text();
    assert!(text.starts_with("PID 1 (fork-cow):\n00400000-"), "{text}");
    assert!(text.contains(" 00000000 00:00 0                          [stack]\n"), "{text}");
}

#[test]
fn check_is_clean_with_processes_alive_and_counts_their_pages() {
    let (outcome, _) = run();
    let Output::Check(report) = at(outcome, "check") else { panic!() };
    assert!(report.ok(), "{:#?}", report.findings);
    let user = report.pages.iter().find(|c| c.owner == "user pages").map_or(0, |c| c.pages);
    // The parent's pages, and the child's copies of the slice it wrote and of its stack.
    assert!(user > 64, "{report:?}");
}

#[test]
fn meminfo_agrees_with_the_zones_the_slab_caches_and_check() {
    let (outcome, _) = run();
    let Output::Meminfo(m) = at(outcome, "meminfo") else { panic!() };
    let Output::Zoneinfo(zones) = at(outcome, "zoneinfo") else { panic!() };
    let Output::Slabinfo(slabs) = at(outcome, "slabinfo") else { panic!() };
    let Output::Check(report) = at(outcome, "check") else { panic!() };
    let sum = |f: fn(&shared::hypercall::ZoneReport) -> u64| zones.iter().map(f).sum::<u64>();
    assert_eq!(m.mem_total, 4 * sum(|z| z.managed));
    assert_eq!(m.mem_free, 4 * sum(|z| z.free));
    let reserve =
        sum(|z| (z.high + z.protection.iter().max().copied().unwrap_or(0)).min(z.managed));
    assert_eq!(m.mem_available, 4 * (sum(|z| z.free) - reserve));
    let slab: u64 = slabs.iter().map(|s| s.num_slabs * s.pagesperslab).sum();
    assert_eq!((m.slab, m.s_unreclaim, m.s_reclaimable), (4 * slab, 4 * slab, 0));
    // The memory map's flags against check's walk of every process's tables.
    let owned = |owner: &str| report.pages.iter().find(|c| c.owner == owner).map_or(0, |c| c.pages);
    assert_eq!(m.anon_pages, 4 * owned("user pages"), "{m:?}");
    assert_eq!(m.anon_huge_pages, 0, "fork-cow maps no huge page");
    // Every mapped page is on the active LRU list, where a new page starts (without a
    // swap device nothing ages it).
    assert_eq!((m.inactive_anon, m.active_anon), (0, m.anon_pages), "{m:?}");
    assert_eq!(m.page_tables, 4 * owned("page tables"), "{m:?}");
    assert_eq!((m.swap_total, m.swap_free), (0, 0), "no swap device");
    let text = at(outcome, "meminfo").text();
    assert!(text.starts_with(&format!("MemTotal:       {:>8} kB\n", m.mem_total)), "{text}");
}

fn inspect(path: &Path, command: &Command) -> Result<Output, InspectError> {
    let ram = RamReader::open_file(path).expect("a RAM file");
    Inspector::new(ram).run(command)
}

fn snapshot<T>(path: &Path, read: impl FnMut(&mut View<'_, '_>) -> Result<T, InspectError>) -> T {
    let ram = RamReader::open_file(path).expect("a RAM file");
    Inspector::new(ram).snapshot(read).expect("inspects")
}

#[test]
fn status_reads_a_process_from_the_ram_file() {
    let path = &corrupted("status");
    let Ok(Output::Status(status)) = inspect(path, &Command::Status { pid: 2 }) else { panic!() };
    let tasks = snapshot(path, process::tasks);
    let child = tasks.iter().find(|t| t.pid == 2).expect("the child");
    assert_eq!(
        (status.name.as_str(), status.state.as_str(), status.ppid),
        ("fork-cow", "R (running)", 1)
    );
    assert_eq!((status.vm_size, status.vm_rss), (child.vsz_kib, child.rss_kib));
    // VmPTE is the kernel's counter, which equals the tables a walk finds below the PML4.
    let walked = snapshot(path, |view| process::user_leaves(view, child.mm.pgd)).tables;
    assert_eq!(status.vm_pte, (walked - 1) * 4, "{status:?}");
    assert!(status.vm_pte >= 3 * 4, "a PDPT, PD and PT at least: {status:?}");
    assert!(status.vm_stk > 0 && status.vm_exe > 0 && status.vm_data > 0, "{status:?}");
    let text = Output::Status(status).text();
    assert!(text.contains("VmRSS:\t"), "{text}");
    // A PID that is not there is an argument error that says where to look.
    let err = inspect(path, &Command::Status { pid: 99 }).expect_err("no such process");
    assert!(err.to_string().contains("`vmm inspect FILE ps` lists them"), "{err}");
    let _ = std::fs::remove_file(path);
}

/// A RAM file of the checkpoint's RAM, to read or corrupt (the caller removes it).
fn corrupted(name: &str) -> PathBuf {
    let (_, ram) = run();
    let copy = temp_path(name);
    std::fs::write(&copy, ram).expect("a RAM file");
    copy
}

fn poke(path: &Path, gpa: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).expect("writable RAM file");
    file.write_all_at(bytes, gpa).expect("written");
}

fn read(path: &Path, gpa: u64) -> u64 {
    let file = std::fs::File::open(path).expect("a RAM file");
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, gpa).expect("read");
    u64::from_le_bytes(bytes)
}

fn check(path: &Path) -> CheckReport {
    match inspect(path, &Command::Check).expect("checks") {
        Output::Check(report) => report,
        other => panic!("{other:?}"),
    }
}

/// The child's task and the guest-physical address of a field of its `MmStruct`.
fn child_mm_field(path: &Path, offset: usize) -> (TaskInfo, u64) {
    snapshot(path, |view| {
        let child = process::tasks(view)?.into_iter().find(|t| t.pid == 2).expect("the child");
        let at = child.task + (std::mem::offset_of!(Task, mm) + offset) as u64;
        Ok((child.clone(), view.phys(at)?))
    })
}

/// Guest-physical address of the leaf entry mapping `virt` in the tree at `pgd`.
fn leaf_entry(path: &Path, pgd: u64, virt: u64) -> u64 {
    snapshot(path, |view| {
        let mut table = pgd;
        for level in (1..=4u8).rev() {
            let at = table + shared::pte::table_index(virt, level) as u64 * 8;
            if level == 1 {
                return Ok(at);
            }
            table = view.ram.read_obj::<u64>(at)? & shared::pte::ADDR_MASK;
        }
        unreachable!()
    })
}

/// The area `fork-cow` shares: its anonymous VMA (neither image, heap nor stack).
fn shared_area(path: &Path) -> Vma {
    snapshot(path, |view| {
        let child = process::task(view, 2)?;
        Ok(process::vmas(view, &child.mm)?.into_iter().find(|v| v.kind == 0).expect("the area"))
    })
}

fn assert_names(path: &Path, kind: FindingKind, text: &str) {
    let report = check(path);
    let named = report.findings.iter().any(|f| f.kind == kind && f.text.contains(text));
    assert!(named, "{kind:?} '{text}' in {:#?}", report.findings);
    let _ = std::fs::remove_file(path);
}

#[test]
fn check_names_an_rss_counter_off_by_one() {
    let path = corrupted("rss");
    let (child, at) = child_mm_field(&path, std::mem::offset_of!(MmStruct, rss_anon));
    poke(&path, at, &(child.mm.rss_anon + 1).to_le_bytes());
    assert_names(
        &path,
        FindingKind::RssMismatch,
        &format!("pid 2: RSS counter {} pages", child.mm.rss_anon + 1),
    );
}

#[test]
fn check_names_a_page_table_counter_off_by_one() {
    let path = corrupted("pgtables");
    let (child, at) = child_mm_field(&path, std::mem::offset_of!(MmStruct, pgtables));
    poke(&path, at, &(child.mm.pgtables + 1).to_le_bytes());
    assert_names(
        &path,
        FindingKind::RssMismatch,
        &format!(
            "pid 2: page-table counter {} tables, {} below its PML4",
            child.mm.pgtables + 1,
            child.mm.pgtables
        ),
    );
}

#[test]
fn check_names_a_swap_counter_off_by_one() {
    let path = corrupted("swapents");
    let (child, at) = child_mm_field(&path, std::mem::offset_of!(MmStruct, swapents));
    poke(&path, at, &(child.mm.swapents + 1).to_le_bytes());
    assert_names(
        &path,
        FindingKind::SwapEntry,
        &format!(
            "pid 2: swap counter {}, its tables hold {} swap entries",
            child.mm.swapents + 1,
            child.mm.swapents
        ),
    );
}

#[test]
fn check_names_an_entry_neither_present_nor_a_swap_entry() {
    let path = corrupted("not-swap");
    let area = shared_area(&path);
    let (child, _) = child_mm_field(&path, 0);
    let at = leaf_entry(&path, child.mm.pgd, area.end - 4096);
    // Writable and dirty, but not present: no swap entry looks like that.
    poke(&path, at, &0x42u64.to_le_bytes());
    assert_names(
        &path,
        FindingKind::SwapEntry,
        &format!("pid 2: {:#x} has a level-1 entry 0x42 that is neither present", area.end - 4096),
    );
}

#[test]
fn check_names_an_lru_page_flagged_for_the_other_list() {
    let path = corrupted("lru");
    let area = shared_area(&path);
    let (child, _) = child_mm_field(&path, 0);
    let entry = read(&path, leaf_entry(&path, child.mm.pgd, area.end - 4096));
    let pfn = (entry & shared::pte::ADDR_MASK) / 4096;
    let at = snapshot(&path, |view| {
        view.phys(view.page_addr(pfn) + std::mem::offset_of!(shared::page::Page, flags) as u64)
    });
    // New pages start on the active list: this one now says it is on the inactive one.
    poke(&path, at, &(read(&path, at) & !shared::page::PG_ACTIVE).to_le_bytes());
    assert_names(
        &path,
        FindingKind::LruList,
        &format!("pfn {pfn:#x} on the active LRU list is flagged"),
    );
}

#[test]
fn check_names_a_mapcount_off_by_one() {
    let path = corrupted("mapcount");
    let area = shared_area(&path);
    // A page of the area the child did not write: the parent shares it.
    let (child, _) = child_mm_field(&path, 0);
    let entry = read(&path, leaf_entry(&path, child.mm.pgd, area.end - 4096));
    let pfn = (entry & shared::pte::ADDR_MASK) / 4096;
    let at = snapshot(&path, |view| {
        view.phys(view.page_addr(pfn) + std::mem::offset_of!(shared::page::Page, mapcount) as u64)
    });
    poke(&path, at, &3u32.to_le_bytes());
    assert_names(
        &path,
        FindingKind::MapcountMismatch,
        &format!("pfn {pfn:#x}: mapcount 3 and refcount 2, but 2 user entries map it"),
    );
}

#[test]
fn check_names_a_shared_page_made_writable() {
    let path = corrupted("cow");
    let area = shared_area(&path);
    let (child, _) = child_mm_field(&path, 0);
    let at = leaf_entry(&path, child.mm.pgd, area.end - 4096);
    poke(&path, at, &(read(&path, at) | 2).to_le_bytes());
    assert_names(
        &path,
        FindingKind::CowWritable,
        "shared copy-on-write by 2 entries, 1 of them writable",
    );
}

#[test]
fn check_names_a_user_entry_outside_every_vma() {
    let path = corrupted("outside");
    let area = shared_area(&path);
    let (child, _) = child_mm_field(&path, 0);
    // The page after the area's last one, in the same page table.
    let at = leaf_entry(&path, child.mm.pgd, area.end - 4096);
    let entry = read(&path, at);
    poke(&path, at + 8, &entry.to_le_bytes());
    assert_names(
        &path,
        FindingKind::UserPteOutsideVma,
        &format!("pid 2: {:#x} maps pfn", area.end),
    );
}

#[test]
fn check_names_a_user_entry_with_more_rights_than_its_vma() {
    let path = corrupted("exceeds");
    let (child, _) = child_mm_field(&path, 0);
    // The first page of the program's code, made writable.
    let at = leaf_entry(&path, child.mm.pgd, shared::process::USER_IMAGE_BASE);
    poke(&path, at, &(read(&path, at) | 2).to_le_bytes());
    assert_names(
        &path,
        FindingKind::UserPteExceedsVma,
        "pid 2: 0x400000 is writable, its VMA 0x400000-",
    );
}

#[test]
fn check_names_a_kernel_half_that_is_not_the_kernels() {
    let path = corrupted("kernel-half");
    let (child, _) = child_mm_field(&path, 0);
    // The direct map's slot, cleared in the child's PML4 alone.
    let slot = shared::pte::table_index(shared::layout::PAGE_OFFSET, 4);
    poke(&path, child.mm.pgd + 8 * slot as u64, &0u64.to_le_bytes());
    assert_names(
        &path,
        FindingKind::KernelHalfDiffers,
        &format!("pid 2: PML4 entry {slot} is 0x0"),
    );
}

#[test]
fn a_vma_tree_that_loops_is_named_not_followed() {
    let path = corrupted("vma-loop");
    let (child, _) = child_mm_field(&path, 0);
    // Every VMA tree here is one leaf (a handful of VMAs): make the root a branch whose
    // first child is itself.
    let root = snapshot(&path, |view| {
        view.phys(
            child.mm.vma_nodes
                + u64::from(child.mm.vma_root) * std::mem::size_of::<VmaNode>() as u64,
        )
    });
    poke(&path, root + std::mem::offset_of!(VmaNode, leaf) as u64, &0u32.to_le_bytes());
    let slots = root + std::mem::offset_of!(VmaNode, slots) as u64;
    poke(&path, slots, &child.mm.vma_root.to_le_bytes());
    let err = snapshot(&path, |view| Ok(process::vmas(view, &child.mm))).expect_err("a loop");
    assert!(err.to_string().contains("met twice"), "{err}");
    let Err(err) = inspect(&path, &Command::Maps { pid: Some(2) }) else {
        panic!("maps of a loop")
    };
    assert!(err.to_string().contains("VMA tree"), "{err}");
    assert_names(
        &path,
        FindingKind::ProcessVmas,
        "pid 2: guest data is inconsistent: VMA tree: node",
    );
}

#[test]
fn a_task_count_out_of_range_is_an_error_not_a_long_read() {
    let path = corrupted("tasks");
    let at = shared::vmcoreinfo::VMCOREINFO_ADDR
        + std::mem::offset_of!(shared::vmcoreinfo::VmCoreInfo, nr_tasks) as u64;
    poke(&path, at, &u64::MAX.to_le_bytes());
    let err = inspect(&path, &Command::Ps).expect_err("refused");
    assert!(err.to_string().contains("task slots"), "{err}");
    assert_names(&path, FindingKind::TaskList, "the task array");
}

#[test]
fn pagetable_and_translate_read_a_process_tables_with_pid() {
    let path = corrupted("pid-tables");
    let area = shared_area(&path);
    let range = vmm::inspect::pagetable::parse_range(&format!("{:x}-{:x}", area.start, area.end))
        .expect("a range");
    let dump =
        |pid| match inspect(&path, &Command::Pagetable { range: Some(range), tlb: true, pid }) {
            Ok(Output::Pagetable(dump)) => dump,
            other => panic!("{other:?}"),
        };
    // The child maps the whole area; the slice it wrote is its own and writable, the rest
    // is shared with its parent, read-only.
    let child = dump(Some(2));
    assert_eq!(child.pages.len() as u64, (area.end - area.start) / 4096);
    let writable = child.pages.iter().filter(|p| p.entry & 2 != 0).count();
    assert_eq!(writable, 16, "{:?}", child.pages);
    // The kernel's tables map nothing there.
    assert!(dump(None).pages.is_empty());
    // The parent and the child map the first page to different frames (the child copied
    // it), and the last one to the same frame.
    let phys =
        |pid, virt| match inspect(&path, &Command::Translate { addrs: vec![virt], pid: Some(pid) })
        {
            Ok(Output::Translate(walks)) => walks[0].phys.expect("mapped"),
            other => panic!("{other:?}"),
        };
    assert_ne!(phys(1, area.start), phys(2, area.start));
    assert_eq!(phys(1, area.end - 4096), phys(2, area.end - 4096));
    let err = inspect(&path, &Command::Translate { addrs: vec![area.start], pid: Some(99) })
        .expect_err("no such process");
    assert!(err.to_string().contains("no process with PID 99"), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn vma_arenas_out_of_range_are_refused_before_they_are_read() {
    let path = corrupted("vma-arena");
    let (_, at) = child_mm_field(&path, std::mem::offset_of!(MmStruct, nr_vmas));
    poke(&path, at, &u64::MAX.to_le_bytes());
    let Err(err) = inspect(&path, &Command::Maps { pid: Some(2) }) else { panic!("maps read it") };
    assert!(err.to_string().contains("VMAs in its arenas (at most 8191 and 131060)"), "{err}");
    assert_names(&path, FindingKind::ProcessVmas, "pid 2: guest data is inconsistent: VMA tree");
}

#[test]
fn smaps_and_pagemap_tell_the_childs_own_pages_from_the_shared_ones() {
    let path = corrupted("smaps");
    let area = shared_area(&path);
    let Ok(Output::Smaps(entries)) = inspect(&path, &Command::Smaps { pid: 2 }) else { panic!() };
    let e = entries.iter().find(|e| e.vma.start == area.start).expect("the area");
    // 64 pages mapped: the 16 the child wrote are its copies, the other 48 it shares
    // with its parent, so its proportional share is 16 + 48 / 2 pages.
    assert_eq!((e.size, e.rss, e.anonymous), (256, 256, 256), "{e:?}");
    assert_eq!(e.private_clean + e.private_dirty, 64, "{e:?}");
    assert_eq!(e.shared_clean + e.shared_dirty, 192, "{e:?}");
    assert_eq!(e.pss, 64 + 96, "{e:?}");
    assert_eq!((e.anon_huge_pages, e.swap), (0, 0));
    assert_eq!(e.vm_flags, "rd wr mr mw me");
    let text = Output::Smaps(entries.clone()).text();
    assert!(text.contains("Pss:                 160 kB\n"), "{text}");
    let range = vmm::inspect::pagetable::parse_range(&format!("{:x}-{:x}", area.start, area.end))
        .expect("a range");
    let Ok(Output::Pagemap(pages)) =
        inspect(&path, &Command::Pagemap { pid: 2, range: Some(range) })
    else {
        panic!()
    };
    assert_eq!(pages.len(), 64);
    assert!(pages.iter().all(|p| p.present && !p.huge && p.pfn.is_some()));
    let exclusive: Vec<bool> = pages.iter().map(|p| p.exclusive).collect();
    assert_eq!(exclusive, [vec![true; 16], vec![false; 48]].concat());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn many_processes_are_all_listed_and_checked_at_their_checkpoint() {
    let config = VmConfig {
        inspect: vec![Command::Ps, Command::Maps { pid: None }, Command::Check],
        ..config("many-processes")
    };
    let outcome = kvm_mm_tests::boot(&config);
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    let Output::Ps { tasks, .. } = at(&outcome, "ps") else { panic!() };
    assert_eq!(tasks.len(), 100);
    assert!(tasks.iter().skip(1).all(|t| t.ppid == 1 && t.mm.map_count == 100), "{tasks:?}");
    let Output::Maps(maps) = at(&outcome, "maps") else { panic!() };
    let vmas: usize =
        maps.iter().map(|m| m.lines.iter().filter(|l| l.name != "[vdso]").count()).sum();
    assert_eq!(vmas, 10_000);
    let Output::Check(report) = at(&outcome, "check") else { panic!() };
    assert!(report.ok(), "{:#?}", report.findings);
    let user = user_reports(&outcome);
    assert_eq!(user, ["processes=100 areas=95 reaped=99"]);
}

/// Random corruption of what the host reads of processes (the task array, the child's VMA
/// arenas, its PML4), one byte at a time: every process command and `check` answers with
/// output or an error, never a panic, and within the command's budget.
#[test]
fn process_commands_survive_random_corruption_of_process_memory() {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    let (_, ram) = run();
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), ram.len())]).expect("memory");
    memory.write_slice(ram, GuestAddress(0)).expect("written");
    let targets: Vec<(u64, u64)> = {
        let mut inspector = Inspector::new(RamReader::mapped(&memory));
        inspector
            .snapshot(|view| {
                let child = process::task(view, 2)?;
                let tasks = view.phys(view.info.tasks)?;
                let size = std::mem::size_of::<Task>() as u64;
                Ok(vec![
                    (tasks, size * 3),
                    (view.phys(child.mm.vma_nodes)?, std::mem::size_of::<VmaNode>() as u64),
                    (view.phys(child.mm.vmas)?, child.mm.nr_vmas * 32),
                    (child.mm.pgd, 4096),
                ])
            })
            .expect("a sound snapshot")
    };
    let commands = [
        Command::Ps,
        Command::Maps { pid: None },
        Command::Status { pid: 2 },
        Command::Smaps { pid: 2 },
        Command::Pagemap { pid: 2, range: None },
        Command::Pagetable { range: None, tlb: false, pid: Some(2) },
        Command::Check,
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    };
    let (mut errors, mut outputs) = (0, 0);
    for _ in 0..400 {
        let (base, len) = targets[usize::try_from(next() % targets.len() as u64).expect("small")];
        let at = GuestAddress(base + next() % len.max(1));
        let old: u8 = memory.read_obj(at).expect("in RAM");
        let new = match next() % 3 {
            0 => 0xff,
            1 => 0,
            _ => old ^ (1 << (next() % 8)),
        };
        memory.write_obj(new, at).expect("in RAM");
        for command in &commands {
            let result = std::panic::catch_unwind(|| {
                Inspector::new(RamReader::mapped(&memory)).run(command).map(|_| ())
            });
            match result {
                Ok(Ok(())) => outputs += 1,
                Ok(Err(_)) => errors += 1,
                Err(_) => panic!("{command:?} panicked with {new:#x} at {:#x}", at.0),
            }
        }
        memory.write_obj(old, at).expect("in RAM");
    }
    assert!(outputs > 0 && errors > 0, "{outputs} outputs, {errors} errors");
}

#[test]
fn check_names_an_anonymous_page_no_process_maps() {
    let path = corrupted("anon-nobody");
    // A page of low memory, reserved and unused, flagged as a user page.
    let pfn = 0x10;
    let at = snapshot(&path, |view| {
        view.phys(view.page_addr(pfn) + std::mem::offset_of!(shared::page::Page, flags) as u64)
    });
    poke(&path, at, &shared::page::PG_ANON.to_le_bytes());
    assert_names(
        &path,
        FindingKind::MapcountMismatch,
        &format!("pfn {pfn:#x} is flagged PG_ANON (mapcount 0) but no process maps it"),
    );
}

#[test]
fn thp_touches_64_mib_in_32_faults_and_the_host_sees_huge_pages() {
    let config = VmConfig {
        mem_size: 256 << 20,
        cmdline: "workload=thp ops=64".into(),
        inspect: vec![Command::Check],
        ..config("thp")
    };
    let mut seen = None;
    let outcome = new_vm(&config)
        .run_with(|stop| {
            if stop.checkpoint.tag != checkpoint::USER || seen.is_some() {
                return;
            }
            let mut inspector = Inspector::new(RamReader::mapped(stop.memory));
            seen = Some(inspector.snapshot(|view| {
                let smaps = process::smaps(view, 1)?;
                let pagemap = process::pagemap(view, 1, None)?;
                Ok((smaps, pagemap))
            }));
        })
        .expect("the guest runs");
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert_eq!(user_reports(&outcome), ["mib=64 pages=16384 munmap=0 mprotect=0 intact=1"]);
    let process = outcome
        .reports
        .iter()
        .find_map(|r| match r {
            Report::Process(p) if p.pid == 1 => Some(*p),
            _ => None,
        })
        .expect("a process report");
    // One fault per 2 MiB of the area, each a huge page: 32 for 64 MiB. The others are
    // first touches of its image's pages (filled from the file, a page each) and the copy
    // of the stack page it shared with its child; the stack's top page is filled at load.
    assert_eq!(process.thp_faults, 32, "{process:?}");
    let small = process.page_faults - u64::from(process.thp_faults) - process.cow_copies;
    let new_pages = process.pages_zeroed + process.pages_known_zero;
    assert_eq!(new_pages, 32 * 512 + small + 1, "{process:?}");
    // A fresh guest's RAM was never written: its huge pages needed no zeroing.
    assert!(process.pages_known_zero >= 32 * 512, "{process:?}");
    // Once the processes exited, the kernel reported its free memory and the VMM dropped
    // it: the 64 MiB touched take no host memory any more.
    assert!(outcome.console.contains("page reporting: "), "{}", outcome.console);
    let resident = outcome.ram_resident_bytes;
    assert!(resident < 32 << 20, "{resident} bytes of guest RAM still resident");
    // The child copied the huge page it wrote, whole (and the stack page it shares).
    let child = outcome.reports.iter().find_map(|r| match r {
        Report::Process(p) if p.pid == 2 => Some(*p),
        _ => None,
    });
    let child = child.expect("the child's report");
    assert_eq!((child.cow_copies, child.thp_faults), (1, 0), "{child:?}");
    let (smaps, pagemap) = seen.expect("stopped at the user checkpoint").expect("inspected");
    let huge: u64 = smaps.iter().map(|e| e.anon_huge_pages).sum();
    assert_eq!(huge, 64 << 10, "AnonHugePages in kB");
    assert_eq!(pagemap.iter().filter(|p| p.huge && p.exclusive).count(), 64 * 256);
    // The host's check, at both checkpoints (huge pages whole; then split ones, and whole
    // ones shared with a child) and at exit (everything given back), finds nothing.
    let checks: Vec<_> = outcome.inspections.iter().filter(|i| i.command == "check").collect();
    assert_eq!(checks.len(), 4, "booted, two user checkpoints, exit");
    for inspection in checks {
        let Ok(Output::Check(report)) = &inspection.result else { panic!("{inspection:?}") };
        assert!(report.ok(), "{}: {:#?}", inspection.at, report.findings);
    }
}
