//! Processes, read from the task array `vmcoreinfo` points to: crash's `ps`, and Linux's
//! `/proc/PID/maps` and `/proc/PID/status`, from guest RAM alone.
//!
//! ```text
//! tasks          vmcoreinfo.tasks: nr_tasks Task slots (at most MAX_TASK_SLOTS read);
//!                free slots skipped
//!   vmas         the task's VMA tree: both arenas read whole (their lengths bounded by
//!                the map-count limit), then walked from the root, depth first; a node met
//!                twice, an index outside its arena, a count above the fanout or a tree
//!                deeper than VMA_TREE_MAX_HEIGHT is an error naming it
//!   user_leaves  the lower half of the task's own tree (shared::walk, one budget)
//! ```
//!
//! Every count and pointer is the guest's, so each is bounded before it sizes a read; every
//! node, VMA and leaf visited is paid from the command's work budget, and a VMA slot met
//! twice ends the walk, so overlapping or repeated VMAs cannot multiply the work.

use super::{to_usize, InspectError, View};
use schemars::JsonSchema;
use serde::Serialize;
use shared::addr::VirtAddr;
use shared::process::{
    task_state_name, MmStruct, Task, Vma, VmaKind, VmaNode, MAX_MAP_COUNT, NO_INDEX, TASK_COMM_LEN,
    TASK_FREE, TASK_SIZE, VMA_FANOUT, VMA_TREE_MAX_HEIGHT, VM_EXEC, VM_GROWSDOWN, VM_SHARED,
    VM_WRITE,
};
use shared::pte::PageTableEntry;
use shared::syscall::VDSO_BASE;
use shared::walk::{for_each_leaf, EnumError, Leaf, Visitor};
use std::fmt::Write;

/// Task slots read at most: a larger count in `vmcoreinfo` is corrupt.
pub const MAX_TASK_SLOTS: u64 = 4096;
/// VMA arena slots read at most: a tree can hold `MAX_MAP_COUNT` VMAs, and its arena
/// keeps freed slots for reuse, so twice that.
const MAX_ARENA: u64 = 2 * MAX_MAP_COUNT as u64;
/// Node arena slots read at most: every node but the root holds at least half a node's
/// entries, so `MAX_MAP_COUNT` VMAs take about `MAX_MAP_COUNT` / 15 nodes; this is nearly
/// twice that (4 MiB of nodes).
const MAX_NODES: u64 = MAX_ARENA / (VMA_FANOUT as u64 / 2);

/// A process, as `ps` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TaskInfo {
    /// Kernel virtual address of its task slot (crash's TASK column).
    pub task: u64,
    /// Process ID.
    pub pid: u32,
    /// Parent's PID (0: none).
    pub ppid: u32,
    /// crash's state: RU (running or runnable), IN (asleep in wait4), ZO (zombie).
    pub state: String,
    /// For a zombie, the status its parent's `wait4` will get.
    pub exit_status: u32,
    /// The program's name.
    pub comm: String,
    /// Virtual size, KiB (`total_vm`).
    pub vsz_kib: u64,
    /// Resident size, KiB (the kernel's RSS counter).
    pub rss_kib: u64,
    /// Its `oom_score_adj`.
    pub oom_score_adj: i32,
    /// Its address space as published.
    pub mm: MmStruct,
}

/// The processes, in slot order; free slots are skipped.
pub fn tasks(view: &mut View<'_, '_>) -> Result<Vec<TaskInfo>, InspectError> {
    let (base, slots) = (view.info.tasks, view.info.nr_tasks);
    if slots > MAX_TASK_SLOTS {
        return Err(InspectError::Corrupt(format!(
            "vmcoreinfo names {slots} task slots (at most {MAX_TASK_SLOTS})"
        )));
    }
    let size = std::mem::size_of::<Task>() as u64;
    let mut found = Vec::new();
    for slot in 0..slots {
        let addr = base.wrapping_add(slot * size);
        let task: Task = view.read_virt_obj(addr)?;
        if task.state == TASK_FREE {
            continue;
        }
        let comm_len = task.comm.iter().position(|&b| b == 0).unwrap_or(TASK_COMM_LEN);
        found.push(TaskInfo {
            task: addr,
            pid: task.pid,
            ppid: task.ppid,
            state: task_state_name(task.state).to_string(),
            exit_status: task.exit_status,
            comm: String::from_utf8_lossy(&task.comm[..comm_len]).into_owned(),
            vsz_kib: task.mm.total_vm.saturating_mul(4),
            rss_kib: task.mm.rss_anon.saturating_mul(4),
            oom_score_adj: task.oom_score_adj,
            mm: task.mm,
        });
    }
    Ok(found)
}

/// The live process with `pid`.
pub fn task(view: &mut View<'_, '_>, pid: u32) -> Result<TaskInfo, InspectError> {
    tasks(view)?.into_iter().find(|t| t.pid == pid && t.state != "ZO").ok_or_else(|| {
        InspectError::Argument(format!(
            "no process with PID {pid} that has memory (`vmm inspect FILE ps` lists them)"
        ))
    })
}

/// The processes as crash's `ps` prints them; `ram_pages` scales %MEM.
pub fn ps_text(tasks: &[TaskInfo], ram_pages: u64) -> String {
    let mut out =
        String::from("   PID    PPID  CPU       TASK        ST  %MEM      VSZ      RSS  COMM\n");
    for t in tasks {
        let permille = (t.rss_kib / 4).saturating_mul(1000).checked_div(ram_pages).unwrap_or(0);
        let _ = writeln!(
            out,
            "{:>6}  {:>6}   0  {:016x}  {}  {:>2}.{}  {:>7}  {:>7}  {}",
            t.pid,
            t.ppid,
            t.task,
            t.state,
            permille / 10,
            permille % 10,
            t.vsz_kib,
            t.rss_kib,
            t.comm
        );
    }
    out
}

/// The VMAs of `mm`'s tree, in address order. Refuses a tree that is not one: a node met
/// twice, an index outside its arena, a count above the fanout, or a depth beyond the
/// limit.
pub fn vmas(view: &mut View<'_, '_>, mm: &MmStruct) -> Result<Vec<Vma>, InspectError> {
    if mm.vma_root == NO_INDEX || mm.map_count == 0 && mm.nr_vmas == 0 {
        return Ok(Vec::new());
    }
    let corrupt = |what: String| InspectError::Corrupt(format!("VMA tree: {what}"));
    if mm.nr_vma_nodes > MAX_NODES || mm.nr_vmas > MAX_ARENA {
        return Err(corrupt(format!(
            "{} nodes and {} VMAs in its arenas (at most {MAX_NODES} and {MAX_ARENA})",
            mm.nr_vma_nodes, mm.nr_vmas
        )));
    }
    let nodes: Vec<VmaNode> = read_array(view, mm.vma_nodes, mm.nr_vma_nodes)?;
    let arena: Vec<Vma> = read_array(view, mm.vmas, mm.nr_vmas)?;
    let mut seen = vec![false; nodes.len()];
    let mut vma_seen = vec![false; arena.len()];
    let mut out = Vec::new();
    // (node, depth), children pushed last-first so that they come out in order.
    let mut stack = vec![(mm.vma_root, 1u32)];
    while let Some((index, depth)) = stack.pop() {
        view.budget.spend(1, || "walking a VMA tree".into())?;
        let node = nodes.get(to_usize(u64::from(index))).ok_or_else(|| {
            corrupt(format!("node {index} is outside its arena of {}", nodes.len()))
        })?;
        if std::mem::replace(&mut seen[to_usize(u64::from(index))], true) {
            return Err(corrupt(format!("node {index} is met twice (a cycle, or shared)")));
        }
        if depth > VMA_TREE_MAX_HEIGHT {
            return Err(corrupt(format!("deeper than {VMA_TREE_MAX_HEIGHT} levels")));
        }
        let count = to_usize(u64::from(node.count));
        if count > VMA_FANOUT {
            return Err(corrupt(format!(
                "node {index} holds {count} entries (at most {VMA_FANOUT})"
            )));
        }
        if node.leaf != 0 {
            for &slot in &node.slots[..count] {
                let at = to_usize(u64::from(slot));
                let vma = arena.get(at).ok_or_else(|| {
                    corrupt(format!("VMA {slot} is outside its arena of {}", arena.len()))
                })?;
                if std::mem::replace(&mut vma_seen[at], true) {
                    return Err(corrupt(format!("VMA {slot} is in the tree twice")));
                }
                if out.len() >= MAX_MAP_COUNT as usize {
                    return Err(corrupt(format!("more than {MAX_MAP_COUNT} VMAs")));
                }
                view.budget.spend(1, || "listing a process's VMAs".into())?;
                out.push(*vma);
            }
        } else {
            stack.extend(node.slots[..count].iter().rev().map(|&child| (child, depth + 1)));
        }
    }
    Ok(out)
}

/// `count` values of `T` from kernel virtual address `addr`.
fn read_array<T: zerocopy::FromBytes + zerocopy::IntoBytes + Clone>(
    view: &mut View<'_, '_>,
    addr: u64,
    count: u64,
) -> Result<Vec<T>, InspectError> {
    let mut values = vec![T::new_zeroed(); to_usize(count)];
    view.read_virt(addr, zerocopy::IntoBytes::as_mut_bytes(values.as_mut_slice()))?;
    Ok(values)
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct MapsLine {
    /// First address.
    pub start: u64,
    /// End, exclusive.
    pub end: u64,
    /// `rwxp` / `rwxs`.
    pub perms: String,
    /// The path column: the program for its image, `[heap]`, `[stack]`, `[vdso]`, or
    /// nothing for anonymous memory.
    pub name: String,
}

/// A process's `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Maps {
    /// Process ID.
    pub pid: u32,
    /// Its name.
    pub comm: String,
    /// Its VMAs, then the trampoline page (`[vdso]`) if its tables map it.
    pub lines: Vec<MapsLine>,
}

/// The maps of process `pid`, or of every process that has memory.
pub fn maps(view: &mut View<'_, '_>, pid: Option<u32>) -> Result<Vec<Maps>, InspectError> {
    let chosen = match pid {
        Some(pid) => vec![task(view, pid)?],
        None => tasks(view)?.into_iter().filter(|t| t.mm.pgd != 0).collect(),
    };
    let mut out = Vec::new();
    for t in chosen {
        let mut lines: Vec<MapsLine> = vmas(view, &t.mm)?
            .iter()
            .map(|v| MapsLine {
                start: v.start,
                end: v.end,
                perms: String::from_utf8_lossy(&v.perms()).into_owned(),
                name: match VmaKind::from_raw(v.kind) {
                    Some(VmaKind::Image) => t.comm.clone(),
                    Some(kind) => kind.maps_name().to_string(),
                    None => format!("[kind {}]", v.kind),
                },
            })
            .collect();
        if shared::walk::translate(view.ram, t.mm.pgd, VDSO_BASE).is_ok() {
            lines.push(MapsLine {
                start: VDSO_BASE,
                end: VDSO_BASE + 4096,
                perms: "r-xp".into(),
                name: "[vdso]".into(),
            });
        }
        out.push(Maps { pid: t.pid, comm: t.comm, lines });
    }
    Ok(out)
}

/// `/proc/PID/maps` text; several processes are each headed by their PID and name.
pub fn maps_text(maps: &[Maps]) -> String {
    let mut out = String::new();
    for m in maps {
        if maps.len() > 1 {
            let _ = writeln!(out, "PID {} ({}):", m.pid, m.comm);
        }
        for line in &m.lines {
            let mut text =
                format!("{:08x}-{:08x} {} 00000000 00:00 0", line.start, line.end, line.perms);
            if !line.name.is_empty() {
                // Linux pads the path column to start at column 74.
                let _ = write!(
                    text,
                    "{:pad$}{}",
                    "",
                    line.name,
                    pad = 73usize.saturating_sub(text.len())
                );
            }
            out.push_str(&text);
            out.push('\n');
        }
    }
    out
}

/// The memory lines of `/proc/PID/status`, in KiB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Status {
    /// Name.
    pub name: String,
    /// State, as `/proc` spells it: `R (running)`, `S (sleeping)`, `Z (zombie)`.
    pub state: String,
    /// Pid.
    pub pid: u32,
    /// PPid.
    pub ppid: u32,
    /// VmPeak: the most the VMAs spanned.
    pub vm_peak: u64,
    /// VmSize: what the VMAs span.
    pub vm_size: u64,
    /// VmHWM: the most it had resident.
    pub vm_hwm: u64,
    /// VmRSS: resident now (the kernel's counter).
    pub vm_rss: u64,
    /// RssAnon: resident anonymous memory (all of it, here).
    pub rss_anon: u64,
    /// VmData: private writable memory other than the stack.
    pub vm_data: u64,
    /// VmStk: the stack.
    pub vm_stk: u64,
    /// VmExe: the program's code.
    pub vm_exe: u64,
    /// VmPTE: its page tables below the PML4 (the kernel's counter, which `check` holds
    /// to a walk of them).
    pub vm_pte: u64,
    /// VmSwap: swapped out (the kernel's counter of its swap entries, which `check` holds
    /// to a walk).
    pub vm_swap: u64,
}

/// `/proc/PID/status` of process `pid` (its memory lines).
pub fn status(view: &mut View<'_, '_>, pid: u32) -> Result<Status, InspectError> {
    let t = task(view, pid)?;
    let vmas = vmas(view, &t.mm)?;
    let kib = |vmas: &mut dyn Iterator<Item = &Vma>| {
        vmas.map(|v| v.len() / 1024).fold(0, u64::saturating_add)
    };
    let vm_data = kib(&mut vmas
        .iter()
        .filter(|v| v.flags & (VM_WRITE | VM_SHARED | VM_GROWSDOWN) == VM_WRITE));
    let vm_stk = kib(&mut vmas.iter().filter(|v| v.flags & VM_GROWSDOWN != 0));
    let vm_exe =
        kib(&mut vmas.iter().filter(|v| v.flags & VM_EXEC != 0 && v.kind == VmaKind::Image as u32));
    let state = match t.state.as_str() {
        "RU" => "R (running)",
        "IN" => "S (sleeping)",
        _ => "Z (zombie)",
    };
    Ok(Status {
        name: t.comm,
        state: state.into(),
        pid: t.pid,
        ppid: t.ppid,
        vm_peak: t.mm.hiwater_vm.max(t.mm.total_vm).saturating_mul(4),
        vm_size: t.vsz_kib,
        vm_hwm: t.mm.hiwater_rss.max(t.mm.rss_anon).saturating_mul(4),
        vm_rss: t.rss_kib,
        rss_anon: t.rss_kib,
        vm_data,
        vm_stk,
        vm_exe,
        vm_pte: t.mm.pgtables.saturating_mul(4),
        vm_swap: t.mm.swapents.saturating_mul(4),
    })
}

/// `/proc/PID/status` text (its memory lines).
pub fn status_text(s: &Status) -> String {
    let mut out =
        format!("Name:\t{}\nState:\t{}\nPid:\t{}\nPPid:\t{}\n", s.name, s.state, s.pid, s.ppid);
    for (name, kib) in [
        ("VmPeak", s.vm_peak),
        ("VmSize", s.vm_size),
        ("VmHWM", s.vm_hwm),
        ("VmRSS", s.vm_rss),
        ("RssAnon", s.rss_anon),
        ("VmData", s.vm_data),
        ("VmStk", s.vm_stk),
        ("VmExe", s.vm_exe),
        ("VmPTE", s.vm_pte),
        ("VmSwap", s.vm_swap),
    ] {
        let _ = writeln!(out, "{name}:\t{kib:>8} kB");
    }
    out.push_str("Threads:\t1\n");
    out
}

/// The user pages a process's tables map, and its tables.
pub struct UserLeaves {
    /// Every mapped page of the lower half, in address order.
    pub leaves: Vec<Leaf>,
    /// Every entry that is not present but not zero either, in address order: its
    /// virtual address, level and value (a level-1 one should be a swap entry).
    pub absent: Vec<(u64, u8, PageTableEntry)>,
    /// Page tables of the lower half, the root included.
    pub tables: u64,
    /// Their guest-physical addresses.
    pub table_frames: Vec<u64>,
}

/// Walks the lower half of the tree at `pgd`, paying the command's budget.
pub fn user_leaves(view: &mut View<'_, '_>, pgd: u64) -> Result<UserLeaves, InspectError> {
    struct Collect(UserLeaves);
    impl Visitor for Collect {
        fn table(&mut self, _level: u8, gpa: u64) {
            self.0.tables += 1;
            self.0.table_frames.push(gpa);
        }
        fn leaf(&mut self, leaf: Leaf) -> bool {
            self.0.leaves.push(leaf);
            true
        }
        fn not_present(&mut self, level: u8, virt: u64, entry: PageTableEntry) {
            self.0.absent.push((virt, level, entry));
        }
    }
    let mut collect = Collect(UserLeaves {
        leaves: Vec::new(),
        absent: Vec::new(),
        tables: 0,
        table_frames: Vec::new(),
    });
    let lower = VirtAddr::new(0)..=VirtAddr::new(TASK_SIZE - 1);
    match for_each_leaf(view.ram, pgd, lower, view.budget.left_mut(), &mut collect) {
        Ok(()) | Err(EnumError::Stopped) => Ok(collect.0),
        Err(EnumError::Budget) => Err(view.budget.exhausted(format!(
            "walking the user page tables at {pgd:#x} (do tables alias each other?)"
        ))),
    }
}

/// One VMA of `/proc/PID/smaps`: its maps line and what its pages are, in KiB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SmapsEntry {
    /// The maps line.
    pub vma: MapsLine,
    /// Size: what the VMA spans.
    pub size: u64,
    /// Rss: what is mapped.
    pub rss: u64,
    /// Pss: each page divided among the processes that map it.
    pub pss: u64,
    /// Shared_Clean: pages others map too, not written.
    pub shared_clean: u64,
    /// Shared_Dirty: pages others map too, written.
    pub shared_dirty: u64,
    /// Private_Clean: pages only this process maps, not written.
    pub private_clean: u64,
    /// Private_Dirty: pages only this process maps, written.
    pub private_dirty: u64,
    /// Referenced: pages with the Accessed bit.
    pub referenced: u64,
    /// Anonymous: anonymous pages (all of them, here).
    pub anonymous: u64,
    /// AnonHugePages: of those, in huge pages.
    pub anon_huge_pages: u64,
    /// Swap: swapped out (its swap entries).
    pub swap: u64,
    /// SwapPss: each swapped page divided among the entries that name its slot.
    pub swap_pss: u64,
    /// VmFlags: Linux's two-letter codes.
    pub vm_flags: String,
}

/// Linux's `VmFlags` codes for `flags`.
fn vm_flag_codes(flags: u64) -> String {
    use shared::process::{VM_MAYEXEC, VM_MAYREAD, VM_MAYWRITE, VM_NOHUGEPAGE, VM_READ};
    [
        (VM_READ, "rd"),
        (VM_WRITE, "wr"),
        (VM_EXEC, "ex"),
        (VM_SHARED, "sh"),
        (VM_MAYREAD, "mr"),
        (VM_MAYWRITE, "mw"),
        (VM_MAYEXEC, "me"),
        (VM_GROWSDOWN, "gd"),
        (VM_NOHUGEPAGE, "nh"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, code)| *code)
    .collect::<Vec<_>>()
    .join(" ")
}

/// `/proc/PID/smaps` of process `pid`.
pub fn smaps(view: &mut View<'_, '_>, pid: u32) -> Result<Vec<SmapsEntry>, InspectError> {
    let maps = maps(view, Some(pid))?;
    let t = task(view, pid)?;
    let vmas = vmas(view, &t.mm)?;
    let walked = user_leaves(view, t.mm.pgd)?;
    let (leaves, absent) = (walked.leaves, walked.absent);
    let counts = super::state::swap_counts(view)?;
    let mut out = Vec::new();
    let pid = t.pid;
    for (vma, line) in vmas.iter().zip(&maps[0].lines) {
        let mut entry = SmapsEntry {
            vma: line.clone(),
            size: vma.len() / 1024,
            rss: 0,
            pss: 0,
            shared_clean: 0,
            shared_dirty: 0,
            private_clean: 0,
            private_dirty: 0,
            referenced: 0,
            anonymous: 0,
            anon_huge_pages: 0,
            swap: 0,
            swap_pss: 0,
            vm_flags: vm_flag_codes(vma.flags),
        };
        // SwapPss as Pss: in bytes × 4096 first. A slot's count is the entries naming it.
        let mut swap_pss_scaled = 0u64;
        let first = absent.partition_point(|&(virt, ..)| virt < vma.start);
        for (_, level, pte) in absent[first..].iter().take_while(|&&(virt, ..)| virt < vma.end) {
            let Some(slot) = pte.swap_slot().filter(|_| *level == 1) else { continue };
            entry.swap += 4;
            let sharers = usize::try_from(slot).ok().and_then(|slot| counts.get(slot)).copied();
            swap_pss_scaled += (4 << 22) / u64::from(sharers.unwrap_or(1).max(1));
        }
        entry.swap_pss = swap_pss_scaled >> 22;
        // Pss in bytes × 4096 first, as Linux keeps it, so that shares add up exactly.
        let mut pss_scaled = 0u64;
        let first = leaves.partition_point(|l| l.virt < vma.start);
        for leaf in leaves[first..].iter().take_while(|l| l.virt < vma.end) {
            view.budget.spend(1, || format!("measuring the VMAs of pid {pid}"))?;
            let kib = leaf.size / 1024;
            let flags = leaf.entry.flags();
            let dirty = flags.contains(shared::pte::PteFlags::DIRTY);
            entry.rss += kib;
            // A whole huge block's counts are on its head; a split one's, on each page.
            for (pfn, kib) in mapped_pages(view, leaf)? {
                let mapcount = match view.page(pfn) {
                    Ok(page) => u64::from(page.mapcount.max(1)),
                    Err(err @ InspectError::Budget { .. }) => return Err(err),
                    Err(_) => 1,
                };
                pss_scaled += (kib << 22) / mapcount;
                let slot = match (mapcount > 1, dirty) {
                    (true, false) => &mut entry.shared_clean,
                    (true, true) => &mut entry.shared_dirty,
                    (false, false) => &mut entry.private_clean,
                    (false, true) => &mut entry.private_dirty,
                };
                *slot += kib;
            }
            if flags.contains(shared::pte::PteFlags::ACCESSED) {
                entry.referenced += kib;
            }
            entry.anonymous += kib;
            if leaf.size > 4096 {
                entry.anon_huge_pages += kib;
            }
        }
        entry.pss = pss_scaled >> 22;
        out.push(entry);
    }
    Ok(out)
}

/// The frames whose descriptors hold `leaf`'s counts, each with the KiB it stands for:
/// the leaf's first frame for a 4 KiB page or a whole huge block (an anonymous head of
/// order 9), else each of its pages (a split block). Each page read is paid.
fn mapped_pages(view: &mut View<'_, '_>, leaf: &Leaf) -> Result<Vec<(u64, u64)>, InspectError> {
    let first = leaf.phys / 4096;
    if leaf.size == 4096 {
        return Ok(vec![(first, 4)]);
    }
    let whole = match view.page(first) {
        Ok(head) => head.flags & shared::page::PG_ANON != 0 && head.order == 9,
        Err(err @ InspectError::Budget { .. }) => return Err(err),
        Err(_) => false,
    };
    if whole {
        return Ok(vec![(first, leaf.size / 1024)]);
    }
    let pages = leaf.size / 4096;
    view.budget
        .spend(pages, || format!("reading the pages of a split huge page at {:#x}", leaf.virt))?;
    Ok((first..first + pages).map(|pfn| (pfn, 4)).collect())
}

/// `/proc/PID/smaps` text.
pub fn smaps_text(entries: &[SmapsEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let maps = Maps { pid: 0, comm: String::new(), lines: vec![e.vma.clone()] };
        out.push_str(&maps_text(std::slice::from_ref(&maps)));
        for (name, kib) in [
            ("Size", e.size),
            ("KernelPageSize", 4),
            ("MMUPageSize", 4),
            ("Rss", e.rss),
            ("Pss", e.pss),
            ("Shared_Clean", e.shared_clean),
            ("Shared_Dirty", e.shared_dirty),
            ("Private_Clean", e.private_clean),
            ("Private_Dirty", e.private_dirty),
            ("Referenced", e.referenced),
            ("Anonymous", e.anonymous),
            ("AnonHugePages", e.anon_huge_pages),
            ("Swap", e.swap),
            ("SwapPss", e.swap_pss),
        ] {
            let _ = writeln!(out, "{:<16}{kib:>8} kB", format!("{name}:"));
        }
        let _ = writeln!(out, "VmFlags: {}", e.vm_flags);
    }
    out
}

/// One page of `/proc/PID/pagemap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PagemapEntry {
    /// Virtual address of the page.
    pub virt: u64,
    /// Whether a page is mapped there.
    pub present: bool,
    /// Its frame, when present.
    pub pfn: Option<u64>,
    /// Whether it is part of a huge page.
    pub huge: bool,
    /// Whether this process is its one mapping (Linux's `PM_MMAP_EXCLUSIVE`).
    pub exclusive: bool,
    /// The swap slot holding it, when it is swapped out (Linux's `PM_SWAP`, with the
    /// offset where the frame number would be).
    pub swap_slot: Option<u64>,
}

/// Pages a `pagemap` lists at most.
pub const PAGEMAP_MAX: u64 = 1 << 20;

/// `/proc/PID/pagemap` of process `pid` for every page of its VMAs in `range` (all of
/// them by default), at most [`PAGEMAP_MAX`] pages.
pub fn pagemap(
    view: &mut View<'_, '_>,
    pid: u32,
    range: Option<super::pagetable::Range>,
) -> Result<Vec<PagemapEntry>, InspectError> {
    let t = task(view, pid)?;
    let vmas = vmas(view, &t.mm)?;
    let walked = user_leaves(view, t.mm.pgd)?;
    let (leaves, absent) = (walked.leaves, walked.absent);
    let (lo, hi) = range.map_or((0, u64::MAX), |r| (r.first.as_u64(), r.last.as_u64()));
    let mut out = Vec::new();
    let mut whole_leaf: Option<(usize, bool)> = None;
    for vma in &vmas {
        // User space only: a VMA beyond it (a corrupt one) lists nothing there.
        let end = vma.end.min(hi.saturating_add(1)).min(TASK_SIZE);
        let mut virt = vma.start.max(lo & !0xfff);
        while virt < end {
            if out.len() as u64 >= PAGEMAP_MAX {
                return Err(InspectError::Argument(format!(
                    "more than {PAGEMAP_MAX} pages: narrow it with --range"
                )));
            }
            view.budget.spend(1, || format!("listing the pages of pid {pid}"))?;
            let at = leaves.partition_point(|l| l.virt + l.size <= virt);
            let leaf = leaves.get(at).filter(|l| l.virt <= virt);
            let entry = match leaf {
                Some(leaf) => {
                    let phys = leaf.phys + (virt - leaf.virt);
                    // A whole huge block's count is on its head; a split one's on each
                    // page (worked out once per leaf).
                    if whole_leaf.is_none_or(|(index, _)| index != at) {
                        whole_leaf = Some((at, mapped_pages(view, leaf)?.len() == 1));
                    }
                    let whole = whole_leaf.is_some_and(|(_, whole)| whole);
                    let holder = if whole { leaf.phys / 4096 } else { phys / 4096 };
                    let mapcount = match view.page(holder) {
                        Ok(page) => page.mapcount,
                        Err(err @ InspectError::Budget { .. }) => return Err(err),
                        Err(_) => 0,
                    };
                    PagemapEntry {
                        virt,
                        present: true,
                        pfn: Some(phys / 4096),
                        huge: leaf.size > 4096,
                        exclusive: mapcount == 1,
                        swap_slot: None,
                    }
                }
                None => {
                    let at = absent.partition_point(|&(v, ..)| v < virt);
                    let swap_slot = absent
                        .get(at)
                        .filter(|&&(v, level, _)| v == virt && level == 1)
                        .and_then(|(_, _, pte)| pte.swap_slot());
                    PagemapEntry {
                        virt,
                        present: false,
                        pfn: None,
                        huge: false,
                        exclusive: false,
                        swap_slot,
                    }
                }
            };
            out.push(entry);
            virt += 4096; // below TASK_SIZE: no overflow
        }
    }
    Ok(out)
}

/// `pagemap` text: one line per page.
pub fn pagemap_text(pages: &[PagemapEntry]) -> String {
    let mut out = String::from(
        "            VIRT  PRESENT         PFN  HUGE  EXCLUSIVE  SWAPPED        SLOT\n",
    );
    let hex = |value: Option<u64>| value.map_or_else(|| "-".to_string(), |v| format!("{v:#x}"));
    for p in pages {
        let _ = writeln!(
            out,
            "{:016x}  {:>7}  {:>10}  {:>4}  {:>9}  {:>7}  {:>10}",
            p.virt,
            u8::from(p.present),
            hex(p.pfn),
            u8::from(p.huge),
            u8::from(p.exclusive),
            u8::from(p.swap_slot.is_some()),
            hex(p.swap_slot)
        );
    }
    out
}

/// A process as the OOM killer weighs it (a line of Linux's `dump_tasks`, and
/// `/proc/PID/oom_score`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct OomTask {
    /// Process ID.
    pub pid: u32,
    /// The program's name.
    pub comm: String,
    /// `total_vm`, pages.
    pub total_vm: u64,
    /// Resident pages (all anonymous).
    pub rss: u64,
    /// Page tables, bytes.
    pub pgtables_bytes: u64,
    /// Swap entries.
    pub swapents: u64,
    /// `oom_score_adj`.
    pub oom_score_adj: i32,
    /// Badness (`shared::process::oom_badness`); `None` for a process never picked (PID
    /// 1, or `oom_score_adj` -1000).
    pub points: Option<i64>,
    /// `/proc/PID/oom_score`: (1000 + badness in thousandths of `totalpages`) × 2/3, 0 to
    /// 2000 (fs/proc/base.c's `proc_oom_score`); 0 for a process never picked.
    pub oom_score: u64,
}

/// What the OOM killer would do now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Oom {
    /// The pages badness is scaled by: managed RAM and swap slots.
    pub totalpages: u64,
    /// Every process that has memory.
    pub tasks: Vec<OomTask>,
    /// The one it would kill: the highest badness, the higher PID on a tie.
    pub victim: Option<u32>,
}

/// The process the OOM killer never picks (Linux's global init).
const INIT_PID: u32 = 1;

/// The OOM killer's view of the processes, from their published counters.
pub fn oom(view: &mut View<'_, '_>) -> Result<Oom, InspectError> {
    let managed =
        super::state::raw_zones(view)?.iter().map(|z| z.managed).fold(0u64, u64::saturating_add);
    let totalpages = managed.saturating_add(view.info.nr_swap_slots);
    let mut weighed = Vec::new();
    for info in tasks(view)? {
        let adj = info.oom_score_adj;
        if info.mm.pgd == 0 || info.state == "ZO" {
            continue;
        }
        let points = if info.pid == INIT_PID {
            None
        } else {
            shared::process::oom_badness(&info.mm, adj, totalpages)
        };
        let oom_score = points.map_or(0, |p| {
            let scaled = (1000 + i128::from(p) * 1000 / i128::from(totalpages.max(1))) * 2 / 3;
            u64::try_from(scaled.clamp(0, 2000)).unwrap_or(0)
        });
        weighed.push(OomTask {
            pid: info.pid,
            comm: info.comm,
            total_vm: info.mm.total_vm,
            rss: info.mm.rss_anon,
            pgtables_bytes: info.mm.pgtables.saturating_mul(4096),
            swapents: info.mm.swapents,
            oom_score_adj: adj,
            points,
            oom_score,
        });
    }
    let victim = weighed
        .iter()
        .filter_map(|t| Some(((t.points?, t.pid), t.pid)))
        .max_by_key(|&(rank, _)| rank)
        .map(|(_, pid)| pid);
    Ok(Oom { totalpages, tasks: weighed, victim })
}

/// `oom` text: Linux's `dump_tasks` table with each process's badness, then the victim.
pub fn oom_text(oom: &Oom) -> String {
    let mut out = String::from(
        "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj   points oom_score name\n",
    );
    for t in &oom.tasks {
        let points = t.points.map_or_else(|| "-".to_string(), |p| p.to_string());
        let _ = writeln!(
            out,
            "[{:>7}] {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>14} {:>8} {:>13} {points:>8} {:>9} {}",
            t.pid, 0, t.pid, t.total_vm, t.rss, t.rss, 0, 0, t.pgtables_bytes, t.swapents,
            t.oom_score_adj, t.oom_score, t.comm
        );
    }
    let _ = match oom.victim.and_then(|pid| oom.tasks.iter().find(|t| t.pid == pid)) {
        Some(t) => writeln!(out, "would kill: {} ({})", t.pid, t.comm),
        None => writeln!(out, "would kill: none (nothing killable)"),
    };
    out
}
