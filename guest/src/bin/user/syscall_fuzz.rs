//! `syscall-fuzz`: random system calls with adversarial arguments, in the spirit of
//! trinity: numbers the kernel knows and numbers it does not, and arguments drawn from
//! the values that break kernels (0, -1, kernel addresses, the trampoline, unaligned and
//! unmapped pointers, huge and wrapping lengths, stray flag bits). The kernel must answer
//! every call with a result or Linux's error, and survive; the end-to-end test then has
//! the host's `check` look at what is left. Arguments: `seed=`, `ops=`.
//!
//! Calls that change memory never reach the program's own image or stack: `MAP_FIXED`
//! goes to a sandbox window, a range of `munmap`, `mprotect` or `madvise` that would
//! overlap them is moved to the sandbox, and what a placed `mmap` returns is unmapped at
//! once. The program never touches memory a call returned, so no fault can kill it.
//!
//! Each kind of call has the errors Linux may give it; any other result is counted as
//! `unexpected`, which the end-to-end test requires to be zero.
#![no_std]
#![no_main]
#![expect(clippy::cast_possible_truncation, reason = "user programs are x86_64: usize is 64 bits")]

#[macro_use]
mod rt;

use rt::syscall;
use shared::layout::{KERNEL_VIRT_BASE, PAGE_OFFSET};
use shared::syscall::*;

/// The sandbox: what `MAP_FIXED`, `munmap`, `mprotect` and `madvise` may hit.
const SANDBOX: u64 = 0x3000_0000;
const SANDBOX_PAGES: u64 = 1024;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// An address that is not one of the program's own mappings.
fn address(rng: &mut Rng) -> u64 {
    let sandbox = SANDBOX + rng.below(SANDBOX_PAGES) * 4096;
    match rng.below(10) {
        0..4 => sandbox,
        4 => sandbox + 1 + rng.below(4095),
        5 => rng.pick(&[0, 4096, VDSO_BASE, STACK_TOP - 8, shared::process::TASK_SIZE - 4096]),
        6 => rng.pick(&[PAGE_OFFSET, KERNEL_VIRT_BASE, u64::MAX - 4095, 1 << 63]),
        7 => rng.next() & !0xfff,
        _ => rng.next(),
    }
}

/// The program's own memory: its image (and the heap after it), and its stack with
/// room to grow.
const OWN: [(u64, u64); 2] = [
    (shared::process::USER_IMAGE_BASE, SANDBOX),
    (STACK_TOP - (8 << 20), shared::process::TASK_SIZE),
];

/// `(addr, len)` for a call that changes memory: as drawn, or, if the page-rounded range
/// would overlap the program's own memory, the same length from the sandbox.
fn away_from_own(addr: u64, len: u64) -> (u64, u64) {
    let end = len.checked_next_multiple_of(4096).and_then(|l| addr.checked_add(l));
    let overlaps = OWN.iter().any(|&(lo, hi)| end.is_none_or(|end| addr < hi && lo < end));
    if overlaps && addr <= VDSO_BASE {
        (SANDBOX, len.min(SANDBOX_PAGES * 4096))
    } else {
        (addr, len)
    }
}

/// A length.
fn length(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => 0,
        1 => rng.pick(&[1, 4095, 4096, 4097, 64 << 10, 1 << 20]),
        2 => rng.pick(&[1 << 40, 1 << 47, u64::MAX, u64::MAX - 4095, i64::MAX as u64]),
        3 => rng.next(),
        _ => (1 + rng.below(16)) * 4096,
    }
}

/// Flags: mostly the defined bits, sometimes anything.
fn bits(rng: &mut Rng, defined: u64) -> u64 {
    match rng.below(4) {
        0 => rng.next(),
        _ => rng.next() & defined,
    }
}

/// Counts of results: successes, then each errno the kernel gave.
struct Tally {
    calls: u64,
    ok: u64,
    errors: [(i64, &'static str, u64); 10],
    other: u64,
    /// Results Linux would not give for that call.
    unexpected: u64,
}

impl Tally {
    /// Counts `result` of a call whose errors may be `allowed`.
    fn count(&mut self, result: i64, allowed: &[i64]) {
        self.calls += 1;
        if result >= 0 {
            self.ok += 1;
        } else if let Some(slot) = self.errors.iter_mut().find(|(errno, ..)| -errno == result) {
            slot.2 += 1;
        } else {
            self.other += 1;
        }
        if result < 0 && !allowed.contains(&-result) {
            self.unexpected += 1;
            println!("syscall-fuzz: unexpected {result}");
        }
    }
}

fn main() -> i32 {
    let seed = rt::arg_value("seed").unwrap_or(1);
    let ops = rt::arg_value("ops").unwrap_or(2000);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut tally = Tally {
        calls: 0,
        ok: 0,
        errors: [
            (EPERM, "EPERM", 0),
            (EBADF, "EBADF", 0),
            (ECHILD, "ECHILD", 0),
            (EAGAIN, "EAGAIN", 0),
            (ENOMEM, "ENOMEM", 0),
            (EACCES, "EACCES", 0),
            (EFAULT, "EFAULT", 0),
            (EEXIST, "EEXIST", 0),
            (EINVAL, "EINVAL", 0),
            (ENOSYS, "ENOSYS", 0),
        ],
        other: 0,
        unexpected: 0,
    };
    let map_bits = MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_FIXED;
    for _ in 0..ops {
        let mmap_errors = [EINVAL, ENOMEM, EEXIST, EBADF, EPERM, EACCES];
        let (result, allowed): (i64, &[i64]) = match rng.below(16) {
            0 => {
                let addr = SANDBOX + rng.below(SANDBOX_PAGES) * 4096;
                let flags = bits(&mut rng, map_bits | MAP_FIXED_NOREPLACE) | MAP_FIXED;
                let len = length(&mut rng).min(SANDBOX_PAGES * 4096 - (addr - SANDBOX));
                let args = [addr, len, bits(&mut rng, 7), flags, rng.next(), rng.next()];
                (syscall(SYS_MMAP, args), &mmap_errors)
            }
            1 => {
                let flags = bits(&mut rng, map_bits) & !(MAP_FIXED | MAP_FIXED_NOREPLACE);
                let len = length(&mut rng);
                let args = [address(&mut rng), len, bits(&mut rng, 7), flags, 0, 0];
                let got = syscall(SYS_MMAP, args);
                if got > 0 {
                    tally.count(got, &[]);
                    (syscall(SYS_MUNMAP, [got as u64, len, 0, 0, 0, 0]), &[])
                } else {
                    (got, &mmap_errors)
                }
            }
            2 => {
                let (addr, len) = away_from_own(address(&mut rng), length(&mut rng));
                (syscall(SYS_MUNMAP, [addr, len, 0, 0, 0, 0]), &[EINVAL, ENOMEM])
            }
            3 => {
                let (addr, len) = away_from_own(address(&mut rng), length(&mut rng));
                let args = [addr, len, bits(&mut rng, 7), 0, 0, 0];
                (syscall(SYS_MPROTECT, args), &[EINVAL, ENOMEM, EACCES])
            }
            4 => {
                let (addr, len) = away_from_own(address(&mut rng), length(&mut rng));
                let args = [addr, len, rng.below(8), 0, 0, 0];
                (syscall(SYS_MADVISE, args), &[EINVAL, ENOMEM])
            }
            5 => (syscall(SYS_BRK, [address(&mut rng), 0, 0, 0, 0, 0]), &[]),
            6 => {
                // Only pointers that fault, or nothing: the console stays readable.
                let buf =
                    rng.pick(&[0, 1, PAGE_OFFSET, KERNEL_VIRT_BASE, VDSO_BASE + 4096, SANDBOX]);
                let len = if buf == SANDBOX { 0 } else { length(&mut rng) };
                let fd = rng.pick(&[0, 1, 2, 3, u64::MAX]);
                (syscall(SYS_WRITE, [fd, buf, len, 0, 0, 0]), &[EBADF, EFAULT, EINVAL])
            }
            7 => {
                let buf = rng.pick(&[0, PAGE_OFFSET, u64::MAX]);
                let args = [buf, length(&mut rng), 0, 0, 0, 0];
                (syscall(SYS_KVM_MM_REPORT, args), &[EFAULT, EINVAL])
            }
            8 => {
                let (any_pid, any_place) = (rng.next(), address(&mut rng));
                let pid = rng.pick(&[u64::MAX, 0, 1, 2, 99, any_pid]);
                let status = rng.pick(&[0, 1, PAGE_OFFSET, VDSO_BASE, any_place]);
                let rusage = rng.pick(&[0, 8, PAGE_OFFSET]);
                let args = [pid, status, bits(&mut rng, WNOHANG), rusage, 0, 0];
                (syscall(SYS_WAIT4, args), &[ECHILD, EFAULT, EINVAL])
            }
            9 if rng.below(16) == 0 => {
                let child = rt::fork();
                if child == 0 {
                    rt::exit(0);
                }
                (child, &[EAGAIN, ENOMEM])
            }
            10 => (syscall(SYS_SCHED_YIELD, [rng.next(); 6]), &[]),
            11 => {
                // Our oom_score_adj takes -1000..=1000, given as a sign-extended register.
                let nr = rng.pick(&[SYS_GETPID, SYS_GETPPID, SYS_KVM_MM_OOM_SCORE_ADJ]);
                let any = rng.next();
                let value =
                    rng.pick(&[0, 1000, 1001, -1000i64 as u64, -1001i64 as u64, 1 << 32, any]);
                let allowed: &[i64] = if nr == SYS_KVM_MM_OOM_SCORE_ADJ { &[EINVAL] } else { &[] };
                (syscall(nr, [value, rng.next(), 0, 0, 0, 0]), allowed)
            }
            12 => {
                // Numbers nobody implements: Linux's others, ours beyond, and garbage.
                let nr = rng.pick(&[SYS_READ, 2, 59, 62, 435, 999, 1003, 1 << 32, u64::MAX]);
                (syscall(nr, [rng.next(); 6]), &[ENOSYS])
            }
            _ => {
                let addr = SANDBOX + rng.below(SANDBOX_PAGES) * 4096;
                (syscall(SYS_MPROTECT, [addr, 4096, rng.below(8), 0, 0, 0]), &[ENOMEM, EACCES])
            }
        };
        tally.count(result, allowed);
    }
    // Reap the children that are left, and give the sandbox back.
    while syscall(SYS_WAIT4, [u64::MAX, 0, 0, 0, 0, 0]) > 0 {}
    syscall(SYS_MUNMAP, [SANDBOX, SANDBOX_PAGES * 4096, 0, 0, 0, 0]);

    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!("seed={seed} calls={} ok={}", tally.calls, tally.ok),
    );
    for (_, name, count) in tally.errors {
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!(" {name}={count}"));
    }
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(" other={} unexpected={}", tally.other, tally.unexpected),
    );
    rt::report(line.as_bytes());
    println!("syscall-fuzz: {} calls survived", tally.calls);
    i32::from(tally.unexpected != 0)
}
