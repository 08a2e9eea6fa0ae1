//! User processes: programs loaded from ELF images into their own address spaces and run
//! at CPL3, with Linux's system calls and page-fault handling.
//!
//! Life cycle:
//!
//! ```text
//! init (boot)      trampoline page; probe whether `syscall` reaches CPL0 on this host
//!                  (SYSCALL if so, `ud2` traps if not); the trampoline gets that entry
//! run(name, elf)   parse and check the ELF (guest::elf), new AddressSpace, load it,
//!                  CR3 = its tree, enter CPL3 at the entry point
//!   traps          system calls (syscall.rs), page faults (demand-zero, stack growth),
//!                  anything else kills it with Linux's segfault line
//!   exit / kill    back on the kernel stack: CR3 = the kernel's, free every page and
//!                  table, report a ProcessReport to the host
//! ```
//!
//! One process runs at a time, to its end; the kernel half of every process tree is the
//! kernel tree's, copied when the tree is made.

pub mod entry;
pub mod space;
mod syscall;

use crate::cell::KernelCell;
use crate::traps::TrapFrame;
use crate::{cpu, hypercall, mm};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use guest::elf::{ElfError, Program};
use log::{error, info};
use shared::addr::PhysAddr;
use shared::hypercall::{ProcessReport, ReportKind};
use shared::page::ZoneType;
use shared::process::TASK_SIZE;
use shared::syscall::{SyscallEntry, STACK_TOP, VDSO_BASE};
use space::{AddressSpace, FaultError, SpaceError};

/// A running process.
pub struct Process {
    /// Process ID.
    pub pid: u32,
    /// Its program's name.
    pub name: &'static str,
    /// Its memory.
    pub space: AddressSpace,
    /// System calls made.
    pub syscalls: u64,
    /// How it ended, once it has.
    pub ended: Option<Ending>,
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

static CURRENT: KernelCell<Option<Process>> = KernelCell::new(None);
static ENTRY: AtomicU32 = AtomicU32::new(SyscallEntry::Unprobed as u32);
static VDSO: AtomicU64 = AtomicU64::new(0);
static PROBING: AtomicBool = AtomicBool::new(false);
static NEXT_PID: AtomicU32 = AtomicU32::new(1);

const SIGILL: u32 = 4;
const SIGTRAP: u32 = 5;
const SIGFPE: u32 = 8;
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

/// Loads `image` as process `name`, runs it to its end and reports how it ended. Returns
/// whether it exited with status 0.
pub fn run(name: &'static str, image: &[u8]) -> Result<ProcessReport, RunError> {
    let program = Program::parse(image).map_err(RunError::Elf)?;
    let mut space = AddressSpace::new().map_err(RunError::Space)?;
    if let Err(err) = space.load(&program, vdso_frame()) {
        space.destroy();
        return Err(RunError::Space(err));
    }
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let root = space.root;
    CURRENT.with(|current| {
        *current = Some(Process { pid, name, space, syscalls: 0, ended: None });
    });
    info!("{name}[{pid}]: started at {:#x}", program.entry);
    // SAFETY: the process tree maps the program and the trampoline for user mode and the
    // kernel half as the kernel's; no borrow is live across the excursion.
    unsafe {
        cpu::switch_page_tables(root);
        entry::run(program.entry, STACK_TOP);
        cpu::switch_page_tables(mm::global::with(|mm| mm.root()));
    }
    let process = CURRENT.with(Option::take).ok_or(RunError::Space(SpaceError::NoMemory))?;
    let (exit_code, signal, fault_address, fault_ip) = match process.ended {
        Some(Ending::Exit(code)) => (code, 0, 0, 0),
        Some(Ending::Killed { signal, address, ip }) => (0, signal, address, ip),
        None => (0, SIGSEGV, 0, 0),
    };
    let report = ProcessReport {
        pid,
        exit_code,
        signal,
        syscall_entry: syscall_entry() as u32,
        syscalls: process.syscalls,
        page_faults: process.space.faults,
        pages_zeroed: process.space.zeroed,
        hiwater_rss_pages: process.space.hiwater_rss,
        map_count: process.space.vmas.count() as u64,
        fault_address,
        fault_ip,
    };
    process.space.destroy();
    info!("{name}[{pid}]: exit code {exit_code}, signal {signal}");
    hypercall::report_value(ReportKind::Process, &report);
    Ok(report)
}

/// Handles a trap; returns `false` for one that is the kernel's own (from CPL0, not
/// during the probe), which the caller handles.
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
    if frame.vector == entry::SYSCALL_VECTOR || trampoline {
        if trampoline {
            // Resume at the trampoline's `ret`.
            frame.rip += 2;
        }
        syscall::dispatch(frame);
        return true;
    }
    if frame.vector == PAGE_FAULT {
        let code = frame.error_code;
        let served = CURRENT.with(|current| {
            let process = current.as_mut().ok_or(FaultError::NotMapped)?;
            process.space.fault(cr2, code & 2 != 0, code & 16 != 0, code & 1 != 0)
        });
        match served {
            Ok(()) => return true,
            Err(err) => kill(frame, SIGSEGV, cr2, Some(err)),
        }
    }
    let signal = match frame.vector {
        0 => SIGFPE,
        3 => SIGTRAP,
        INVALID_OPCODE => SIGILL,
        _ => SIGSEGV,
    };
    kill(frame, signal, 0, None)
}

/// A page fault the kernel took at a user address (in a copy to or from user memory):
/// served like the process's own, or `false` for the exception table to take over.
pub fn kernel_fault(address: u64, error_code: u64) -> bool {
    if address >= TASK_SIZE {
        return false;
    }
    CURRENT
        .try_with(|current| {
            current.as_mut().is_some_and(|process| {
                let write = error_code & 2 != 0;
                process.space.fault(address, write, false, error_code & 1 != 0).is_ok()
            })
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

/// Ends the process: `exit(code)`.
pub fn exit(code: i32) -> ! {
    CURRENT.with(|current| {
        if let Some(process) = current.as_mut() {
            process.ended = Some(Ending::Exit(code));
        }
    });
    // SAFETY: called from a system call, a trap taken while `run` is active; the borrow
    // above has ended.
    unsafe { entry::leave(0) }
}

/// Kills the process with `signal`, printing Linux's line for a segfault.
fn kill(frame: &TrapFrame, signal: u32, address: u64, cause: Option<FaultError>) -> ! {
    CURRENT.with(|current| {
        let Some(process) = current.as_mut() else { return };
        let vma = process.space.vmas.lookup(frame.rip).copied();
        let cause = match cause {
            Some(FaultError::NotMapped) => "no VMA",
            Some(FaultError::Access) => "access denied by the VMA",
            Some(FaultError::NoMemory) => "out of memory",
            None => "exception",
        };
        error!(
            "{}[{}]: {} at {address:#x} ip {:#018x} sp {:#018x} error {:x} ({cause}) in {}",
            process.name,
            process.pid,
            if signal == SIGSEGV { "segfault" } else { "trap" },
            frame.rip,
            frame.rsp,
            frame.error_code,
            vma.map_or("no VMA", |v| shared::process::VmaKind::from_raw(v.kind).map_or("?", |k| {
                if k.maps_name().is_empty() {
                    "[anon]"
                } else {
                    k.maps_name()
                }
            })),
        );
        process.ended = Some(Ending::Killed { signal, address, ip: frame.rip });
    });
    // SAFETY: a trap taken while `run` is active; the borrow above has ended.
    unsafe { entry::leave(0) }
}
