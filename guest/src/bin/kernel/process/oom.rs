//! The OOM killer, after Linux's mm/oom_kill.c: when a user fault finds no memory even
//! after direct reclaim, kill the process whose death frees the most.
//!
//! ```text
//! out_of_memory   a user fault failed with NoMemory (space.rs retried reclaim first)
//!   publish       every process's counters brought up to date and written for the host
//!   select        oom_badness of each live process but PID 1 (init) and those at
//!                 OOM_SCORE_ADJ_MIN; the highest wins, the younger (higher PID) on a tie
//!                 (Linux's select_bad_process, over its task list in creation order)
//!   dump_header   "NAME invoked oom-killer", and the task table in pages (dump_tasks)
//!   report        an OomKillReport to the host, then the OOM checkpoint: the host sees
//!                 what the killer saw
//!   kill          "Out of memory: Killed process …", SIGKILL: the victim's memory and
//!                 swap slots are freed at once (there is no oom_reaper to wait for)
//!   retry         the faulting process returns to user mode and faults again, unless it
//!                 was the victim
//! ```
//!
//! With nothing killable (every process is init or exempt), the faulting process
//! itself is killed: Linux would panic, but a kernel here must survive its programs.

use super::{end, Ending, Process, State, SIGKILL, TABLE};
use crate::traps::TrapFrame;
use crate::{hypercall, mm};
use log::error;
use shared::hypercall::{OomKillReport, ReportKind};
use shared::process::{oom_badness, TASK_COMM_LEN};

/// The process never picked (Linux's `is_global_init`).
const INIT: u32 = 1;

/// What the killer saw of its victim.
struct Victim {
    report: OomKillReport,
    name: &'static str,
    ip: u64,
}

/// Runs the OOM killer for a fault of the current process (`frame`) that found no
/// memory. On return either the victim was another process and the fault is retried
/// when `frame` resumes, or the current process has ended and the scheduler switches
/// away.
pub fn out_of_memory(frame: &TrapFrame) {
    let totalpages = mm::global::with(|mm| mm.buddy.managed_pages() + mm.swap.slots());
    let chosen = TABLE.with(|table| {
        table.publish();
        let trigger = table.current()?;
        let (trigger_pid, trigger_name, trigger_adj) =
            (trigger.pid, trigger.name, trigger.oom_score_adj);
        error!("{trigger_name} invoked oom-killer: order=0, oom_score_adj={trigger_adj}");
        dump_tasks(&table.processes);
        let mut best: Option<((i64, u32), usize)> = None;
        for (index, process) in table.processes.iter().enumerate() {
            let Some(space) = process.space.as_ref().filter(|_| process.pid != INIT) else {
                continue;
            };
            let points = oom_badness(&space.published(), process.oom_score_adj, totalpages);
            let rank = points.map(|points| (points, process.pid));
            if let Some(rank) = rank.filter(|&r| best.is_none_or(|(b, _)| r > b)) {
                best = Some((rank, index));
            }
        }
        let Some(((points, _), index)) = best else {
            return Some(Err((trigger_pid, trigger_name)));
        };
        let victim = &table.processes[index];
        let mm = victim.space.as_ref()?.published();
        let mut comm = [0; TASK_COMM_LEN];
        let len = victim.name.len().min(TASK_COMM_LEN - 1);
        comm[..len].copy_from_slice(&victim.name.as_bytes()[..len]);
        let ip = if index == table.current { frame.rip } else { victim.context.rip };
        Some(Ok(Victim {
            report: OomKillReport {
                pid: victim.pid,
                trigger_pid,
                oom_score_adj: victim.oom_score_adj,
                order: 0,
                points,
                totalpages,
                total_vm_kib: mm.total_vm * 4,
                anon_rss_kib: mm.rss_anon * 4,
                file_rss_kib: 0,
                shmem_rss_kib: 0,
                pgtables_kib: mm.pgtables * 4,
                swapents: mm.swapents,
                comm,
            },
            name: victim.name,
            ip,
        }))
    });
    match chosen {
        None => {}
        Some(Err((pid, name))) => {
            error!("Out of memory and no killable processes: killing {name}[{pid}], which faulted");
            end(pid, Ending::Killed { signal: SIGKILL, address: 0, ip: frame.rip });
        }
        Some(Ok(victim)) => {
            let r = &victim.report;
            hypercall::report_value(ReportKind::OomKill, r);
            hypercall::checkpoint(shared::hypercall::checkpoint::OOM);
            mm::global::with(|mm| mm.events.oom_kill += 1);
            error!(
                "Out of memory: Killed process {} ({}) total-vm:{}kB, anon-rss:{}kB, \
                 file-rss:{}kB, shmem-rss:{}kB, UID:0 pgtables:{}kB oom_score_adj:{}",
                r.pid,
                victim.name,
                r.total_vm_kib,
                r.anon_rss_kib,
                r.file_rss_kib,
                r.shmem_rss_kib,
                r.pgtables_kib,
                r.oom_score_adj
            );
            end(r.pid, Ending::Killed { signal: SIGKILL, address: 0, ip: victim.ip });
        }
    }
}

/// Linux's `dump_tasks`: one line per process that has memory, in pages.
fn dump_tasks(processes: &[Process]) {
    error!("Tasks state (memory values in pages):");
    error!("[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name");
    for process in processes.iter().filter(|p| p.state != State::Zombie) {
        let Some(space) = process.space.as_ref() else { continue };
        let mm = space.published();
        error!(
            "[{:>7}] {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>14} {:>8} {:>13} {}",
            process.pid,
            0,
            process.pid,
            mm.total_vm,
            mm.rss_anon,
            mm.rss_anon,
            0,
            0,
            mm.pgtables * 4096,
            mm.swapents,
            process.oom_score_adj,
            process.name
        );
    }
}
