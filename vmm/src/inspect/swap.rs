//! Swap as the host sees it: `/proc/swaps`, and a process's memory read back wherever it
//! is, in RAM or in a slot of the swap file.
//!
//! ```text
//! swaps    vmcoreinfo.nr_swap_slots and the swap map (state::swap_counts): size, used
//! read     PID ADDR LEN: per page, the process's entry (shared::walk): present → the
//!          frame in RAM; a swap entry → its slot, bounds-checked against the device and
//!          the file, read from the swap file (`--swap-file`, or the one `vmm run` made)
//! ```
//!
//! The swap file holds what the guest wrote: a slot number comes from a guest page table,
//! so it is checked against the device's size and the file's before it is read, and a bad
//! one is an error naming it.

use super::{state, to_usize, InspectError, View};
use schemars::JsonSchema;
use serde::Serialize;
use shared::process::TASK_SIZE;
use shared::walk::walk;
use std::fmt::Write;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The swap file, opened for reading.
#[derive(Debug)]
pub struct SwapFile {
    file: File,
    path: PathBuf,
}

impl SwapFile {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> Result<Self, InspectError> {
        let file = File::open(path)
            .map_err(|source| InspectError::Open { path: path.to_path_buf(), source })?;
        Ok(Self { file, path: path.to_path_buf() })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads slot `slot` (already checked against the guest's device) into `page`.
    fn read_slot(&self, slot: u64, page: &mut [u8; 4096]) -> Result<(), InspectError> {
        let len = self.file.metadata().map(|m| m.len()).map_err(|err| {
            InspectError::Argument(format!("cannot read {}: {err}", self.path.display()))
        })?;
        let offset = slot.checked_mul(4096).filter(|&at| at.saturating_add(4096) <= len);
        let Some(offset) = offset else {
            return Err(InspectError::Argument(format!(
                "swap slot {slot} lies beyond the swap file {} ({len} bytes): is it this guest's?",
                self.path.display()
            )));
        };
        self.file.read_exact_at(page, offset).map_err(|err| {
            InspectError::Argument(format!(
                "cannot read swap slot {slot} from {}: {err}",
                self.path.display()
            ))
        })
    }
}

/// The swap device, as a line of `/proc/swaps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SwapDevice {
    /// The swap file, when the host knows it (`--swap-file`), else empty.
    pub filename: String,
    /// Its size, KiB.
    pub size_kib: u64,
    /// Slots in use, KiB.
    pub used_kib: u64,
    /// Linux's default priority for the first device without one.
    pub priority: i32,
}

/// `/proc/swaps`: the guest's device, if it has one.
pub fn swaps(
    view: &mut View<'_, '_>,
    file: Option<&SwapFile>,
) -> Result<Vec<SwapDevice>, InspectError> {
    let slots = view.info.nr_swap_slots;
    if slots == 0 {
        return Ok(Vec::new());
    }
    let used = state::swap_counts(view)?.iter().filter(|&&count| count != 0).count() as u64;
    Ok(vec![SwapDevice {
        filename: file.map(|f| f.path().display().to_string()).unwrap_or_default(),
        size_kib: slots.saturating_mul(4),
        used_kib: used.saturating_mul(4),
        priority: -2,
    }])
}

/// `/proc/swaps` text.
pub fn swaps_text(devices: &[SwapDevice]) -> String {
    let mut out = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
    for d in devices {
        let name = if d.filename.is_empty() { "(swap device)" } else { d.filename.as_str() };
        let _ =
            writeln!(out, "{name:<40}file\t\t{}\t\t{}\t\t{}", d.size_kib, d.used_kib, d.priority);
    }
    out
}

/// Bytes `read` returns at most.
pub const READ_MAX: u64 = 64 << 10;

/// Where one page of a `read` came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum PageSource {
    /// A frame in RAM.
    Ram {
        /// The page's virtual address.
        virt: u64,
        /// Its frame.
        pfn: u64,
    },
    /// A slot of the swap file.
    Swap {
        /// The page's virtual address.
        virt: u64,
        /// Its slot.
        slot: u64,
    },
}

/// A process's memory, read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct UserMemory {
    /// The process.
    pub pid: u32,
    /// The first address read.
    pub addr: u64,
    /// Where each page came from, in order.
    pub pages: Vec<PageSource>,
    /// The bytes, as lowercase hex.
    pub hex: String,
}

/// Reads `len` bytes of process `pid`'s memory from `addr`: each page from RAM, or from
/// its slot in the swap file when it is swapped out.
pub fn read(
    view: &mut View<'_, '_>,
    file: Option<&SwapFile>,
    pid: u32,
    addr: u64,
    len: u64,
) -> Result<UserMemory, InspectError> {
    if len == 0 || len > READ_MAX {
        return Err(InspectError::Argument(format!(
            "read {len} bytes: give 1 to {READ_MAX} (--len)"
        )));
    }
    let end = addr.checked_add(len).filter(|&end| end <= TASK_SIZE).ok_or_else(|| {
        InspectError::Argument(format!(
            "{addr:#x}+{len:#x} leaves user space (which ends at {TASK_SIZE:#x})"
        ))
    })?;
    let t = super::process::task(view, pid)?;
    let slots = view.info.nr_swap_slots;
    let mut bytes = Vec::with_capacity(to_usize(len));
    let mut pages = Vec::new();
    let mut virt = addr & !0xfff;
    while virt < end {
        view.budget.spend(1, || format!("reading pid {pid}'s page at {virt:#x}"))?;
        let mut page = [0u8; 4096];
        let walked = walk(view.ram, t.mm.pgd, virt);
        match walked.result {
            Ok(mapping) => {
                let phys = mapping.phys;
                view.ram.read(phys, &mut page)?;
                pages.push(PageSource::Ram { virt, pfn: phys / 4096 });
            }
            Err(_) => {
                let last = walked.steps[..walked.len].last();
                let swapped =
                    last.filter(|step| step.level == 1).and_then(|step| step.entry.swap_slot());
                let Some(slot) = swapped else {
                    return Err(InspectError::Argument(format!(
                        "pid {pid} has nothing at {virt:#x}: neither mapped nor swapped out"
                    )));
                };
                if slot >= slots {
                    return Err(InspectError::Corrupt(format!(
                        "pid {pid}'s entry for {virt:#x} names swap slot {slot}, past the \
                         device's {slots} slots"
                    )));
                }
                let file = file.ok_or_else(|| {
                    InspectError::Argument(format!(
                        "pid {pid}'s page at {virt:#x} is in swap slot {slot}: give the swap \
                         file (--swap-file PATH) to read it"
                    ))
                })?;
                file.read_slot(slot, &mut page)?;
                pages.push(PageSource::Swap { virt, slot });
            }
        }
        let from = to_usize(addr.max(virt) - virt);
        let to = to_usize(end.min(virt + 4096) - virt);
        bytes.extend_from_slice(&page[from..to]);
        virt += 4096;
    }
    let hex = bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    });
    Ok(UserMemory { pid, addr, pages, hex })
}

/// `read` text: where each page came from, then the bytes as `xxd` shows them.
pub fn read_text(memory: &UserMemory) -> String {
    let mut out = String::new();
    for page in &memory.pages {
        let _ = match page {
            PageSource::Ram { virt, pfn } => writeln!(out, "# {virt:#x}: RAM, pfn {pfn:#x}"),
            PageSource::Swap { virt, slot } => writeln!(out, "# {virt:#x}: swap slot {slot}"),
        };
    }
    let bytes: Vec<u8> = (0..memory.hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(memory.hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let groups: Vec<String> =
            chunk.chunks(2).map(|pair| pair.iter().map(|b| format!("{b:02x}")).collect()).collect();
        let text: String = chunk
            .iter()
            .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' })
            .collect();
        let at = memory.addr + 16 * row as u64;
        let _ = writeln!(out, "{at:016x}: {:<39}  {text}", groups.join(" "));
    }
    out
}
