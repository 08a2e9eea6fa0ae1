//! The guest's physical memory management, checked from the host: memblock against the
//! e820 map, exact page accounting of the buddy allocator, zones, and the selftest and
//! stress workloads.

use kvm_mm_tests::{boot, config, free_pages, ram_pages};
use shared::layout::{GIB, MIB, VMALLOC_END, VMALLOC_START};
use shared::mm::Region;
use vmm::config::parse_e820;
use vmm::{ExitReason, Outcome, Report, VmConfig};

const SUCCESS: ExitReason = ExitReason::GuestExit { status: 0 };

fn memblock(outcome: &Outcome) -> (Vec<Region>, Vec<Region>) {
    outcome
        .reports
        .iter()
        .find_map(|r| match r {
            Report::Memblock { memory, reserved } => Some((memory.clone(), reserved.clone())),
            _ => None,
        })
        .expect("a memblock report")
}

/// Boots `config` and checks the accounting: memblock memory is the e820 RAM, and the
/// buddy allocator holds exactly the pages of memory that no reservation touches, but
/// for the tables the kernel took from it for the kernel half's vmalloc PML4 entries
/// (one per 512 GiB of the vmalloc area).
fn boot_and_account(config: &VmConfig) -> Outcome {
    let outcome = boot(config);
    assert_eq!(outcome.exit, SUCCESS, "{}", outcome.console);
    let (memory, reserved) = memblock(&outcome);
    assert_eq!(
        memory,
        ram_pages(outcome.e820().expect("e820 report")),
        "memblock memory is the e820 RAM"
    );
    let zones = outcome.boot_zones();
    let held: u64 = zones.iter().map(|z| z.free + z.pcp).sum();
    let managed: u64 = zones.iter().map(|z| z.managed).sum();
    let preallocated = (VMALLOC_END - VMALLOC_START) >> 39;
    assert_eq!(held + preallocated, free_pages(&memory, &reserved), "free pages at boot");
    assert_eq!(managed, held + preallocated, "only the kernel half's tables are allocated");
    for zone in &zones {
        assert!(zone.spanned >= zone.present && zone.present >= zone.managed, "{zone:?}");
        let blocks: u64 = zone.nr_free.iter().enumerate().map(|(order, n)| n << order).sum();
        assert_eq!(blocks, zone.free, "{}: free lists add up to the free count", zone.zone_name());
    }
    outcome
}

fn zone_names(outcome: &Outcome) -> Vec<String> {
    outcome.boot_zones().iter().map(|z| z.zone_name().to_string()).collect()
}

#[test]
fn default_map_is_accounted_exactly() {
    let outcome = boot_and_account(&VmConfig { mem_size: 256 * MIB, ..config("boot") });
    assert_eq!(zone_names(&outcome), ["DMA", "DMA32"]);
    let dma32 = &outcome.boot_zones()[1];
    assert_eq!((dma32.start_pfn, dma32.spanned, dma32.present), (4096, 61_440, 61_440));
}

#[test]
fn sixteen_mib_is_accounted_exactly() {
    let outcome = boot_and_account(&VmConfig { mem_size: 16 * MIB, ..config("boot") });
    assert_eq!(zone_names(&outcome), ["DMA"]);
}

#[test]
fn map_with_holes_is_accounted_exactly() {
    let e820 = parse_e820(
        "0-0x9fc00:ram,0x100000-0x800000:ram,0x1000000-0x2000000:ram,0x3000000-0x4000000:ram",
    )
    .expect("valid spec");
    let outcome = boot_and_account(&VmConfig { e820: Some(e820), ..config("boot") });
    let dma32 = &outcome.boot_zones()[1];
    // DMA32 spans 16 MiB to 64 MiB but only 32 MiB of it is present.
    assert_eq!((dma32.spanned, dma32.present), (12_288, 8_192));
}

#[test]
fn unsorted_overlapping_map_is_accounted_exactly() {
    let e820 = parse_e820(
        "0x100000-0x2000000:ram,0-0x9fc00:ram,0x9f000-0x100000:reserved,0x1800000-0x1900000:reserved,\
         0x1000000-0x3000000:ram,0x2f00000-0x5000000:acpi,0x800000-0x900000:nvs",
    )
    .expect("valid spec");
    boot_and_account(&VmConfig { e820: Some(e820), ..config("boot") });
}

#[test]
fn five_gib_has_a_normal_zone_above_4_gib_and_stays_sparse_on_the_host() {
    let outcome = boot_and_account(&VmConfig { mem_size: 5 * GIB, ..config("boot") });
    assert_eq!(zone_names(&outcome), ["DMA", "DMA32", "Normal"]);
    let normal = &outcome.boot_zones()[2];
    assert_eq!((normal.start_pfn, normal.present), (1 << 20, (2 * GIB) >> 12));
    assert!(
        outcome.ram_resident_bytes < 64 * MIB,
        "booting a 5 GiB guest committed {} MiB on the host",
        outcome.ram_resident_bytes / MIB
    );
}

#[test]
fn selftest_passes_every_check() {
    let outcome =
        boot(&VmConfig { cmdline: "workload=selftest slub_debug".into(), ..config("selftest") });
    let tests = outcome.tests();
    let failed: Vec<_> = tests.iter().filter(|(_, passed, _)| !passed).collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}");
    // Every subsystem is checked, and the guest's summary counts what it reported.
    for subsystem in [
        "e820",
        "memblock",
        "memmap",
        "zones",
        "buddy",
        "paging",
        "vmalloc",
        "demand paging",
        "slab",
        "slab debug",
        "alloc",
    ] {
        let prefix = format!("{subsystem}: ");
        assert!(tests.iter().any(|(name, ..)| name.starts_with(&prefix)), "no {subsystem} check");
    }
    let summary = format!("selftest: all {} checks passed", tests.len());
    assert!(outcome.console.contains(&summary), "the guest's summary is not {summary:?}");
    assert_eq!(outcome.exit, SUCCESS);
    assert_eq!(
        outcome.boot_zones(),
        outcome.zones(),
        "the selftest leaves the allocator as it found it"
    );
}

#[test]
fn stress_restores_the_boot_state() {
    let config = VmConfig {
        cmdline: "workload=stress seed=11 ops=400 slub_debug".into(),
        mem_size: 5 * GIB,
        ..config("stress")
    };
    let outcome = boot(&config);
    assert_eq!(outcome.exit, SUCCESS, "{}", outcome.console);
    let stress = outcome.reports.iter().find_map(|r| match r {
        Report::Stress(s) => Some((s.seed, s.ops, s.allocations, s.frees, s.restored == 1)),
        _ => None,
    });
    let (seed, ops, allocations, frees, restored) = stress.expect("a stress report");
    assert_eq!((seed, ops), (11, 400));
    assert!(allocations > 100 && allocations == frees, "{allocations} allocations, {frees} frees");
    assert!(restored);
    let boot_lists: Vec<_> = outcome.boot_zones().into_iter().map(|z| z.nr_free).collect();
    let end_lists: Vec<_> = outcome.zones().into_iter().map(|z| z.nr_free).collect();
    assert_eq!(boot_lists, end_lists, "the host sees the boot state again too");
    let checks = outcome.tests();
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(checks.iter().all(|(_, passed, _)| *passed), "{checks:?}");
    assert!(checks[1].0.starts_with("stress: kmalloc"), "the kmalloc phase ran: {checks:?}");
}
