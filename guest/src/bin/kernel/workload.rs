//! The workloads (`shared::workload`): what the kernel does once it has booted.

use crate::mm::setup::Mm;
use crate::{mm, process, selftest, slab_misuse, stress, traps};
use guest::cmdline::Options;
use guest::e820::E820Map;
use shared::layout::{BOOT_MAP_SIZE, HIGH_MEMORY, VMALLOC_START};
use shared::workload::{Workload, MMIO_WINDOW, STRAY_PORT};
use x86_64::instructions::port::Port;

/// The user programs' ELF images, built by the build before the kernel.
static USER_HELLO: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/user-hello"));
static FORK_COW: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/fork-cow"));
static USER_HOSTILE: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/user-hostile"));
static MMAP_STRESS: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/mmap-stress"));
static USER_COST: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/user-cost"));
static SYSCALL_FUZZ: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/syscall-fuzz"));
static MANY: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/many-processes"));
static THP: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/thp"));
static PREEMPT: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/preempt"));
static SWAP_PATTERN: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/swap-pattern"));
static OOM_KILL: &[u8] = include_bytes!(concat!(env!("KVM_MM_USER_DIR"), "/oom-kill"));

/// Free pages plus the pages kmalloc's slabs hold (a cache keeps a slab whose objects were
/// all freed, for reuse), and kmalloc objects in use.
fn allocator_state() -> (u64, u64) {
    mm::global::with(|mm| {
        let caches = &mm.kmalloc.caches;
        let empty: u64 = caches.iter().map(|c| c.counts().2 << c.geometry().0).sum();
        let objects = caches.iter().map(|c| c.counts().0).sum();
        (mm.buddy.nr_free_pages() + empty, objects)
    })
}

/// Free page reporting, once the processes have given their memory back: every free
/// block of 2 MiB or more not known zero is handed to the VMM, which drops it (so it
/// takes no host memory and reads as zero), and is marked known zero, so the next page or
/// huge page served from it needs no zeroing.
fn report_free_pages() {
    let pages = mm::global::with(|mm| {
        mm.buddy.report_free(9, &mut |pfn, order| {
            crate::hypercall::discard_pages(pfn * shared::layout::PAGE_SIZE, 1 << order)
        })
    });
    if pages > 0 {
        log::info!("page reporting: {} KiB of free memory given back to the host", pages * 4);
    }
}

/// Runs user program `name` from `image` with `args` after its name (at most three);
/// whether it exited with status 0.
fn run_program(name: &'static str, image: &'static [u8], args: &[&str]) -> bool {
    if process::syscall_entry() == shared::syscall::SyscallEntry::Unprobed {
        if let Err(err) = process::init() {
            log::error!("user mode: {err:?}");
            return false;
        }
    }
    let before = allocator_state();
    let mut argv = [name; 4];
    let count = 1 + args.len().min(argv.len() - 1);
    argv[1..count].copy_from_slice(&args[..count - 1]);
    match process::run(name, image, &argv[..count]) {
        Ok(report) => {
            // Exit gave back every page and table: the allocators are where they were.
            let after = allocator_state();
            let mut detail = crate::console::Line::new();
            let _ = core::fmt::Write::write_fmt(
                &mut detail,
                format_args!("(free pages, kmalloc objects) {before:?} before, {after:?} after"),
            );
            crate::hypercall::report_test(
                "process memory given back",
                before == after,
                detail.as_str(),
            );
            report_free_pages();
            before == after && report.exit_code == 0 && report.signal == 0
        }
        Err(err) => {
            log::error!("{name}: {err}");
            false
        }
    }
}

/// Runs the workload `options` name; returns whether its checks passed (fault injections
/// that return have nothing to check).
pub fn run(options: &Options, e820: &E820Map) -> bool {
    match options.workload {
        Workload::Boot => {}
        Workload::Selftest => {
            let (checks, failed) = mm::global::with(|mm| selftest::run(mm, e820));
            // Outside the borrow: `alloc` takes the memory managers itself.
            let (more, more_failed) = selftest::run_unborrowed();
            return selftest::summary(checks + more, failed + more_failed);
        }
        // SAFETY: deliberately faults; the page-fault handler reports it and ends the run.
        Workload::NullDeref => unsafe {
            core::arch::asm!("mov {}, qword ptr [0]", out(reg) _, options(nostack, readonly));
        },
        Workload::StackOverflow => {
            recurse(0);
        }
        // SAFETY: deliberately faults (read-only page); the handler ends the run.
        Workload::WriteRodata => unsafe {
            core::arch::asm!("mov qword ptr [{}], 1", in(reg) &raw const READ_ONLY, options(nostack));
        },
        // SAFETY: deliberately faults (no-execute page); the handler ends the run.
        Workload::ExecData => unsafe {
            core::arch::asm!("call {}", in(reg) &raw const NOT_CODE, clobber_abi("C"));
        },
        // SAFETY: deliberately faults (unmapped page); the handler ends the run.
        Workload::UnmappedVmalloc => unsafe {
            core::arch::asm!("mov {}, qword ptr [{}]", out(reg) _, in(reg) VMALLOC_START + (1 << 20), options(nostack, readonly));
        },
        Workload::AllocOom | Workload::OomKill | Workload::OomRetry => {
            // The hog wants twice what RAM and swap hold, unless ops= (MiB) says otherwise;
            // oom-retry's processes share the RAM.
            let (ram, swap) = mm::global::with(|mm| (mm.buddy.managed_pages(), mm.swap.slots()));
            let mib = match options.workload {
                _ if options.ops_given => u64::from(options.ops),
                Workload::OomRetry => ram / 256,
                _ => 2 * (ram + swap) / 256,
            };
            let mut arg = crate::console::Line::new();
            let _ = core::fmt::Write::write_fmt(&mut arg, format_args!("mib={mib}"));
            return match options.workload {
                Workload::AllocOom => {
                    run_program("alloc-oom", OOM_KILL, &[arg.as_str(), "bystander=0"])
                }
                Workload::OomRetry => {
                    run_program("oom-retry", OOM_KILL, &[arg.as_str(), "grower=1"])
                }
                _ => run_program("oom-kill", OOM_KILL, &[arg.as_str()]),
            };
        }
        Workload::Stress => return stress::run(options),
        Workload::Populate => populate(options),
        Workload::SlabMisuse => return slab_misuse::run(),
        Workload::UserHello => return run_program("user-hello", USER_HELLO, &[]),
        Workload::ForkCow => return run_program("fork-cow", FORK_COW, &[]),
        Workload::UserHostile => return run_program("user-hostile", USER_HOSTILE, &[]),
        Workload::UserCost => return run_program("user-cost", USER_COST, &[]),
        Workload::ManyProcesses => return run_program("many-processes", MANY, &[]),
        Workload::Preempt => return run_program("preempt", PREEMPT, &[]),
        Workload::SwapDevice => return crate::swap::run(options),
        Workload::SwapPattern | Workload::SwapCow => {
            // Twice the RAM the buddy allocator manages, unless ops= says otherwise.
            let managed = mm::global::with(|mm| mm.buddy.managed_pages());
            let mib = if options.ops_given { u64::from(options.ops) } else { 2 * managed / 256 };
            let mut arg = crate::console::Line::new();
            let _ = core::fmt::Write::write_fmt(&mut arg, format_args!("mib={mib}"));
            let args = [arg.as_str(), "fork=1"];
            return match options.workload {
                Workload::SwapCow => run_program("swap-cow", SWAP_PATTERN, &args),
                _ => run_program("swap-pattern", SWAP_PATTERN, &args[..1]),
            };
        }
        Workload::MmapStress | Workload::SyscallFuzz | Workload::Thp => {
            let mut seed = crate::console::Line::new();
            let mut ops = crate::console::Line::new();
            let _ = core::fmt::Write::write_fmt(&mut seed, format_args!("seed={}", options.seed));
            let _ = core::fmt::Write::write_fmt(&mut ops, format_args!("ops={}", options.ops));
            let args = [seed.as_str(), ops.as_str()];
            return match options.workload {
                Workload::MmapStress => run_program("mmap-stress", MMAP_STRESS, &args),
                // Its own default size unless the command line gives one.
                Workload::Thp => {
                    run_program("thp", THP, if options.ops_given { &args[1..] } else { &[] })
                }
                _ => run_program("syscall-fuzz", SYSCALL_FUZZ, &args),
            };
        }
        Workload::Panic => panic!("panic requested by workload=panic"),
        // SAFETY: `ud2` only raises #UD, which the kernel's handler reports.
        Workload::InvalidOpcode => unsafe { core::arch::asm!("ud2", options(nomem, nostack)) },
        Workload::TripleFault => {
            // #UD cannot be delivered (#GP), nor can that (#DF): the CPU shuts down. Not
            // `int3`: a software interrupt goes through KVM's emulator on some hosts, which
            // reports an emulation failure instead.
            traps::clear();
            // SAFETY: deliberately raises an exception that cannot be delivered.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
        Workload::Hang => loop {
            core::hint::spin_loop();
        },
        Workload::Halt => loop {
            // Interrupts are off in the kernel: nothing wakes the CPU.
            x86_64::instructions::hlt();
        },
        Workload::StrayPort => {
            let mut port = Port::<u8>::new(STRAY_PORT);
            for value in 0..3 {
                // SAFETY: no device owns this port; the accesses only cause VM exits.
                unsafe {
                    port.write(value);
                    port.read();
                }
            }
        }
        Workload::StrayMmio => {
            let addr = mm::global::with(|mm| mmio_virt(e820, mm, false));
            for value in 0..3u32 {
                // SAFETY: the address is mapped by the boot page tables and is no RAM: the
                // accesses are MMIO exits to the VMM, not memory accesses.
                unsafe {
                    core::ptr::write_volatile(addr as *mut u32, value);
                    core::ptr::read_volatile(addr as *const u32);
                }
            }
        }
        Workload::ExecuteMmio => {
            let addr = mm::global::with(|mm| mmio_virt(e820, mm, true));
            // SAFETY: deliberately jumps to an address with no memory behind it; KVM cannot
            // fetch the instruction and stops the VM.
            unsafe { core::arch::asm!("jmp {}", in(reg) addr, options(noreturn)) }
        }
    }
    true
}

/// Read-only data for `write-rodata` to write.
static READ_ONLY: u64 = 0x5a5a;

/// Bytes in the (no-execute) data section for `exec-data` to call: `ret`.
static mut NOT_CODE: [u8; 16] = [0xc3; 16];

/// Recurses with a page of stack per call until the stack's guard page stops it.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 4096];
    frame[0] = depth.to_le_bytes()[0];
    core::hint::black_box(&mut frame);
    recurse(depth + 1) + u64::from(frame[1])
}

/// A mapped virtual address with no RAM behind it: the first hole in the e820 map above
/// 1 MiB, mapped uncached (and executable, for `execute-mmio`) by `ioremap`; as the first
/// vmalloc area it lands at [`MMIO_WINDOW`].
fn mmio_virt(e820: &E820Map, mm: &mut Mm, executable: bool) -> u64 {
    let Some(phys) = e820.first_hole_from(HIGH_MEMORY).filter(|&p| p < BOOT_MAP_SIZE) else {
        panic!("this workload needs a hole in the memory map below {BOOT_MAP_SIZE:#x}: use --mem below 1G")
    };
    match mm.ioremap(shared::addr::PhysAddr::new(phys), 4096, executable) {
        Ok(virt) if virt.as_u64() == MMIO_WINDOW => virt.as_u64(),
        other => panic!("cannot map the MMIO page at {MMIO_WINDOW:#x}: {other:?}"),
    }
}

/// Allocates and keeps `ops` random things: buddy blocks of orders 0–3 (through the
/// per-CPU lists), kmalloc objects of 8 bytes to 2 KiB and, every 64th op, a small
/// vmalloc area. Every third kmalloc op frees one of the last 64 objects instead, leaving
/// holes in older slabs (partial lists). Each op takes the memory managers on its own, so
/// a host can inspect the guest between them, and every `progress=` ops the guest waits
/// at a checkpoint for it. Nothing is written to the memory: under an emulating KVM that
/// is the expensive part.
fn populate(options: &Options) {
    use shared::page::ZoneType;
    let mut rng = guest::rng::Rng::new(options.seed);
    let mut recent = [0u64; 64];
    let mut done = 0u32;
    for op in 0..options.ops {
        let (kind, order, size) = (rng.below(3), [0, 1, 2, 3][rng.index(4)], 8 + rng.below(2041));
        let slot = rng.index(recent.len());
        let ok = mm::global::with(|mm| match kind {
            0 => mm.buddy.alloc_pages(order, ZoneType::Normal).is_some(),
            _ => {
                let (kmalloc, mut pages) = mm.slab();
                if op % 3 == 0 {
                    let addr = core::mem::take(&mut recent[slot]);
                    // SAFETY: `recent` holds live allocations of this kmalloc, each taken
                    // out (and so freed) once.
                    addr != 0 && unsafe { kmalloc.kfree(&mut pages, addr) }.is_ok()
                } else if let Ok(Some(addr)) = kmalloc.kmalloc(&mut pages, size) {
                    recent[slot] = addr;
                    true
                } else {
                    false
                }
            }
        });
        if op % 64 == 63 {
            let _ = mm::global::with(|mm| mm.vmalloc(3 * shared::layout::PAGE_SIZE));
        }
        done += u32::from(ok);
        progress(options, op);
    }
    log::info!("populate: {done} of {} operations done", options.ops);
}

/// Signals a progress checkpoint after operation `op` if the command line asks for one
/// every `progress=` operations. The allocators are consistent here: no borrow is out.
pub fn progress(options: &Options, op: u32) {
    if options.progress != 0 && (op + 1) % options.progress == 0 {
        crate::hypercall::checkpoint(shared::hypercall::checkpoint::PROGRESS);
    }
}
