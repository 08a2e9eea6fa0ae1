//! What a guest is booted with, and the parsing and checking of user input for it.
//!
//! Sizes take `K`, `M`, `G` and `T` suffixes (binary units). An e820 specification is a
//! comma-separated list of `START-END:TYPE` entries: hexadecimal byte addresses (`0x`
//! optional), END exclusive, TYPE one of `ram`, `reserved`, `acpi`, `nvs`, `unusable` or a
//! number. Entries may be unsorted, overlapping or adjacent: the guest sanitises them.

use shared::boot::{
    E820Entry, E820_MAX_ENTRIES, E820_TYPE_ACPI, E820_TYPE_NVS, E820_TYPE_RAM, E820_TYPE_RESERVED,
    E820_TYPE_UNUSABLE,
};
use shared::layout::{CMDLINE_MAX, MIB, PAGE_SIZE};
use std::path::PathBuf;
use std::time::Duration;

/// Default guest RAM.
pub const DEFAULT_MEM_SIZE: u64 = 256 * MIB;
/// Least guest RAM: the kernel image sits at 2 MiB and needs room above it.
pub const MIN_MEM_SIZE: u64 = 8 * MIB;
/// Default KVM device.
pub const DEFAULT_KVM_DEVICE: &str = "/dev/kvm";

/// How to boot a guest.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Bytes of guest RAM (a multiple of 4 KiB, at least [`MIN_MEM_SIZE`]).
    pub mem_size: u64,
    /// Replaces the default e820 map; RAM entries must lie in guest RAM.
    pub e820: Option<Vec<E820Entry>>,
    /// The guest kernel's command line.
    pub cmdline: String,
    /// Back guest RAM with this file instead of an anonymous memfd.
    pub mem_file: Option<PathBuf>,
    /// Stop the guest after this long; `None` lets it run forever.
    pub timeout: Option<Duration>,
    /// Copy the guest console to stdout while it runs (it is captured either way).
    pub echo_console: bool,
    /// The KVM device to open.
    pub kvm_device: PathBuf,
    /// Host inspections to run at every guest checkpoint and at exit.
    pub inspect: Vec<crate::inspect::Command>,
    /// A swap device: page slots in a host file (`--swap-file`, `--swap`).
    pub swap: Option<SwapConfig>,
}

/// Where the swap device's slots live, and how many bytes of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapConfig {
    /// The file, created or truncated.
    pub path: PathBuf,
    /// Bytes (whole pages, between `swap::MIN_SWAP_SIZE` and `swap::MAX_SWAP_SIZE`).
    pub size: u64,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            mem_size: DEFAULT_MEM_SIZE,
            e820: None,
            cmdline: String::new(),
            mem_file: None,
            timeout: Some(Duration::from_secs(60)),
            echo_console: false,
            kvm_device: PathBuf::from(DEFAULT_KVM_DEVICE),
            inspect: Vec::new(),
            swap: None,
        }
    }
}

/// A configuration that cannot be booted. Each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A size that does not parse.
    #[error("invalid size '{0}': give a number of bytes with an optional K, M, G or T suffix, like 256M")]
    BadSize(String),
    /// Zero RAM.
    #[error("--mem {mem} gives the guest no memory; give a size like 256M (at least {}M)", MIN_MEM_SIZE / MIB)]
    ZeroMemory {
        /// The size as given.
        mem: String,
    },
    /// RAM not made of whole pages.
    #[error("--mem {mem} is not a multiple of 4 KiB; give a size with a K, M or G suffix, like 256M (at least {}M)", MIN_MEM_SIZE / MIB)]
    UnalignedMemory {
        /// The size as given.
        mem: String,
    },
    /// Too little RAM for the kernel.
    #[error("--mem {mem} is below the {} MiB the guest needs; give at least {}M", MIN_MEM_SIZE / MIB, MIN_MEM_SIZE / MIB)]
    TooLittleMemory {
        /// The size as given.
        mem: String,
    },
    /// More RAM than the guest-physical address space holds.
    #[error("--mem {size:#x} needs guest-physical addresses up to {end:#x}, beyond the {bits}-bit address space KVM offers")]
    BeyondAddressSpace {
        /// Requested RAM.
        size: u64,
        /// End of the highest RAM range it needs.
        end: u64,
        /// Physical address bits of the guest CPU.
        bits: u8,
    },
    /// More RAM than the host has.
    #[error("--mem {} MiB is more than this host's {} MiB of memory; lower --mem", .size / MIB, .host / MIB)]
    BeyondHostMemory {
        /// Requested RAM.
        size: u64,
        /// The host's physical memory.
        host: u64,
    },
    /// An e820 entry that does not parse.
    #[error("invalid --e820 entry '{0}': write START-END:TYPE with hex addresses, like 0x100000-0x800000:ram")]
    E820Syntax(String),
    /// An e820 type that is neither a name nor a number.
    #[error("invalid --e820 type '{0}': use ram, reserved, acpi, nvs, unusable or a number")]
    E820Type(String),
    /// An e820 entry with END not above START.
    #[error("--e820 entry '{0}' is empty or negative: END is exclusive and must be above START")]
    E820Empty(String),
    /// Too many e820 entries.
    #[error("--e820 has {0} entries; the zero page holds at most {E820_MAX_ENTRIES}")]
    E820TooMany(usize),
    /// No entries at all.
    #[error("--e820 is empty; give at least one START-END:TYPE entry")]
    E820None,
    /// RAM where the guest has no memory.
    #[error("--e820 RAM {start:#x}-{end:#x} is not backed by guest memory (RAM is {ram}); raise --mem or shrink the entry")]
    E820Unbacked {
        /// Start of the entry.
        start: u64,
        /// End (exclusive) of the entry.
        end: u64,
        /// The guest's RAM ranges, for the message.
        ram: String,
    },
    /// A command line the zero page cannot carry.
    #[error("the guest command line is {0} bytes; at most {max} fit", max = CMDLINE_MAX - 1)]
    CmdlineTooLong(usize),
    /// A command line with characters the boot protocol cannot carry.
    #[error("the guest command line must be printable ASCII without NUL")]
    CmdlineChars,
    /// `swap=` given by hand alongside a swap device.
    #[error("swap= is set from --swap; remove it from --cmdline")]
    SwapOnCmdline,
}

/// Parses a size such as `4096`, `64K`, `256M`, `6G` (binary units; `KiB`, `MB` and the like
/// are accepted too).
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadSize(text.to_string());
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    number.checked_mul(1 << shift).ok_or_else(bad)
}

/// Parses an e820 specification (see the module documentation). Checks syntax, types,
/// emptiness and count; [`check_e820`] checks it against guest RAM.
pub fn parse_e820(spec: &str) -> Result<Vec<E820Entry>, ConfigError> {
    let mut entries = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let syntax = || ConfigError::E820Syntax(item.to_string());
        let (range, typ) = item.split_once(':').ok_or_else(syntax)?;
        let (start, end) = range.split_once('-').ok_or_else(syntax)?;
        let start = parse_hex(start).ok_or_else(syntax)?;
        let end = parse_hex(end).ok_or_else(syntax)?;
        let typ = parse_e820_type(typ)?;
        if end <= start {
            return Err(ConfigError::E820Empty(item.to_string()));
        }
        entries.push(E820Entry::new(start, end - start, typ));
    }
    match entries.len() {
        0 => Err(ConfigError::E820None),
        n if n > E820_MAX_ENTRIES => Err(ConfigError::E820TooMany(n)),
        _ => Ok(entries),
    }
}

fn parse_hex(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
    if digits.is_empty() || digits.starts_with('+') {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn parse_e820_type(text: &str) -> Result<u32, ConfigError> {
    Ok(match text.trim() {
        "ram" | "usable" => E820_TYPE_RAM,
        "reserved" => E820_TYPE_RESERVED,
        "acpi" => E820_TYPE_ACPI,
        "nvs" => E820_TYPE_NVS,
        "unusable" => E820_TYPE_UNUSABLE,
        other => {
            let number = match other.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => other.parse(),
            };
            number
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| ConfigError::E820Type(other.to_string()))?
        }
    })
}

/// Checks that every RAM entry of `e820` lies inside `ram` (the guest's RAM ranges as
/// `(start, size)`, sorted; adjacent ranges count as one).
pub fn check_e820(e820: &[E820Entry], ram: &[(u64, u64)]) -> Result<(), ConfigError> {
    if e820.len() > E820_MAX_ENTRIES {
        return Err(ConfigError::E820TooMany(e820.len()));
    }
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(base, len) in ram {
        match merged.last_mut() {
            Some(last) if last.0 + last.1 == base => last.1 += len,
            _ => merged.push((base, len)),
        }
    }
    let ram = merged.as_slice();
    for entry in e820.iter().filter(|e| e.typ == E820_TYPE_RAM) {
        let (start, size) = (entry.addr, entry.size);
        let end = start.saturating_add(size);
        let backed = ram.iter().any(|&(base, len)| start >= base && end <= base + len);
        if !backed {
            let ram = ram
                .iter()
                .map(|&(base, len)| format!("{base:#x}-{:#x}", base + len))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConfigError::E820Unbacked { start, end, ram });
        }
    }
    Ok(())
}

/// Checks the RAM size on its own (the address-space limit needs KVM and is checked when
/// the VM is created).
pub fn check_mem_size(size: u64) -> Result<(), ConfigError> {
    check_mem_size_given(size, &show_size(size))
}

/// A size as a user would write it: with the largest binary suffix that divides it.
pub fn show_size(size: u64) -> String {
    let suffix = [(40, "T"), (30, "G"), (20, "M"), (10, "K")]
        .into_iter()
        .find(|&(shift, _)| size != 0 && size % (1 << shift) == 0);
    match suffix {
        Some((shift, unit)) => format!("{}{unit}", size >> shift),
        None => format!("{size}"),
    }
}

/// [`check_mem_size`], naming the size as the user gave it.
fn check_mem_size_given(size: u64, given: &str) -> Result<(), ConfigError> {
    let mem = given.to_string();
    if size == 0 {
        Err(ConfigError::ZeroMemory { mem })
    } else if size % PAGE_SIZE != 0 {
        Err(ConfigError::UnalignedMemory { mem })
    } else if size < MIN_MEM_SIZE {
        Err(ConfigError::TooLittleMemory { mem })
    } else {
        Ok(())
    }
}

/// Parses and checks `--mem`: a size ([`parse_size`]) the guest can boot with, errors
/// naming it as typed.
pub fn parse_mem_size(text: &str) -> Result<u64, ConfigError> {
    let size = parse_size(text)?;
    check_mem_size_given(size, text.trim())?;
    Ok(size)
}

/// Checks that a command line fits the zero page's protocol.
pub fn check_cmdline(cmdline: &str) -> Result<(), ConfigError> {
    if cmdline.len() >= CMDLINE_MAX {
        return Err(ConfigError::CmdlineTooLong(cmdline.len()));
    }
    if !cmdline.bytes().all(|b| (b' '..=b'~').contains(&b) || b == b'\t') {
        return Err(ConfigError::CmdlineChars);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::layout::GIB;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("6g"), Ok(6 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        for bad in ["", "M", "12Q", "-1M", "1.5G", "99999999999999999999", "16777216T"] {
            assert_eq!(parse_size(bad), Err(ConfigError::BadSize(bad.into())), "{bad}");
        }
    }

    #[test]
    fn mem_size_limits() {
        let mem = |text: &str| text.to_string();
        assert_eq!(check_mem_size(0), Err(ConfigError::ZeroMemory { mem: mem("0") }));
        assert_eq!(
            check_mem_size(MIN_MEM_SIZE + 1),
            Err(ConfigError::UnalignedMemory { mem: mem("8388609") })
        );
        assert_eq!(
            check_mem_size(MIN_MEM_SIZE - PAGE_SIZE),
            Err(ConfigError::TooLittleMemory { mem: mem("8188K") })
        );
        assert_eq!(check_mem_size(MIN_MEM_SIZE), Ok(()));
    }

    #[test]
    fn mem_errors_echo_the_size_as_typed_and_say_what_to_give() {
        let err = parse_mem_size("100").expect_err("not whole pages");
        assert_eq!(
            err.to_string(),
            "--mem 100 is not a multiple of 4 KiB; give a size with a K, M or G suffix, like 256M (at least 8M)"
        );
        let err = parse_mem_size("4M").expect_err("too small");
        assert_eq!(
            err.to_string(),
            "--mem 4M is below the 8 MiB the guest needs; give at least 8M"
        );
        assert_eq!(parse_mem_size("64M"), Ok(64 << 20));
        assert!(matches!(parse_mem_size("lots"), Err(ConfigError::BadSize(_))));
    }

    #[test]
    fn e820_parses_unsorted_overlapping_entries_with_any_type() {
        let entries = parse_e820(
            "0x100000-0x800000:ram, 0-9fc00:ram,0x400000-0x401000:reserved,0x500000-0x600000:12",
        )
        .expect("parses");
        assert_eq!(
            entries,
            [
                E820Entry::new(0x10_0000, 0x70_0000, E820_TYPE_RAM),
                E820Entry::new(0, 0x9fc00, E820_TYPE_RAM),
                E820Entry::new(0x40_0000, 0x1000, E820_TYPE_RESERVED),
                E820Entry::new(0x50_0000, 0x10_0000, 12),
            ]
        );
        let names = parse_e820("0-1000:acpi,1000-2000:nvs,2000-3000:unusable,3000-4000:0x20")
            .expect("parses");
        let types: Vec<u32> = names.iter().map(|e| e.typ).collect();
        assert_eq!(types, [E820_TYPE_ACPI, E820_TYPE_NVS, E820_TYPE_UNUSABLE, 0x20]);
    }

    #[test]
    fn e820_rejects_malformed_entries() {
        assert_eq!(parse_e820("0x1000:ram"), Err(ConfigError::E820Syntax("0x1000:ram".into())));
        assert_eq!(parse_e820("0-0x1000"), Err(ConfigError::E820Syntax("0-0x1000".into())));
        assert_eq!(parse_e820("0-0xzz:ram"), Err(ConfigError::E820Syntax("0-0xzz:ram".into())));
        assert_eq!(parse_e820("0-0x1000:flash"), Err(ConfigError::E820Type("flash".into())));
        assert_eq!(parse_e820("0-0x1000:0"), Err(ConfigError::E820Type("0".into())));
        assert_eq!(
            parse_e820("0x2000-0x2000:ram"),
            Err(ConfigError::E820Empty("0x2000-0x2000:ram".into()))
        );
        assert_eq!(
            parse_e820("0x3000-0x2000:ram"),
            Err(ConfigError::E820Empty("0x3000-0x2000:ram".into()))
        );
        assert_eq!(parse_e820(" , "), Err(ConfigError::E820None));
    }

    #[test]
    fn e820_holds_at_most_128_entries() {
        let entry = |i: u64| format!("{:#x}-{:#x}:ram", i * 0x1000, (i + 1) * 0x1000);
        let spec = |n: u64| (0..n).map(entry).collect::<Vec<_>>().join(",");
        assert_eq!(parse_e820(&spec(128)).map(|e| e.len()), Ok(128));
        assert_eq!(parse_e820(&spec(129)), Err(ConfigError::E820TooMany(129)));
    }

    #[test]
    fn e820_ram_must_be_backed() {
        let ram = [(0, 3 * GIB), (4 * GIB, GIB)];
        let ok = parse_e820(
            "0-0xc0000000:ram,0x100000000-0x140000000:ram,0xc0000000-0x100000000:reserved",
        )
        .expect("parses");
        assert_eq!(check_e820(&ok, &ram), Ok(()));
        let gap = parse_e820("0xbffff000-0xc0001000:ram").expect("parses");
        assert!(matches!(
            check_e820(&gap, &ram),
            Err(ConfigError::E820Unbacked { start: 0xbfff_f000, .. })
        ));
        let split = [(0, 3 * GIB), (4 * GIB, GIB), (5 * GIB, GIB)];
        let across = parse_e820("0x100000000-0x180000000:ram").expect("parses");
        assert_eq!(check_e820(&across, &split), Ok(()), "adjacent slots are one range");
        let beyond = parse_e820("0x13ffff000-0x140001000:ram").expect("parses");
        assert!(matches!(check_e820(&beyond, &ram), Err(ConfigError::E820Unbacked { .. })));
    }

    #[test]
    fn cmdline_limits() {
        assert_eq!(check_cmdline("workload=boot loglevel=7"), Ok(()));
        assert_eq!(check_cmdline(&"x".repeat(CMDLINE_MAX - 1)), Ok(()));
        assert_eq!(
            check_cmdline(&"x".repeat(CMDLINE_MAX)),
            Err(ConfigError::CmdlineTooLong(CMDLINE_MAX))
        );
        assert_eq!(check_cmdline("a\nb"), Err(ConfigError::CmdlineChars));
        assert_eq!(check_cmdline("é"), Err(ConfigError::CmdlineChars));
    }
}
