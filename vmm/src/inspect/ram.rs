//! Guest RAM as the inspector reads it: the running VMM's own mapping, or a RAM file
//! (`--mem-file`) read by another process.
//!
//! ```text
//! RamReader::mapped(&GuestMemoryMmap)   the VMM's mapping of the RAM it owns (and locks)
//! RamReader::open_file(path)            pread from a file someone else owns, through a
//!                                       cache of pages, emptied for every snapshot
//! ```
//!
//! Every read is checked against the RAM ranges: an address outside them is an error,
//! never a fault or a read of host memory. A file is read, never mapped: a file another
//! process truncates under a mapping raises SIGBUS on the next touch, while a read past
//! its end just comes back short, which becomes [`InspectError::FileShrank`].

use super::buffer::ZeroedBuffer;
use super::InspectError;
use shared::vmcoreinfo::{RamRange, VmCoreInfo, MAX_RAM_RANGES, VMCOREINFO_ADDR};
use shared::walk::PhysMem;
use std::cell::Cell;
use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Blocks the file cache holds at least (4 MiB) and at most (256 MiB); in between, twice
/// the guest's memory map. Direct-mapped by block number, and only the blocks read take
/// host memory.
const MIN_CACHE_BLOCKS: usize = 1024;
const MAX_CACHE_BLOCKS: usize = 65_536;
/// Blocks a miss reads at most (256 KiB). A miss reads one block, or twice as many as the
/// last miss if it comes right after what that one read, as Linux's readahead grows: a
/// scan pays few system calls, and a scattered read (a table, a descriptor) fills no more
/// than it needs. On a nested host every fresh page of host memory the cache fills costs
/// a fault of about 2 µs, more than the read itself.
const MAX_READAHEAD: u64 = 64;
/// The file cache's unit, a block: a page.
const PAGE: u64 = 4096;

/// One RAM range and where the host sees it.
#[derive(Clone, Copy)]
struct HostRange {
    start: u64,
    len: u64,
    /// Offsets an 8-byte read may start at: `[0, words)` (`len - 7`, or 0).
    words: u64,
    host: *const u8,
    /// The file behind the mapping and the offset of `start` in it, where there is one:
    /// where it has holes, RAM reads as zero without touching the mapping.
    file: Option<(RawFd, u64)>,
}

impl HostRange {
    /// No range: every read misses it.
    const NONE: Self = Self { start: 0, len: 0, words: 0, host: core::ptr::null(), file: None };
}

/// A cache slot that holds no block.
const NO_BLOCK: u64 = u64::MAX;

/// A RAM file read with `pread`.
struct FileRam {
    path: PathBuf,
    file: File,
    /// The ranges, sorted by guest address.
    ranges: Vec<RamRange>,
    /// The block number (guest-physical address / [`PAGE`]) each slot holds, or
    /// [`NO_BLOCK`]. RAM ranges are page-aligned, so a block is RAM as a whole or not at
    /// all. Block `b` goes to slot `b % slots`, a power of two, so consecutive blocks sit
    /// side by side and fill with one `pread`.
    tags: Vec<u64>,
    /// The cached pages, slot by slot, as little-endian words (zeroed lazily by the host:
    /// only the slots filled take memory).
    pages: ZeroedBuffer<[u64; 512]>,
    /// Set when a read came back short: the file shrank under us.
    shrank: Cell<bool>,
    /// The block after what the last miss read, and how many blocks it read.
    next: u64,
    window: u64,
}

enum Backend<'a> {
    /// `current` is the range the last word came from, tried first.
    Mapped {
        ranges: Vec<HostRange>,
        current: HostRange,
        _memory: &'a GuestMemoryMmap,
    },
    File(Box<FileRam>),
}

/// Bounds-checked read access to guest RAM.
pub struct RamReader<'a> {
    backend: Backend<'a>,
}

impl<'a> RamReader<'a> {
    /// The running VMM's guest memory.
    pub fn mapped(memory: &'a GuestMemoryMmap) -> Self {
        let mut ranges: Vec<HostRange> = memory
            .iter()
            .filter_map(|region| {
                let host = memory.get_host_address(region.start_addr()).ok()?;
                let (start, len) = (region.start_addr().0, region.len());
                let file = region.file_offset().map(|f| (f.file().as_raw_fd(), f.start()));
                Some(HostRange { start, len, words: len.saturating_sub(7), host, file })
            })
            .collect();
        ranges.sort_by_key(|r| r.start);
        let current = HostRange::NONE;
        Self { backend: Backend::Mapped { ranges, current, _memory: memory } }
    }

    /// The guest memory in the RAM file at `path`, where its `vmcoreinfo` descriptor
    /// places RAM.
    pub fn open_file(path: &Path) -> Result<RamReader<'static>, InspectError> {
        let cannot = |source| InspectError::Open { path: path.to_path_buf(), source };
        let not_ram = |why: String| InspectError::NotRamFile { path: path.to_path_buf(), why };
        if path.is_dir() {
            return Err(not_ram(
                "it is a directory; give the file `vmm run --mem-file` wrote".into(),
            ));
        }
        let file = File::open(path).map_err(cannot)?;
        let file_len = file.metadata().map_err(cannot)?.len();
        // Low RAM starts the file, so the descriptor is at its own address there.
        let mut info = VmCoreInfo::new_zeroed();
        file.read_exact_at(info.as_mut_bytes(), VMCOREINFO_ADDR)
            .map_err(|_| not_ram(format!("it holds {file_len} bytes, too few for guest RAM")))?;
        let ranges = file_ranges(&info, file_len).map_err(not_ram)?;
        let ram: u64 = ranges.iter().map(|r| r.size).sum();
        let memmap_blocks = ram / PAGE * shared::page::PAGE_STRUCT_SIZE as u64 / PAGE;
        let slots = super::to_usize(2 * memmap_blocks)
            .next_power_of_two()
            .clamp(MIN_CACHE_BLOCKS, MAX_CACHE_BLOCKS);
        // Zeroed by the host as pages are first touched: only the pages filled take memory,
        // and dropping the cache after a command costs only those.
        let pages = ZeroedBuffer::lazy(slots).ok_or_else(|| {
            not_ram(format!("there is no host memory for its {} MiB read cache", slots / 256))
        })?;
        let file = FileRam {
            path: path.to_path_buf(),
            file,
            ranges,
            tags: vec![NO_BLOCK; slots],
            pages,
            shrank: Cell::new(false),
            next: NO_BLOCK,
            window: 1,
        };
        Ok(RamReader { backend: Backend::File(Box::new(file)) })
    }

    /// Forgets what was read: a new snapshot of a running guest must see fresh bytes.
    pub fn begin_snapshot(&mut self) -> Result<(), InspectError> {
        if let Backend::File(file) = &mut self.backend {
            file.check_size()?;
            file.tags.fill(NO_BLOCK);
        }
        Ok(())
    }

    /// After a command: an error if the RAM file shrank while it was being read.
    pub fn end_snapshot(&self) -> Result<(), InspectError> {
        match &self.backend {
            Backend::File(file) if file.shrank.get() => {
                Err(InspectError::FileShrank { path: file.path.clone() })
            }
            _ => Ok(()),
        }
    }

    /// Fills `buf` from guest-physical `gpa`. From a file, a read inside one cache block
    /// goes through the cache; a larger one is one `pread`.
    pub fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), InspectError> {
        let len = buf.len() as u64;
        let outside = || InspectError::OutsideRam { gpa, len };
        match &mut self.backend {
            Backend::Mapped { _memory: memory, .. } => {
                memory.read_slice(buf, GuestAddress(gpa)).map_err(|_| outside())
            }
            Backend::File(file) => {
                let offset = file.offset(gpa, len).ok_or_else(outside)?;
                // Within a block: through the cache. Larger: straight into `buf`, one
                // copy (the memory map `check` reads whole, 2 MiB a read).
                let done = if len > 0 && gpa / PAGE == (gpa + len - 1) / PAGE {
                    file.cached(gpa, len).map(|bytes| buf.copy_from_slice(bytes))
                } else {
                    file.pread(buf, offset)
                };
                match done {
                    Some(()) => Ok(()),
                    None if file.shrank.get() => {
                        Err(InspectError::FileShrank { path: file.path.clone() })
                    }
                    None => Err(outside()),
                }
            }
        }
    }

    /// Fills the parts of `buf` that RAM holds data for, from guest-physical `gpa`, and
    /// returns them as ranges of `buf`, in order. The rest of `buf` is left as it was: it
    /// reads as zero in RAM (holes in a sparse RAM file, where the guest never wrote). A
    /// 1 GiB guest's file holds a few MiB of data, so `check` reads its memory map in a
    /// fraction of the time and host memory. From a mapping, the same where a file backs
    /// it (the VMM's memfd): reading a hole through a shared mapping would allocate it.
    pub fn read_data(
        &mut self,
        gpa: u64,
        buf: &mut [u8],
    ) -> Result<Vec<Range<usize>>, InspectError> {
        let file = match &self.backend {
            Backend::File(file) => file,
            Backend::Mapped { ranges, .. } => {
                // Through the mapping only where the file behind it holds data: a read of a
                // hole would make the host allocate a page for it.
                let len = buf.len() as u64;
                let range = ranges.iter().find(|r| r.start <= gpa && gpa - r.start + len <= r.len);
                let Some(((fd, file_start), start)) = range.and_then(|r| Some((r.file?, r.start)))
                else {
                    self.read(gpa, buf)?;
                    return Ok(std::iter::once(0..buf.len()).collect());
                };
                let offset = file_start + (gpa - start);
                let mut data = Vec::new();
                let mut at = 0;
                while at < len {
                    let Some((start, end)) = data_extent(fd, offset + at, offset + len) else {
                        break;
                    };
                    let (start, end) = (start - offset, end - offset);
                    let part = super::to_usize(start)..super::to_usize(end);
                    self.read(gpa + start, &mut buf[part.clone()])?;
                    data.push(part);
                    at = end;
                }
                return Ok(data);
            }
        };
        let len = buf.len() as u64;
        let offset = file.offset(gpa, len).ok_or(InspectError::OutsideRam { gpa, len })?;
        let mut data = Vec::new();
        let mut at = 0;
        while at < len {
            let Some((start, end)) = file.data_extent(offset + at, offset + len) else { break };
            let (start, end) = (start - offset, end - offset);
            let part = super::to_usize(start)..super::to_usize(end);
            file.pread(&mut buf[part.clone()], offset + start)
                .ok_or_else(|| InspectError::FileShrank { path: file.path.clone() })?;
            data.push(part);
            at = end;
        }
        Ok(data)
    }

    /// The value of type `T` at guest-physical `gpa` as it is now, past the file cache:
    /// for the sequence counter that ends a snapshot.
    pub fn read_fresh<T: FromBytes + IntoBytes>(&self, gpa: u64) -> Result<T, InspectError> {
        let mut value = T::new_zeroed();
        let buf = value.as_mut_bytes();
        let len = buf.len() as u64;
        match &self.backend {
            Backend::Mapped { _memory: memory, .. } => memory
                .read_slice(buf, GuestAddress(gpa))
                .map_err(|_| InspectError::OutsideRam { gpa, len })?,
            Backend::File(file) => {
                let offset = file.offset(gpa, len).ok_or(InspectError::OutsideRam { gpa, len })?;
                file.pread(buf, offset)
                    .ok_or_else(|| InspectError::FileShrank { path: file.path.clone() })?;
            }
        }
        Ok(value)
    }

    /// The value of type `T` at guest-physical `gpa`.
    pub fn read_obj<T: FromBytes + IntoBytes>(&mut self, gpa: u64) -> Result<T, InspectError> {
        let mut value = T::new_zeroed();
        self.read(gpa, value.as_mut_bytes())?;
        Ok(value)
    }

    /// The RAM ranges, lowest first: (guest address, length).
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        match &self.backend {
            Backend::Mapped { ranges, .. } => ranges.iter().map(|r| (r.start, r.len)).collect(),
            Backend::File(file) => file.ranges.iter().map(|r| (r.guest_addr, r.size)).collect(),
        }
    }

    /// Bytes of RAM.
    pub fn ram_bytes(&self) -> u64 {
        self.ranges().iter().map(|&(_, len)| len).sum()
    }
}

impl FileRam {
    /// The file offset of `[gpa, gpa + len)`, if it lies in one RAM range.
    fn offset(&self, gpa: u64, len: u64) -> Option<u64> {
        let range = self.ranges.iter().find(|r| gpa.wrapping_sub(r.guest_addr) < r.size)?;
        let inside = gpa - range.guest_addr;
        (len <= range.size - inside).then(|| range.file_offset + inside)
    }

    /// Reads `buf` at file `offset`; `None` (and the file marked shrunk) if it is short.
    fn pread(&self, buf: &mut [u8], offset: u64) -> Option<()> {
        match self.file.read_exact_at(buf, offset) {
            Ok(()) => Some(()),
            Err(_) => {
                self.shrank.set(true);
                None
            }
        }
    }

    /// The first run of data in the file at or after `from`, clipped to `end`: `lseek`'s
    /// `SEEK_DATA` and `SEEK_HOLE`. Where the file system cannot tell, everything is data.
    fn data_extent(&self, from: u64, end: u64) -> Option<(u64, u64)> {
        data_extent(self.file.as_raw_fd(), from, end)
    }

    /// An error if the file no longer holds every RAM range.
    fn check_size(&self) -> Result<(), InspectError> {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        let needed = self.ranges.iter().map(|r| r.file_offset + r.size).max().unwrap_or(0);
        if len < needed {
            self.shrank.set(true);
            return Err(InspectError::FileShrank { path: self.path.clone() });
        }
        Ok(())
    }

    /// The word at `gpa` (8-byte aligned), through the block cache. The walker's hot
    /// path, written out: through [`slot`](Self::slot) it compiles to 7 more
    /// instructions a read (callgrind, the sweep benchmark).
    #[inline(always)]
    fn word(&mut self, gpa: u64) -> Option<u64> {
        let block = gpa / PAGE;
        let slot = super::to_usize(block) & (self.tags.len() - 1);
        if self.tags.get(slot) != Some(&block) && !self.miss(slot, gpa) {
            return None;
        }
        Some(u64::from_le(self.pages.get(slot)?[super::to_usize(gpa / 8) % 512]))
    }

    /// `words` from `gpa` on, inside one page (8-byte aligned): from the block cache if
    /// their block is there, else one `pread` straight into `words`. A tree walk reads
    /// each table once, and a fresh cache page costs a host fault besides the read.
    #[inline(always)]
    fn words(&mut self, gpa: u64, words: &mut [u64]) -> bool {
        let block = gpa / PAGE;
        let slot = super::to_usize(block) & (self.tags.len() - 1);
        if self.tags[slot] != block {
            return self.words_direct(gpa, words);
        }
        let first = super::to_usize(gpa / 8) % 512;
        let Some(cached) = self.pages[slot].get(first..first + words.len()) else { return false };
        for (word, &value) in words.iter_mut().zip(cached) {
            *word = u64::from_le(value);
        }
        true
    }

    /// `words` from `gpa` on, read past the cache.
    #[inline(never)]
    fn words_direct(&mut self, gpa: u64, words: &mut [u64]) -> bool {
        let Some(offset) = self.offset(gpa, 8 * words.len() as u64) else { return false };
        if self.pread(words.as_mut_bytes(), offset).is_none() {
            return false;
        }
        words.iter_mut().for_each(|word| *word = u64::from_le(*word));
        true
    }

    /// The slot that holds `gpa`'s block, read in if it is not there; `None` if it is not
    /// RAM or the file shrank.
    #[inline(always)]
    fn slot(&mut self, gpa: u64) -> Option<usize> {
        let block = gpa / PAGE;
        let slot = super::to_usize(block) & (self.tags.len() - 1);
        if self.tags.get(slot) != Some(&block) && !self.miss(slot, gpa) {
            return None;
        }
        Some(slot)
    }

    /// The cached bytes `[gpa, gpa + len)`, inside one block; `None` if they are not RAM
    /// or the file shrank.
    #[inline(always)]
    fn cached(&mut self, gpa: u64, len: u64) -> Option<&[u8]> {
        let (slot, at) = (self.slot(gpa)?, super::to_usize(gpa % PAGE));
        self.pages.get(slot)?.as_bytes().get(at..at + super::to_usize(len))
    }

    /// Reads the blocks from `first` on, up to `last` (exclusive) and the end of `first`'s
    /// RAM range, that are missing, side by side in the cache, with one `pread`. Nothing
    /// if `first` is not RAM; a short read marks the file shrunk.
    #[cold]
    fn fill_run(&mut self, first: u64, last: u64) {
        let slots = self.tags.len();
        let slot = super::to_usize(first) & (slots - 1);
        let Some(range) =
            self.ranges.iter().find(|r| (first * PAGE).wrapping_sub(r.guest_addr) < r.size)
        else {
            return;
        };
        let range_end = (range.guest_addr + range.size) / PAGE;
        let room = (slots - slot) as u64;
        let count = (first..last.min(range_end).min(first + room))
            .take_while(|&b| self.tags[super::to_usize(b) & (slots - 1)] != b)
            .count();
        if count == 0 {
            return;
        }
        let offset = range.file_offset + (first * PAGE - range.guest_addr);
        let bytes = self.pages[slot..slot + count].as_mut_bytes();
        self.tags[slot..slot + count].fill(NO_BLOCK);
        if self.file.read_exact_at(bytes, offset).is_err() {
            self.shrank.set(true);
            return;
        }
        for (tag, block) in self.tags[slot..slot + count].iter_mut().zip(first..) {
            *tag = block;
        }
    }

    /// A miss: reads `gpa`'s block and the readahead window after it (see
    /// [`MAX_READAHEAD`]), then makes sure of `gpa`'s own block.
    #[cold]
    fn miss(&mut self, slot: usize, gpa: u64) -> bool {
        let block = gpa / PAGE;
        self.window = if block == self.next { (2 * self.window).min(MAX_READAHEAD) } else { 1 };
        self.next = block + self.window;
        self.fill_run(block, self.next);
        self.tags[slot] == block
    }
}

impl PhysMem for RamReader<'_> {
    #[inline(always)]
    fn read_u64(&mut self, gpa: u64) -> Option<u64> {
        if gpa % 8 != 0 {
            return self.read_obj(gpa).ok();
        }
        match &mut self.backend {
            Backend::Mapped { ranges, current, .. } => {
                let mut offset = gpa.wrapping_sub(current.start);
                if offset >= current.words {
                    *current = *ranges.iter().find(|r| gpa.wrapping_sub(r.start) < r.words)?;
                    offset = gpa - current.start;
                }
                // SAFETY: `host` maps `len` bytes of guest RAM for as long as the borrowed
                // memory lives; `offset < len - 7` and the address is 8-byte aligned. The
                // guest may change the word at any time, hence a volatile read.
                Some(unsafe {
                    current.host.add(super::to_usize(offset)).cast::<u64>().read_volatile()
                })
            }
            Backend::File(file) => file.word(gpa),
        }
    }

    #[inline]
    fn read_words(&mut self, gpa: u64, words: &mut [u64]) -> bool {
        let bytes = 8 * words.len() as u64;
        if bytes == 0 {
            return true;
        }
        if gpa % 8 != 0 || gpa % PAGE + bytes > PAGE {
            return words
                .iter_mut()
                .zip((gpa..).step_by(8))
                .all(|(word, at)| self.read_u64(at).map(|value| *word = value).is_some());
        }
        match &mut self.backend {
            Backend::Mapped { ranges, current, .. } => {
                let inside =
                    |r: &HostRange| gpa.wrapping_sub(r.start) < r.len.saturating_sub(bytes - 1);
                if !inside(current) {
                    let Some(range) = ranges.iter().find(|r| inside(r)) else { return false };
                    *current = *range;
                }
                let base = gpa - current.start;
                for (word, offset) in words.iter_mut().zip((base..).step_by(8)) {
                    // SAFETY: as in `read_u64`: `[base, base + bytes)` lies inside the
                    // range's `len` mapped bytes, and every word is 8-byte aligned.
                    *word = unsafe {
                        current.host.add(super::to_usize(offset)).cast::<u64>().read_volatile()
                    };
                }
                true
            }
            Backend::File(file) => file.words(gpa, words),
        }
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
        let aligned = (r.guest_addr | r.size | r.file_offset) % PAGE == 0;
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

/// The first run of data in the file `fd` at or after `from`, clipped to `end`: `lseek`'s
/// `SEEK_DATA` and `SEEK_HOLE`. Where the file system cannot tell, everything is data.
fn data_extent(fd: RawFd, from: u64, end: u64) -> Option<(u64, u64)> {
    let seek = |offset: u64, whence| {
        let offset = libc::off_t::try_from(offset).ok()?;
        // SAFETY: `lseek` on an open descriptor (a RAM file this reader opened, or the
        // file behind the VMM's mapping, which outlives the reader); it moves the file
        // position, which nothing here uses (every read is a `pread` or through the
        // mapping).
        let found = unsafe { libc::lseek(fd, offset, whence) };
        u64::try_from(found).ok()
    };
    let start = match seek(from, libc::SEEK_DATA) {
        Some(start) => start.max(from),
        None if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => return None,
        None => from,
    };
    if start >= end {
        return None;
    }
    let stop = seek(start, libc::SEEK_HOLE).unwrap_or(end).clamp(start + 1, end);
    Some((start, stop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::to_usize;

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
    fn inspect_file_ranges_must_lie_in_the_file_and_not_overlap() {
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

    /// A RAM file of `pages` pages whose descriptor lists them as one range, with the
    /// word `index` at byte `8 × index`.
    fn ram_file(name: &str, pages: u64) -> PathBuf {
        let path = std::env::temp_dir().join(format!("kvm-mm-ram-{}-{name}", std::process::id()));
        let mut bytes = vec![0u8; to_usize(pages * PAGE)];
        for (index, word) in bytes.chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&(index as u64).to_le_bytes());
        }
        let descriptor = info(&[range(0, pages * PAGE, 0)]);
        let at = to_usize(VMCOREINFO_ADDR);
        bytes[at..at + size_of::<VmCoreInfo>()].copy_from_slice(descriptor.as_bytes());
        std::fs::write(&path, bytes).expect("temporary file");
        path
    }

    #[test]
    fn inspect_reads_a_file_through_its_cache_and_refuses_what_lies_outside() {
        let path = ram_file("reads", 64);
        let mut ram = RamReader::open_file(&path).expect("a RAM file");
        assert_eq!(ram.ranges(), [(0, 64 * PAGE)]);
        assert_eq!(ram.read_u64(0x10_000), Some(0x10_000 / 8));
        assert_eq!(ram.read_u64(63 * PAGE + 4088), Some((63 * PAGE + 4088) / 8));
        assert_eq!(ram.read_u64(64 * PAGE), None, "past the RAM");
        let mut two = [0u8; 16];
        ram.read(0x2000, &mut two).expect("in RAM");
        assert_eq!(u64::read_from_bytes(&two[8..]).ok(), Some(0x2008 / 8));
        assert!(ram.read(64 * PAGE - 8, &mut two).is_err(), "straddles the end");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn inspect_reads_runs_of_words_as_it_reads_each() {
        let path = ram_file("words", 32);
        let mut file = RamReader::open_file(&path).expect("a RAM file");
        let bytes = std::fs::read(&path).expect("the file");
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), bytes.len())]).expect("host");
        memory.write_slice(&bytes, GuestAddress(0)).expect("copied");
        let mut mapped = RamReader::mapped(&memory);
        for ram in [&mut file, &mut mapped] {
            for (gpa, len) in [(0x8000, 512), (0x9ff8, 1), (0x3000 + 8, 100), (0x5004, 3)] {
                let mut words = vec![0u64; len];
                assert!(ram.read_words(gpa, &mut words), "{gpa:#x}+{len}");
                let one_by_one: Vec<u64> =
                    (0..len as u64).map(|i| ram.read_u64(gpa + 8 * i).expect("in RAM")).collect();
                assert_eq!(words, one_by_one, "{gpa:#x}+{len}");
            }
            let mut past = [0u64; 2];
            assert!(!ram.read_words(32 * PAGE - 8, &mut past), "runs past the RAM");
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn inspect_file_cache_blocks_hold_only_ram() {
        // RAM at [0, 64K) and at [68K, 128K), the second range at file offset 64K.
        let path = ram_file("hole", 32);
        let mut descriptor =
            info(&[range(0, 16 * PAGE, 0), range(17 * PAGE, 15 * PAGE, 16 * PAGE)]);
        descriptor.nr_ram = 2;
        let file = std::fs::OpenOptions::new().write(true).open(&path).expect("the file");
        file.write_all_at(descriptor.as_bytes(), VMCOREINFO_ADDR).expect("written");
        let mut ram = RamReader::open_file(&path).expect("a RAM file");
        assert_eq!(ram.read_u64(17 * PAGE), Some(16 * PAGE / 8), "file offset 64K");
        for _ in 0..2 {
            assert_eq!(ram.read_u64(16 * PAGE - 8), Some((16 * PAGE - 8) / 8), "read ahead");
        }
        assert_eq!(ram.read_u64(17 * PAGE - 8), None, "the hole's last word");
        assert_eq!(ram.read_u64(16 * PAGE), None, "the hole's first word");
        assert_eq!(ram.read_u64(32 * PAGE - 8), Some((31 * PAGE - 8) / 8), "the last word");
        assert_eq!(ram.read_u64(15 * PAGE), Some(15 * PAGE / 8), "the first range");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn inspect_reads_only_the_data_of_a_sparse_file() {
        // 64 pages, all holes but the descriptor's page and pages 40, 41 and 63.
        let path = std::env::temp_dir().join(format!("kvm-mm-ram-{}-sparse", std::process::id()));
        let file = File::create(&path).expect("temporary file");
        file.set_len(64 * PAGE).expect("sized");
        file.write_all_at(info(&[range(0, 64 * PAGE, 0)]).as_bytes(), VMCOREINFO_ADDR)
            .expect("written");
        for page in [40u8, 41, 63] {
            file.write_all_at(&[page; 4096], u64::from(page) * PAGE).expect("written");
        }
        let mut ram = RamReader::open_file(&path).expect("a RAM file");
        let contents = std::fs::read(&path).expect("the file");
        for (first, pages) in [(32, 32), (0, 8), (40, 1), (8, 8)] {
            let mut buf = vec![0xeeu8; to_usize(pages * PAGE)];
            let data = ram.read_data(first * PAGE, &mut buf).expect("in RAM");
            let file = &contents[to_usize(first * PAGE)..to_usize((first + pages) * PAGE)];
            // Every byte is read from the file or left alone where the file reads zero;
            // where the file system knows holes (ext4, tmpfs) the holes are left alone.
            let mut read = vec![false; buf.len()];
            data.iter().for_each(|part| read[part.clone()].fill(true));
            for (at, (&byte, &was_read)) in buf.iter().zip(&read).enumerate() {
                let expected = if was_read { file[at] } else { 0xee };
                assert_eq!(byte, expected, "byte {at:#x} of pages {first}+{pages}");
                assert!(was_read || file[at] == 0, "data at {at:#x} of pages {first}+{pages}");
            }
            assert!(data.windows(2).all(|w| w[0].end <= w[1].start), "in order: {data:?}");
        }
        assert!(ram.read_data(60 * PAGE, &mut [0; 5 * 4096]).is_err(), "past the RAM");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn inspect_of_a_file_that_shrinks_under_it_errs_instead_of_faulting() {
        let path = ram_file("shrinks", 64);
        let mut ram = RamReader::open_file(&path).expect("a RAM file");
        ram.begin_snapshot().expect("whole");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(8 * PAGE))
            .expect("truncated");
        assert_eq!(ram.read_u64(32 * PAGE), None, "a short read, not SIGBUS");
        assert!(matches!(ram.end_snapshot(), Err(InspectError::FileShrank { .. })));
        assert!(matches!(ram.begin_snapshot(), Err(InspectError::FileShrank { .. })));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn inspect_refuses_a_directory_by_name() {
        let err = RamReader::open_file(&std::env::temp_dir()).err().expect("refused");
        assert!(err.to_string().contains("it is a directory"), "{err}");
    }
}
