//! Inspecting an image as `vmm inspect --mem-file` does (a RAM file read with pread), or
//! as a running VMM does (host memory mapped as guest memory).

use super::image::Image;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::inspect::check::CheckReport;
use vmm::inspect::{Command, InspectError, Inspector, Output, RamReader, View};

/// An image written to a temporary RAM file, removed when dropped.
pub struct RamFile {
    /// The file.
    pub path: PathBuf,
}

impl RamFile {
    /// A reader of the file.
    pub fn reader(&self) -> RamReader<'static> {
        RamReader::open_file(&self.path).expect("a RAM file")
    }

    /// An inspector of the file.
    pub fn inspector(&self) -> Inspector<'static> {
        Inspector::new(self.reader())
    }
}

impl Drop for RamFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Image {
    /// The image as a RAM file, sparse as `vmm run --mem-file` leaves one: pages that
    /// hold only zeros are holes.
    pub fn file(&self) -> RamFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name =
            format!("kvm-mm-image-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        let file = std::fs::File::create(&path).expect("a temporary RAM file");
        file.set_len(self.ram.size()).expect("sized");
        for (page, bytes) in (0u64..).zip(self.ram.bytes().chunks(4096)) {
            if bytes.iter().any(|&b| b != 0) {
                file.write_all_at(bytes, page * 4096).expect("written");
            }
        }
        RamFile { path }
    }

    /// The image as guest memory a VMM maps.
    pub fn memory(&self) -> GuestMemoryMmap {
        let len = usize::try_from(self.ram.size()).expect("a 64-bit host");
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)]).expect("host memory");
        memory.write_slice(self.ram.bytes(), GuestAddress(0)).expect("copied");
        memory
    }

    /// Runs `command` on the image, read from a RAM file.
    pub fn run(&self, command: &Command) -> Result<Output, InspectError> {
        self.file().inspector().run(command)
    }

    /// Runs `read` on one snapshot of the image, read from a RAM file.
    pub fn snapshot<T>(
        &self,
        read: impl FnMut(&mut View<'_, '_>) -> Result<T, InspectError>,
    ) -> Result<T, InspectError> {
        self.file().inspector().snapshot(read)
    }

    /// `check`'s report on the image.
    pub fn check(&self) -> CheckReport {
        match self.run(&Command::Check) {
            Ok(Output::Check(report)) => report,
            other => panic!("check did not report: {other:?}"),
        }
    }
}
