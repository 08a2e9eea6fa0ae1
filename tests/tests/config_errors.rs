//! Configurations the VMM refuses before the guest runs: each with a typed error whose
//! message says what to change, and the exit code the CLI maps it to.

use kvm_mm_tests::{config, temp_path};
use shared::layout::{GIB, MIB};
use vmm::config::{parse_e820, ConfigError};
use vmm::outcome::exit_code;
use vmm::{Error, VmConfig};

fn refuse(config: &VmConfig) -> Error {
    match vmm::run(config) {
        Ok(outcome) => panic!("expected a refusal, the guest ran: {:?}", outcome.exit),
        Err(err) => err,
    }
}

#[test]
fn missing_or_wrong_kvm_device_is_a_host_error() {
    let missing = refuse(&VmConfig { kvm_device: "/nonexistent/kvm".into(), ..config("boot") });
    assert!(matches!(missing, Error::KvmOpen { .. }));
    assert!(missing.to_string().starts_with("/nonexistent/kvm does not exist"), "{missing}");
    assert_eq!(missing.exit_code(), exit_code::HOST);
    let not_kvm = refuse(&VmConfig { kvm_device: "/dev/null".into(), ..config("boot") });
    assert!(matches!(not_kvm, Error::NotKvm { .. }), "{not_kvm}");
}

#[test]
fn memory_sizes_out_of_range_are_usage_errors() {
    let mem = |text: &str| text.to_string();
    for (size, expected) in [
        (0, ConfigError::ZeroMemory { mem: mem("0") }),
        (64 * MIB + 512, ConfigError::UnalignedMemory { mem: mem("67109376") }),
        (4 * MIB, ConfigError::TooLittleMemory { mem: mem("4M") }),
    ] {
        let err = refuse(&VmConfig { mem_size: size, ..config("boot") });
        assert_eq!(err.exit_code(), exit_code::USAGE);
        assert!(matches!(&err, Error::Config(found) if *found == expected), "{err}");
    }
    // 1 PiB of RAM is past any x86 guest-physical address width KVM offers today.
    let err = refuse(&VmConfig { mem_size: 1 << 50, ..config("boot") });
    assert!(matches!(err, Error::Config(ConfigError::BeyondAddressSpace { .. })), "{err}");
}

#[test]
fn e820_ram_outside_guest_memory_is_refused() {
    let e820 = parse_e820("0-0x9fc00:ram,0x100000-0x8000000:ram").expect("valid syntax");
    let err = refuse(&VmConfig { e820: Some(e820), ..config("boot") });
    assert!(
        matches!(err, Error::Config(ConfigError::E820Unbacked { end: 0x800_0000, .. })),
        "{err}"
    );
    assert!(err.to_string().contains("raise --mem"), "{err}");
    let gap = parse_e820("0x100000-0xc0001000:ram").expect("valid syntax");
    let err = refuse(&VmConfig { mem_size: 4 * GIB, e820: Some(gap), ..config("boot") });
    assert!(matches!(err, Error::Config(ConfigError::E820Unbacked { .. })), "{err}");
}

#[test]
fn unusable_mem_files_are_host_errors_naming_the_file() {
    let uncreatable = temp_path("no-such-dir").join("ram");
    let err = refuse(&VmConfig { mem_file: Some(uncreatable.clone()), ..config("boot") });
    assert!(
        err.to_string().starts_with(&format!("cannot create --mem-file {}", uncreatable.display())),
        "{err}"
    );
    assert_eq!(err.exit_code(), exit_code::HOST);
    let unsizable = refuse(&VmConfig { mem_file: Some("/dev/null".into()), ..config("boot") });
    assert!(unsizable.to_string().starts_with("cannot size --mem-file /dev/null"), "{unsizable}");
}

#[test]
fn command_lines_the_zero_page_cannot_carry_are_refused() {
    let err = refuse(&VmConfig { cmdline: "x".repeat(4096), ..config("boot") });
    assert!(matches!(err, Error::Config(ConfigError::CmdlineTooLong(4096))), "{err}");
}

#[test]
fn memory_beyond_the_host_is_refused_before_kvm_allocates_for_it() {
    // 200 TiB: more than any CI host has, and than 4-level paging hosts can map.
    let err = refuse(&VmConfig { mem_size: 200 << 40, ..config("boot") });
    assert!(
        matches!(
            err,
            Error::Config(
                ConfigError::BeyondHostMemory { .. } | ConfigError::BeyondAddressSpace { .. }
            )
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("lower --mem") || err.to_string().contains("address space"),
        "{err}"
    );
    assert_eq!(err.exit_code(), exit_code::USAGE);
}
