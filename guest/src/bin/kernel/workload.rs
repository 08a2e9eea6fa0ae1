//! The workloads (`shared::workload`): what the kernel does once it has booted.

use crate::mm::setup::Mm;
use crate::{mm, selftest, stress, traps};
use guest::cmdline::Options;
use guest::e820::E820Map;
use shared::layout::{BOOT_MAP_SIZE, HIGH_MEMORY};
use shared::workload::{Workload, STRAY_PORT};
use x86_64::instructions::port::Port;

/// Runs the workload `options` name; returns whether its checks passed (fault injections
/// that return have nothing to check).
pub fn run(options: &Options, e820: &E820Map, mm: &mut Mm) -> bool {
    match options.workload {
        Workload::Boot => {}
        Workload::Selftest => return selftest::run(mm, e820),
        Workload::Stress => return stress::run(mm, options.seed, options.ops),
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
            let addr = mmio_virt(e820);
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
            let addr = mmio_virt(e820);
            // SAFETY: deliberately jumps to an address with no memory behind it; KVM cannot
            // fetch the instruction and stops the VM.
            unsafe { core::arch::asm!("jmp {}", in(reg) addr, options(noreturn)) }
        }
    }
    true
}

/// A mapped virtual address with no RAM behind it: the first hole in the e820 map above
/// 1 MiB, through the boot direct map.
fn mmio_virt(e820: &E820Map) -> u64 {
    e820.first_hole_from(HIGH_MEMORY)
        .and_then(mm::phys_to_virt)
        .unwrap_or_else(|| panic!("this workload needs a hole in the memory map below {BOOT_MAP_SIZE:#x}: use --mem below 1G"))
}
