//! The guest's own page-table walker, and the host's (`shared::walk`, reading guest RAM),
//! against KVM's translation (`KVM_TRANSLATE`): the guest's sample addresses, and the
//! first, middle and last byte of every mapped page and the bytes just outside it; 4 KiB
//! and 2 MiB pages (this KVM offers no 1 GiB pages: the host walker's 1 GiB path is held
//! against a model in `guest::paging`'s property test).

use kvm_mm_tests::{boot, config};
use shared::layout::{GIB, MIB};
use vmm::outcome::{TranslationCheck, Walker};
use vmm::{ExitReason, VmConfig};

fn checked(mem_size: u64) -> Vec<TranslationCheck> {
    let outcome = boot(&VmConfig { mem_size, ..config("boot") });
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    let (checks, walker): (Vec<TranslationCheck>, Vec<TranslationCheck>) =
        outcome.translation_checks.iter().partition(|c| c.walker == Walker::Guest);
    let disagreements: Vec<_> = checks.iter().filter(|c| !c.agrees()).collect();
    assert!(disagreements.is_empty(), "guest and KVM disagree: {disagreements:x?}");
    assert!(checks.iter().any(|c| c.phys.is_none()), "unmapped addresses are checked too");
    // The host's walker, reading guest RAM from outside, on every mapped page's edges.
    let disagreements: Vec<_> = walker.iter().filter(|c| !c.agrees()).collect();
    assert!(disagreements.is_empty(), "host walker and KVM disagree: {disagreements:x?}");
    assert!(walker.len() >= 4 * checks.len(), "{} addresses", walker.len());
    for size in [4096, 2 << 20] {
        assert!(walker.iter().any(|c| c.page_size == size), "{size}-byte pages are checked");
    }
    assert!(walker.iter().any(|c| c.phys.is_none()), "unmapped addresses are checked too");
    checks
}

#[test]
fn walker_agrees_with_kvm_on_a_small_guest_with_4k_vmemmap_pages() {
    let checks = checked(16 * MIB);
    assert!(checks.len() >= 12, "{} addresses", checks.len());
    assert!(
        checks.iter().any(|c| c.page_size == 4096),
        "a 16 MiB guest's vmemmap uses 4 KiB pages"
    );
    assert!(checks.iter().any(|c| c.page_size == 2 << 20));
}

#[test]
fn walker_agrees_with_kvm_beyond_the_boot_mapping() {
    let checks = checked(5 * GIB);
    assert!(
        checks.iter().any(|c| c.phys.is_some_and(|p| p >= 4 * GIB)),
        "RAM above 4 GiB is checked"
    );
}

#[test]
fn page_table_statistics_describe_the_kernel_tree() {
    let outcome = boot(&VmConfig { mem_size: 256 * MIB, ..config("boot") });
    let stats = outcome.reports.iter().find_map(|r| match r {
        vmm::Report::PageTables(t) => Some((t.tables, t.pages)),
        _ => None,
    });
    let (tables, pages) = stats.expect("a page-table report");
    assert_eq!(tables[0], 1, "one PML4");
    assert!(
        tables[3] > 0 && pages[0] > 0,
        "4 KiB pages for the kernel image: {tables:?} {pages:?}"
    );
    // The direct map of 256 MiB is mostly 2 MiB pages, plus the vmemmap's.
    assert!(pages[1] >= 120, "{pages:?}");
}
