//! User processes: programs loaded from ELF images into their own address spaces and run
//! at CPL3, with Linux's system calls and page-fault handling, `fork`, `wait4` and a
//! round-robin scheduler.
//!
//! Life cycle:
//!
//! ```text
//! init (boot)      trampoline page; probe whether `syscall` reaches CPL0 on this host
//!                  (SYSCALL if so, `ud2` traps if not); the trampoline gets that entry
//! run(name, elf)   parse and check the ELF (guest::elf), new AddressSpace, load it, make
//!                  it PID 1, CR3 = its tree, enter CPL3 at the entry point
//!   traps          system calls (syscall.rs), page faults (demand-zero, stack growth,
//!                  copy-on-write); anything else kills the process with Linux's segfault line
//!   fork           a child with a copy-on-write copy of the address space, runnable
//!   schedule       after each trap: round robin to the next runnable process when this
//!                  one blocks (wait4), yields or exits, or has had its slice of traps;
//!                  and the timer's tick (apic.rs) when it has spun in user mode for a
//!                  whole slice
//!   exit / kill    the address space is freed at once and a ProcessReport goes to the
//!                  host; the process stays a zombie until its parent's wait4 reaps it
//!   out of memory  a fault reclaim could not serve: the OOM killer (oom.rs) kills the
//!                  process of highest badness, and the fault is retried
//!   all exited     back on the kernel stack that `run` left: CR3 = the kernel's
//! ```
//!
//! There is one kernel stack. A trap from user mode saves the process's registers in a
//! [`TrapFrame`] on it; switching process means saving that frame into the process and
//! loading another's before the `iretq`. A process blocked in `wait4` is resumed at its
//! system-call instruction with its registers as they were, so the call runs again
//! (Linux's restart), now finding the zombie it waited for.
//!
//! While another process could run, every return to user mode arms the LAPIC timer with a
//! fresh 10 ms slice, so a process that neither calls nor faults is preempted once it has
//! had the CPU that long (see docs/ARCHITECTURE.md, "Timer preemption").

pub mod entry;
mod oom;
pub mod space;
mod syscall;

use crate::cell::KernelCell;
use crate::traps::TrapFrame;
use crate::{cpu, hypercall, mm};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use guest::elf::{ElfError, Program};
use log::{error, info};
use shared::addr::PhysAddr;
use shared::hypercall::{ProcessReport, ReportKind};
use shared::page::ZoneType;
use shared::process::{MmStruct, Task, MAX_TASKS, TASK_COMM_LEN, TASK_SIZE};
use shared::process::{TASK_FREE, TASK_INTERRUPTIBLE, TASK_RUNNING, TASK_ZOMBIE};
use shared::syscall::{SyscallEntry, VDSO_BASE};
use space::{AddressSpace, FaultError, SpaceError};

/// A process.
pub struct Process {
    /// Process ID.
    pub pid: u32,
    /// Its parent's, or 0 for none (its end is reaped by nobody: it goes at once).
    pub ppid: u32,
    /// Its program's name.
    pub name: &'static str,
    /// Its memory, until it exits.
    pub space: Option<AddressSpace>,
    /// Where it stands.
    pub state: State,
    /// Its user registers while another process runs.
    context: Context,
    /// System calls made.
    pub syscalls: u64,
    /// Switches away from it while it waited (`nvcsw`) and while it could have run
    /// (`nivcsw`).
    switches: (u64, u64),
    /// How it ended, once it has.
    pub ended: Option<Ending>,
    /// Its slot in the published task array.
    slot: usize,
    /// Linux's `oom_score_adj`, inherited on fork.
    pub oom_score_adj: i32,
}

impl Process {
    /// What the host reads of it.
    fn task(&self) -> Task {
        let mut comm = [0; TASK_COMM_LEN];
        let name = self.name.as_bytes();
        let len = name.len().min(TASK_COMM_LEN - 1);
        comm[..len].copy_from_slice(&name[..len]);
        let state = match self.state {
            State::Runnable => TASK_RUNNING,
            State::Waiting => TASK_INTERRUPTIBLE,
            State::Zombie => TASK_ZOMBIE,
        };
        let exit_status = self.ended.map_or(0, Ending::wait_status);
        let mm = self.space.as_ref().map_or(EMPTY_TASK.mm, AddressSpace::published);
        let oom_score_adj = self.oom_score_adj;
        Task {
            pid: self.pid,
            ppid: self.ppid,
            state,
            exit_status,
            oom_score_adj,
            _pad: 0,
            comm,
            mm,
        }
    }
}

/// Where a process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Running or ready to.
    Runnable,
    /// In `wait4`, for a child to end.
    Waiting,
    /// Ended; waiting for its parent to reap it.
    Zombie,
}

/// How a process ended.
#[derive(Clone, Copy, Debug)]
pub enum Ending {
    /// It called `exit` or `exit_group`.
    Exit(i32),
    /// A signal killed it, for an access at `address` by the instruction at `ip`.
    Killed {
        /// The signal number.
        signal: u32,
        /// The address accessed (page faults), else 0.
        address: u64,
        /// The instruction.
        ip: u64,
    },
}

impl Ending {
    /// The status `wait4` reports: the exit code in bits 8–15, or the signal in bits 0–6.
    pub fn wait_status(self) -> u32 {
        match self {
            // The low 8 bits of the code, as Linux keeps them.
            #[expect(clippy::cast_sign_loss, reason = "only the low 8 bits are kept")]
            Self::Exit(code) => (code as u32 & 0xff) << 8,
            Self::Killed { signal, .. } => signal & 0x7f,
        }
    }
}

/// A process's user registers, saved while it does not run.
#[derive(Clone, Copy, Debug, Default)]
struct Context {
    gprs: [u64; 15],
    rip: u64,
    rflags: u64,
    rsp: u64,
}

impl Context {
    fn save(frame: &TrapFrame) -> Self {
        Self { gprs: frame.gprs, rip: frame.rip, rflags: frame.rflags, rsp: frame.rsp }
    }

    fn load(&self, frame: &mut TrapFrame) {
        frame.gprs = self.gprs;
        (frame.rip, frame.rflags, frame.rsp) = (self.rip, self.rflags, self.rsp);
        (frame.cs, frame.ss) = (cpu::USER_CS, cpu::USER_DS);
    }
}

/// Every process, and which one runs.
struct Table {
    processes: Vec<Process>,
    current: usize,
    /// Traps taken since the current process was scheduled in.
    slice_used: u32,
    /// Processes in [`State::Runnable`] (the timer runs only while two or more are).
    runnable: usize,
    /// The process `run` started (PID 1 of the first run), which inherits orphans.
    init: u32,
    /// Its report, once it has ended.
    init_report: Option<ProcessReport>,
    /// What the host reads (`vmcoreinfo.tasks`): one slot per process, by `Process::slot`.
    tasks: [Task; MAX_TASKS],
}

impl Table {
    fn current(&mut self) -> Option<&mut Process> {
        self.processes.get_mut(self.current)
    }

    /// A task slot no process holds.
    fn free_slot(&self) -> Option<usize> {
        (0..MAX_TASKS).find(|&slot| self.processes.iter().all(|p| p.slot != slot))
    }

    /// Rewrites the task slot of every process, inside a `vmcoreinfo` change bracket so
    /// that a host reader can tell a torn read. Slots of processes that are gone are
    /// cleared where they go ([`Table::clear`]).
    fn publish(&mut self) {
        for space in self.processes.iter_mut().filter_map(|p| p.space.as_mut()) {
            space.sync_counters();
        }
        mm::vmcoreinfo::begin_change();
        for process in &self.processes {
            if let Some(slot) = self.tasks.get_mut(process.slot) {
                // SAFETY: a slot of the published array, written while nothing reads it
                // in the guest; volatile, so that the host sees every store.
                unsafe { core::ptr::write_volatile(slot, process.task()) };
            }
        }
        mm::vmcoreinfo::end_change();
    }

    /// Frees task slot `slot` (its process is gone).
    fn clear(&mut self, slot: usize) {
        if let Some(task) = self.tasks.get_mut(slot) {
            mm::vmcoreinfo::begin_change();
            // SAFETY: as in `publish`.
            unsafe { core::ptr::write_volatile(task, EMPTY_TASK) };
            mm::vmcoreinfo::end_change();
        }
    }
}

/// An unused task slot.
const EMPTY_TASK: Task = Task {
    pid: 0,
    ppid: 0,
    state: TASK_FREE,
    exit_status: 0,
    oom_score_adj: 0,
    _pad: 0,
    comm: [0; TASK_COMM_LEN],
    mm: MmStruct {
        pgd: 0,
        vma_nodes: 0,
        nr_vma_nodes: 0,
        vmas: 0,
        nr_vmas: 0,
        vma_root: 0,
        vma_height: 0,
        map_count: 0,
        total_vm: 0,
        rss_anon: 0,
        hiwater_rss: 0,
        hiwater_vm: 0,
        pgtables: 0,
        swapents: 0,
        start_brk: 0,
        brk: 0,
        start_stack: 0,
    },
};

/// Where the host finds the task array, and its slots (for `vmcoreinfo`).
pub fn tasks_address() -> (u64, u64) {
    TABLE.with(|table| (table.tasks.as_ptr() as u64, MAX_TASKS as u64))
}

/// Traps a process takes (system calls and faults) before another runnable one gets the
/// CPU.
const SLICE: u32 = 16;

static TABLE: KernelCell<Table> = KernelCell::new(Table {
    processes: Vec::new(),
    current: 0,
    slice_used: 0,
    runnable: 0,
    init: 0,
    init_report: None,
    tasks: [EMPTY_TASK; MAX_TASKS],
});
static ENTRY: AtomicU32 = AtomicU32::new(SyscallEntry::Unprobed as u32);
static VDSO: AtomicU64 = AtomicU64::new(0);
static PROBING: AtomicBool = AtomicBool::new(false);
static NEXT_PID: AtomicU32 = AtomicU32::new(1);

const SIGILL: u32 = 4;
const SIGTRAP: u32 = 5;
const SIGFPE: u32 = 8;
const SIGKILL: u32 = 9;
const SIGSEGV: u32 = 11;
const INVALID_OPCODE: u64 = 6;
const PAGE_FAULT: u64 = 14;

/// Why a program could not be started.
#[derive(Debug)]
pub enum RunError {
    /// The image was refused.
    Elf(ElfError),
    /// Its address space could not be built.
    Space(SpaceError),
}

impl core::fmt::Display for RunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Elf(err) => write!(f, "bad ELF image: {err}"),
            Self::Space(err) => write!(f, "cannot build its address space: {err:?}"),
        }
    }
}

/// Runs `f` on the running process; `None` if there is none (or the table is in use).
pub fn with_current<R>(f: impl FnOnce(&mut Process) -> R) -> Option<R> {
    TABLE.try_with(|table| table.current().map(f)).flatten()
}

/// The trampoline page's frame.
pub fn vdso_frame() -> PhysAddr {
    PhysAddr::new(VDSO.load(Ordering::Relaxed))
}

/// The system-call entry in use.
pub fn syscall_entry() -> SyscallEntry {
    SyscallEntry::from_raw(ENTRY.load(Ordering::Relaxed)).unwrap_or(SyscallEntry::Unprobed)
}

/// A 4 KiB stack for the probe's user-mode `rsp`: kernel memory, so that an exception the
/// CPU delivered without a stack switch would still find a stack.
#[repr(align(16))]
struct ProbeStack([u8; 4096]);
static mut PROBE_STACK: ProbeStack = ProbeStack([0; 4096]);

/// Sets up user mode: the trampoline page and the system-call entry, found by probing.
/// Returns the entry chosen.
pub fn init() -> Result<SyscallEntry, SpaceError> {
    let (smep, smap) = cpu::enable_user_protections();
    entry::set_smap(smap);
    let state = |on| if on { "on" } else { "not offered" };
    info!("user protections: SMEP {}, SMAP {}", state(smep), state(smap));
    if crate::apic::init() {
        info!(
            "timer: x2APIC one-shot, {} ms slices while processes share the CPU",
            crate::apic::SLICE_MS
        );
    } else {
        info!("timer: no x2APIC; processes are switched at traps only");
    }
    cpu::enable_syscall(entry::syscall_entry_range().start);
    let frame = mm::global::with(|mm| mm.buddy.alloc_page(ZoneType::Normal))
        .map(|pfn| PhysAddr::new(pfn * 4096))
        .ok_or(SpaceError::NoMemory)?;
    // SAFETY: a page just allocated, reached through the direct map.
    unsafe { mm::tables::zero_frame(frame) };
    VDSO.store(frame.as_u64(), Ordering::Relaxed);
    // The probe: `syscall`, then `ud2`. Either the syscall traps at once (no privilege
    // switch) or it returns to the `ud2`, which ends the probe.
    write_trampoline(&[0x0f, 0x05, 0x0f, 0x0b]);
    let mut probe = AddressSpace::new()?;
    probe.map_vdso(frame)?;
    PROBING.store(true, Ordering::SeqCst);
    // SAFETY: only the address is taken.
    let stack = unsafe { (&raw const PROBE_STACK.0) as u64 } + 4096;
    // SAFETY: the probe's tree maps the trampoline for user mode and the kernel half as
    // the kernel's; no borrow is live across the excursion.
    unsafe {
        cpu::switch_page_tables(probe.root);
        entry::run(VDSO_BASE, stack);
        cpu::switch_page_tables(mm::global::with(|mm| mm.root()));
    }
    PROBING.store(false, Ordering::SeqCst);
    probe.destroy();
    let chosen = match syscall_entry() {
        SyscallEntry::Syscall => SyscallEntry::Syscall,
        _ => SyscallEntry::Trap,
    };
    ENTRY.store(chosen as u32, Ordering::Relaxed);
    write_trampoline(&[0; 4]);
    write_trampoline(&entry::trampoline(chosen));
    info!("syscall entry: {} (probed)", chosen.name());
    Ok(chosen)
}

fn write_trampoline(code: &[u8]) {
    let page = mm::direct_map(vdso_frame().as_u64()) as *mut u8;
    // SAFETY: the trampoline page is the kernel's; user mode maps it read-only and no
    // process runs while it is written.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len()) };
}

/// Loads `image` as process `name` with arguments `args` (`argv[0]` first) and runs it,
/// and every process it forks, to their ends. Returns its report.
pub fn run(
    name: &'static str,
    image: &'static [u8],
    args: &[&str],
) -> Result<ProcessReport, RunError> {
    let program = Program::parse(image).map_err(RunError::Elf)?;
    let mut space = AddressSpace::new().map_err(RunError::Space)?;
    let rsp = match space.load(&program, args, vdso_frame()) {
        Ok(rsp) => rsp,
        Err(err) => {
            space.destroy();
            return Err(RunError::Space(err));
        }
    };
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let root = space.root;
    let process = Process {
        pid,
        ppid: 0,
        name,
        space: Some(space),
        state: State::Runnable,
        context: Context::default(),
        syscalls: 0,
        switches: (0, 0),
        ended: None,
        slot: 0,
        oom_score_adj: 0,
    };
    TABLE.with(|table| {
        table.processes.push(process);
        table.current = table.processes.len() - 1;
        table.slice_used = 0;
        table.runnable = 1;
        (table.init, table.init_report) = (pid, None);
        table.publish();
    });
    info!("{name}[{pid}]: started at {:#x}", program.entry);
    // SAFETY: the process tree maps the program and the trampoline for user mode and the
    // kernel half as the kernel's; no borrow is live across the excursion.
    unsafe {
        cpu::switch_page_tables(root);
        entry::run(program.entry, rsp);
        cpu::switch_page_tables(mm::global::with(|mm| mm.root()));
    }
    crate::apic::set(false);
    // Every process has ended: the zombies nobody reaped go now, with the table's memory.
    let (processes, report) = TABLE.with(|table| {
        let processes = core::mem::take(&mut table.processes);
        for process in &processes {
            table.clear(process.slot);
        }
        (processes, table.init_report.take())
    });
    drop(processes);
    report.ok_or(RunError::Space(SpaceError::NoMemory))
}

/// Handles a trap; returns `false` for one that is the kernel's own (from CPL0, not
/// during the probe), which the caller handles. A trap from user mode may end with
/// another process's registers in `frame`.
pub fn trap(frame: &mut TrapFrame, cr2: u64) -> bool {
    if PROBING.load(Ordering::Relaxed) {
        probe_trap(frame);
    }
    if frame.cs & 3 != 3 {
        return false;
    }
    let trampoline = frame.vector == INVALID_OPCODE
        && frame.rip == VDSO_BASE
        && syscall_entry() == SyscallEntry::Trap;
    let mut switch = Switch::AfterTrap;
    if frame.vector == entry::SYSCALL_VECTOR || trampoline {
        if trampoline {
            // Resume at the trampoline's `ret`.
            frame.rip += 2;
        }
        if syscall::dispatch(frame) {
            switch = Switch::Yield;
        }
    } else if frame.vector == PAGE_FAULT {
        let code = frame.error_code;
        let served = with_current(|process| match process.space.as_mut() {
            Some(space) => space.fault(cr2, code & 2 != 0, code & 16 != 0, code & 1 != 0),
            None => Err(FaultError::NotMapped),
        })
        .unwrap_or(Err(FaultError::NotMapped));
        match served {
            Ok(()) => {}
            // The OOM killer frees memory (the fault is then retried) or kills this one.
            Err(FaultError::NoMemory) => oom::out_of_memory(frame),
            Err(err) => kill(frame, SIGSEGV, cr2, Some(err)),
        }
    } else {
        let signal = match frame.vector {
            0 => SIGFPE,
            3 => SIGTRAP,
            INVALID_OPCODE => SIGILL,
            _ => SIGSEGV,
        };
        kill(frame, signal, 0, None);
    }
    schedule(frame, switch);
    true
}

/// The timer's tick from user mode: `expired` if the process has had the CPU in user
/// mode for a whole slice (else the tick was left over from kernel time).
pub fn tick(frame: &mut TrapFrame, expired: bool) {
    if expired {
        schedule(frame, Switch::Tick);
    }
}

/// Why the scheduler runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Switch {
    /// After a trap: the process goes on unless it blocked, ended or used its slice.
    AfterTrap,
    /// It called `sched_yield` or blocked: the next runnable process goes first.
    Yield,
    /// The timer took the CPU from it: the next runnable process goes first.
    Tick,
}

/// Picks the process to return to: the current one while it is runnable and has slice
/// left (and did not yield, nor was preempted), else the next runnable one after it,
/// round robin. Loads its registers into `frame` and its tree into CR3, and starts a
/// timer slice while other processes exist. With no process left runnable, the run is
/// over: back to [`run`].
fn schedule(frame: &mut TrapFrame, switch: Switch) {
    let next = TABLE.with(|table| {
        table.slice_used += 1;
        let current = table.current;
        let runnable = table.current().is_some_and(|p| p.state == State::Runnable);
        // Another process could take the CPU: only then does the timer tick.
        let others = table.runnable > 1;
        if runnable && switch == Switch::AfterTrap && table.slice_used < SLICE {
            return Ok((None, others));
        }
        let count = table.processes.len();
        let next = (1..=count)
            .map(|step| (current + step) % count)
            .find(|&i| table.processes[i].state == State::Runnable)
            .ok_or(())?;
        table.slice_used = 0;
        if next == current {
            return Ok((None, others));
        }
        if let Some(process) = table.current() {
            process.context = Context::save(frame);
            if runnable {
                process.switches.1 += 1;
            } else {
                process.switches.0 += 1;
            }
        }
        table.current = next;
        let process = &table.processes[next];
        process.context.load(frame);
        // Orphans that have ended are reaped by nobody: they go now.
        let pid = process.pid;
        let gone = |p: &Process| p.state == State::Zombie && p.ppid == 0;
        while let Some(index) = table.processes.iter().position(gone) {
            let orphan = table.processes.remove(index);
            table.clear(orphan.slot);
        }
        table.current = table.processes.iter().position(|p| p.pid == pid).unwrap_or(0);
        let root = table.processes[table.current].space.as_ref().map(|s| s.root);
        Ok((root, table.runnable > 1))
    });
    match next {
        Ok((root, others)) => {
            if let Some(root) = root {
                // SAFETY: the tree of the process whose registers `frame` now holds.
                unsafe { cpu::switch_page_tables(root) };
            }
            crate::apic::set(others);
        }
        // SAFETY: a trap taken while `run` is active; no borrow is live here.
        Err(()) => unsafe { entry::leave(0) },
    }
}

/// A page fault the kernel took at a user address (in a copy to or from user memory):
/// served like the process's own, or `false` for the exception table to take over.
pub fn kernel_fault(address: u64, error_code: u64) -> bool {
    if address >= TASK_SIZE {
        return false;
    }
    let write = error_code & 2 != 0;
    with_current(|process| {
        process
            .space
            .as_mut()
            .is_some_and(|space| space.fault(address, write, false, error_code & 1 != 0).is_ok())
    })
    .unwrap_or(false)
}

/// The probe's one trap: a `syscall` that reached CPL0 (SYSCALL works; go back for the
/// `ud2`), or anything else (it did not; the `ud2` after a working one ends the probe).
fn probe_trap(frame: &mut TrapFrame) {
    if frame.vector == entry::SYSCALL_VECTOR {
        ENTRY.store(SyscallEntry::Syscall as u32, Ordering::Relaxed);
        return;
    }
    if syscall_entry() != SyscallEntry::Syscall {
        if !entry::syscall_entry_range().contains(&frame.rip) {
            error!("syscall probe: unexpected vector {} at {:#x}", frame.vector, frame.rip);
        }
        ENTRY.store(SyscallEntry::Trap as u32, Ordering::Relaxed);
    }
    // SAFETY: a trap taken during the probe's excursion; no borrow is live here.
    unsafe { entry::leave(0) }
}

/// `fork`: a child whose registers are `frame`'s but for `rax` = 0, and whose address
/// space is a copy-on-write copy of the current one. Returns its PID or `-errno`.
fn fork(frame: &TrapFrame) -> i64 {
    use shared::syscall::{EAGAIN, ENOMEM};
    let Some(slot) = TABLE.with(|table| table.free_slot()) else { return -EAGAIN };
    let try_fork = || {
        with_current(|parent| {
            let space = parent.space.as_mut().ok_or(SpaceError::NoMemory)?.fork(vdso_frame())?;
            Ok::<_, SpaceError>((parent.pid, parent.name, parent.oom_score_adj, space))
        })
    };
    let mut copy = try_fork();
    // Direct reclaim for the child's tables, while it frees something (the allocation
    // slow path's; a fork that still finds no memory fails with -ENOMEM, as Linux's).
    for _ in 0..space::MAX_RECLAIM_RETRIES {
        if !matches!(copy, Some(Err(SpaceError::NoMemory)))
            || mm::global::with(|mm| mm.reclaim(guest::reclaim::SWAP_BATCH as u64, false)) == 0
        {
            break;
        }
        copy = try_fork();
    }
    let Some(Ok((ppid, name, oom_score_adj, space))) = copy else { return -ENOMEM };
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let mut context = Context::save(frame);
    context.gprs[TrapFrame::RAX] = 0;
    let child = Process {
        pid,
        ppid,
        name,
        space: Some(space),
        state: State::Runnable,
        context,
        syscalls: 0,
        switches: (0, 0),
        ended: None,
        slot,
        oom_score_adj,
    };
    TABLE.with(|table| {
        table.processes.push(child);
        table.runnable += 1;
        table.publish();
    });
    i64::from(pid)
}

/// What `wait4` found.
enum Wait {
    /// A child ended: its PID and status.
    Reaped(u32, u32),
    /// Children live, none has ended, and the caller will not wait.
    NoneYet,
    /// Children live and none has ended: the caller sleeps until one does.
    Block,
    /// No child matches.
    NoChild,
}

/// `wait4`'s search among the current process's children (`pid` one of them, or any for
/// -1 and the process-group forms): reaps the first that ended.
fn reap(pid: i32, nohang: bool) -> Wait {
    TABLE.with(|table| {
        let Some(me) = table.current().map(|p| p.pid) else { return Wait::NoChild };
        let matches =
            |p: &Process| p.ppid == me && (pid <= 0 || i64::from(p.pid) == i64::from(pid));
        if !table.processes.iter().any(matches) {
            return Wait::NoChild;
        }
        let zombie = table.processes.iter().position(|p| matches(p) && p.state == State::Zombie);
        match zombie {
            Some(index) => {
                let child = table.processes.remove(index);
                if index < table.current {
                    table.current -= 1;
                }
                let status = child.ended.map_or(0, Ending::wait_status);
                table.clear(child.slot);
                table.publish();
                Wait::Reaped(child.pid, status)
            }
            None if nohang => Wait::NoneYet,
            None => {
                if let Some(process) = table.current() {
                    process.state = State::Waiting;
                    table.runnable -= 1;
                }
                Wait::Block
            }
        }
    })
}

/// Ends the current process (see [`end`]). The scheduler then switches away.
fn exit_current(ending: Ending) {
    if let Some(pid) = with_current(|process| process.pid) {
        end(pid, ending);
    }
}

/// Ends process `pid`, running or not: frees its memory at once, reports it, hands its
/// children to PID 1 (or to nobody when that is the one ending, or gone), and wakes its
/// parent if it waits.
fn end(pid: u32, ending: Ending) {
    let ended = TABLE.with(|table| {
        let index = table.processes.iter().position(|p| p.pid == pid)?;
        let current = index == table.current;
        let process = &mut table.processes[index];
        if process.state == State::Zombie {
            return None;
        }
        if process.state == State::Runnable {
            table.runnable -= 1;
        }
        process.state = State::Zombie;
        process.ended = Some(ending);
        let (ppid, name, syscalls, switches) =
            (process.ppid, process.name, process.syscalls, process.switches);
        let space = process.space.take();
        let init = table.init;
        let init_lives = table.processes.iter().any(|p| p.pid == init && p.state != State::Zombie);
        let heir = if init_lives && init != pid { init } else { 0 };
        let mut zombie_handed = false;
        for child in table.processes.iter_mut().filter(|p| p.ppid == pid) {
            child.ppid = heir;
            zombie_handed |= child.state == State::Zombie;
        }
        // The heir may be waiting for a child to end: one just became its child.
        if zombie_handed {
            if let Some(init) =
                table.processes.iter_mut().find(|p| p.pid == heir && p.state == State::Waiting)
            {
                init.state = State::Runnable;
                table.runnable += 1;
            }
        }
        if let Some(parent) =
            table.processes.iter_mut().find(|p| p.pid == ppid && p.state == State::Waiting)
        {
            parent.state = State::Runnable;
            table.runnable += 1;
        }
        Some((current, ppid, name, syscalls, switches, space))
    });
    let Some((current, ppid, name, syscalls, switches, space)) = ended else { return };
    if current {
        // SAFETY: the kernel's tree maps the kernel as every process tree does; the one
        // being freed must not stay in CR3. (Another process's tree is not in CR3, and the
        // running one's must stay: the scheduler keeps CR3 when it keeps the process.)
        unsafe { cpu::switch_page_tables(mm::global::with(|mm| mm.root())) };
    }
    let (exit_code, signal, fault_address, fault_ip) = match ending {
        Ending::Exit(code) => (code, 0, 0, 0),
        Ending::Killed { signal, address, ip } => (0, signal, address, ip),
    };
    let mut report = ProcessReport {
        pid,
        ppid,
        exit_code,
        signal,
        syscall_entry: syscall_entry() as u32,
        syscalls,
        fault_address,
        fault_ip,
        voluntary_switches: switches.0,
        nonvoluntary_switches: switches.1,
        ..ProcessReport::default()
    };
    if let Some(space) = space {
        report.page_faults = space.faults;
        report.pages_zeroed = space.zeroed;
        report.pages_known_zero = space.known_zero;
        report.cow_copies = space.cow_copies;
        report.cow_reused = space.cow_reused;
        report.thp_faults = u32::try_from(space.thp_faults).unwrap_or(u32::MAX);
        report.hiwater_rss_pages = space.hiwater_rss;
        report.map_count = space.vmas.count() as u64;
        space.destroy();
    }
    info!("{name}[{pid}]: exit code {exit_code}, signal {signal}");
    hypercall::report_value(ReportKind::Process, &report);
    TABLE.with(|table| {
        if pid == table.init {
            table.init_report = Some(report);
        }
        table.publish();
    });
}

/// Kills the current process with `signal`, printing Linux's line: `segfault at …` for a
/// page fault (with why it was refused), `traps: … <exception> ip:… sp:… error:…` for any
/// other exception (arch/x86's `show_signal`).
fn kill(frame: &TrapFrame, signal: u32, address: u64, cause: Option<FaultError>) {
    with_current(|process| {
        let vma = process.space.as_ref().and_then(|s| s.vmas.lookup(frame.rip).copied());
        let kind = vma.and_then(|v| shared::process::VmaKind::from_raw(v.kind));
        let place = kind.map_or("no VMA", |k| match k.maps_name() {
            "" => "[anon]",
            name => name,
        });
        let (name, pid) = (process.name, process.pid);
        let (ip, sp, error) = (frame.rip, frame.rsp, frame.error_code);
        match cause {
            Some(cause) => {
                let cause = match cause {
                    FaultError::NotMapped => "no VMA",
                    FaultError::Access => "access denied by the VMA",
                    FaultError::NoMemory => "out of memory",
                    FaultError::Io => "swap read failed",
                };
                error!(
                    "{name}[{pid}]: segfault at {address:#x} ip {ip:#018x} sp {sp:#018x} \
                     error {error:x} ({cause}) in {place}"
                );
            }
            None => {
                let what = shared::hypercall::exception_name(frame.vector).1;
                let trap = if frame.vector == 13 { "" } else { "trap " };
                error!(
                    "traps: {name}[{pid}] {trap}{what} ip:{ip:x} sp:{sp:x} error:{error:x} in {place}"
                );
            }
        }
    });
    exit_current(Ending::Killed { signal, address, ip: frame.rip });
}

/// Our `checkpoint()` system call: publishes every process as it stands, reports each
/// one's VMAs (what the host's `maps` must show), then stops at a checkpoint for the host.
pub fn checkpoint() {
    /// VMAs one report holds (the payload limit is 64 KiB).
    const MAX_REPORTED: usize = 2000;
    let mut payload: Vec<u8> = Vec::new();
    let processes = TABLE.with(|table| {
        table.publish();
        table.processes.iter().filter(|p| p.space.is_some()).map(|p| p.pid).collect::<Vec<_>>()
    });
    for pid in processes {
        payload.clear();
        let vmas = TABLE.with(|table| {
            let process = table.processes.iter().find(|p| p.pid == pid)?;
            let vmas: Vec<_> =
                process.space.as_ref()?.vmas.iter().copied().take(MAX_REPORTED).collect();
            Some(vmas)
        });
        let Some(vmas) = vmas else { continue };
        let count = u32::try_from(vmas.len()).unwrap_or(u32::MAX);
        let header = shared::hypercall::VmasHeader { pid, count };
        payload.extend_from_slice(zerocopy::IntoBytes::as_bytes(&header));
        payload.extend_from_slice(zerocopy::IntoBytes::as_bytes(vmas.as_slice()));
        hypercall::report(ReportKind::Vmas, &payload);
    }
    hypercall::checkpoint(shared::hypercall::checkpoint::USER);
}
