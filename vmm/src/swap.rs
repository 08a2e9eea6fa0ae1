//! The paravirtual swap device: page-sized slots in a host file
//! (`vmm run --swap-file PATH --swap SIZE`).
//!
//! ```text
//! SwapDevice::create   check the size, create or truncate the file, lock it, size it,
//!                      write its last page (so a full disk fails here, not mid-run)
//! guest: "swap=SLOTS" on its command line, then hypercalls
//!   SWAP_WRITE(gpa, slot)  the host copies the guest page into the file at slot × 4 KiB
//!   SWAP_READ(gpa, slot)   and back
//! ```
//!
//! The slot number and the page come from the guest, so both are checked: a slot past the
//! end or a page that is not whole RAM is refused with the reason, never a host fault.
//! A copy is one `pwrite` or `pread` of the page, through a page buffer on the host's
//! stack (guest RAM is memory the guest may change under the host: it is read and written
//! as volatile memory, once).

use crate::config::show_size;
use shared::layout::{GIB, MIB, PAGE_SIZE};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The smallest swap device: 256 slots.
pub const MIN_SWAP_SIZE: u64 = MIB;
/// The largest: 16 Mi slots, whose map (a byte a slot, as Linux's `swap_map`) the guest
/// must hold.
pub const MAX_SWAP_SIZE: u64 = 64 * GIB;

/// Why the swap device cannot be set up. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// A size that is not whole pages.
    #[error("--swap {} is not a multiple of 4 KiB; give a size with a K, M or G suffix, like 512M", show_size(*size))]
    Unaligned {
        /// Bytes.
        size: u64,
    },
    /// Too small to be worth a device.
    #[error("--swap {} is below the smallest swap device; give at least {}", show_size(*size), show_size(MIN_SWAP_SIZE))]
    TooSmall {
        /// Bytes.
        size: u64,
    },
    /// Larger than the guest's swap map may cover.
    #[error("--swap {} is above the largest swap device; give at most {}", show_size(*size), show_size(MAX_SWAP_SIZE))]
    TooLarge {
        /// Bytes.
        size: u64,
    },
    /// The path is a directory.
    #[error("--swap-file {} is a directory; give the path of a file to create in it, like {}", path.display(), path.join("guest.swap").display())]
    IsDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The file cannot be created or opened.
    #[error("cannot create --swap-file {}: {source}; check the directory exists and is writable", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file cannot be sized or written.
    #[error("cannot write --swap-file {} ({size} bytes): {source}; free space on its filesystem or give a smaller --swap", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the file.
    #[error("--swap-file {} is in use by another vmm process; give another path", path.display())]
    InUse {
        /// The file.
        path: PathBuf,
    },
}

/// Checks a swap size from the command line.
pub fn check_swap_size(size: u64) -> Result<(), SwapError> {
    if size % PAGE_SIZE != 0 {
        return Err(SwapError::Unaligned { size });
    }
    if size < MIN_SWAP_SIZE {
        return Err(SwapError::TooSmall { size });
    }
    if size > MAX_SWAP_SIZE {
        return Err(SwapError::TooLarge { size });
    }
    Ok(())
}

/// A swap device: `slots` pages in `file`.
#[derive(Debug)]
pub struct SwapDevice {
    file: File,
    path: PathBuf,
    slots: u64,
}

impl SwapDevice {
    /// Creates (or truncates) `path` as a device of `size` bytes, locked against other
    /// vmm processes.
    pub fn create(path: &Path, size: u64) -> Result<Self, SwapError> {
        check_swap_size(size)?;
        let create = |source| SwapError::Create { path: path.to_path_buf(), source };
        if path.is_dir() {
            return Err(SwapError::IsDirectory { path: path.to_path_buf() });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(create)?;
        crate::memory::lock_exclusive(&file).map_err(|source| match source.raw_os_error() {
            Some(libc::EWOULDBLOCK) => SwapError::InUse { path: path.to_path_buf() },
            _ => create(source),
        })?;
        let write = |source| SwapError::Write { path: path.to_path_buf(), size, source };
        file.set_len(0).and_then(|()| file.set_len(size)).map_err(write)?;
        // Reserve the blocks, where the filesystem can, so that a full disk fails now.
        // SAFETY: fallocate on a descriptor `file` owns, within the size just set.
        let reserved = unsafe {
            libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, size as libc::off_t)
        };
        if reserved != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(write(err));
            }
        }
        file.write_all_at(&[0; 4096], size - PAGE_SIZE).map_err(write)?;
        Ok(Self { file, path: path.to_path_buf(), slots: size / PAGE_SIZE })
    }

    /// Slots on the device.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn offset(&self, slot: u64) -> Result<u64, String> {
        if slot >= self.slots {
            return Err(format!(
                "swap slot {slot} is past the device's end ({} slots)",
                self.slots
            ));
        }
        Ok(slot * PAGE_SIZE)
    }

    /// Writes `page` (4 KiB) to `slot`.
    pub fn write_slot(&self, slot: u64, page: &[u8]) -> Result<(), String> {
        let offset = self.offset(slot)?;
        self.file
            .write_all_at(page, offset)
            .map_err(|err| format!("swap slot {slot}: write to {}: {err}", self.path.display()))
    }

    /// Reads `slot` into `page` (4 KiB).
    pub fn read_slot(&self, slot: u64, page: &mut [u8]) -> Result<(), String> {
        let offset = self.offset(slot)?;
        self.file
            .read_exact_at(page, offset)
            .map_err(|err| format!("swap slot {slot}: read from {}: {err}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("kvm-mm-swap-{}-{name}", std::process::id()))
    }

    #[test]
    fn sizes_out_of_range_are_refused_with_what_to_give() {
        let cases = [
            (MIB + 512, "is not a multiple of 4 KiB"),
            (64 * 1024, "--swap 64K is below the smallest swap device; give at least 1M"),
            (65 * GIB, "--swap 65G is above the largest swap device; give at most 64G"),
        ];
        for (size, text) in cases {
            let err = check_swap_size(size).expect_err("refused");
            assert!(err.to_string().contains(text), "{err}");
        }
        assert!(check_swap_size(MIB).is_ok() && check_swap_size(MAX_SWAP_SIZE).is_ok());
    }

    #[test]
    fn slots_round_trip_and_the_end_is_guarded() {
        let path = temp("round-trip");
        let device = SwapDevice::create(&path, MIB).expect("a device");
        assert_eq!(device.slots(), 256);
        let page: Vec<u8> = (0..=255u8).cycle().step_by(7).take(4096).collect();
        device.write_slot(255, &page).expect("the last slot");
        let mut back = vec![0u8; 4096];
        device.read_slot(255, &mut back).expect("read back");
        assert_eq!(back, page);
        let err = device.write_slot(256, &page).expect_err("past the end");
        assert!(err.contains("past the device's end (256 slots)"), "{err}");
        assert!(device.read_slot(u64::MAX, &mut back).is_err(), "no overflow");
        // A second vmm cannot take the same file.
        let busy = SwapDevice::create(&path, MIB).expect_err("locked");
        assert!(matches!(busy, SwapError::InUse { .. }), "{busy}");
        drop(device);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_file_that_cannot_be_created_is_one_clear_error() {
        let err = SwapDevice::create(Path::new("/nonexistent/dir/swap"), MIB).expect_err("no dir");
        assert!(
            err.to_string().starts_with("cannot create --swap-file /nonexistent/dir/swap"),
            "{err}"
        );
        let dir = std::env::temp_dir();
        let err = SwapDevice::create(&dir, MIB).expect_err("a directory");
        assert!(matches!(err, SwapError::IsDirectory { .. }), "{err}");
    }
}
