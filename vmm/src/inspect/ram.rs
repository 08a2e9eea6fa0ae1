//! Guest RAM as the inspector reads it: the running VMM's own mapping, or a RAM file
//! (`--mem-file`) mapped read-only by another process.
//!
//! Every read is checked against the RAM ranges: an address outside them is an error,
//! never a fault or a read of host memory. A RAM file is mapped only where the ranges in
//! its `vmcoreinfo` descriptor say, after checking that the file holds them.

use super::{InspectError, Pod};
use shared::vmcoreinfo::{RamRange, VmCoreInfo, MAX_RAM_RANGES, VMCOREINFO_ADDR};
use shared::walk::PhysMem;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

enum Memory<'a> {
    Borrowed(&'a GuestMemoryMmap),
    Owned(GuestMemoryMmap),
}

/// One RAM range and where the host sees it.
#[derive(Clone, Copy)]
struct HostRange {
    start: u64,
    len: u64,
    host: *const u8,
}

/// Bounds-checked read access to guest RAM.
pub struct GuestRam<'a> {
    memory: Memory<'a>,
    /// The ranges, sorted, for the fast `u64` path.
    ranges: Vec<HostRange>,
    /// Index in `ranges` of the last hit.
    last: usize,
}

impl<'a> GuestRam<'a> {
    /// The running VMM's guest memory.
    pub fn borrowed(memory: &'a GuestMemoryMmap) -> Self {
        Self::with(Memory::Borrowed(memory))
    }

    fn with(memory: Memory<'a>) -> Self {
        let mem = match &memory {
            Memory::Borrowed(mem) => *mem,
            Memory::Owned(mem) => mem,
        };
        let mut ranges: Vec<HostRange> = mem
            .iter()
            .filter_map(|region| {
                let host = mem.get_host_address(region.start_addr()).ok()?;
                Some(HostRange { start: region.start_addr().0, len: region.len(), host })
            })
            .collect();
        ranges.sort_by_key(|r| r.start);
        Self { memory, ranges, last: 0 }
    }

    /// The guest memory behind the RAM file at `path`, mapped read-only where its
    /// `vmcoreinfo` descriptor places RAM.
    pub fn open_file(path: &Path) -> Result<GuestRam<'static>, InspectError> {
        let cannot = |source| InspectError::Open { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(cannot)?;
        let file_len = file.metadata().map_err(cannot)?.len();
        // Low RAM starts the file, so the descriptor is at its own address there.
        let mut info = VmCoreInfo::zeroed();
        file.read_exact_at(info.as_bytes_mut(), VMCOREINFO_ADDR).map_err(|_| {
            InspectError::NotRamFile {
                path: path.to_path_buf(),
                why: format!("it holds {file_len} bytes, too few for guest RAM"),
            }
        })?;
        let ranges = file_ranges(&info, file_len)
            .map_err(|why| InspectError::NotRamFile { path: path.to_path_buf(), why })?;
        let mut regions = Vec::new();
        for range in &ranges {
            let size = usize::try_from(range.size).map_err(|_| InspectError::NotRamFile {
                path: path.to_path_buf(),
                why: "a RAM range is larger than the host's address space".into(),
            })?;
            let offset = FileOffset::new(file.try_clone().map_err(cannot)?, range.file_offset);
            let region = MmapRegionBuilder::new(size)
                .with_file_offset(offset)
                .with_mmap_prot(libc::PROT_READ)
                .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
                .build()
                .map_err(|err| InspectError::Map {
                    path: path.to_path_buf(),
                    why: err.to_string(),
                })?;
            let region =
                GuestRegionMmap::new(region, GuestAddress(range.guest_addr)).ok_or_else(|| {
                    InspectError::Map { path: path.to_path_buf(), why: "bad region".into() }
                })?;
            regions.push(region);
        }
        let memory = GuestMemoryMmap::from_regions(regions)
            .map_err(|err| InspectError::Map { path: path.to_path_buf(), why: err.to_string() })?;
        Ok(GuestRam::with(Memory::Owned(memory)))
    }

    fn memory(&self) -> &GuestMemoryMmap {
        match &self.memory {
            Memory::Borrowed(mem) => mem,
            Memory::Owned(mem) => mem,
        }
    }

    /// Fills `buf` from guest-physical `gpa`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), InspectError> {
        self.memory()
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| InspectError::OutsideRam { gpa, len: buf.len() as u64 })
    }

    /// The value of type `T` at guest-physical `gpa`.
    pub fn read_obj<T: Pod>(&self, gpa: u64) -> Result<T, InspectError> {
        let mut value = T::zeroed();
        self.read(gpa, value.as_bytes_mut())?;
        Ok(value)
    }

    /// The RAM ranges, lowest first: (guest address, length).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|r| (r.start, r.len))
    }
}

impl PhysMem for GuestRam<'_> {
    #[inline]
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        let mut range = self.ranges.get(self.last).copied()?;
        if gpa.wrapping_sub(range.start) >= range.len {
            self.last = self.ranges.iter().position(|r| gpa.wrapping_sub(r.start) < r.len)?;
            range = self.ranges[self.last];
        }
        let offset = gpa - range.start;
        if offset + 8 > range.len {
            return None;
        }
        if gpa % 8 != 0 {
            return self.read_obj(gpa).ok();
        }
        // SAFETY: `host` maps `len` bytes of guest RAM for as long as `self.memory` lives
        // (borrowed for 'a, or owned); `offset + 8 <= len` and the address is 8-byte
        // aligned. The guest may change the word at any time, hence a volatile read.
        Some(unsafe { range.host.add(super::to_usize(offset)).cast::<u64>().read_volatile() })
    }
}

/// The RAM ranges a descriptor read from a RAM file of `file_len` bytes lists, checked.
fn file_ranges(info: &VmCoreInfo, file_len: u64) -> Result<Vec<RamRange>, String> {
    let count = info.nr_ram as usize;
    if count == 0 || count > MAX_RAM_RANGES {
        return Err(format!(
            "its vmcoreinfo lists {count} RAM ranges (expected 1 to {MAX_RAM_RANGES}); is it a kvm-mm --mem-file?"
        ));
    }
    let mut ranges: Vec<RamRange> = info.ram[..count].to_vec();
    ranges.sort_by_key(|r| r.guest_addr);
    let mut end = 0u64;
    for r in &ranges {
        let in_file = r.file_offset.checked_add(r.size).is_some_and(|e| e <= file_len);
        let aligned = (r.guest_addr | r.size | r.file_offset) % 4096 == 0;
        if r.size == 0 || !aligned || !in_file || r.guest_addr < end {
            return Err(format!(
                "RAM range {:#x}+{:#x} at file offset {:#x} is empty, misaligned, overlapping or past the file's {file_len} bytes",
                r.guest_addr, r.size, r.file_offset
            ));
        }
        end = r.guest_addr.checked_add(r.size).ok_or("a RAM range wraps around")?;
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ranges: &[RamRange]) -> VmCoreInfo {
        let nr_ram = u32::try_from(ranges.len()).expect("a few ranges");
        let mut info = VmCoreInfo { nr_ram, ..Default::default() };
        info.ram[..ranges.len()].copy_from_slice(ranges);
        info
    }

    fn range(guest_addr: u64, size: u64, file_offset: u64) -> RamRange {
        RamRange { guest_addr, size, file_offset }
    }

    #[test]
    fn file_ranges_must_lie_in_the_file_and_not_overlap() {
        let good = info(&[range(0, 1 << 20, 0), range(4 << 30, 1 << 20, 1 << 20)]);
        assert_eq!(file_ranges(&good, 2 << 20).map(|r| r.len()), Ok(2));
        assert!(file_ranges(&good, (2 << 20) - 1).is_err(), "past the end of the file");
        assert!(file_ranges(&info(&[]), 1 << 20).is_err());
        let overlap = info(&[range(0, 2 << 20, 0), range(1 << 20, 1 << 20, 0)]);
        assert!(file_ranges(&overlap, 4 << 20).is_err());
        assert!(file_ranges(&info(&[range(0, 100, 0)]), 1 << 20).is_err(), "misaligned");
        let huge = info(&[range(0, 4096, u64::MAX - 4095)]);
        assert!(file_ranges(&huge, 1 << 20).is_err(), "offset + size overflows");
        let mut bogus = good;
        bogus.nr_ram = 1000;
        assert!(file_ranges(&bogus, 2 << 20).is_err());
    }
}
