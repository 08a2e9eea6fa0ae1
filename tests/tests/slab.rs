//! The slab allocator inside the guest: kmalloc's caches as `/proc/slabinfo` sees them, and
//! each debug detection, as the guest's selftest reports them (one boot, shared).

use kvm_mm_tests::{boot, config};
use std::sync::OnceLock;
use vmm::{ExitReason, Outcome};

fn selftest() -> &'static Outcome {
    static OUTCOME: OnceLock<Outcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        boot(&vmm::VmConfig {
            cmdline: "workload=selftest slub_debug".into(),
            ..config("selftest")
        })
    })
}

/// The selftest check whose name starts with `prefix` passed.
fn passed(prefix: &str) {
    let outcome = selftest();
    let check = outcome.tests().into_iter().find(|(name, ..)| name.starts_with(prefix));
    let (name, passed, detail) = check.unwrap_or_else(|| panic!("no check named {prefix:?}"));
    assert!(passed, "{name}: {detail}");
}

#[test]
fn kmalloc_caches_appear_in_slabinfo() {
    let outcome = selftest();
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    let slabs = outcome.slabs();
    let names: Vec<&str> = slabs.iter().map(|s| s.name()).collect();
    assert_eq!(names.len(), 13);
    assert_eq!(
        (names[0], names[4], names[6], names[12]),
        ("kmalloc-8", "kmalloc-96", "kmalloc-192", "kmalloc-8k")
    );
    for slab in outcome.slabs() {
        assert!(
            slab.objperslab >= 1 && slab.objsize * slab.objperslab <= 4096 * slab.pagesperslab,
            "{slab:?}"
        );
        assert_eq!(slab.active_objs, 0, "{}: the selftest freed everything", slab.name());
    }
    passed("slab: kmalloc serves every class");
}

#[test]
fn a_double_free_is_reported() {
    passed("slab debug: a double free");
}

#[test]
fn a_bad_free_is_reported() {
    passed("slab debug: a free of a pointer that is not an object");
}

#[test]
fn a_red_zone_overwrite_is_reported() {
    passed("slab debug: a red-zone overwrite");
}

#[test]
fn a_write_after_free_is_reported() {
    passed("slab debug: a write after free");
}

#[test]
fn running_out_of_memory_through_alloc_is_a_reported_panic() {
    let outcome = boot(&config("alloc-oom"));
    assert_eq!(
        outcome.exit,
        ExitReason::GuestExit { status: shared::status::GuestStatus::Panic as u8 }
    );
    let message = outcome.reports.iter().find_map(|r| match r {
        vmm::Report::Panic { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert_eq!(message.as_deref(), Some("memory allocation of 1048576 bytes failed"));
}
