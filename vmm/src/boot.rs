//! Preparing guest memory for boot: the kernel image, the zero page with the e820 table,
//! the command line, the GDT, the boot page tables (addresses in `shared::layout`) and the
//! RAM ranges of the `vmcoreinfo` descriptor.

use crate::arch::{gdt::GDT, paging::setup_page_tables};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{elf::Elf, KernelLoader};
use shared::boot::{E820Entry, BOOT_FLAG_MAGIC, HEADER_MAGIC, LOADER_UNDEFINED};
use shared::layout::{BOOT_GDT, BOOT_MAP_SIZE, CMDLINE, KERNEL_PHYS_START, ZERO_PAGE};
use shared::vmcoreinfo::{RamRange, VmCoreInfo, MAX_RAM_RANGES, VMCOREINFO_ADDR};
use std::io::Cursor;
use std::mem::offset_of;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};
use zerocopy::IntoBytes;

/// Errors preparing guest memory.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel ELF could not be loaded.
    #[error("cannot load the guest kernel: {0}")]
    LoadKernel(#[source] linux_loader::loader::Error),
    /// The kernel ELF lies outside the boot mapping.
    #[error("the guest kernel's entry {0:#x} is outside the boot mapping")]
    KernelPlacement(u64),
    /// Writing a boot structure failed.
    #[error("cannot write the {what} into guest memory: {source}")]
    Write {
        /// Which structure.
        what: &'static str,
        /// Why.
        source: vm_memory::GuestMemoryError,
    },
}

/// Loads the kernel ELF at its segments' physical addresses; returns the entry point.
pub fn load_kernel(mem: &GuestMemoryMmap, elf: &[u8]) -> Result<u64, BootError> {
    let loaded = Elf::load(mem, None, &mut Cursor::new(elf), Some(GuestAddress(KERNEL_PHYS_START)))
        .map_err(BootError::LoadKernel)?;
    let entry = loaded.kernel_load.0;
    let kernel_window =
        shared::layout::KERNEL_VIRT_BASE..shared::layout::KERNEL_VIRT_BASE + BOOT_MAP_SIZE;
    if !kernel_window.contains(&entry) || loaded.kernel_end > BOOT_MAP_SIZE {
        return Err(BootError::KernelPlacement(entry));
    }
    Ok(entry)
}

/// The zero page for `e820` (at most 128 entries) and a command line of `cmdline_len`
/// bytes at [`CMDLINE`].
#[expect(
    clippy::cast_possible_truncation,
    reason = "the boot protocol splits the command-line address in 32-bit halves"
)]
pub fn zero_page(e820: &[E820Entry], cmdline_len: usize) -> boot_params {
    let mut params = boot_params::default();
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HEADER_MAGIC;
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.ext_cmd_line_ptr = (CMDLINE >> 32) as u32;
    params.hdr.cmdline_size = u32::try_from(cmdline_len).unwrap_or(u32::MAX);
    let mut table = params.e820_table;
    for (slot, entry) in table.iter_mut().zip(e820) {
        *slot = boot_e820_entry { addr: entry.addr, size: entry.size, r#type: entry.typ };
    }
    params.e820_table = table;
    params.e820_entries = u8::try_from(e820.len().min(table.len())).unwrap_or(u8::MAX);
    params
}

/// Writes everything but the kernel: GDT, page tables, command line, zero page, and the
/// RAM ranges of the `vmcoreinfo` descriptor. `cmdline` must have passed
/// [`crate::config::check_cmdline`].
pub fn write_boot_structures(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    cmdline: &str,
    ram: &[RamRange],
) -> Result<(), BootError> {
    let write = |what| move |source| BootError::Write { what, source };
    for (index, descriptor) in GDT.iter().enumerate() {
        mem.write_obj(*descriptor, GuestAddress(BOOT_GDT + 8 * index as u64))
            .map_err(write("GDT"))?;
    }
    setup_page_tables(mem).map_err(write("boot page tables"))?;
    // Followed by the NUL the guest memory already holds.
    mem.write_slice(cmdline.as_bytes(), GuestAddress(CMDLINE)).map_err(write("command line"))?;
    mem.write_obj(zero_page(e820, cmdline.len()), GuestAddress(ZERO_PAGE))
        .map_err(write("zero page"))?;
    write_vmcoreinfo_ram(mem, ram).map_err(write("vmcoreinfo"))
}

/// The VMM's part of the `vmcoreinfo` descriptor: where RAM is in the guest and in the file.
fn write_vmcoreinfo_ram(mem: &GuestMemoryMmap, ram: &[RamRange]) -> Result<(), GuestMemoryError> {
    let ram = &ram[..ram.len().min(MAX_RAM_RANGES)];
    let count = u32::try_from(ram.len()).unwrap_or(u32::MAX);
    let field = |offset: usize| GuestAddress(VMCOREINFO_ADDR + offset as u64);
    mem.write_slice(count.as_bytes(), field(offset_of!(VmCoreInfo, nr_ram)))?;
    mem.write_slice(ram.as_bytes(), field(offset_of!(VmCoreInfo, ram)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::boot as zp;
    use std::mem::offset_of;

    /// Offsets from Linux's `Documentation/arch/x86/zero-page.rst` and `boot.rst`.
    #[test]
    fn zero_page_offsets_match_the_linux_boot_protocol() {
        assert_eq!(std::mem::size_of::<boot_params>(), zp::ZERO_PAGE_SIZE);
        assert_eq!(offset_of!(boot_params, ext_cmd_line_ptr), 0x0c8);
        assert_eq!(offset_of!(boot_params, e820_entries), 0x1e8);
        assert_eq!(offset_of!(boot_params, hdr), 0x1f1);
        assert_eq!(offset_of!(boot_params, e820_table), 0x2d0);
        let hdr = offset_of!(boot_params, hdr);
        use linux_loader::loader::bootparam::setup_header;
        assert_eq!(hdr + offset_of!(setup_header, boot_flag), 0x1fe);
        assert_eq!(hdr + offset_of!(setup_header, header), 0x202);
        assert_eq!(hdr + offset_of!(setup_header, type_of_loader), 0x210);
        assert_eq!(hdr + offset_of!(setup_header, cmd_line_ptr), 0x228);
        assert_eq!(hdr + offset_of!(setup_header, cmdline_size), 0x238);
        // The guest reads the same offsets from `shared`.
        assert_eq!(
            [
                zp::EXT_CMD_LINE_PTR,
                zp::E820_ENTRIES,
                zp::BOOT_FLAG,
                zp::HEADER,
                zp::TYPE_OF_LOADER,
                zp::CMD_LINE_PTR,
                zp::CMDLINE_SIZE,
                zp::E820_TABLE
            ],
            [0x0c8, 0x1e8, 0x1fe, 0x202, 0x210, 0x228, 0x238, 0x2d0]
        );
        assert_eq!(std::mem::size_of::<boot_e820_entry>(), size_of::<E820Entry>());
    }

    #[test]
    fn zero_page_bytes_carry_the_e820_table_and_command_line() {
        use vm_memory::ByteValued;
        let e820 = [E820Entry::new(0, 0x9fc00, 1), E820Entry::new(0x10_0000, 0xf0_0000, 1)];
        let params = zero_page(&e820, 17);
        let bytes = params.as_slice();
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(bytes[zp::E820_ENTRIES], 2);
        assert_eq!(u64::from(u32_at(zp::CMD_LINE_PTR)), CMDLINE);
        assert_eq!(u32_at(zp::CMDLINE_SIZE), 17);
        assert_eq!(u32_at(zp::HEADER), HEADER_MAGIC);
        let second = &bytes[zp::E820_TABLE + 20..zp::E820_TABLE + 40];
        assert_eq!(zerocopy::FromBytes::read_from_bytes(second), Ok(e820[1]));
    }
}
