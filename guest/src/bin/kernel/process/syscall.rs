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

use super::{exit, CURRENT};
use crate::traps::TrapFrame;
use crate::{console, hypercall};
use shared::hypercall::ReportKind;
use shared::syscall::*;

const PAGE: u64 = 4096;

/// Runs the system call `frame` holds and puts its result in `rax`.
pub fn dispatch(frame: &mut TrapFrame) {
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
    CURRENT.with(|current| {
        if let Some(process) = current.as_mut() {
            process.syscalls += 1;
        }
    });
    let result = match nr {
        SYS_WRITE => write(args[0], args[1], args[2]),
        SYS_GETPID => with_process(|p| i64::from(p.pid)),
        SYS_BRK => with_process(|p| p.space.set_brk(args[0]) as i64),
        SYS_MMAP => mmap(args[0], args[1], args[2], args[3], args[4]),
        SYS_MUNMAP => munmap(args[0], args[1]),
        SYS_SCHED_YIELD => 0,
        SYS_EXIT | SYS_EXIT_GROUP => exit(args[0] as i32),
        SYS_KVM_MM_REPORT => report(args[0], args[1]),
        _ => -ENOSYS,
    };
    frame.gprs[TrapFrame::RAX] = result as u64;
}

fn with_process(f: impl FnOnce(&mut super::Process) -> i64) -> i64 {
    CURRENT.with(|current| current.as_mut().map_or(-ENOSYS, f))
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
    if !user_range(buf, count) {
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

/// Ours: sends up to [`REPORT_MAX`] bytes to the host.
fn report(buf: u64, len: u64) -> i64 {
    if len > REPORT_MAX {
        return -EINVAL;
    }
    if !user_range(buf, len) {
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
    if fixed && (addr % PAGE != 0 || !user_range(addr, len)) {
        return -EINVAL;
    }
    let noreplace = flags & MAP_FIXED_NOREPLACE != 0;
    let mapped = CURRENT.with(|current| {
        let process = current.as_mut().ok_or(-ENOSYS)?;
        process.space.mmap(addr, len, prot, fixed, noreplace).map_err(errno)
    });
    let start = match mapped {
        Ok(start) => start,
        Err(err) => return err,
    };
    if flags & MAP_POPULATE != 0 {
        // Fault every page in now; a failure leaves the rest to demand paging, as Linux.
        CURRENT.with(|current| {
            if let Some(process) = current.as_mut() {
                for page in (start..start + len).step_by(PAGE as usize) {
                    let write = prot & PROT_WRITE != 0;
                    if process.space.fault(page, write, false, false).is_err() {
                        break;
                    }
                }
            }
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
    with_process(|p| p.space.unmap(addr, addr + len).map_or_else(errno, |()| 0))
}

fn errno(err: super::space::SpaceError) -> i64 {
    match err {
        super::space::SpaceError::Vma(err) => -err.errno(),
        _ => -ENOMEM,
    }
}
