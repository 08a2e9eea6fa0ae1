//! System calls: Linux's numbers, registers and errors (`shared::syscall`).
//!
//! Every argument is untrusted. Ranges are checked against user space before use; user
//! memory is only touched through [`super::entry::copy`], whose faults end in `-EFAULT`;
//! and no borrow of the process is held across a copy, since a copy may fault and the
//! fault handler needs the process.
#![expect(
    clippy::cast_possible_truncation,
    reason = "the kernel is x86_64: usize is 64 bits; an exit code is the low 32 bits of its register, as on Linux"
)]

use super::{exit_current, reap, with_current, Ending, Process, Wait};
use crate::traps::TrapFrame;
use crate::{console, hypercall};
use shared::hypercall::ReportKind;
use shared::syscall::*;

const PAGE: u64 = 4096;

/// Runs the system call `frame` holds and puts its result in `rax`. Returns whether the
/// caller gives up the CPU (`sched_yield`, or `wait4` going to sleep).
pub fn dispatch(frame: &mut TrapFrame) -> bool {
    let g = &frame.gprs;
    let (nr, args) = (
        g[TrapFrame::RAX],
        [
            g[TrapFrame::RDI],
            g[TrapFrame::RSI],
            g[TrapFrame::RDX],
            g[TrapFrame::R10],
            g[TrapFrame::R8],
            g[TrapFrame::R9],
        ],
    );
    with_current(|process| process.syscalls += 1);
    let result = match nr {
        SYS_WRITE => write(args[0], args[1], args[2]),
        SYS_GETPID => with_process(|p| i64::from(p.pid)),
        SYS_GETPPID => with_process(|p| i64::from(p.ppid)),
        SYS_BRK => with_space(|s| s.set_brk(args[0]) as i64),
        SYS_MMAP => mmap(args[0], args[1], args[2], args[3], args[4]),
        SYS_MUNMAP => munmap(args[0], args[1]),
        SYS_MPROTECT => mprotect(args[0], args[1], args[2]),
        SYS_MADVISE => madvise(args[0], args[1], args[2]),
        SYS_FORK => super::fork(frame),
        SYS_WAIT4 => match wait4(args[0] as i32, args[1], args[2], args[3]) {
            Some(result) => result,
            None => {
                // Asleep: when woken it runs its system-call instruction again (`syscall`
                // and `ud2` are both 2 bytes), as Linux restarts a call.
                frame.rip -= 2;
                return true;
            }
        },
        SYS_SCHED_YIELD => {
            frame.gprs[TrapFrame::RAX] = 0;
            return true;
        }
        SYS_EXIT | SYS_EXIT_GROUP => {
            exit_current(Ending::Exit(args[0] as i32));
            return false;
        }
        SYS_KVM_MM_REPORT => report(args[0], args[1]),
        SYS_KVM_MM_CHECKPOINT => {
            super::checkpoint();
            0
        }
        SYS_KVM_MM_OOM_SCORE_ADJ => oom_score_adj(args[0]),
        _ => -ENOSYS,
    };
    frame.gprs[TrapFrame::RAX] = result as u64;
    false
}

/// `oom_score_adj(value)`: `value` (a sign-extended register) in -1000..=1000.
fn oom_score_adj(value: u64) -> i64 {
    use shared::process::{OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN};
    match i32::try_from(value as i64) {
        Ok(adj) if (OOM_SCORE_ADJ_MIN..=OOM_SCORE_ADJ_MAX).contains(&adj) => with_process(|p| {
            p.oom_score_adj = adj;
            0
        }),
        _ => -EINVAL,
    }
}

fn with_process(f: impl FnOnce(&mut Process) -> i64) -> i64 {
    with_current(f).unwrap_or(-ENOSYS)
}

fn with_space(f: impl FnOnce(&mut super::space::AddressSpace) -> i64) -> i64 {
    with_current(|p| p.space.as_mut().map_or(-ENOSYS, f)).unwrap_or(-ENOSYS)
}

/// Whether `[addr, addr + len)` lies in user space.
fn user_range(addr: u64, len: u64) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= VDSO_BASE)
}

/// `write(fd, buf, count)`: fds 1 and 2 are the console.
fn write(fd: u64, buf: u64, count: u64) -> i64 {
    if fd != 1 && fd != 2 {
        return -EBADF;
    }
    if !user_range(buf, count) || forbidden(buf, count, false) {
        return -EFAULT;
    }
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < count {
        let n = (count - done).min(chunk.len() as u64) as usize;
        // SAFETY: the user range was checked below VDSO_BASE; `chunk` holds `n` bytes.
        if !unsafe { super::entry::copy(chunk.as_mut_ptr(), (buf + done) as *const u8, n) } {
            return if done > 0 { done as i64 } else { -EFAULT };
        }
        console::write_bytes(&chunk[..n]);
        done += n as u64;
    }
    done as i64
}

/// Ours: sends up to [`REPORT_MAX`] bytes to the host (none: no report).
fn report(buf: u64, len: u64) -> i64 {
    if len > REPORT_MAX {
        return -EINVAL;
    }
    if len == 0 {
        // Nothing to say: no report.
        return 0;
    }
    if !user_range(buf, len) || forbidden(buf, len, false) {
        return -EFAULT;
    }
    let mut bytes = [0u8; REPORT_MAX as usize];
    let n = len as usize;
    // SAFETY: the user range was checked; `bytes` holds `n` bytes.
    if !unsafe { super::entry::copy(bytes.as_mut_ptr(), buf as *const u8, n) } {
        return -EFAULT;
    }
    hypercall::report(ReportKind::User, &bytes[..n]);
    0
}

/// `mmap(addr, len, prot, flags, fd, off)` of anonymous memory.
fn mmap(addr: u64, len: u64, prot: u64, flags: u64, _fd: u64) -> i64 {
    let known =
        MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_POPULATE | MAP_FIXED_NOREPLACE;
    let sharing = flags & (MAP_SHARED | MAP_PRIVATE);
    // Exactly one of MAP_SHARED and MAP_PRIVATE.
    let one_sharing = sharing == MAP_SHARED || sharing == MAP_PRIVATE;
    if len == 0 || prot & !7 != 0 || flags & !known != 0 || !one_sharing {
        return -EINVAL;
    }
    if flags & MAP_ANONYMOUS == 0 {
        // No files exist here: every descriptor is bad.
        return -EBADF;
    }
    let Some(len) = len.checked_next_multiple_of(PAGE) else { return -ENOMEM };
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    if fixed && addr % PAGE != 0 {
        return -EINVAL;
    }
    if fixed && !user_range(addr, len) {
        // Linux's get_unmapped_area: a fixed range beyond user space.
        return -ENOMEM;
    }
    let noreplace = flags & MAP_FIXED_NOREPLACE != 0;
    let shared = sharing == MAP_SHARED;
    let start = match with_space(|s| {
        s.mmap(addr, len, prot, (fixed, noreplace, shared)).map_or_else(errno, |a| a as i64)
    }) {
        start if start < 0 => return start,
        start => start as u64,
    };
    if flags & MAP_POPULATE != 0 && !shared {
        // Fault every page in now; a failure leaves the rest to demand paging, as Linux.
        with_space(|space| {
            for page in (start..start + len).step_by(PAGE as usize) {
                let write = prot & PROT_WRITE != 0;
                if space.fault(page, write, false, false).is_err() {
                    break;
                }
            }
            0
        });
    }
    start as i64
}

/// `munmap(addr, len)`.
fn munmap(addr: u64, len: u64) -> i64 {
    if addr % PAGE != 0 || len == 0 {
        return -EINVAL;
    }
    let Some(len) = len.checked_next_multiple_of(PAGE) else { return -EINVAL };
    if !user_range(addr, len) {
        return -EINVAL;
    }
    with_space(|s| s.unmap(addr, addr + len).map_or_else(errno, |()| 0))
}

/// A page-aligned `[addr, addr + len)` in user space, `len` rounded up to pages: `None`
/// is `-EINVAL` (misaligned, or wrapping), `Some(None)` `-ENOMEM` (beyond user space, so
/// not mapped), as Linux's mprotect and madvise tell the two apart.
fn user_pages(addr: u64, len: u64) -> Option<Option<(u64, u64)>> {
    let len = len.checked_next_multiple_of(PAGE)?;
    let end = addr.checked_add(len)?;
    if addr % PAGE != 0 {
        return None;
    }
    Some((end <= VDSO_BASE).then_some((addr, end)))
}

/// `mprotect(addr, len, prot)`, with Linux's order of checks: bad bits or a misaligned
/// start are `-EINVAL`, no length is 0, a range that wraps or leaves user space `-ENOMEM`.
fn mprotect(addr: u64, len: u64, prot: u64) -> i64 {
    if prot & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 || addr % PAGE != 0 {
        return -EINVAL;
    }
    if len == 0 {
        return 0;
    }
    match user_pages(addr, len) {
        None | Some(None) => -ENOMEM,
        Some(Some((start, end))) => {
            with_space(|s| s.protect(start, end, prot).map_or_else(errno, |()| 0))
        }
    }
}

/// `madvise(addr, len, advice)`: `MADV_DONTNEED` drops pages; the plain hints are taken.
/// Either way a range with holes is `-ENOMEM`, as on Linux.
fn madvise(addr: u64, len: u64, advice: u64) -> i64 {
    if advice != MADV_DONTNEED && !MADV_HINTS.contains(&advice) {
        return -EINVAL;
    }
    match user_pages(addr, len) {
        None => -EINVAL,
        Some(None) => -ENOMEM,
        Some(Some((start, end))) if start == end => 0,
        Some(Some((start, end))) if advice != MADV_DONTNEED => {
            with_space(|s| if s.covered(start, end) { 0 } else { -ENOMEM })
        }
        Some(Some((start, end))) => {
            with_space(|s| s.dontneed(start, end).map_or_else(errno, |()| 0))
        }
    }
}

/// `wait4(pid, wstatus, options, rusage)`: `None` when the caller goes to sleep.
fn wait4(pid: i32, wstatus: u64, options: u64, rusage: u64) -> Option<i64> {
    // WUNTRACED, WCONTINUED, __WNOTHREAD, __WALL and __WCLONE change nothing here: no
    // process stops, and every process is a single-threaded child of one process group,
    // so pid 0 and -pgid mean any child, as -1 does.
    const ACCEPTED: u64 = WNOHANG | 0x2 | 0x8 | 0x2000_0000 | 0x4000_0000 | 0x8000_0000;
    if options & !ACCEPTED != 0 {
        return Some(-EINVAL);
    }
    let (child, status) = match reap(pid, options & WNOHANG != 0) {
        Wait::Reaped(child, status) => (child, status),
        Wait::NoneYet => return Some(0),
        Wait::Block => return None,
        Wait::NoChild => return Some(-ECHILD),
    };
    let bytes = status.to_le_bytes();
    let zeros = [0u8; RUSAGE_SIZE as usize];
    let copied =
        (wstatus == 0 || put_user(wstatus, &bytes)) && (rusage == 0 || put_user(rusage, &zeros));
    Some(if copied { i64::from(child) } else { -EFAULT })
}

/// Copies `bytes` to user memory at `addr`; whether all of it went.
fn put_user(addr: u64, bytes: &[u8]) -> bool {
    let len = bytes.len() as u64;
    // SAFETY: the user range is checked below VDSO_BASE; `bytes` is ours to read.
    user_range(addr, len)
        && !forbidden(addr, len, true)
        && unsafe { super::entry::copy(addr as *mut u8, bytes.as_ptr(), bytes.len()) }
}

/// Whether the current process's VMAs forbid the kernel's access to `[addr, addr + len)`
/// on its behalf: a user page's rights do not stop the kernel's own accesses (a
/// `PROT_NONE` page has no `USER` bit, so SMAP does not guard it), so it checks them first.
fn forbidden(addr: u64, len: u64, write: bool) -> bool {
    with_current(|p| p.space.as_ref().is_none_or(|s| s.forbids(addr, len, write))).unwrap_or(true)
}

fn errno(err: super::space::SpaceError) -> i64 {
    match err {
        super::space::SpaceError::Vma(err) => -err.errno(),
        _ => -ENOMEM,
    }
}
