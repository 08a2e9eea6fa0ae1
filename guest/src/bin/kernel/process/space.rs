//! A process's address space (Linux's `mm_struct`): its page-table tree, its VMAs, the heap
//! break and the counters Linux keeps.
//!
//! ```text
//! 0x40_0000                 program image: one VMA per PT_LOAD, pages filled on first touch
//! after the image           heap: [start_brk, brk), grown by brk(), demand-zero
//!         …                 mmap areas, top down below the stack's guard gap
//! STACK_TOP                 main stack, grows down on faults (VM_GROWSDOWN)
//! VDSO_BASE                 the system-call trampoline (read + execute, not a VMA)
//! TASK_SIZE ─────────────── the kernel half above: the kernel tree's, shared by all
//! ```
//!
//! Life cycle: [`AddressSpace::new`] copies the kernel half into a fresh PML4; `load` maps
//! the image and the stack; faults map pages on first touch; `fork` copies the VMAs and the
//! tables, sharing every page read-only (copy-on-write, `guest::anon`); `destroy` drops
//! every mapping and frees the tables. Each mapping of a page counts in `rss`; a page goes
//! back to the buddy allocator with its last mapping.
//!
//! Shared anonymous memory (`MAP_SHARED`) has no backing object to fault pages in from, so
//! its pages are made at `mmap` time and shared writable by `fork`.
#![expect(clippy::cast_possible_truncation, reason = "the kernel is x86_64: usize is 64 bits")]

use crate::mm::global::with;
use crate::mm::tables::KernelTables;
use guest::anon::{self, AnonError, WriteFault};
use guest::elf::{Program, PF_W, PF_X};
use guest::paging::{Frame, MapError, Mapper, PageSize, PageTableEntry, PteFlags, VirtPage};
use guest::reclaim::{self, SwapIn, SWAP_BATCH};
use guest::vma::{access_allowed, anon_flags, prot_to_vm, VmaError, Vmas, VM_MAY_ALL};
use shared::addr::{PhysAddr, VirtAddr};
use shared::process::{Vma, VmaKind, STACK_GUARD_GAP_PAGES, VM_EXEC, VM_GROWSDOWN, VM_READ};
use shared::process::{USER_IMAGE_BASE, VM_ACCESS, VM_NOHUGEPAGE, VM_SHARED, VM_WRITE};
use shared::syscall::{STACK_TOP, VDSO_BASE};

const PAGE: u64 = 4096;
/// The main stack's VMA at start, and how far down it may grow (Linux's default
/// `RLIMIT_STACK` is 8 MiB).
const STACK_INITIAL: u64 = 32 * PAGE;
const STACK_LIMIT: u64 = 8 << 20;
/// Arguments a program can be started with (all on the stack's top page).
const MAX_ARGS: usize = 64;
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
    /// The swap device did not give a page back.
    Io,
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

impl From<AnonError> for SpaceError {
    fn from(err: AnonError) -> Self {
        match err {
            AnonError::NoMemory => Self::NoMemory,
            AnonError::Map(err) => Self::Map(err),
            AnonError::Io => Self::Io,
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
    /// No memory for the page, even after reclaim (Linux would invoke the OOM killer).
    NoMemory,
    /// The page could not be read back from swap (Linux's `SIGBUS`).
    Io,
}

/// Rounds of direct reclaim an allocation tries while each frees something, before it
/// fails (or a fault calls the OOM killer): Linux's `MAX_RECLAIM_RETRIES`.
pub const MAX_RECLAIM_RETRIES: u32 = 16;

/// A process's address space.
#[derive(Debug)]
pub struct AddressSpace {
    /// The PML4 (CR3 while the process runs).
    pub root: PhysAddr,
    /// Its reverse-map group (`guest::reclaim`): its new pages record it.
    anon_vma: u32,
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
    /// Pages the kernel had zeroed for this process (the VMM, or itself).
    pub zeroed: u64,
    /// New pages it needed no zeroing for: they were known zero (`PG_ZERO`).
    pub known_zero: u64,
    /// Page faults served.
    pub faults: u64,
    /// Write faults that copied a shared page.
    pub cow_copies: u64,
    /// Write faults that kept a page whose other sharers had gone.
    pub cow_reused: u64,
    /// Faults served with a transparent huge page.
    pub thp_faults: u64,
    /// The most pages its VMAs spanned at once, as of its last fault or system call
    /// (`hiwater_vm`).
    pub hiwater_vm: u64,
    /// Page tables below the PML4 (Linux's `pgtables_bytes` in pages: `VmPTE`).
    pub pgtables: u64,
    /// Swap entries in its tree (Linux's `MM_SWAPENTS`: `VmSwap`).
    pub swapents: u64,
    /// Faults that read a page back from swap (`maj_flt`).
    pub major_faults: u64,
    /// The program, whose image fills its pages on first touch.
    program: Option<Program<'static>>,
}

/// Page-table flags for a VMA's pages (a private page shared since a fork is mapped
/// without `WRITABLE` whatever these say).
///
/// A `PROT_NONE` page stays present but loses `USER`, so that every user access faults
/// and is refused, while the page and its mapping live on (Linux marks such entries
/// `_PAGE_PROTNONE` instead). The kernel checks the VMA before it copies from or to one.
fn pte_flags(vm_flags: u64) -> PteFlags {
    let mut flags = if vm_flags & VM_ACCESS == 0 { PteFlags::empty() } else { PteFlags::USER };
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
        let (root, anon_vma) = with(|mm| {
            let root = mm.new_user_tree()?;
            // SAFETY: a tree just made in this memory; `destroy` takes it out of the
            // reverse map before freeing it.
            let Some(anon_vma) = (unsafe { mm.rmap.add(root, None) }) else {
                // More address spaces than processes: none is left for this one.
                // SAFETY: made just now, never loaded, holding nothing.
                unsafe { mm.free_user_tree(root) };
                return None;
            };
            Some((root, anon_vma))
        })
        .ok_or(SpaceError::NoMemory)?;
        Ok(Self {
            root,
            anon_vma,
            vmas: Vmas::new(),
            start_brk: 0,
            brk: 0,
            rss: 0,
            hiwater_rss: 0,
            zeroed: 0,
            known_zero: 0,
            faults: 0,
            cow_copies: 0,
            cow_reused: 0,
            thp_faults: 0,
            hiwater_vm: 0,
            pgtables: 0,
            swapents: 0,
            major_faults: 0,
            program: None,
        })
    }

    /// Runs `f` on this address space's tree, counting the tables and swap entries it
    /// adds or frees, and taking in what reclaim did to its counters meanwhile.
    fn with_tree<R>(&mut self, f: impl FnOnce(&mut Mapper<KernelTables<'_>>) -> R) -> R {
        let (root, anon_vma) = (self.root, self.anon_vma);
        let (result, added, swap_added, deltas) = with(|mm| {
            // SAFETY: `root` is this address space's own tree.
            let mut tree = unsafe { mm.user_tree(root, anon_vma) };
            let result = f(&mut tree);
            let (added, swap_added) = (tree.memory.tables_added, tree.memory.swap_added);
            (result, added, swap_added, mm.rmap.take_deltas(root))
        });
        // Reclaim's changes came first (it cannot run inside `f`, which holds the memory
        // managers): take them in before this call's own.
        self.take_in(deltas);
        debug_assert!(
            self.pgtables.checked_add_signed(added).is_some(),
            "more tables freed than counted"
        );
        self.pgtables = self.pgtables.saturating_add_signed(added);
        self.swapents = self.swapents.saturating_add_signed(swap_added);
        result
    }

    /// Takes in what reclaim did to its counters (before they are published).
    pub fn sync_counters(&mut self) {
        let root = self.root;
        let deltas = with(|mm| mm.rmap.take_deltas(root));
        self.take_in(deltas);
    }

    fn take_in(&mut self, deltas: guest::reclaim::Deltas) {
        self.rss = self.rss.saturating_add_signed(deltas.rss);
        self.swapents = self.swapents.saturating_add_signed(deltas.swapents);
        self.pgtables = self.pgtables.saturating_add_signed(deltas.pgtables);
    }

    /// Maps `program`'s segments (their pages come from the image on first touch), the
    /// heap's start, the stack VMA with `args` on it as Linux's initial stack, and the
    /// trampoline page `vdso`. Returns the initial stack pointer.
    pub fn load(
        &mut self,
        program: &Program<'static>,
        args: &[&str],
        vdso: PhysAddr,
    ) -> Result<u64, SpaceError> {
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
            self.start_brk = self.start_brk.max(end);
        }
        self.program = Some(program.clone());
        self.start_brk = self.start_brk.max(USER_IMAGE_BASE);
        self.brk = self.start_brk;
        let stack = VM_READ | VM_WRITE | VM_MAY_ALL | VM_GROWSDOWN;
        self.vmas.map(Vma::new(STACK_TOP - STACK_INITIAL, STACK_TOP, stack, VmaKind::Stack))?;
        self.note_vm();
        let rsp = self.push_args(args, stack)?;
        self.map_vdso(vdso)?;
        Ok(rsp)
    }

    /// Lays out the stack's top page as Linux's `create_elf_tables` does, for a program
    /// without environment or auxiliary vector: the strings at the top, then, from the
    /// returned 16-byte aligned stack pointer up, `argc`, the `argv` pointers, a null,
    /// an empty `envp` and an `AT_NULL` auxiliary entry.
    fn push_args(&mut self, args: &[&str], stack_flags: u64) -> Result<u64, SpaceError> {
        let page = STACK_TOP - PAGE;
        let strings: usize = args.iter().map(|a| a.len() + 1).sum();
        let words = 1 + args.len() + 1 + 1 + 2;
        if args.len() > MAX_ARGS || strings + 8 * words + 16 > PAGE as usize {
            return Err(SpaceError::Vma(VmaError::Invalid));
        }
        let frame = self.new_page(page, stack_flags)?;
        let base = crate::mm::direct_map(frame.as_u64()) as *mut u8;
        let mut text = STACK_TOP;
        let mut pointers = [0u64; MAX_ARGS];
        for (i, arg) in args.iter().enumerate() {
            text -= arg.len() as u64 + 1;
            pointers[i] = text;
            let at = (text - page) as usize;
            // SAFETY: `frame` is the stack page just allocated; the check above keeps every
            // string inside it.
            unsafe {
                core::ptr::copy_nonoverlapping(arg.as_ptr(), base.add(at), arg.len());
                *base.add(at + arg.len()) = 0;
            }
        }
        let rsp = (text - 8 * words as u64) & !15;
        let mut vector = [0u64; MAX_ARGS + 5];
        vector[0] = args.len() as u64;
        vector[1..=args.len()].copy_from_slice(&pointers[..args.len()]);
        // After argv's null come envp's null and AT_NULL (0, 0): all zero already.
        let at = (rsp - page) as usize;
        // SAFETY: as above: `words` words from `rsp` lie below the strings, in the page.
        unsafe {
            core::ptr::copy_nonoverlapping(vector.as_ptr(), base.add(at).cast::<u64>(), words);
        }
        Ok(rsp)
    }

    /// Maps the trampoline page `vdso` at [`VDSO_BASE`]: user, read and execute.
    pub fn map_vdso(&mut self, vdso: PhysAddr) -> Result<(), SpaceError> {
        let page = VirtPage::new(VirtAddr::new(VDSO_BASE), PageSize::Size4K)?;
        let frame = Frame::new(vdso, PageSize::Size4K)?;
        self.with_tree(|tree| tree.map(page, frame, PteFlags::USER))?.ignore();
        Ok(())
    }

    /// A zeroed page mapped at `virt` with `vm_flags`' rights; returns its frame.
    fn new_page(&mut self, virt: u64, vm_flags: u64) -> Result<PhysAddr, SpaceError> {
        let page = VirtPage::new(VirtAddr::new(virt), PageSize::Size4K)?;
        let new = self.with_tree(|tree| {
            let new = anon::map_new(tree, page, pte_flags(vm_flags))?;
            if vm_flags & VM_SHARED != 0 {
                // Its sharers must keep seeing this one page: reclaim leaves it alone.
                if let Some(page) = anon::AnonMemory::page(&mut tree.memory, new.frame) {
                    page.flags |= shared::page::PG_UNEVICTABLE;
                }
            }
            Ok::<_, anon::AnonError>(new)
        })?;
        let frame = new.frame;
        if new.zeroed {
            self.zeroed += 1;
        } else {
            self.known_zero += 1;
        }
        self.rss += 1;
        self.hiwater_rss = self.hiwater_rss.max(self.rss);
        Ok(frame)
    }

    /// Serves a fault at `addr` (Linux's `handle_mm_fault` for anonymous memory): finds
    /// the VMA, growing the stack into its gap if needed, and checks the access. A missing
    /// page is mapped zeroed; a write to a present read-only page of a writable private
    /// VMA breaks copy-on-write. Any other fault on a present page is refused.
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
        if !access_allowed(vma.flags, write, exec) {
            return Err(FaultError::Access);
        }
        let virt = addr & !(PAGE - 1);
        // One loan of the memory managers for the fault's bookkeeping: count it, run
        // background reclaim as kswapd would once woken (from below the low watermark up
        // to the high one) before this fault allocates, and learn whether any swap entry
        // exists (if none, a missing page cannot be one).
        let swapping = with(|mm| {
            mm.events.pgfault += 1;
            mm.balance();
            mm.swap.used() > 0
        });
        let mut how = (write, present, swapping);
        let mut served = self.serve(virt, addr, &vma, how);
        // Direct reclaim, while it frees something, as Linux's allocation slow path
        // retries it before the OOM killer. Reclaim may have swapped out the very page a
        // copy-on-write fault found, so the entry is looked at again.
        for _ in 0..MAX_RECLAIM_RETRIES {
            if served != Err(SpaceError::NoMemory)
                || with(|mm| mm.reclaim(SWAP_BATCH as u64, false)) == 0
            {
                break;
            }
            let mapped = self.with_tree(|tree| tree.translate(VirtAddr::new(virt)).is_some());
            how = (write, mapped, true);
            served = self.serve(virt, addr, &vma, how);
        }
        self.faults += 1;
        served.map_err(|err| match err {
            SpaceError::NoMemory => FaultError::NoMemory,
            SpaceError::Io => FaultError::Io,
            // The VMA and the tables disagree: refuse, never corrupt.
            _ => FaultError::Access,
        })
    }

    /// The work of a fault the VMA allows (`swapping`: some swap entry exists).
    fn serve(
        &mut self,
        virt: u64,
        addr: u64,
        vma: &Vma,
        (write, present, swapping): (bool, bool, bool),
    ) -> Result<(), SpaceError> {
        if !present {
            if swapping && self.swap_in(virt, vma.flags)? {
                return Ok(());
            }
            if vma.kind == VmaKind::Image as u32 {
                self.image_page(virt, vma.flags).map(|_| ())
            } else if self.huge_page(addr, vma) {
                Ok(())
            } else {
                self.new_page(virt, vma.flags).map(|_| ())
            }
        } else if write && vma.flags & VM_SHARED == 0 {
            self.break_cow(virt, vma.flags)
        } else {
            Err(SpaceError::Vma(VmaError::NotMapped))
        }
    }

    /// Brings the page at `virt` back from swap if its entry is a swap entry (Linux's
    /// `do_swap_page`); returns whether it was one.
    fn swap_in(&mut self, virt: u64, vm_flags: u64) -> Result<bool, SpaceError> {
        let virt = VirtAddr::new(virt);
        let Some(how) = self.with_tree(|tree| reclaim::swap_in(tree, virt, pte_flags(vm_flags)))?
        else {
            return Ok(false);
        };
        self.rss += 1;
        self.swapents = self.swapents.saturating_sub(1);
        self.hiwater_rss = self.hiwater_rss.max(self.rss);
        if how == SwapIn::Read {
            self.major_faults += 1;
            with(|mm| {
                mm.events.pgmajfault += 1;
                mm.events.pswpin += 1;
            });
        }
        Ok(true)
    }

    /// Serves a first touch at `addr` with a transparent huge page where one fits: a
    /// private anonymous VMA (the heap or `mmap`, not the stack) that covers the aligned
    /// 2 MiB around `addr`, with no page table there yet and a free 2 MiB block. Returns
    /// whether it did; if not, the caller maps a 4 KiB page.
    fn huge_page(&mut self, addr: u64, vma: &Vma) -> bool {
        const HUGE: u64 = 2 << 20;
        let start = addr & !(HUGE - 1);
        let kind = VmaKind::from_raw(vma.kind);
        let eligible = matches!(kind, Some(VmaKind::Anonymous | VmaKind::Heap))
            && vma.flags & (VM_SHARED | VM_NOHUGEPAGE | VM_GROWSDOWN) == 0
            && vma.start <= start
            && start + HUGE <= vma.end;
        let Ok(page) = VirtPage::new(VirtAddr::new(start), PageSize::Size2M) else { return false };
        if !eligible {
            return false;
        }
        let mapped = self.with_tree(|tree| anon::map_new_huge(tree, page, pte_flags(vma.flags)));
        let Ok(new) = mapped else { return false };
        let pages = anon::HUGE_PAGES;
        if new.zeroed {
            self.zeroed += pages;
        } else {
            self.known_zero += pages;
        }
        (self.rss, self.thp_faults) = (self.rss + pages, self.thp_faults + 1);
        self.hiwater_rss = self.hiwater_rss.max(self.rss);
        true
    }

    /// Splits the huge pages that `[start, end)` cuts at either end, so that the range
    /// can be changed page by page without touching what lies outside it.
    fn split_cut(&mut self, start: u64, end: u64) -> Result<(), SpaceError> {
        const HUGE: u64 = 2 << 20;
        for at in [start, end - 1] {
            let cut = if at == start { start % HUGE != 0 } else { end % HUGE != 0 };
            if !cut {
                continue;
            }
            let flush = self.with_tree(|tree| anon::split_leaf(tree, VirtAddr::new(at)))?;
            flush.flush(&crate::mm::tables::LocalTlb);
        }
        Ok(())
    }

    /// A write to the shared page at `virt`: copied, or kept by its last sharer.
    fn break_cow(&mut self, virt: u64, vm_flags: u64) -> Result<(), SpaceError> {
        let page = VirtPage::new(VirtAddr::new(virt), PageSize::Size4K)?;
        let (how, flush) =
            self.with_tree(|tree| anon::write_fault(tree, page, pte_flags(vm_flags)))?;
        flush.flush(&crate::mm::tables::LocalTlb);
        match how {
            WriteFault::Copied => self.cow_copies += 1,
            WriteFault::Reused => self.cow_reused += 1,
        }
        Ok(())
    }

    /// Keeps `hiwater_vm` after the VMAs grew.
    fn note_vm(&mut self) {
        self.hiwater_vm = self.hiwater_vm.max(self.vmas.total_pages());
    }

    /// What the host reads of it (`shared::process::MmStruct`).
    pub fn published(&self) -> shared::process::MmStruct {
        let tree = self.vmas.tree();
        let total_vm = self.vmas.total_pages();
        shared::process::MmStruct {
            pgd: self.root.as_u64(),
            vma_nodes: tree.nodes().as_ptr() as u64,
            nr_vma_nodes: tree.nodes().len() as u64,
            vmas: tree.vma_arena().as_ptr() as u64,
            nr_vmas: tree.vma_arena().len() as u64,
            vma_root: tree.root(),
            vma_height: tree.height(),
            map_count: self.vmas.count() as u64,
            total_vm,
            rss_anon: self.rss,
            hiwater_rss: self.hiwater_rss,
            hiwater_vm: self.hiwater_vm,
            pgtables: self.pgtables,
            swapents: self.swapents,
            start_brk: self.start_brk,
            brk: self.brk,
            start_stack: STACK_TOP,
        }
    }

    /// Whether a VMA in `[addr, addr + len)` forbids an access of this kind (read, or
    /// `write`). Parts no VMA covers are left to the fault handler (the stack may grow).
    pub fn forbids(&self, addr: u64, len: u64, write: bool) -> bool {
        let end = addr.saturating_add(len);
        let mut at = addr;
        while let Some(vma) = self.vmas.find(at).filter(|v| v.start < end) {
            if !access_allowed(vma.flags, write, false) {
                return true;
            }
            at = vma.end;
        }
        false
    }

    /// A page of the program image at `page`, filled from the file's bytes of every
    /// segment that meets it (zero past them), mapped with `vm_flags`' rights.
    fn image_page(&mut self, page: u64, vm_flags: u64) -> Result<PhysAddr, SpaceError> {
        let frame = self.new_page(page, vm_flags)?;
        let Some(program) = self.program.as_ref() else { return Ok(frame) };
        for segment in program.segments() {
            // The part of the segment's file bytes that falls in this page.
            let lo = page.max(segment.vaddr);
            let hi = (page + PAGE).min(segment.vaddr + segment.filesz);
            if lo >= hi {
                continue;
            }
            let bytes = program.file_bytes(segment);
            let from = usize::try_from(lo - segment.vaddr).unwrap_or(usize::MAX);
            let len = usize::try_from(hi - lo).unwrap_or(0);
            let Some(src) = bytes.get(from..from.saturating_add(len)) else { continue };
            let dst = crate::mm::direct_map(frame.as_u64() + (lo - page)) as *mut u8;
            // SAFETY: `frame` is a page this address space just got; the span lies inside it
            // (lo and hi are in [page, page + 4096)).
            unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst, len) };
        }
        Ok(frame)
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
        self.vmas.unmap(stack.start, stack.end, |_| {}).map_err(|_| FaultError::NotMapped)?;
        if self.vmas.map(grown).is_err() {
            // Linux's expand_stack failing is a SIGSEGV, not an OOM; the stack stays as it
            // was (its slot was just freed, so mapping it again takes nothing new).
            let _ = self.vmas.map(stack);
            return Err(FaultError::NotMapped);
        }
        self.note_vm();
        Ok(grown)
    }

    /// `brk(addr)`: moves the break within `[start_brk, …)`, unmapping pages when it
    /// shrinks; returns the break (unchanged when refused, as Linux does).
    pub fn set_brk(&mut self, addr: u64) -> u64 {
        let old_end = self.brk.next_multiple_of(PAGE);
        let Some(new_end) = addr.checked_next_multiple_of(PAGE) else { return self.brk };
        if addr < self.start_brk || new_end > STACK_TOP - STACK_LIMIT {
            return self.brk;
        }
        // Linux's heuristic overcommit, as for mmap: more than all of RAM and swap at once
        // is refused.
        let growth = new_end.saturating_sub(old_end) / PAGE;
        if growth > with(|mm| mm.buddy.managed_pages() + mm.swap.slots()) {
            return self.brk;
        }
        let done = if new_end > old_end {
            let heap = Vma::new(old_end, new_end, anon_flags(3), VmaKind::Heap);
            self.vmas.map(heap).inspect(|()| self.note_vm()).is_ok()
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
    /// Shared memory gets its pages now (see the module's docs).
    pub fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        (fixed, noreplace, shared): (bool, bool, bool),
    ) -> Result<u64, SpaceError> {
        let flags = anon_flags(prot) | if shared { VM_SHARED } else { 0 };
        // Linux's heuristic overcommit (`__vm_enough_memory`): writable or shared memory
        // larger than all of RAM and swap is refused outright; less is promised and
        // faulted in.
        let accountable = flags & (VM_WRITE | VM_SHARED) != 0;
        if accountable && len / PAGE > with(|mm| mm.buddy.managed_pages() + mm.swap.slots()) {
            return Err(SpaceError::NoMemory);
        }
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
        self.vmas.map(Vma::new(start, start + len, flags, VmaKind::Anonymous))?;
        self.note_vm();
        if shared {
            for page in (start..start + len).step_by(PAGE as usize) {
                if let Err(err) = self.new_page(page, flags) {
                    let _ = self.unmap(start, start + len);
                    return Err(err);
                }
            }
        }
        Ok(start)
    }

    /// `mprotect`: the VMAs' rights first (all or nothing), then their pages'. A private
    /// page becomes writable only where this process is its one mapping; elsewhere the
    /// first write copies it.
    pub fn protect(&mut self, start: u64, end: u64, prot: u64) -> Result<(), SpaceError> {
        // Split first: it changes nothing a process sees, so a failure leaves all as it was.
        self.split_cut(start, end)?;
        self.vmas.protect(start, end, prot_to_vm(prot))?;
        let mut at = start;
        while let Some(vma) = self.vmas.find(at).copied().filter(|v| v.start < end) {
            let (lo, hi) = (vma.start.max(start), vma.end.min(end));
            let flags = pte_flags(vma.flags);
            let shared = vma.flags & VM_SHARED != 0;
            let flush = self.with_tree(|tree| {
                tree.update_present(VirtAddr::new(lo), hi - lo, &mut |memory, _, size, entry| {
                    let mut flags = flags;
                    if !shared && !anon::exclusive(memory, entry.addr(), size) {
                        flags -= PteFlags::WRITABLE;
                    }
                    let kept = entry.flags() - PteFlags::PERMISSIONS;
                    PageTableEntry::new(entry.addr(), kept | (flags & PteFlags::PERMISSIONS))
                })
            })?;
            flush.flush(&crate::mm::tables::LocalTlb);
            at = vma.end;
        }
        Ok(())
    }

    /// Whether VMAs cover all of `[start, end)`.
    pub fn covered(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        while at < end {
            match self.vmas.find(at) {
                Some(vma) if vma.start <= at => at = vma.end,
                _ => return false,
            }
        }
        true
    }

    /// `madvise(MADV_DONTNEED)`: drops the pages of `[start, end)`, keeping the VMAs, so
    /// private anonymous memory reads as zero again and the program image's comes back
    /// from the image, as from the file on Linux. Shared pages stay: a process that drops
    /// one on Linux faults the same page back in.
    /// `Err(NotMapped)` if part of the range has no VMA (after dropping the rest, as Linux
    /// does).
    pub fn dontneed(&mut self, start: u64, end: u64) -> Result<(), SpaceError> {
        let mut at = start;
        let mut covered = true;
        while at < end {
            let Some(vma) = self.vmas.find(at).copied() else {
                covered = false;
                break;
            };
            covered &= vma.start <= at;
            let (lo, hi) = (vma.start.max(at), vma.end.min(end));
            // Shared pages stay: the same page would fault back in. Image pages go, and
            // come back from the image, as Linux's come back from the file.
            if lo < hi && vma.flags & VM_SHARED == 0 {
                self.free_range(lo, hi)?;
            }
            at = vma.end;
        }
        if covered {
            Ok(())
        } else {
            Err(SpaceError::Vma(VmaError::NotMapped))
        }
    }

    /// `fork`'s copy: the same VMAs, break and counters, and a tree whose every page is
    /// shared with this one. Private writable pages become read-only in both.
    pub fn fork(&mut self, vdso: PhysAddr) -> Result<AddressSpace, SpaceError> {
        let mut child = AddressSpace::new()?;
        // The child joins the parent's reverse-map group: its pages are theirs.
        child.anon_vma = self.anon_vma;
        let (child_root, group) = (child.root, self.anon_vma);
        with(|mm| mm.rmap.join(child_root, group));
        child.vmas = self.vmas.clone();
        child.program.clone_from(&self.program);
        (child.start_brk, child.brk) = (self.start_brk, self.brk);
        let (parent, root) = (self.root, child.root);
        let mut flush = guest::paging::Flush::NONE;
        let mut copied = Ok(());
        for vma in self.vmas.iter() {
            let cow = vma.flags & (VM_WRITE | VM_SHARED) == VM_WRITE;
            let len = vma.end - vma.start;
            let done = with(|mm| {
                // SAFETY: `parent` is this address space's own tree; `root` is the child's,
                // in the same memory.
                let mut tree = unsafe { mm.user_tree(parent, group) };
                let done =
                    tree.copy_present(root, VirtAddr::new(vma.start), len, cow, &mut anon::share);
                // The tables it allocated are the child's.
                (done, tree.memory.tables_added)
            });
            child.pgtables = child.pgtables.saturating_add_signed(done.1);
            match done.0 {
                Ok(more) => flush = flush.and(more),
                Err(err) => {
                    copied = Err(SpaceError::from(err));
                    break;
                }
            }
        }
        flush.flush(&crate::mm::tables::LocalTlb);
        // The child's rss and swap entries: every page and entry it now has (counted as
        // fork took them).
        self.sync_counters();
        child.rss = self.rss;
        child.swapents = self.swapents;
        child.hiwater_rss = child.rss;
        child.hiwater_vm = child.vmas.total_pages();
        if let Err(err) = copied.and_then(|()| child.map_vdso(vdso)) {
            child.destroy();
            return Err(err);
        }
        Ok(child)
    }

    /// Removes `[start, end)` from the VMAs and frees its pages and emptied tables.
    pub fn unmap(&mut self, start: u64, end: u64) -> Result<(), SpaceError> {
        // Split first, while the VMAs still cover the huge pages the range cuts: a failure
        // then leaves all as it was.
        self.split_cut(start, end)?;
        self.vmas.unmap(start, end, |_| {})?;
        self.free_range(start, end)
    }

    /// Drops the mappings in `[start, end)` (the trampoline's excepted: it is the
    /// kernel's), freeing each page whose last mapping this was, and the tables that
    /// empty.
    fn free_range(&mut self, start: u64, end: u64) -> Result<(), SpaceError> {
        self.split_cut(start, end)?;
        let vdso = super::vdso_frame();
        let mut dropped = 0;
        let flush = self.with_tree(|tree| {
            tree.unmap_present(VirtAddr::new(start), end - start, &mut |memory, frame| {
                if frame.start() != vdso {
                    anon::release(memory, frame);
                    dropped += frame.size().bytes() / PAGE;
                }
            })
        })?;
        flush.flush(&crate::mm::tables::LocalTlb);
        self.rss -= dropped;
        Ok(())
    }

    /// Drops every mapping and frees the tables. The caller has loaded another tree into
    /// CR3.
    pub fn destroy(mut self) {
        if let Err(err) = self.free_range(0, 1 << 47) {
            log::error!("exit: freeing the address space: {err:?}");
        }
        debug_assert_eq!(self.pgtables, 0, "every table below the PML4 is freed");
        let root = self.root;
        with(|mm| {
            mm.rmap.remove(root);
            // SAFETY: the lower half is empty now and CR3 holds another tree.
            unsafe { mm.free_user_tree(root) }
        });
    }
}
