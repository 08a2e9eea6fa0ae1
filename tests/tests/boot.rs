//! Booting real guests: the memory map they are given and what they report of it.

use kvm_mm_tests::{boot, config, sanitized, temp_path};
use shared::boot::E820Entry;
use shared::boot::{E820_TYPE_RAM, E820_TYPE_RESERVED};
use shared::hypercall::checkpoint;
use shared::layout::{GIB, MIB};
use vmm::config::parse_e820;
use vmm::memory::default_e820;
use vmm::ExitReason;

const SUCCESS: ExitReason = ExitReason::GuestExit { status: 0 };

#[test]
fn default_guest_boots_reports_its_map_and_exits_cleanly() {
    let outcome =
        boot(&vmm::VmConfig { mem_size: 256 * MIB, cmdline: String::new(), ..config("boot") });
    assert_eq!(outcome.exit, SUCCESS, "{}", outcome.console);
    assert_eq!(outcome.exit_code, 0);
    let tags: Vec<u64> = outcome.checkpoints.iter().map(|c| c.tag).collect();
    assert_eq!(tags, [checkpoint::CHECK_TRANSLATIONS, checkpoint::BOOTED]);
    let expected = [
        E820Entry::new(0, 0x9fc00, E820_TYPE_RAM),
        E820Entry::new(0x9fc00, 0x60400, E820_TYPE_RESERVED),
        E820Entry::new(MIB, 255 * MIB, E820_TYPE_RAM),
    ];
    assert_eq!(outcome.e820(), Some(&expected[..]));
    assert!(outcome.unexpected_accesses.is_empty(), "{:?}", outcome.unexpected_accesses);
    // The console shows the map as Linux prints it.
    assert!(outcome
        .console
        .contains("BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable\n"));
    assert!(outcome
        .console
        .contains("BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable\n"));
}

#[test]
fn sixteen_mib_guest_boots() {
    let outcome = boot(&vmm::VmConfig { mem_size: 16 * MIB, ..config("boot") });
    assert_eq!(outcome.exit, SUCCESS, "{}", outcome.console);
    let map = outcome.e820().expect("e820 report");
    assert_eq!(map.last(), Some(&E820Entry::new(MIB, 15 * MIB, E820_TYPE_RAM)));
}

#[test]
fn six_gib_guest_sees_ram_above_4_gib_without_the_host_committing_it() {
    let outcome = boot(&vmm::VmConfig { mem_size: 6 * GIB, ..config("boot") });
    assert_eq!(outcome.exit, SUCCESS, "{}", outcome.console);
    let map = outcome.e820().expect("e820 report");
    let expected = sanitized(&default_e820(6 * GIB));
    assert_eq!(map, expected.as_slice());
    assert_eq!(map.last(), Some(&E820Entry::new(4 * GIB, 3 * GIB, E820_TYPE_RAM)));
    assert!(
        !map.iter().any(|r| r.addr < 4 * GIB && r.addr + r.size > 3 * GIB),
        "no RAM in the MMIO gap"
    );
    assert!(
        outcome.ram_resident_bytes < 64 * MIB,
        "the host committed {} MiB of a 6 GiB guest",
        outcome.ram_resident_bytes / MIB
    );
}

#[test]
fn overlapping_unsorted_e820_is_sanitised_like_linux() {
    let spec = "0x100000-0x2000000:ram,0-0x9fc00:ram,0x9f000-0x100000:reserved,\
                0x1800000-0x1900000:reserved,0x1000000-0x3000000:ram,0x2f00000-0x5000000:acpi,\
                0x800000-0x900000:nvs";
    let raw = parse_e820(spec).expect("valid spec");
    let outcome = boot(&vmm::VmConfig { e820: Some(raw.clone()), ..config("boot") });
    assert_eq!(outcome.exit, SUCCESS, "{}", outcome.console);
    let map = outcome.e820().expect("e820 report");
    assert_eq!(map, sanitized(&raw).as_slice());
    // The model's answer, spelled out: reserved wins over RAM, ACPI over RAM, neighbours merge.
    assert_eq!(map.len(), 8, "{map:?}");
    assert_eq!(map[1], E820Entry::new(0x9f000, 0x61000, E820_TYPE_RESERVED));
}

#[test]
fn map_with_holes_boots() {
    let raw = parse_e820(
        "0-0x9fc00:ram,0x100000-0x800000:ram,0x1000000-0x2000000:ram,0x3000000-0x4000000:ram",
    )
    .expect("valid spec");
    let outcome = boot(&vmm::VmConfig { e820: Some(raw.clone()), ..config("boot") });
    assert_eq!(outcome.exit, SUCCESS, "{}", outcome.console);
    assert_eq!(outcome.e820(), Some(sanitized(&raw).as_slice()));
}

#[test]
fn mem_file_holds_guest_ram_for_other_processes() {
    let path = temp_path("ram");
    let outcome = boot(&vmm::VmConfig { mem_file: Some(path.clone()), ..config("boot") });
    assert_eq!(outcome.exit, SUCCESS, "{}", outcome.console);
    let ram = std::fs::read(&path).expect("memory file");
    std::fs::remove_file(&path).expect("removable");
    assert_eq!(ram.len() as u64, 64 * MIB);
    // The zero page the guest booted from, read back through the file.
    let zero_page = usize::try_from(shared::layout::ZERO_PAGE).expect("a low address");
    assert_eq!(&ram[zero_page + shared::boot::BOOT_FLAG..][..2], &[0x55, 0xaa]);
    assert_eq!(ram[zero_page + shared::boot::E820_ENTRIES], 3);
}
