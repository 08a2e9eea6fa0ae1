//! Guests that misbehave, one way each, and how the VMM reports it.

use kvm_mm_tests::{boot, config, kernel_symbol, position_of};
use shared::layout::{BOOT_PML4, MIB};
use shared::status::GuestStatus;
use shared::workload::{MMIO_WINDOW, STRAY_PORT};
use std::time::Duration;
use vmm::devices::{AccessKind, UnexpectedAccess};
use vmm::outcome::exit_code;
use vmm::{ExitReason, Report};

#[test]
fn guest_panic_reaches_the_host_with_message_and_location() {
    let outcome = boot(&config("panic"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: GuestStatus::Panic as u8 });
    let panic = outcome.reports.iter().find_map(|r| match r {
        Report::Panic { message, file, line, column } => {
            Some((message.clone(), file.clone(), *line, *column))
        }
        _ => None,
    });
    let (message, file, line, column) = panic.expect("a panic report");
    assert_eq!(message, "panic requested by workload=panic");
    assert_eq!(file, "guest/src/bin/kernel/workload.rs");
    // Where the source says the panic is.
    let source = include_str!("../../guest/src/bin/kernel/workload.rs");
    let expected = position_of(source, "panic!(\"panic requested by workload=panic\")");
    assert_eq!((line, column), expected, "the reported location is the panic's own");
}

#[test]
fn guest_exception_reaches_the_host_with_vector_and_registers() {
    let outcome = boot(&config("invalid-opcode"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: GuestStatus::Exception as u8 });
    let Some(Report::Exception(exception)) =
        outcome.reports.iter().find(|r| matches!(r, Report::Exception(_)))
    else {
        panic!("no exception report: {:?}", outcome.reports);
    };
    assert_eq!(shared::hypercall::exception_name(exception.vector).0, "#UD");
    let rip = exception.rip;
    assert!(rip >= shared::layout::KERNEL_VIRT_BASE, "RIP {rip:#x} is in the kernel image");
    let json = serde_json::to_value(&outcome.reports).expect("serialisable");
    let registers = json.as_array().into_iter().flatten().find_map(|r| r.get("gprs"));
    assert_eq!(registers.and_then(|r| r.as_object()).map(|r| r.len()), Some(15));
    assert!(outcome.console.contains("CPU exception #UD invalid opcode (vector 6)"));
}

#[test]
fn triple_fault_is_a_shutdown_with_the_last_registers() {
    let outcome = boot(&config("triple-fault"));
    let ExitReason::TripleFault { registers } = outcome.exit else {
        panic!("expected a triple fault, got {:?}", outcome.exit);
    };
    assert_eq!(outcome.exit_code, exit_code::GUEST_CRASH);
    assert_ne!(registers.cr3, BOOT_PML4, "the kernel runs on its own page tables");
    assert_ne!(registers.efer & (1 << 10), 0, "in long mode");
}

#[test]
fn jumping_to_memory_that_is_not_ram_is_an_emulation_failure() {
    let outcome = boot(&config("execute-mmio"));
    // The workload maps the first hole above 1 MiB (64 MiB in a 64 MiB guest) executable
    // at the MMIO window and jumps there.
    assert_eq!(outcome.exit, ExitReason::EmulationFailure { suberror: 1, rip: MMIO_WINDOW });
    assert_eq!(outcome.exit_code, exit_code::GUEST_CRASH);
}

#[test]
fn a_guest_halted_with_interrupts_off_is_reported_as_halted() {
    // With the in-kernel LAPIC, KVM runs `hlt` itself; the VMM finds the halted vCPU by
    // its MP state at the watchdog's next look, long before the timeout.
    let outcome = boot(&config("halt"));
    let ExitReason::Halted { rip } = outcome.exit else { panic!("{:?}", outcome.exit) };
    assert!(rip >= shared::layout::KERNEL_VIRT_BASE, "{rip:#x} is in the kernel");
    assert_eq!(outcome.exit_code, exit_code::GUEST_CRASH);
    assert!(outcome.run_time < Duration::from_secs(10), "{:?}", outcome.run_time);
}

#[test]
fn a_guest_that_outlives_the_timeout_is_stopped() {
    // Long enough for the boot to finish even with every other test's guest running.
    let config = vmm::VmConfig { timeout: Some(Duration::from_secs(2)), ..config("hang") };
    let outcome = boot(&config);
    assert_eq!(outcome.exit, ExitReason::Timeout { seconds: 2.0 });
    assert_eq!(outcome.exit_code, exit_code::TIMEOUT);
    assert_eq!(
        outcome.checkpoints.last().map(|c| c.tag),
        Some(shared::hypercall::checkpoint::BOOTED),
        "it booted first"
    );
}

#[test]
fn stray_port_accesses_are_named_once_and_the_guest_goes_on() {
    let outcome = boot(&config("stray-port"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 });
    let port = u64::from(STRAY_PORT);
    assert_eq!(
        outcome.unexpected_accesses,
        [
            UnexpectedAccess { kind: AccessKind::PortRead, addr: port },
            UnexpectedAccess { kind: AccessKind::PortWrite, addr: port },
        ]
    );
}

#[test]
fn stray_mmio_accesses_are_named_once_and_the_guest_goes_on() {
    let outcome = boot(&config("stray-mmio"));
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 });
    assert_eq!(
        outcome.unexpected_accesses,
        [
            UnexpectedAccess { kind: AccessKind::MmioRead, addr: 64 * MIB },
            UnexpectedAccess { kind: AccessKind::MmioWrite, addr: 64 * MIB },
        ]
    );
}

#[test]
fn unknown_kernel_option_is_named_by_the_guest() {
    let outcome =
        boot(&vmm::VmConfig { cmdline: "loglevel=info frobnicate=1".into(), ..config("boot") });
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: GuestStatus::BadCommandLine as u8 });
    assert_eq!(
        outcome.reports,
        [Report::CmdlineError { reason: "unknown-option".into(), option: "frobnicate=1".into() }]
    );
    let bad_value = boot(&vmm::VmConfig { cmdline: "loglevel=loud".into(), ..config("boot") });
    assert_eq!(
        bad_value.reports,
        [Report::CmdlineError { reason: "bad-value".into(), option: "loglevel=loud".into() }]
    );
}

fn boot_error(e820: &str) -> (ExitReason, Vec<Report>) {
    let e820 = vmm::config::parse_e820(e820).expect("valid spec");
    let outcome = boot(&vmm::VmConfig { e820: Some(e820), ..config("boot") });
    let errors =
        outcome.reports.into_iter().filter(|r| matches!(r, Report::BootError { .. })).collect();
    (outcome.exit, errors)
}

#[test]
fn a_map_without_ram_above_1_mib_ends_the_boot_clearly() {
    let (exit, errors) = boot_error("0-0x9fc00:ram");
    assert_eq!(exit, ExitReason::GuestExit { status: GuestStatus::BootFailed as u8 });
    assert_eq!(
        errors,
        [Report::BootError {
            message: "e820: no usable RAM above 1 MiB; the kernel has nowhere to live".into()
        }]
    );
}

#[test]
fn a_map_without_room_for_the_kernel_ends_the_boot_clearly() {
    let (exit, errors) = boot_error("0-0x9fc00:ram,0x100000-0x200000:ram,0x400000-0x1000000:ram");
    assert_eq!(exit, ExitReason::GuestExit { status: GuestStatus::BootFailed as u8 });
    let [Report::BootError { message }] = errors.as_slice() else {
        panic!("one boot error: {errors:?}")
    };
    assert!(message.starts_with("the kernel image [mem 0x0000000000200000-"), "{message}");
    assert!(message.contains("not in usable RAM"), "{message}");
}

/// Boots `workload` and returns the oops it reports: (cause, faulting address).
fn oops(workload: &str) -> (String, u64) {
    let outcome = boot(&config(workload));
    assert_eq!(
        outcome.exit,
        ExitReason::GuestExit { status: GuestStatus::Exception as u8 },
        "{}",
        outcome.console
    );
    let oopses: Vec<_> = outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::Oops(oops) => Some((oops.cause_name().to_string(), oops.address)),
            _ => None,
        })
        .collect();
    assert_eq!(oopses.len(), 1, "{:?}", outcome.reports);
    oopses[0].clone()
}

#[test]
fn null_pointer_dereference_is_an_oops_naming_it() {
    assert_eq!(oops("null-deref"), ("null-pointer".to_string(), 0));
}

/// The kernel image's range `[start, end)` between two of its linker symbols.
fn section(start: &str, end: &str) -> std::ops::Range<u64> {
    kernel_symbol(start)..kernel_symbol(end)
}

#[test]
fn stack_overflow_hits_the_guard_page_and_is_reported() {
    let (cause, address) = oops("stack-overflow");
    assert_eq!(cause, "stack-overflow");
    let guard = kernel_symbol("__stack_guard");
    assert!(
        (guard..guard + 4096).contains(&address),
        "{address:#x} is not in the kernel stack's guard page at {guard:#x}"
    );
}

#[test]
fn write_to_read_only_data_is_an_oops_naming_it() {
    let (cause, address) = oops("write-rodata");
    assert_eq!(cause, "write-to-read-only");
    let rodata = section("__rodata_start", "__data_start");
    assert!(rodata.contains(&address), "{address:#x} is not in rodata {rodata:x?}");
}

#[test]
fn executing_data_is_an_oops_naming_it() {
    let (cause, address) = oops("exec-data");
    assert_eq!(cause, "execute-no-execute");
    let data = section("__data_start", "__bss_end");
    assert!(data.contains(&address), "{address:#x} is not in the data {data:x?}");
}

#[test]
fn an_unmapped_vmalloc_address_is_an_oops_naming_it() {
    assert_eq!(
        oops("unmapped-vmalloc"),
        ("unmapped-vmalloc".to_string(), shared::layout::VMALLOC_START + (1 << 20))
    );
}
