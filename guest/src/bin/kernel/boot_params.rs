//! Reading the zero page the VMM wrote (`shared::boot` has the offsets).

use crate::mm::boot_phys_to_virt as phys_to_virt;
use shared::boot::{
    E820Entry, BOOT_FLAG, BOOT_FLAG_MAGIC, CMDLINE_SIZE, CMD_LINE_PTR, E820_ENTRIES,
    E820_MAX_ENTRIES, E820_TABLE, EXT_CMD_LINE_PTR, ZERO_PAGE_SIZE,
};
use shared::layout::CMDLINE_MAX;
use zerocopy::FromBytes;

/// What the kernel takes from the zero page.
pub struct BootParams {
    e820: [E820Entry; E820_MAX_ENTRIES],
    e820_len: usize,
    /// The kernel command line.
    pub cmdline: &'static str,
}

impl BootParams {
    /// The e820 table as the VMM wrote it.
    pub fn e820(&self) -> &[E820Entry] {
        &self.e820[..self.e820_len]
    }
}

/// Why the zero page cannot be used.
#[derive(Debug)]
pub enum Error {
    /// The zero page is not in boot-mapped memory.
    ZeroPageUnmapped(u64),
    /// `boot_flag` is not 0xAA55.
    BadBootFlag(u16),
    /// `e820_entries` exceeds the table.
    TooManyE820Entries(u8),
    /// The e820 table does not decode (its bytes are not whole entries).
    E820Table,
    /// The command line is not in boot-mapped memory or is too long.
    BadCmdline { addr: u64, size: u32 },
    /// The command line is not UTF-8.
    CmdlineNotUtf8,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::ZeroPageUnmapped(addr) => {
                write!(f, "zero page at {addr:#x} is outside the boot mapping")
            }
            Self::BadBootFlag(flag) => write!(f, "boot_flag is {flag:#06x}, not 0xaa55"),
            Self::E820Table => write!(f, "the e820 table is not whole entries"),
            Self::TooManyE820Entries(n) => {
                write!(f, "{n} e820 entries, the table holds {E820_MAX_ENTRIES}")
            }
            Self::BadCmdline { addr, size } => {
                write!(f, "command line of {size} bytes at {addr:#x} is unusable")
            }
            Self::CmdlineNotUtf8 => write!(f, "command line is not UTF-8"),
        }
    }
}

/// Reads the zero page at physical address `zero_page`.
pub fn read(zero_page: u64) -> Result<BootParams, Error> {
    let unmapped = Error::ZeroPageUnmapped(zero_page);
    let end =
        zero_page.checked_add(ZERO_PAGE_SIZE as u64).ok_or(Error::ZeroPageUnmapped(zero_page))?;
    let virt =
        phys_to_virt(zero_page).filter(|_| phys_to_virt(end - 1).is_some()).ok_or(unmapped)?;
    // SAFETY: the boot contract puts a 4 KiB zero page at this physical address, which the
    // boot page tables map at `virt`; nothing writes it while the kernel reads it.
    let page = unsafe { core::slice::from_raw_parts(virt as *const u8, ZERO_PAGE_SIZE) };
    let u16_at = |at: usize| u16::from_le_bytes([page[at], page[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);

    let flag = u16_at(BOOT_FLAG);
    if flag != BOOT_FLAG_MAGIC {
        return Err(Error::BadBootFlag(flag));
    }
    let count = page[E820_ENTRIES];
    if usize::from(count) > E820_MAX_ENTRIES {
        return Err(Error::TooManyE820Entries(count));
    }
    let mut e820 = [E820Entry::default(); E820_MAX_ENTRIES];
    let table = &page[E820_TABLE..E820_TABLE + E820_MAX_ENTRIES * size_of::<E820Entry>()];
    let entries = <[E820Entry]>::ref_from_bytes(table).map_err(|_| Error::E820Table)?;
    e820[..usize::from(count)].copy_from_slice(&entries[..usize::from(count)]);

    let addr = u64::from(u32_at(CMD_LINE_PTR)) | (u64::from(u32_at(EXT_CMD_LINE_PTR)) << 32);
    let size = u32_at(CMDLINE_SIZE);
    let bad = Error::BadCmdline { addr, size };
    let cmdline: &[u8] = if addr == 0 || size == 0 {
        &[]
    } else {
        let len = usize::try_from(size).map_err(|_| Error::BadCmdline { addr, size })?;
        if len >= CMDLINE_MAX {
            return Err(bad);
        }
        let last = addr.checked_add(u64::from(size)).ok_or(Error::BadCmdline { addr, size })?;
        let virt = phys_to_virt(addr).filter(|_| phys_to_virt(last).is_some()).ok_or(bad)?;
        // SAFETY: the boot contract puts `size` bytes of command line at `addr`, mapped at
        // `virt` (checked above); the VMM does not write it after boot.
        unsafe { core::slice::from_raw_parts(virt as *const u8, len) }
    };
    let cmdline = core::str::from_utf8(cmdline).map_err(|_| Error::CmdlineNotUtf8)?;
    Ok(BootParams { e820, e820_len: usize::from(count), cmdline })
}
