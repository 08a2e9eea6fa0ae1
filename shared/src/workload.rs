//! The workloads the guest runs after booting (`workload=NAME` on its command line).
//!
//! Besides the default, these are fault injections: each makes the guest misbehave in one
//! specific way so that the VMM's handling of that misbehaviour can be tested end to end.

/// The I/O port the `stray-port` workload touches; no device owns it.
pub const STRAY_PORT: u16 = 0x1234;

/// Where the MMIO workloads map the first hole above 1 MiB of the memory map: the start of
/// the vmalloc area.
pub const MMIO_WINDOW: u64 = crate::layout::VMALLOC_START;

/// A workload the guest knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Boot, report, exit with success.
    Boot,
    /// Panic with a known message.
    Panic,
    /// Execute `ud2`: an invalid-opcode exception the kernel reports.
    InvalidOpcode,
    /// Load an empty IDT and execute `ud2`: a triple fault.
    TripleFault,
    /// Spin forever, so the VMM's timeout fires.
    Hang,
    /// Read and write an I/O port no device owns, then exit with success.
    StrayPort,
    /// Read and write guest-physical memory that is not RAM, then exit with success.
    StrayMmio,
    /// Jump to guest-physical memory that is not RAM: KVM cannot fetch the instruction.
    ExecuteMmio,
    /// Deterministic checks of memblock, the memory map, zones and the buddy allocator.
    Selftest,
    /// Random allocations and frees (`seed=`, `ops=`), checked, then the boot state again.
    Stress,
    /// Read through a null pointer.
    NullDeref,
    /// Recurse until the kernel stack hits its guard page.
    StackOverflow,
    /// Write to the kernel's read-only data.
    WriteRodata,
    /// Jump into the kernel's (no-execute) data.
    ExecData,
    /// Read an unmapped address in the vmalloc area.
    UnmappedVmalloc,
    /// A process touches memory until it runs out: the OOM killer kills it and the
    /// kernel goes on.
    AllocOom,
    /// Allocate and keep pages, per-CPU blocks, slab objects and vmalloc areas (`seed=`,
    /// `ops=`), then exit: a populated state for host inspection.
    Populate,
    /// Misuse kmalloc in each way `slub_debug` detects (implies `slub_debug`), pausing at
    /// a checkpoint before and after each detection for the host to inspect.
    SlabMisuse,
    /// Run the `user-hello` program at CPL3: system calls, heap, mmap, demand paging.
    UserHello,
    /// Fork children that write a shared area: copy-on-write, `wait4`, exit statuses.
    ForkCow,
    /// Bad accesses in children the kernel must kill, and bad system-call arguments.
    UserHostile,
    /// Random mmap, munmap, mprotect, madvise and touches (`seed=`, `ops=`) checked against
    /// a model in user space.
    MmapStress,
    /// Time system calls, demand-zero and copy-on-write faults from user mode (`rdtsc`).
    UserCost,
    /// Random system calls with adversarial arguments (`seed=`, `ops=`); the kernel must
    /// answer each and survive.
    SyscallFuzz,
    /// 100 processes of 100 VMAs each at a checkpoint, for the host's `ps`, `maps` and
    /// `check` at scale.
    ManyProcesses,
    /// Touch `ops=` MiB of anonymous memory (transparent huge pages), then split two.
    Thp,
    /// Processes that spin in user mode, never trapping, handing a token round: only the
    /// timer's preemption lets them finish.
    Preempt,
    /// Halt with interrupts off (nothing can wake the CPU).
    Halt,
    /// Write pages to the swap device's slots and read them back (`--swap-file`, `--swap`).
    SwapDevice,
    /// A process touches twice the guest's RAM (or `ops=` MiB) with a pattern and checks
    /// every word after it came back from swap.
    SwapPattern,
    /// A hog and a bystander: the OOM killer kills the hog, the bystander finishes.
    OomKill,
    /// `swap-pattern`, then a fork: two processes share copy-on-write pages while they go
    /// to swap and come back.
    SwapCow,
    /// A hog waits holding most of RAM while another process's fault runs out: the OOM
    /// killer kills the hog, and the fault is retried and served.
    OomRetry,
}

impl Workload {
    /// Every workload, in the order `--help` lists them.
    pub const ALL: [Workload; 33] = [
        Self::Boot,
        Self::Panic,
        Self::InvalidOpcode,
        Self::TripleFault,
        Self::Hang,
        Self::Halt,
        Self::StrayPort,
        Self::StrayMmio,
        Self::ExecuteMmio,
        Self::Selftest,
        Self::Stress,
        Self::NullDeref,
        Self::StackOverflow,
        Self::WriteRodata,
        Self::ExecData,
        Self::UnmappedVmalloc,
        Self::AllocOom,
        Self::Populate,
        Self::SlabMisuse,
        Self::UserHello,
        Self::ForkCow,
        Self::UserHostile,
        Self::MmapStress,
        Self::UserCost,
        Self::SyscallFuzz,
        Self::ManyProcesses,
        Self::Thp,
        Self::Preempt,
        Self::SwapDevice,
        Self::SwapPattern,
        Self::SwapCow,
        Self::OomKill,
        Self::OomRetry,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Boot => "boot",
            Self::Panic => "panic",
            Self::InvalidOpcode => "invalid-opcode",
            Self::TripleFault => "triple-fault",
            Self::Hang => "hang",
            Self::StrayPort => "stray-port",
            Self::StrayMmio => "stray-mmio",
            Self::ExecuteMmio => "execute-mmio",
            Self::Selftest => "selftest",
            Self::Stress => "stress",
            Self::NullDeref => "null-deref",
            Self::StackOverflow => "stack-overflow",
            Self::WriteRodata => "write-rodata",
            Self::ExecData => "exec-data",
            Self::UnmappedVmalloc => "unmapped-vmalloc",
            Self::AllocOom => "alloc-oom",
            Self::Populate => "populate",
            Self::SlabMisuse => "slab-misuse",
            Self::UserHello => "user-hello",
            Self::ForkCow => "fork-cow",
            Self::UserHostile => "user-hostile",
            Self::MmapStress => "mmap-stress",
            Self::UserCost => "user-cost",
            Self::SyscallFuzz => "syscall-fuzz",
            Self::ManyProcesses => "many-processes",
            Self::Thp => "thp",
            Self::Preempt => "preempt",
            Self::Halt => "halt",
            Self::SwapDevice => "swap-device",
            Self::SwapPattern => "swap-pattern",
            Self::OomKill => "oom-kill",
            Self::SwapCow => "swap-cow",
            Self::OomRetry => "oom-retry",
        }
    }

    /// One line saying what the workload does.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Boot => "boot, report the memory map, exit with success (the default)",
            Self::Panic => "panic inside the guest kernel",
            Self::InvalidOpcode => "execute ud2 (an unhandled #UD exception)",
            Self::TripleFault => "load an empty IDT and execute ud2 (a triple fault)",
            Self::Hang => "spin forever (for --timeout)",
            Self::StrayPort => "touch an I/O port no device owns, then exit",
            Self::StrayMmio => "touch guest-physical memory that is not RAM, then exit",
            Self::ExecuteMmio => "jump to guest-physical memory that is not RAM",
            Self::Selftest => "check every subsystem, e820 to kmalloc, and report each check",
            Self::Stress => {
                "random page allocations and frees (seed=, ops=), then the boot state again"
            }
            Self::NullDeref => "read through a null pointer (an oops)",
            Self::StackOverflow => "recurse into the kernel stack's guard page (an oops)",
            Self::WriteRodata => "write to read-only kernel data (an oops)",
            Self::ExecData => "jump into no-execute kernel data (an oops)",
            Self::UnmappedVmalloc => "read an unmapped vmalloc address (an oops)",
            Self::AllocOom => {
                "a process touches memory until none is left: the OOM killer kills it"
            }
            Self::Populate => {
                "allocate and keep pages, slab objects and vmalloc areas (seed=, ops=), then exit"
            }
            Self::SlabMisuse => {
                "overflow, write after free, double and bad frees on kmalloc under slub_debug"
            }
            Self::UserHello => {
                "run a user program: write, getpid, brk, mmap, munmap, demand-zero faults"
            }
            Self::ForkCow => "fork children that write a shared area: copy-on-write and wait4",
            Self::UserHostile => {
                "user programs that fault, jump into the kernel or pass bad pointers: killed"
            }
            Self::MmapStress => {
                "random mmap/munmap/mprotect/madvise and touches (seed=, ops=), checked at CPL3"
            }
            Self::UserCost => "time system calls and page faults from user mode (TSC cycles)",
            Self::SyscallFuzz => {
                "random system calls with adversarial arguments (seed=, ops=): the kernel survives"
            }
            Self::ManyProcesses => "100 processes of 100 VMAs each, stopped at a checkpoint",
            Self::Thp => "touch ops= MiB of anonymous memory in huge pages, then split two",
            Self::Preempt => {
                "processes that spin at CPL3 without a system call: the timer preempts them"
            }
            Self::Halt => "halt with interrupts off, which nothing can wake",
            Self::SwapDevice => {
                "write pages to swap slots and read them back (needs --swap-file and --swap)"
            }
            Self::SwapPattern => {
                "touch twice the RAM (or ops= MiB) with a pattern and check it after swap"
            }
            Self::OomKill => "a hog and a bystander: the OOM killer kills the hog only",
            Self::OomRetry => {
                "another process's fault runs out: the killer kills a waiting hog, the fault is served"
            }
            Self::SwapCow => {
                "swap-pattern, then a fork: copy-on-write sharers swapped out and back"
            }
        }
    }

    /// The workload with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|workload| workload.name() == name)
    }
}

/// The compute loop `user-cost` times at CPL3, and `guest/benches/compute.rs` natively on
/// the host: `iterations` rounds of xorshift64* over registers only, so that the two
/// figures compare the CPU, not memory. Returns the state, which callers must use.
#[inline(never)]
pub fn compute_loop(iterations: u64, seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..iterations {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for workload in Workload::ALL {
            assert_eq!(Workload::from_name(workload.name()), Some(workload));
        }
        assert_eq!(Workload::from_name("Boot"), None);
    }
}
