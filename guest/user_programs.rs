/// The user programs (bins of the guest crate) the kernel embeds, one list for both build
/// scripts: `vmm/build.rs` builds them, `guest/build.rs` links them at 4 MiB and names
/// their ELFs to the kernel. Included with `include!`.
const USER_PROGRAMS: &[&str] = &[
    "user-hello",
    "fork-cow",
    "user-hostile",
    "mmap-stress",
    "user-cost",
    "syscall-fuzz",
    "many-processes",
    "thp",
    "preempt",
    "swap-pattern",
    "oom-kill",
];
