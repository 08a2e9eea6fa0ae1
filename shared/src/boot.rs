//! The subset of Linux's x86 boot protocol (`Documentation/arch/x86/boot.rst`,
//! `arch/x86/include/uapi/asm/bootparam.h`) this project uses: the zero page with its e820
//! table and command-line pointer.
//!
//! The VMM fills `boot_params` with linux-loader's generated type; the guest reads the
//! fields at these offsets. Host tests assert the two agree.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of the zero page.
pub const ZERO_PAGE_SIZE: usize = 4096;
/// Offset of `ext_cmd_line_ptr` (upper 32 bits of the command line address).
pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
/// Offset of `e820_entries` (u8).
pub const E820_ENTRIES: usize = 0x1e8;
/// Offset of `hdr.boot_flag` (u16, 0xAA55).
pub const BOOT_FLAG: usize = 0x1fe;
/// Offset of `hdr.header` (u32, "HdrS").
pub const HEADER: usize = 0x202;
/// Offset of `hdr.type_of_loader` (u8).
pub const TYPE_OF_LOADER: usize = 0x210;
/// Offset of `hdr.cmd_line_ptr` (lower 32 bits of the command line address).
pub const CMD_LINE_PTR: usize = 0x228;
/// Offset of `hdr.cmdline_size` (u32, excluding the terminating NUL).
pub const CMDLINE_SIZE: usize = 0x238;
/// Offset of `e820_table`.
pub const E820_TABLE: usize = 0x2d0;
/// Capacity of `e820_table` (Linux's `E820_MAX_ENTRIES_ZEROPAGE`).
pub const E820_MAX_ENTRIES: usize = 128;

/// Value of `hdr.boot_flag`.
pub const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// Value of `hdr.header`: "HdrS".
pub const HEADER_MAGIC: u32 = 0x5372_6448;
/// `hdr.type_of_loader` for a loader without an assigned id.
pub const LOADER_UNDEFINED: u8 = 0xff;

/// One entry of the e820 table (`struct boot_e820_entry`, packed, 20 bytes): the zero
/// page's encoding, the guest's report and what the host reads from guest memory alike.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[repr(C, packed)]
pub struct E820Entry {
    /// First byte of the range.
    pub addr: u64,
    /// Length of the range in bytes.
    pub size: u64,
    /// The range's type (`E820_TYPE_*`).
    #[cfg_attr(feature = "serde", serde(rename = "type"))]
    pub typ: u32,
}

const _: () = assert!(core::mem::size_of::<E820Entry>() == 20);

impl E820Entry {
    /// The entry covering `[addr, addr + size)`.
    pub const fn new(addr: u64, size: u64, typ: u32) -> Self {
        Self { addr, size, typ }
    }
}

/// Usable RAM.
pub const E820_TYPE_RAM: u32 = 1;
/// Reserved.
pub const E820_TYPE_RESERVED: u32 = 2;
/// ACPI tables, reclaimable.
pub const E820_TYPE_ACPI: u32 = 3;
/// ACPI non-volatile storage.
pub const E820_TYPE_NVS: u32 = 4;
/// Unusable (bad memory).
pub const E820_TYPE_UNUSABLE: u32 = 5;
/// Persistent memory.
pub const E820_TYPE_PMEM: u32 = 7;
/// Legacy persistent memory.
pub const E820_TYPE_PRAM: u32 = 12;
/// Soft-reserved (EFI specific-purpose memory).
pub const E820_TYPE_SOFT_RESERVED: u32 = 0xefff_ffff;

/// How Linux's `e820_print_type` names a type; `None` for types it prints as `type N`.
pub fn e820_type_name(typ: u32) -> Option<&'static str> {
    Some(match typ {
        E820_TYPE_RAM => "usable",
        E820_TYPE_RESERVED => "reserved",
        E820_TYPE_SOFT_RESERVED => "soft reserved",
        E820_TYPE_ACPI => "ACPI data",
        E820_TYPE_NVS => "ACPI NVS",
        E820_TYPE_UNUSABLE => "unusable",
        _ => return None,
    })
}

/// Writes an e820 type the way Linux's boot log does (`usable`, `persistent (type 7)`, …).
pub fn write_e820_type(out: &mut impl core::fmt::Write, typ: u32) -> core::fmt::Result {
    match (e820_type_name(typ), typ) {
        (Some(name), _) => out.write_str(name),
        (None, E820_TYPE_PMEM | E820_TYPE_PRAM) => write!(out, "persistent (type {typ})"),
        (None, _) => write!(out, "type {typ}"),
    }
}

/// Writes one line of Linux's e820 boot print, without the newline:
/// `BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable`.
/// The end is inclusive, as Linux prints it; `size` must be nonzero.
pub fn write_e820_line(
    out: &mut impl core::fmt::Write,
    prefix: &str,
    entry: E820Entry,
) -> core::fmt::Result {
    let (addr, size, typ) = (entry.addr, entry.size, entry.typ);
    let last = addr.wrapping_add(size).wrapping_sub(1);
    write!(out, "{prefix}: [mem {addr:#018x}-{last:#018x}] ")?;
    write_e820_type(out, typ)
}
