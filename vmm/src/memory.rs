//! Guest RAM: one file (an anonymous memfd, or the user's `--mem-file`) mapped shared and
//! without reserve into memory slots (one per RAM range, split at [`MAX_SLOT_SIZE`]).
//!
//! ```text
//! guest physical            file offset
//! [0, min(size, 3 GiB))     [0, min(size, 3 GiB))
//! [3 GiB, 4 GiB)            -- MMIO gap, no RAM --
//! [4 GiB, 1 GiB + size)     [3 GiB, size)            only when size > 3 GiB
//! ```
//!
//! The file is created empty and sized with `ftruncate`, so RAM reads as zero at boot and
//! the host commits only the pages the guest (or the VMM's own boot writes) touch. Another
//! process can read the same `--mem-file` to inspect the guest (`vmm inspect` reads it
//! with `pread`, so a file that shrinks under it gives errors, never SIGBUS).
//!
//! A `--mem-file` is locked (`flock(LOCK_EX)`) before it is truncated and for as long as
//! the guest runs, so a second `vmm run` on the same path is refused instead of shrinking
//! the file under the first, whose own mapping would then fault. The lock is advisory: it
//! binds kvm-mm processes, not others.

use shared::boot::{E820Entry, E820_TYPE_RAM, E820_TYPE_RESERVED};
use shared::layout::{EBDA_START, HIGH_MEMORY, MMIO_GAP_END, MMIO_GAP_START};
use std::fs::{File, OpenOptions};
use std::os::fd::FromRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

pub use shared::vmcoreinfo::RamRange;

/// Errors setting up guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// memfd_create failed.
    #[error("cannot create the guest RAM memfd: {0}")]
    Memfd(#[source] std::io::Error),
    /// The memory file is a directory.
    #[error("--mem-file {} is a directory; give the path of a file to create in it, like {}", path.display(), path.join("guest.ram").display())]
    MemFileIsDirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another kvm-mm process holds the memory file.
    #[error("--mem-file {} is in use by another vmm process (it holds a lock on the file); give another path, or wait for that guest to exit", path.display())]
    MemFileInUse {
        /// The file.
        path: PathBuf,
    },
    /// The memory file could not be locked.
    #[error("cannot lock --mem-file {}: {source}; use a file on a local filesystem", path.display())]
    LockFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The memory file could not be opened or created.
    #[error("cannot create --mem-file {}: {source}; check the directory exists and is writable", path.display())]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The memory file could not be sized.
    #[error("cannot size --mem-file {} to {size} bytes: {source}; use a regular file on a filesystem with sparse-file support", path.display())]
    SizeFile {
        /// The file.
        path: PathBuf,
        /// The size needed.
        size: u64,
        /// Why.
        source: std::io::Error,
    },
    /// The memory file stayed smaller than guest RAM.
    #[error("--mem-file {} holds {actual} bytes after sizing, less than the {size} bytes of guest RAM; use a regular file", path.display())]
    FileTooSmall {
        /// The file.
        path: PathBuf,
        /// Bytes the file holds.
        actual: u64,
        /// Bytes needed.
        size: u64,
    },
    /// Mapping guest RAM failed.
    #[error("cannot map {size} bytes of guest RAM: {source}; the host may be short of address space or memory")]
    Map {
        /// Bytes of RAM.
        size: u64,
        /// Why.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Largest memory slot: KVM takes fewer than 2^31 pages per slot, so bigger RAM ranges
/// are split into several slots.
pub const MAX_SLOT_SIZE: u64 = 4 << 40;

/// The guest's RAM ranges for `size` bytes of RAM, one per memory slot.
pub fn ram_ranges(size: u64) -> Vec<RamRange> {
    let low = size.min(MMIO_GAP_START);
    let mut ranges = Vec::new();
    for (guest_base, file_base, len) in [(0, 0, low), (MMIO_GAP_END, low, size - low)] {
        let mut done = 0;
        while done < len {
            let chunk = (len - done).min(MAX_SLOT_SIZE);
            ranges.push(RamRange {
                guest_addr: guest_base + done,
                size: chunk,
                file_offset: file_base + done,
            });
            done += chunk;
        }
    }
    ranges
}

/// The e820 map the VMM gives by default: conventional memory, the EBDA/VGA/BIOS hole,
/// then RAM from 1 MiB, split around the MMIO gap.
pub fn default_e820(size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry::new(0, EBDA_START, E820_TYPE_RAM),
        E820Entry::new(EBDA_START, HIGH_MEMORY - EBDA_START, E820_TYPE_RESERVED),
    ];
    let low = size.min(MMIO_GAP_START);
    if low > HIGH_MEMORY {
        map.push(E820Entry::new(HIGH_MEMORY, low - HIGH_MEMORY, E820_TYPE_RAM));
    }
    if size > low {
        map.push(E820Entry::new(MMIO_GAP_END, size - low, E820_TYPE_RAM));
    }
    map
}

/// The host's physical memory (`MemTotal` of `/proc/meminfo`), if it can be read.
///
/// Guest RAM is sparse, but KVM keeps per-page metadata for every memory slot (eagerly on
/// shadow-paging hosts), and a guest larger than the host cannot use its RAM anyway.
pub fn host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Guest RAM with its backing file.
pub struct GuestRam {
    /// The mapping, one region per [`RamRange`].
    pub memory: GuestMemoryMmap,
    /// The ranges, in guest-address order.
    pub ranges: Vec<RamRange>,
    file: File,
}

impl GuestRam {
    /// Creates `size` bytes of zeroed RAM, backed by `mem_file` or by a memfd.
    pub fn new(size: u64, mem_file: Option<&Path>) -> Result<Self, MemoryError> {
        let file = match mem_file {
            None => memfd(size)?,
            Some(path) => open_mem_file(path, size)?,
        };
        let ranges = ram_ranges(size);
        let regions = ranges
            .iter()
            .map(|r| {
                let offset =
                    FileOffset::new(file.try_clone().map_err(MemoryError::Memfd)?, r.file_offset);
                let len = usize::try_from(r.size).unwrap_or(usize::MAX);
                Ok((GuestAddress(r.guest_addr), len, Some(offset)))
            })
            .collect::<Result<Vec<_>, MemoryError>>()?;
        let memory = GuestMemoryMmap::from_ranges_with_files(regions)
            .map_err(|source| MemoryError::Map { size, source })?;
        Ok(Self { memory, ranges, file })
    }

    /// Bytes of guest RAM the host has actually committed (the backing file's allocated
    /// blocks): a measure of what the guest touched.
    pub fn resident_bytes(&self) -> u64 {
        self.file.metadata().map(|m| m.blocks() * 512).unwrap_or(0)
    }
}

fn memfd(size: u64) -> Result<File, MemoryError> {
    // SAFETY: the name is a NUL-terminated string literal; the returned descriptor is
    // checked before use and owned by the `File` from then on.
    let fd = unsafe { libc::memfd_create(c"kvm-mm-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::Memfd)?;
    Ok(file)
}

/// Checks what can be checked of a `--mem-file` path before anything is created: that it
/// is not a directory.
pub fn check_mem_file(path: &Path) -> Result<(), MemoryError> {
    if path.is_dir() {
        return Err(MemoryError::MemFileIsDirectory { path: path.to_path_buf() });
    }
    Ok(())
}

/// Opens (or creates) the RAM file, locks it against other kvm-mm processes, and only
/// then truncates it to `size` zero bytes.
fn open_mem_file(path: &Path, size: u64) -> Result<File, MemoryError> {
    check_mem_file(path)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| MemoryError::CreateFile { path: path.to_path_buf(), source })?;
    lock_exclusive(&file).map_err(|source| match source.raw_os_error() {
        Some(libc::EWOULDBLOCK) => MemoryError::MemFileInUse { path: path.to_path_buf() },
        _ => MemoryError::LockFile { path: path.to_path_buf(), source },
    })?;
    let sized = file.set_len(0).and_then(|()| file.set_len(size));
    sized.map_err(|source| MemoryError::SizeFile { path: path.to_path_buf(), size, source })?;
    let actual = file.metadata().map(|m| m.len()).unwrap_or(0);
    if actual < size {
        return Err(MemoryError::FileTooSmall { path: path.to_path_buf(), actual, size });
    }
    Ok(file)
}

/// Takes an exclusive advisory lock on `file` without waiting; it lasts as long as the
/// open file (and its clones, which share it).
pub(crate) fn lock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `file` owns; it reads or writes no memory.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::layout::{GIB, MIB};

    #[test]
    fn small_guest_has_one_range_below_the_gap() {
        assert_eq!(
            ram_ranges(256 * MIB),
            [RamRange { guest_addr: 0, size: 256 * MIB, file_offset: 0 }]
        );
        assert_eq!(ram_ranges(3 * GIB).len(), 1);
    }

    #[test]
    fn large_guest_continues_above_the_mmio_gap() {
        let ranges = ram_ranges(6 * GIB);
        assert_eq!(
            ranges,
            [
                RamRange { guest_addr: 0, size: 3 * GIB, file_offset: 0 },
                RamRange { guest_addr: 4 * GIB, size: 3 * GIB, file_offset: 3 * GIB },
            ]
        );
        // No RAM range touches the gap.
        assert!(ranges
            .iter()
            .all(|r| r.guest_addr + r.size <= MMIO_GAP_START || r.guest_addr >= MMIO_GAP_END));
    }

    #[test]
    fn huge_guest_is_split_into_slots_kvm_accepts() {
        let ranges = ram_ranges(10 << 40);
        assert_eq!(ranges.len(), 4, "3 GiB below the gap, then 4 + 4 + 2 TiB less 3 GiB");
        assert!(ranges.iter().all(|r| r.size <= MAX_SLOT_SIZE));
        for pair in ranges.windows(2) {
            assert_eq!(
                pair[0].file_offset + pair[0].size,
                pair[1].file_offset,
                "file stays contiguous"
            );
        }
        assert_eq!(ranges[1].guest_addr, 4 * GIB);
        assert_eq!(ranges[2].guest_addr, 4 * GIB + MAX_SLOT_SIZE);
        assert_eq!(ranges.iter().map(|r| r.size).sum::<u64>(), 10 << 40);
    }

    #[test]
    fn default_e820_follows_the_pc_layout() {
        let map = default_e820(6 * GIB);
        assert_eq!(
            map,
            [
                E820Entry::new(0, 0x9fc00, E820_TYPE_RAM),
                E820Entry::new(0x9fc00, 0x60400, E820_TYPE_RESERVED),
                E820Entry::new(MIB, 3 * GIB - MIB, E820_TYPE_RAM),
                E820Entry::new(4 * GIB, 3 * GIB, E820_TYPE_RAM),
            ]
        );
        assert_eq!(default_e820(16 * MIB)[2], E820Entry::new(MIB, 15 * MIB, E820_TYPE_RAM));
        let ram: u64 = map.iter().filter(|e| e.typ == E820_TYPE_RAM).map(|e| e.size).sum();
        assert_eq!(ram, 6 * GIB - (HIGH_MEMORY - EBDA_START));
    }

    #[test]
    fn memfd_ram_is_sparse_and_zeroed() {
        use vm_memory::Bytes;
        let ram = GuestRam::new(64 * MIB, None).expect("memfd RAM");
        let word: u64 = ram.memory.read_obj(GuestAddress(32 * MIB)).expect("in RAM");
        assert_eq!(word, 0);
        assert!(ram.resident_bytes() < MIB, "reading committed {} bytes", ram.resident_bytes());
        ram.memory.write_obj(1u64, GuestAddress(0)).expect("in RAM");
        assert!(ram.resident_bytes() >= 4096);
    }

    #[test]
    fn mem_file_errors_name_the_file() {
        let err =
            GuestRam::new(16 * MIB, Some(Path::new("/nonexistent-dir/ram"))).err().expect("fails");
        assert!(
            err.to_string().starts_with("cannot create --mem-file /nonexistent-dir/ram"),
            "{err}"
        );
        let err = GuestRam::new(16 * MIB, Some(Path::new("/dev/null"))).err().expect("fails");
        assert!(err.to_string().starts_with("cannot size --mem-file /dev/null"), "{err}");
        let dir = std::env::temp_dir();
        let err = GuestRam::new(16 * MIB, Some(&dir)).err().expect("fails");
        assert!(matches!(err, MemoryError::MemFileIsDirectory { .. }), "{err}");
        assert!(err.to_string().contains("is a directory; give the path of a file"), "{err}");
    }

    #[test]
    fn a_mem_file_in_use_is_neither_truncated_nor_shared() {
        use vm_memory::Bytes;
        let path = std::env::temp_dir().join(format!("kvm-mm-lock-{}", std::process::id()));
        let first = GuestRam::new(16 * MIB, Some(&path)).expect("the first guest's RAM");
        first.memory.write_obj(0x5a5a_u64, GuestAddress(MIB)).expect("in RAM");
        let err = GuestRam::new(8 * MIB, Some(&path)).err().expect("refused");
        assert!(matches!(err, MemoryError::MemFileInUse { .. }), "{err}");
        assert!(err.to_string().contains("is in use by another vmm process"), "{err}");
        // The first guest's RAM is intact: same size, same contents.
        assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(16 * MIB));
        assert_eq!(first.memory.read_obj::<u64>(GuestAddress(MIB)).ok(), Some(0x5a5a));
        drop(first);
        // Once the first guest is gone, the file is free again, and zeroed for the next.
        let second = GuestRam::new(8 * MIB, Some(&path)).expect("free again");
        assert_eq!(second.memory.read_obj::<u64>(GuestAddress(MIB)).ok(), Some(0));
        drop(second);
        let _ = std::fs::remove_file(&path);
    }
}
