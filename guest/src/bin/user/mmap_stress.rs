//! `mmap-stress`: seeded random `mmap`, `munmap`, `mprotect`, `madvise(MADV_DONTNEED)`
//! and touches in a 1 MiB window, each checked against a page-granular model of what the
//! kernel must do, kept here in user mode, where it runs at native speed.
//!
//! The model predicts every result (the address, or Linux's error) and what every page
//! holds: zero until written, the last value written, zero again after `MADV_DONTNEED`
//! (for private pages). Touches only go where the model says the access is allowed, so a
//! kernel that unmapped or protected too much kills the program, and one that kept too
//! much is caught by an `EEXIST` or a value that should have gone. One operation in 100
//! is a probe: a forked child makes an access the model says is forbidden, and the kernel
//! must kill it with SIGSEGV, so rights kept too long are caught too. Arguments: `seed=`,
//! `ops=`.
#![no_std]
#![no_main]
#![expect(clippy::cast_possible_truncation, reason = "user programs are x86_64: usize is 64 bits")]

#[macro_use]
mod rt;

use rt::syscall;
use shared::syscall::*;

/// The window the operations work in.
const BASE: u64 = 0x2000_0000;
const WINDOW: usize = 256;
/// The longest range an operation covers, in pages.
const MAX_RUN: u64 = 16;
/// Operations between two checks of every page the model knows a value for.
const CHECK_EVERY: u64 = 128;

/// What the model knows of one page.
#[derive(Clone, Copy, Default)]
struct Page {
    mapped: bool,
    shared: bool,
    prot: u64,
    /// What word 0 holds (0 until written).
    value: u64,
}

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
}

/// Counts of what ran.
#[derive(Default)]
struct Counts {
    mmap: u64,
    munmap: u64,
    mprotect: u64,
    madvise: u64,
    reads: u64,
    writes: u64,
    probes: u64,
    refused: u64,
    mismatches: u64,
}

fn word(page: usize) -> *mut u64 {
    (BASE + page as u64 * 4096) as *mut u64
}

/// Whether the model says a user access of this kind goes through.
fn allowed(page: &Page, write: bool) -> bool {
    page.mapped && if write { page.prot & PROT_WRITE != 0 } else { page.prot != 0 }
}

/// Reads every page the model holds a value for and counts the ones that differ.
fn check_all(model: &[Page; WINDOW], counts: &mut Counts) {
    for (index, page) in model.iter().enumerate() {
        if page.value != 0 && allowed(page, false) {
            // SAFETY: the model says this page is mapped and readable.
            let got = unsafe { core::ptr::read_volatile(word(index)) };
            if got != page.value {
                counts.mismatches += 1;
                println!("mmap-stress: page {index}: read {got:#x}, wrote {:#x}", page.value);
            }
        }
    }
}

fn main() -> i32 {
    let seed = rt::arg_value("seed").unwrap_or(1);
    let ops = rt::arg_value("ops").unwrap_or(2000);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut model = [Page::default(); WINDOW];
    let mut counts = Counts::default();
    let expect = |got: i64, want: i64, what: &str, counts: &mut Counts| {
        if got != want {
            counts.mismatches += 1;
            println!("mmap-stress: {what}: got {got}, the model says {want}");
        }
        counts.refused += u64::from(want < 0);
    };
    for op in 0..ops {
        let first = rng.below(WINDOW as u64) as usize;
        let last = (first + 1 + rng.below(MAX_RUN) as usize).min(WINDOW);
        let (addr, len) = (BASE + first as u64 * 4096, (last - first) as u64 * 4096);
        let range = &mut model[first..last];
        let prot = rng.below(8);
        match rng.below(100) {
            0..20 => {
                counts.mmap += 1;
                let noreplace = rng.below(4) == 0;
                let shared = rng.below(16) == 0;
                let mut flags = if shared { MAP_SHARED } else { MAP_PRIVATE } | MAP_ANONYMOUS;
                flags |= if noreplace { MAP_FIXED_NOREPLACE } else { MAP_FIXED };
                if rng.below(8) == 0 {
                    flags |= MAP_POPULATE;
                }
                let got = syscall(SYS_MMAP, [addr, len, prot, flags, u64::MAX, 0]);
                let taken = range.iter().any(|p| p.mapped);
                let want = if noreplace && taken { -EEXIST } else { addr as i64 };
                expect(got, want, "mmap", &mut counts);
                if want >= 0 {
                    range.fill(Page { mapped: true, shared, prot, value: 0 });
                }
            }
            20..35 => {
                counts.munmap += 1;
                expect(syscall(SYS_MUNMAP, [addr, len, 0, 0, 0, 0]), 0, "munmap", &mut counts);
                range.fill(Page::default());
            }
            35..55 => {
                counts.mprotect += 1;
                let got = syscall(SYS_MPROTECT, [addr, len, prot, 0, 0, 0]);
                // All or nothing: a hole anywhere refuses the whole range.
                let whole = range.iter().all(|p| p.mapped);
                expect(got, if whole { 0 } else { -ENOMEM }, "mprotect", &mut counts);
                if whole {
                    range.iter_mut().for_each(|p| p.prot = prot);
                }
            }
            55..65 => {
                counts.madvise += 1;
                let got = syscall(SYS_MADVISE, [addr, len, MADV_DONTNEED, 0, 0, 0]);
                let whole = range.iter().all(|p| p.mapped);
                expect(got, if whole { 0 } else { -ENOMEM }, "madvise", &mut counts);
                // Private pages are dropped even where the range has holes; shared ones
                // would fault the same page back in.
                for page in range.iter_mut().filter(|p| p.mapped && !p.shared) {
                    page.value = 0;
                }
            }
            65 => {
                let write = rng.below(2) == 0;
                if allowed(&model[first], write) {
                    continue;
                }
                counts.probes += 1;
                let child = rt::fork();
                if child == 0 {
                    // SAFETY: deliberately not: the model says this access is forbidden.
                    unsafe {
                        if write {
                            core::ptr::write_volatile(word(first), 1);
                        } else {
                            core::ptr::read_volatile(word(first));
                        }
                    }
                    rt::exit(0);
                }
                let (_, status) = rt::wait(child);
                expect(i64::from(status), 11, "a forbidden access's signal", &mut counts);
            }
            _ => {
                let write = rng.below(2) == 0;
                let page = &mut model[first];
                if !allowed(page, write) {
                    continue;
                }
                if write {
                    counts.writes += 1;
                    let value = rng.next() | 1;
                    // SAFETY: the model says this page is mapped and writable.
                    unsafe { core::ptr::write_volatile(word(first), value) };
                    page.value = value;
                } else {
                    counts.reads += 1;
                    // SAFETY: the model says this page is mapped and readable.
                    let got = unsafe { core::ptr::read_volatile(word(first)) };
                    if got != page.value {
                        counts.mismatches += 1;
                        println!(
                            "mmap-stress: page {first}: read {got:#x}, wrote {:#x}",
                            page.value
                        );
                    }
                }
            }
        }
        if op % CHECK_EVERY == CHECK_EVERY - 1 {
            check_all(&model, &mut counts);
        }
    }
    check_all(&model, &mut counts);
    let end = syscall(SYS_MUNMAP, [BASE, WINDOW as u64 * 4096, 0, 0, 0, 0]);
    expect(end, 0, "munmap of the window", &mut counts);

    let c = &counts;
    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            "seed={seed} ops={ops} mismatches={} mmap={} munmap={} mprotect={} madvise={} reads={} writes={} probes={} refused={}",
            c.mismatches, c.mmap, c.munmap, c.mprotect, c.madvise, c.reads, c.writes, c.probes, c.refused
        ),
    );
    rt::report(line.as_bytes());
    println!("mmap-stress: {ops} operations, {} mismatches", c.mismatches);
    i32::from(c.mismatches != 0)
}
