//! The system-call ABI between user programs and the guest kernel: Linux x86_64's numbers,
//! registers and errors, and where the kernel maps the entry trampoline.
//!
//! A program calls the trampoline at [`VDSO_BASE`] with Linux's registers: `rax` the
//! number; `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9` the arguments; the result, or `-errno`,
//! in `rax`; `rcx` and `r11` clobbered. The kernel fills the trampoline at boot with the
//! entry it found working (see [`SyscallEntry`]), so programs never know which it is, as
//! Linux's vDSO hid `int 0x80`, `sysenter` and `syscall` from programs.

/// `read(fd, buf, count)`.
pub const SYS_READ: u64 = 0;
/// `write(fd, buf, count)`: fds 1 and 2 go to the console.
pub const SYS_WRITE: u64 = 1;
/// `mmap(addr, len, prot, flags, fd, off)`.
pub const SYS_MMAP: u64 = 9;
/// `mprotect(addr, len, prot)`.
pub const SYS_MPROTECT: u64 = 10;
/// `munmap(addr, len)`.
pub const SYS_MUNMAP: u64 = 11;
/// `brk(addr)`.
pub const SYS_BRK: u64 = 12;
/// `sched_yield()`.
pub const SYS_SCHED_YIELD: u64 = 24;
/// `madvise(addr, len, advice)`.
pub const SYS_MADVISE: u64 = 28;
/// `getpid()`.
pub const SYS_GETPID: u64 = 39;
/// `fork()`.
pub const SYS_FORK: u64 = 57;
/// `exit(code)`.
pub const SYS_EXIT: u64 = 60;
/// `wait4(pid, wstatus, options, rusage)`.
pub const SYS_WAIT4: u64 = 61;
/// `getppid()`.
pub const SYS_GETPPID: u64 = 110;
/// `exit_group(code)`.
pub const SYS_EXIT_GROUP: u64 = 231;
/// Ours: `report(buf, len)` sends `len` bytes (at most [`REPORT_MAX`]) to the host as the
/// process's report. Linux leaves numbers from 512 on unused on x86_64.
pub const SYS_KVM_MM_REPORT: u64 = 1000;
/// Ours: `checkpoint()` publishes every process and stops at a checkpoint, where the
/// host may inspect the guest (`vmm run --inspect`); returns 0.
pub const SYS_KVM_MM_CHECKPOINT: u64 = 1001;
/// Ours: `oom_score_adj(value)` sets the caller's `oom_score_adj` (what writing
/// `/proc/self/oom_score_adj` does on Linux; this kernel has no files). -EINVAL outside
/// -1000..=1000; a forked child inherits it.
pub const SYS_KVM_MM_OOM_SCORE_ADJ: u64 = 1002;
/// Largest payload of [`SYS_KVM_MM_REPORT`].
pub const REPORT_MAX: u64 = 1024;

/// `EPERM`.
pub const EPERM: i64 = 1;
/// `EBADF`.
pub const EBADF: i64 = 9;
/// `ECHILD`.
pub const ECHILD: i64 = 10;
/// `EAGAIN`.
pub const EAGAIN: i64 = 11;
/// `ENOMEM`.
pub const ENOMEM: i64 = 12;
/// `EACCES`.
pub const EACCES: i64 = 13;
/// `EFAULT`.
pub const EFAULT: i64 = 14;
/// `EEXIST`.
pub const EEXIST: i64 = 17;
/// `EINVAL`.
pub const EINVAL: i64 = 22;
/// `ENOSYS`.
pub const ENOSYS: i64 = 38;

/// `PROT_NONE`.
pub const PROT_NONE: u64 = 0;
/// `PROT_READ`.
pub const PROT_READ: u64 = 1;
/// `PROT_WRITE`.
pub const PROT_WRITE: u64 = 2;
/// `PROT_EXEC`.
pub const PROT_EXEC: u64 = 4;
/// `MAP_SHARED`.
pub const MAP_SHARED: u64 = 0x01;
/// `MAP_PRIVATE`.
pub const MAP_PRIVATE: u64 = 0x02;
/// `MAP_FIXED`.
pub const MAP_FIXED: u64 = 0x10;
/// `MAP_ANONYMOUS`.
pub const MAP_ANONYMOUS: u64 = 0x20;
/// `MAP_POPULATE`.
pub const MAP_POPULATE: u64 = 0x8000;
/// `MAP_FIXED_NOREPLACE`.
pub const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// `MADV_NORMAL`, `MADV_RANDOM`, `MADV_SEQUENTIAL`, `MADV_WILLNEED`: hints, taken and
/// ignored.
pub const MADV_HINTS: [u64; 4] = [0, 1, 2, 3];
/// `MADV_DONTNEED`: drop the range's pages; private anonymous memory reads as zero after.
pub const MADV_DONTNEED: u64 = 4;
/// `wait4`'s `WNOHANG`.
pub const WNOHANG: u64 = 1;
/// Bytes of `struct rusage`, which `wait4` zeroes when asked for it.
pub const RUSAGE_SIZE: u64 = 144;

/// Where the kernel maps the trampoline page (read and execute for user mode), just below
/// the top of user space as Linux places its vDSO near the stack.
pub const VDSO_BASE: u64 = crate::process::TASK_SIZE - 0x1000;
/// The top of the main stack: one unmapped page below the trampoline.
pub const STACK_TOP: u64 = VDSO_BASE - 0x1000;

/// How the kernel enters system calls, chosen at boot by probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SyscallEntry {
    /// No process has run: nothing was probed.
    Unprobed = 0,
    /// `syscall`/`sysret`: the CPU switched to CPL0 at `LSTAR` (hardware KVM).
    Syscall = 1,
    /// `ud2` in the trampoline, taken as a system call by the invalid-opcode handler: for
    /// hosts where `syscall` stays at CPL3 (nested `kvm_pvm`).
    Trap = 2,
}

impl SyscallEntry {
    /// The entry a raw value names, if any.
    pub fn from_raw(raw: u32) -> Option<Self> {
        [Self::Unprobed, Self::Syscall, Self::Trap].into_iter().find(|e| *e as u32 == raw)
    }

    /// Its name in logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unprobed => "unprobed",
            Self::Syscall => "syscall",
            Self::Trap => "trap",
        }
    }
}
