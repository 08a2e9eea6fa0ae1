//! Talking to the VMM: hypercalls and the debug-exit port (`shared::hypercall`).
//!
//! Every payload is a `shared` type sent with `zerocopy`'s `as_bytes()`, or such a header
//! followed by its variable part, so the host decodes it by type. A request or payload the
//! VMM cannot be given (not in linear kernel memory, or a request above 4 GiB) is never
//! dropped silently: it is an error on the console, which the host captures.

use crate::mm::virt_to_phys_of;
use crate::ReportBuf;
use guest::cmdline::CmdlineError;
use log::error;
use shared::hypercall::{
    CmdlineErrorHeader, MemblockHeader, ReportKind, Request, SlabInfoReport, SwapIo, TestHeader,
    ZoneReport, CHECKPOINT, COPY_PAGE, DISCARD_PAGES, PAGE_WORK_DONE, REPORT, SWAP_READ,
    SWAP_WRITE, SWAP_WRITE_BATCH, ZERO_PAGES,
};
use shared::ports::{DEBUG_EXIT, HYPERCALL};
use shared::status::GuestStatus;
use zerocopy::{Immutable, IntoBytes};

/// Why a hypercall could not be made.
#[derive(Clone, Copy, Debug)]
enum Unsendable {
    /// The request is not in linear kernel memory below 4 GiB.
    Request(u64),
    /// The payload is not in linear kernel memory (the kernel image or the direct map).
    Payload(u64),
}

impl core::fmt::Display for Unsendable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Request(virt) => {
                write!(f, "request at {virt:#x} is not linear kernel memory below 4 GiB")
            }
            Self::Payload(virt) => write!(
                f,
                "payload at {virt:#x} is not linear kernel memory (kernel image or direct map)"
            ),
        }
    }
}

fn call(request: *const Request) -> Result<(), Unsendable> {
    let virt = request as u64;
    // The protocol passes 32 bits; requests live in the kernel image or on its stack.
    let gpa = virt_to_phys_of(request)
        .and_then(|phys| u32::try_from(phys.as_u64()).ok())
        .ok_or(Unsendable::Request(virt))?;
    // SAFETY: an `out` to the hypercall port. The VMM reads the request (and the payload it
    // names) while the vCPU is stopped; the asm has no `nomem`, so the compiler has written
    // the request to memory before it.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") HYPERCALL, in("eax") gpa, options(nostack, preserves_flags));
    }
    Ok(())
}

/// Tells the VMM the guest reached checkpoint `tag`; the VMM may inspect the guest before
/// it resumes.
pub fn checkpoint(tag: u64) {
    if let Err(err) = call(&Request { nr: CHECKPOINT, kind: 0, arg: tag, len: 0 }) {
        error!("checkpoint {tag} cannot be signalled: {err}");
    }
}

/// Has the VMM zero `pages` pages (at most a huge page's) of RAM from physical `frame`;
/// returns whether it did. Where it did not, the caller zeroes them itself.
pub fn zero_pages(frame: u64, pages: u64) -> bool {
    page_work(Request { nr: ZERO_PAGES, kind: 0, arg: frame, len: pages })
}

/// Has the VMM drop `pages` pages (at most 1024) of RAM from physical `frame`, which then
/// read as zero and take no host memory; returns whether it did.
pub fn discard_pages(frame: u64, pages: u64) -> bool {
    page_work(Request { nr: DISCARD_PAGES, kind: 0, arg: frame, len: pages })
}

/// Has the VMM write the page of RAM at physical `frame` to swap slot `slot`; returns
/// whether it did (there is no device, or the slot is past its end, if not).
pub fn swap_write(frame: u64, slot: u64) -> bool {
    page_work(Request { nr: SWAP_WRITE, kind: 0, arg: frame, len: slot })
}

/// Has the VMM write each page of `batch` (at most `SWAP_BATCH_MAX`) to its slot, in one
/// exit; returns whether it did (all of them: it checks every one before it writes any).
pub fn swap_write_batch(batch: &[SwapIo]) -> bool {
    let Some(phys) = virt_to_phys_of(batch) else { return false };
    let len = batch.len() as u64;
    page_work(Request { nr: SWAP_WRITE_BATCH, kind: 0, arg: phys.as_u64(), len })
}

/// Has the VMM read swap slot `slot` into the page of RAM at physical `frame`; returns
/// whether it did.
pub fn swap_read(frame: u64, slot: u64) -> bool {
    page_work(Request { nr: SWAP_READ, kind: 0, arg: frame, len: slot })
}

/// Has the VMM copy the page of RAM at physical `from` to `to`; returns whether it did.
pub fn copy_page(from: u64, to: u64) -> bool {
    page_work(Request { nr: COPY_PAGE, kind: 0, arg: from, len: to })
}

/// Makes a page-work request and reads the VMM's answer, which it writes into the
/// request's `kind`.
fn page_work(mut request: Request) -> bool {
    // The VMM writes the request: it is reached through a raw pointer only, never a
    // shared reference, and the `out` in `call` may write memory as far as the compiler
    // knows (no `nomem`).
    let request = &raw mut request;
    // SAFETY: `request` points to the local above, live and aligned; the VMM's write (if
    // any) happened during the call, so a fresh read sees it.
    call(request).is_ok()
        && unsafe { core::ptr::read_volatile(&raw const (*request).kind) } == PAGE_WORK_DONE
}

/// Hands the VMM a report of `kind`.
pub fn report(kind: ReportKind, payload: &[u8]) {
    let virt = payload.as_ptr() as u64;
    let sent = virt_to_phys_of(payload).ok_or(Unsendable::Payload(virt)).and_then(|phys| {
        let len = payload.len() as u64;
        call(&Request { nr: REPORT, kind: kind as u32, arg: phys.as_u64(), len })
    });
    if let Err(err) = sent {
        error!("report {kind:?} cannot be sent: {err}");
    }
}

/// Hands the VMM a report whose payload is one `shared` structure.
pub fn report_value<T: IntoBytes + Immutable>(kind: ReportKind, value: &T) {
    report(kind, value.as_bytes());
}

/// Reports the zones' counters and free lists (populated zones only).
pub fn report_zones<M: guest::buddy::Memmap>(buddy: &guest::buddy::Buddy<M>) {
    for zone in buddy.zones.iter().filter(|zone| zone.present > 0) {
        report_value(ReportKind::Zone, &ZoneReport::of(zone));
    }
}

/// Reports memblock's memory and reserved regions.
pub fn report_memblock(memblock: &guest::memblock::Memblock) {
    let mut payload = ReportBuf::new();
    let (memory, reserved) = (memblock.memory.regions(), memblock.reserved.regions());
    let count = |regions: &[guest::memblock::Region]| u32::try_from(regions.len()).unwrap_or(0);
    payload.push(&MemblockHeader { memory: count(memory), reserved: count(reserved) });
    payload.extend(memory.as_bytes());
    payload.extend(reserved.as_bytes());
    report(ReportKind::Memblock, payload.as_slice());
}

/// Reports one self-test check.
pub fn report_test(name: &str, passed: bool, detail: &str) {
    let mut payload = ReportBuf::new();
    let len = |text: &str| u32::try_from(text.len()).unwrap_or(u32::MAX);
    payload.push(&TestHeader {
        passed: u32::from(passed),
        name_len: len(name),
        detail_len: len(detail),
        reserved: 0,
    });
    payload.extend(name.as_bytes());
    payload.extend(detail.as_bytes());
    report(ReportKind::Test, payload.as_slice());
}

/// Reports why the boot cannot go on, prints it, and ends the run with `BootFailed`.
pub fn boot_failed(reason: core::fmt::Arguments<'_>) -> ! {
    let mut message = ReportBuf::new();
    let _ = core::fmt::Write::write_fmt(&mut message, reason);
    let text = core::str::from_utf8(message.as_slice()).unwrap_or("boot failed");
    error!("{text}");
    report(ReportKind::BootError, message.as_slice());
    exit(GuestStatus::BootFailed)
}

/// Reports a rejected command-line option.
pub fn report_cmdline_error(err: &CmdlineError<'_>) {
    let mut payload = ReportBuf::new();
    payload.push(&CmdlineErrorHeader { kind: err.kind as u32 });
    payload.extend(err.option.as_bytes());
    report(ReportKind::CmdlineError, payload.as_slice());
}

/// Reports every kmalloc cache as a `/proc/slabinfo` line.
pub fn report_slabinfo(kmalloc: &guest::slab::Kmalloc) {
    for cache in &kmalloc.caches {
        report_value(
            ReportKind::SlabInfo,
            &SlabInfoReport::of(cache.raw(), cache.name().as_bytes()),
        );
    }
}

/// Ends the run with `status`.
pub fn exit(status: GuestStatus) -> ! {
    // SAFETY: an `out` to the debug-exit port; the VMM ends the run and never resumes us.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") DEBUG_EXIT, in("al") status as u8, options(nomem, nostack, preserves_flags));
    }
    loop {
        x86_64::instructions::hlt();
    }
}
