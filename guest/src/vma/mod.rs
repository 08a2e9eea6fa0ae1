//! A process's virtual memory areas: Linux's `mmap`, `munmap` and `mprotect` on the set of
//! VMAs (mm/mmap.c, mm/mprotect.c), over the [`tree::VmaTree`] B+tree.
//!
//! Life of a range: [`Vmas::map`] inserts it and merges it with compatible neighbours
//! (`vma_merge`); [`Vmas::protect`] splits the VMAs it straddles (`split_vma`), changes
//! their flags and merges again; [`Vmas::unmap`] splits and removes, handing each removed
//! piece to the caller, which frees its pages. After every operation the set is minimal:
//! no two adjacent VMAs could be one.
//!
//! Page tables are not touched here: this module decides what is mapped, the fault handler
//! and the caller of `unmap` make the page tables agree.

pub mod tree;

use shared::process::{Vma, VmaKind, MAX_MAP_COUNT, VM_ACCESS, VM_EXEC, VM_MAYEXEC};
use shared::process::{VM_MAYREAD, VM_MAYWRITE, VM_NOHUGEPAGE, VM_READ, VM_WRITE};
use tree::VmaTree;

/// Why a VMA operation was refused, with the errno Linux returns for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaError {
    /// The range overlaps an existing VMA (`MAP_FIXED_NOREPLACE`: `EEXIST`).
    Exists,
    /// One more VMA would exceed the map count limit, or no gap is large enough (`ENOMEM`).
    NoMemory,
    /// Part of the range is not mapped (`mprotect`: `ENOMEM`).
    NotMapped,
    /// The new protection asks for more than the VMA's `VM_MAY*` allow (`EACCES`).
    Access,
    /// The range is empty, unaligned or outside user space (`EINVAL`).
    Invalid,
}

impl VmaError {
    /// The (positive) Linux errno.
    pub fn errno(self) -> i64 {
        match self {
            Self::Exists => 17,
            Self::NoMemory | Self::NotMapped => 12,
            Self::Access => 13,
            Self::Invalid => 22,
        }
    }
}

/// `VM_MAY*` bits for a mapping: a private mapping may later gain any access.
pub const VM_MAY_ALL: u64 = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC;

/// Turns `PROT_*` bits into `VM_READ`/`VM_WRITE`/`VM_EXEC` (they are the same values).
pub fn prot_to_vm(prot: u64) -> u64 {
    prot & VM_ACCESS
}

/// Whether `a` (below) and `b` (above) can be one VMA: adjacent, same flags and kind.
/// Image segments keep their own VMAs, as file mappings of distinct offsets would.
fn mergeable(a: &Vma, b: &Vma) -> bool {
    a.end == b.start
        && a.flags == b.flags
        && a.kind == b.kind
        && a.kind != VmaKind::Image as u32
        && a.flags & VM_NOHUGEPAGE == 0
}

/// The VMAs of one address space.
#[derive(Clone, Debug)]
pub struct Vmas {
    tree: VmaTree,
    max_count: usize,
    /// Bytes the VMAs span.
    total: u64,
}

impl Default for Vmas {
    fn default() -> Self {
        Self::new()
    }
}

impl Vmas {
    /// No VMA, Linux's default map count limit.
    pub fn new() -> Self {
        Self::with_max_count(MAX_MAP_COUNT as usize)
    }

    /// No VMA, at most `max_count` of them.
    pub fn with_max_count(max_count: usize) -> Self {
        Self { tree: VmaTree::new(), max_count, total: 0 }
    }

    /// Pages the VMAs span (Linux's `total_vm`).
    pub fn total_pages(&self) -> u64 {
        self.total / 4096
    }

    /// The tree (what the host reads).
    pub fn tree(&self) -> &VmaTree {
        &self.tree
    }

    /// VMAs (Linux's `map_count`).
    pub fn count(&self) -> usize {
        self.tree.len()
    }

    /// Linux's `find_vma`: the first VMA that ends above `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.tree.find(addr).map(|i| self.tree.get(i))
    }

    /// The VMA that contains `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&Vma> {
        self.find(addr).filter(|vma| vma.start <= addr)
    }

    /// The VMAs in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.tree.iter().map(|(_, vma)| vma)
    }

    /// Adds `vma`, whose range must be free ([`VmaError::Exists`] otherwise), and merges
    /// it with its neighbours.
    pub fn map(&mut self, vma: Vma) -> Result<(), VmaError> {
        check_range(vma.start, vma.end)?;
        if self.find(vma.start).is_some_and(|next| next.start < vma.end) {
            return Err(VmaError::Exists);
        }
        if self.count() >= self.max_count {
            return Err(VmaError::NoMemory);
        }
        self.tree.insert(vma);
        self.total += vma.len();
        self.merge_at(vma.start);
        self.merge_at(vma.end);
        Ok(())
    }

    /// Removes `[start, end)` from every VMA it overlaps, splitting the ones it straddles;
    /// `removed` gets each removed piece (with its VMA's flags and kind).
    pub fn unmap(
        &mut self,
        start: u64,
        end: u64,
        mut removed: impl FnMut(&Vma),
    ) -> Result<(), VmaError> {
        check_range(start, end)?;
        // Splitting one VMA in two is the only way to gain one (Linux's __split_vma check).
        if let Some(vma) = self.find(start) {
            if vma.start < start && vma.end > end && self.count() >= self.max_count {
                return Err(VmaError::NoMemory);
            }
        }
        while let Some(i) = self.tree.find(start) {
            let vma = *self.tree.get(i);
            if vma.start >= end {
                break;
            }
            self.tree.remove(i);
            if vma.start < start {
                self.tree.insert(Vma { end: start, ..vma });
            }
            if vma.end > end {
                self.tree.insert(Vma { start: end, ..vma });
            }
            let piece = Vma { start: vma.start.max(start), end: vma.end.min(end), ..vma };
            self.total -= piece.len();
            removed(&piece);
        }
        Ok(())
    }

    /// Sets the access bits of every VMA in `[start, end)` to `access` (`VM_READ`,
    /// `VM_WRITE`, `VM_EXEC`), splitting at the bounds and merging afterwards. The whole
    /// range must be mapped, and each VMA must allow the access (`VM_MAY*`).
    pub fn protect(&mut self, start: u64, end: u64, access: u64) -> Result<(), VmaError> {
        check_range(start, end)?;
        let access = access & VM_ACCESS;
        // First pass: refuse before changing anything.
        let mut at = start;
        let mut splits = 0;
        while at < end {
            let vma = self.lookup(at).ok_or(VmaError::NotMapped)?;
            let may = vma.flags >> 4 & VM_ACCESS;
            if access & !may != 0 {
                return Err(VmaError::Access);
            }
            splits += usize::from(vma.start < start) + usize::from(vma.end > end);
            at = vma.end;
        }
        if self.count() + splits > self.max_count {
            return Err(VmaError::NoMemory);
        }
        let mut at = start;
        while at < end {
            let Some(i) = self.tree.find(at) else { break };
            let vma = *self.tree.get(i);
            let flags = vma.flags & !VM_ACCESS | access;
            if flags != vma.flags {
                self.tree.remove(i);
                let (lo, hi) = (vma.start.max(start), vma.end.min(end));
                if vma.start < lo {
                    self.tree.insert(Vma { end: lo, ..vma });
                }
                self.tree.insert(Vma { start: lo, end: hi, flags, ..vma });
                if hi < vma.end {
                    self.tree.insert(Vma { start: hi, ..vma });
                }
            }
            at = vma.end;
        }
        // Merge at the bounds and wherever the new flags made neighbours alike.
        let mut at = start;
        while let Some(vma) = self.find(at).copied() {
            if vma.start > end {
                break;
            }
            self.merge_at(vma.start);
            at = vma.end;
            if at >= end {
                self.merge_at(at);
                break;
            }
        }
        Ok(())
    }

    /// Joins the VMA that ends at `addr` with the one that starts there, if they can be one.
    fn merge_at(&mut self, addr: u64) {
        let (Some(lo), Some(hi)) = (self.tree.find_prev(addr), self.tree.find(addr)) else {
            return;
        };
        let (a, b) = (*self.tree.get(lo), *self.tree.get(hi));
        if a.end == addr && mergeable(&a, &b) {
            self.tree.remove(lo);
            self.tree.remove(hi);
            self.tree.insert(Vma { end: b.end, ..a });
        }
    }

    /// Linux's `unmapped_area_topdown`: the highest `len`-byte gap in `[low, high)`,
    /// keeping `guard` bytes below any VMA that grows down. Returns its start.
    pub fn unmapped_area_topdown(&self, len: u64, low: u64, high: u64, guard: u64) -> Option<u64> {
        let mut top = high;
        loop {
            // The VMA above the candidate gap bounds it, and so does the one below.
            let below = self.tree.find_prev(top).map(|i| *self.tree.get(i));
            let floor = below.map_or(low, |vma| vma.end.max(low));
            let above = self.find(top.saturating_sub(1)).filter(|vma| vma.start < top);
            if let Some(vma) = above {
                top = vma.start;
                continue;
            }
            let limit = self.find(top).filter(|v| v.flags & shared::process::VM_GROWSDOWN != 0);
            let ceiling = limit.map_or(top, |stack| top.min(stack.start.saturating_sub(guard)));
            if ceiling >= floor && ceiling - floor >= len {
                return Some(ceiling - len);
            }
            top = below?.start;
            if top <= low {
                return None;
            }
        }
    }
}

/// A range VMAs can cover: page aligned, not empty, below `TASK_SIZE`.
fn check_range(start: u64, end: u64) -> Result<(), VmaError> {
    let aligned = (start | end) % 4096 == 0;
    if !aligned || start >= end || end > shared::process::TASK_SIZE {
        return Err(VmaError::Invalid);
    }
    Ok(())
}

/// The flags of an anonymous private mapping with `PROT_*` bits `prot`.
pub fn anon_flags(prot: u64) -> u64 {
    prot_to_vm(prot) | VM_MAY_ALL
}

/// Whether `flags` let an access of `write`/`exec` kind through (reads need `VM_READ`;
/// x86 cannot map write-only, so a writable VMA is also readable, as on Linux).
pub fn access_allowed(flags: u64, write: bool, exec: bool) -> bool {
    if write {
        flags & VM_WRITE != 0
    } else if exec {
        flags & VM_EXEC != 0
    } else {
        flags & (VM_READ | VM_WRITE | VM_EXEC) != 0
    }
}

#[cfg(test)]
mod tests;
