//! A process's address space (Linux's `mm_struct`): its page-table tree, its VMAs, the heap
//! break and the counters Linux keeps.
//!
//! ```text
//! 0x40_0000                 program image: one VMA per PT_LOAD, pages filled at load
//! after the image           heap: [start_brk, brk), grown by brk(), demand-zero
//!         …                 mmap areas, top down below the stack's guard gap
//! STACK_TOP                 main stack, grows down on faults (VM_GROWSDOWN)
//! VDSO_BASE                 the system-call trampoline (read + execute, not a VMA)
//! TASK_SIZE ─────────────── the kernel half above: the kernel tree's, shared by all
//! ```
//!
//! Life cycle: [`AddressSpace::new`] copies the kernel half into a fresh PML4; `load` maps
//! the image and the stack; faults map pages on first touch; `destroy` frees every page and
//! table. Pages are anonymous and private; each one mapped counts in `rss`.
#![expect(clippy::cast_possible_truncation, reason = "the kernel is x86_64: usize is 64 bits")]

use crate::mm::global::with;
use crate::mm::setup::Mm;
use guest::elf::{Program, PF_W, PF_X};
use guest::paging::{Frame, MapError, PageSize, PteFlags, VirtPage};
use guest::vma::{access_allowed, anon_flags, VmaError, Vmas, VM_MAY_ALL};
use guest::vmalloc::VmallocMemory;
use shared::addr::{PhysAddr, VirtAddr};
use shared::page::ZoneType;
use shared::process::{Vma, VmaKind, STACK_GUARD_GAP_PAGES, VM_EXEC, VM_GROWSDOWN, VM_READ};
use shared::process::{USER_IMAGE_BASE, VM_WRITE};
use shared::syscall::{STACK_TOP, VDSO_BASE};

const PAGE: u64 = 4096;
/// The main stack's VMA at start, and how far down it may grow (Linux's default
/// `RLIMIT_STACK` is 8 MiB).
const STACK_INITIAL: u64 = 32 * PAGE;
const STACK_LIMIT: u64 = 8 << 20;
/// Lowest address `mmap` picks without `MAP_FIXED`.
const MMAP_MIN: u64 = 0x1000_0000;

/// Why an address-space change failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceError {
    /// No memory for a page or a table.
    NoMemory,
    /// The VMA set refused.
    Vma(VmaError),
    /// The page tables refused (a kernel bug: VMAs and tables disagree).
    Map(MapError),
}

impl From<VmaError> for SpaceError {
    fn from(err: VmaError) -> Self {
        Self::Vma(err)
    }
}

impl From<MapError> for SpaceError {
    fn from(err: MapError) -> Self {
        match err {
            MapError::NoTableMemory => Self::NoMemory,
            other => Self::Map(other),
        }
    }
}

/// Why a user page fault could not be served: Linux's `si_code` for SIGSEGV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// No VMA covers the address (`SEGV_MAPERR`).
    NotMapped,
    /// A VMA covers it but forbids the access (`SEGV_ACCERR`).
    Access,
    /// No memory for the page (Linux would invoke the OOM killer).
    NoMemory,
}

/// A process's address space.
pub struct AddressSpace {
    /// The PML4 (CR3 while the process runs).
    pub root: PhysAddr,
    /// The VMAs.
    pub vmas: Vmas,
    /// Start of the heap.
    pub start_brk: u64,
    /// The heap's end (the break).
    pub brk: u64,
    /// Pages mapped (all anonymous or private image pages).
    pub rss: u64,
    /// The most pages ever mapped at once (`hiwater_rss`).
    pub hiwater_rss: u64,
    /// Pages the kernel zeroed for this process.
    pub zeroed: u64,
    /// Page faults served.
    pub faults: u64,
}

/// Page-table flags for a VMA's pages.
fn pte_flags(vm_flags: u64) -> PteFlags {
    let mut flags = PteFlags::USER;
    if vm_flags & VM_WRITE != 0 {
        flags |= PteFlags::WRITABLE;
    }
    if vm_flags & VM_EXEC == 0 && crate::cpu::has_nx() {
        flags |= PteFlags::NO_EXECUTE;
    }
    flags
}

impl AddressSpace {
    /// An empty address space whose kernel half is the kernel's.
    pub fn new() -> Result<Self, SpaceError> {
        let root = with(Mm::new_user_tree).ok_or(SpaceError::NoMemory)?;
        Ok(Self {
            root,
            vmas: Vmas::new(),
            start_brk: 0,
            brk: 0,
            rss: 0,
            hiwater_rss: 0,
            zeroed: 0,
            faults: 0,
        })
    }

    /// Maps `program`'s segments (pages filled now, from the image), the heap's start, the
    /// stack VMA and the trampoline page `vdso`.
    pub fn load(&mut self, program: &Program<'_>, vdso: PhysAddr) -> Result<(), SpaceError> {
        for segment in program.segments() {
            let (start, end) = segment.pages();
            let mut flags = VM_READ | VM_MAY_ALL;
            if segment.flags & PF_W != 0 {
                flags |= VM_WRITE;
            }
            if segment.flags & PF_X != 0 {
                flags |= VM_EXEC;
            }
            self.vmas.map(Vma::new(start, end, flags, VmaKind::Image))?;
            let bytes = program.file_bytes(segment);
            for page in (start..end).step_by(PAGE as usize) {
                let frame = self.new_page(page, flags)?;
                // The part of the file that falls in this page.
                let lo = page.max(segment.vaddr);
                let hi = (page + PAGE).min(segment.vaddr + segment.filesz);
                if lo < hi {
                    let from = usize::try_from(lo - segment.vaddr).unwrap_or(usize::MAX);
                    let len = usize::try_from(hi - lo).unwrap_or(0);
                    let src = &bytes[from..from + len];
                    let dst = crate::mm::direct_map(frame.as_u64() + (lo - page)) as *mut u8;
                    // SAFETY: `frame` is a page this address space just got; the span lies
                    // inside it (lo and hi are in [page, page + 4096)).
                    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst, len) };
                }
            }
            self.start_brk = self.start_brk.max(end);
        }
        self.start_brk = self.start_brk.max(USER_IMAGE_BASE);
        self.brk = self.start_brk;
        let stack = VM_READ | VM_WRITE | VM_MAY_ALL | VM_GROWSDOWN;
        self.vmas.map(Vma::new(STACK_TOP - STACK_INITIAL, STACK_TOP, stack, VmaKind::Stack))?;
        self.map_vdso(vdso)
    }

    /// Maps the trampoline page `vdso` at [`VDSO_BASE`]: user, read and execute.
    pub fn map_vdso(&mut self, vdso: PhysAddr) -> Result<(), SpaceError> {
        let page = VirtPage::new(VirtAddr::new(VDSO_BASE), PageSize::Size4K)?;
        let frame = Frame::new(vdso, PageSize::Size4K)?;
        let root = self.root;
        // SAFETY: `root` is this address space's own tree.
        with(|mm| unsafe { mm.user_tree(root) }.map(page, frame, PteFlags::USER))?.ignore();
        Ok(())
    }

    /// A zeroed page mapped at `virt` with `vm_flags`' rights; returns its frame.
    fn new_page(&mut self, virt: u64, vm_flags: u64) -> Result<PhysAddr, SpaceError> {
        let page = VirtPage::new(VirtAddr::new(virt), PageSize::Size4K)?;
        let root = self.root;
        let frame = with(|mm| {
            let pfn = mm.buddy.alloc_page(ZoneType::Normal).ok_or(SpaceError::NoMemory)?;
            let frame = PhysAddr::new(pfn * PAGE);
            // SAFETY: a page the buddy allocator just handed out, in the direct map.
            unsafe { crate::mm::tables::zero_frame(frame) };
            // SAFETY: `root` is this address space's own tree.
            let mapped = unsafe { mm.user_tree(root) }.map(
                page,
                Frame::new(frame, PageSize::Size4K)?,
                pte_flags(vm_flags),
            );
            match mapped {
                Ok(flush) => flush.ignore(),
                Err(err) => {
                    let _ = mm.buddy.free_page(pfn);
                    return Err(SpaceError::from(err));
                }
            }
            Ok(frame)
        })?;
        self.zeroed += 1;
        self.rss += 1;
        self.hiwater_rss = self.hiwater_rss.max(self.rss);
        Ok(frame)
    }

    /// Serves a fault at `addr` (Linux's `handle_mm_fault` for anonymous memory): finds
    /// the VMA, growing the stack into its gap if needed, checks the access and maps a
    /// zeroed page. A fault on a present page is a protection fault: refused.
    pub fn fault(
        &mut self,
        addr: u64,
        write: bool,
        exec: bool,
        present: bool,
    ) -> Result<(), FaultError> {
        let vma = match self.vmas.lookup(addr) {
            Some(vma) => *vma,
            None => self.grow_stack(addr)?,
        };
        if present || !access_allowed(vma.flags, write, exec) {
            return Err(FaultError::Access);
        }
        self.faults += 1;
        self.new_page(addr & !(PAGE - 1), vma.flags).map(|_| ()).map_err(|err| match err {
            SpaceError::NoMemory => FaultError::NoMemory,
            // The VMA said unmapped and the tables said mapped: refuse, never corrupt.
            _ => FaultError::Access,
        })
    }

    /// Extends the stack VMA above `addr` down to it, as Linux's `expand_stack`: within the
    /// stack limit, and never into the guard gap above another VMA.
    fn grow_stack(&mut self, addr: u64) -> Result<Vma, FaultError> {
        let stack = *self.vmas.find(addr).ok_or(FaultError::NotMapped)?;
        let new_start = addr & !(PAGE - 1);
        let guard = STACK_GUARD_GAP_PAGES * PAGE;
        let below = self.vmas.tree().find_prev(new_start).map(|i| *self.vmas.tree().get(i));
        let clear_below = below.is_none_or(|v| v.end + guard <= new_start);
        if stack.flags & VM_GROWSDOWN == 0 || stack.end - new_start > STACK_LIMIT || !clear_below {
            return Err(FaultError::NotMapped);
        }
        let grown = Vma { start: new_start, ..stack };
        self.vmas
            .unmap(stack.start, stack.end, |_| {})
            .and_then(|()| self.vmas.map(grown))
            .map_err(|_| FaultError::NoMemory)?;
        Ok(grown)
    }

    /// `brk(addr)`: moves the break within `[start_brk, …)`, unmapping pages when it
    /// shrinks; returns the break (unchanged when refused, as Linux does).
    pub fn set_brk(&mut self, addr: u64) -> u64 {
        let old_end = self.brk.next_multiple_of(PAGE);
        let new_end = addr.next_multiple_of(PAGE);
        if addr < self.start_brk || new_end > STACK_TOP - STACK_LIMIT {
            return self.brk;
        }
        let done = if new_end > old_end {
            self.vmas.map(Vma::new(old_end, new_end, anon_flags(3), VmaKind::Heap)).is_ok()
        } else if new_end < old_end {
            self.unmap(new_end, old_end).is_ok()
        } else {
            true
        };
        if done {
            self.brk = addr;
        }
        self.brk
    }

    /// `mmap` of anonymous memory: `[addr, addr + len)` if `fixed` (replacing what is
    /// there unless `noreplace`), else the highest free gap below the stack's reach.
    pub fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        fixed: bool,
        noreplace: bool,
    ) -> Result<u64, SpaceError> {
        let start = if fixed {
            if !noreplace {
                self.unmap(addr, addr + len)?;
            }
            addr
        } else {
            let guard = STACK_GUARD_GAP_PAGES * PAGE;
            self.vmas
                .unmapped_area_topdown(len, MMAP_MIN, STACK_TOP - STACK_LIMIT, guard)
                .ok_or(SpaceError::Vma(VmaError::NoMemory))?
        };
        self.vmas.map(Vma::new(start, start + len, anon_flags(prot), VmaKind::Anonymous))?;
        Ok(start)
    }

    /// Removes `[start, end)` from the VMAs and frees its pages and emptied tables.
    pub fn unmap(&mut self, start: u64, end: u64) -> Result<(), SpaceError> {
        self.vmas.unmap(start, end, |_| {})?;
        self.free_range(start, end)
    }

    /// Frees the pages mapped in `[start, end)` (the trampoline's excepted: it is shared)
    /// and the tables that empty.
    fn free_range(&mut self, start: u64, end: u64) -> Result<(), SpaceError> {
        let root = self.root;
        let vdso = super::vdso_frame();
        let mut freed = 0;
        let flush = with(|mm| {
            // SAFETY: `root` is this address space's own tree.
            let mut tree = unsafe { mm.user_tree(root) };
            tree.unmap_present(VirtAddr::new(start), end - start, &mut |memory, frame| {
                if frame.start() != vdso {
                    memory.free_frame(frame.start());
                    freed += 1;
                }
            })
        })?;
        flush.flush(&crate::mm::tables::LocalTlb);
        self.rss -= freed;
        Ok(())
    }

    /// Frees every page and table. The caller has loaded another tree into CR3.
    pub fn destroy(mut self) {
        if let Err(err) = self.free_range(0, 1 << 47) {
            log::error!("exit: freeing the address space: {err:?}");
        }
        let root = self.root;
        // SAFETY: the lower half is empty now and CR3 holds another tree.
        with(|mm| unsafe { mm.free_user_tree(root) });
    }
}
