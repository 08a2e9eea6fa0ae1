//! Talking to the VMM: hypercalls and the debug-exit port (`shared::hypercall`).

use crate::mm::virt_to_phys;
use crate::ReportBuf;
use guest::cmdline::CmdlineError;
use shared::hypercall::{ReportKind, Request, CHECKPOINT, REPORT};
use shared::ports::{DEBUG_EXIT, HYPERCALL};
use shared::status::GuestStatus;

fn call(request: &Request) {
    let gpa = virt_to_phys(request);
    // The protocol passes 32 bits; requests live in the kernel image or on its stack,
    // both below 4 GiB.
    let Ok(gpa) = u32::try_from(gpa) else { return };
    // SAFETY: an `out` to the hypercall port. The VMM reads the request (and the payload it
    // names) while the vCPU is stopped; the asm has no `nomem`, so the compiler has written
    // the request to memory before it.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") HYPERCALL, in("eax") gpa, options(nostack, preserves_flags));
    }
}

/// Tells the VMM the guest reached checkpoint `tag`.
pub fn checkpoint(tag: u64) {
    call(&Request { nr: CHECKPOINT, kind: 0, arg: tag, len: 0 });
}

/// Hands the VMM a report of `kind`.
pub fn report(kind: ReportKind, payload: &[u8]) {
    let len = payload.len() as u64;
    call(&Request { nr: REPORT, kind: kind as u32, arg: virt_to_phys(payload), len });
}

/// Plain report structures: `repr(C)`, integers only, no padding bytes.
///
/// # Safety
/// Implementors must have no padding, so that all of their bytes are initialised.
pub unsafe trait Plain: Sized {
    /// The structure's bytes.
    fn bytes(&self) -> &[u8] {
        // SAFETY: the trait's contract: every byte of `Self` is initialised.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }
}

// SAFETY: u32 fields in pairs and u64 fields only; sizes asserted in `shared`.
unsafe impl Plain for shared::hypercall::ZoneReport {}
// SAFETY: u64 fields only.
unsafe impl Plain for shared::hypercall::BootTimes {}
// SAFETY: u64 fields only.
unsafe impl Plain for shared::hypercall::StressReport {}
// SAFETY: u64 fields only.
unsafe impl Plain for shared::hypercall::ExceptionReport {}
// SAFETY: two u32 fields, then u64 fields only.
unsafe impl Plain for shared::hypercall::OopsReport {}

/// Reports the zones' counters and free lists (populated zones only).
pub fn report_zones<M: guest::buddy::Memmap>(buddy: &guest::buddy::Buddy<M>) {
    for zone in buddy.zones.iter().filter(|zone| zone.present > 0) {
        let counters = shared::hypercall::ZoneReport::of(zone);
        report(ReportKind::Zone, counters.bytes());
    }
}

/// Reports memblock's memory and reserved regions.
pub fn report_memblock(memblock: &guest::memblock::Memblock) {
    let mut payload = ReportBuf::new();
    let (memory, reserved) = (memblock.memory.regions(), memblock.reserved.regions());
    for count in [memory.len(), reserved.len()] {
        payload.extend(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    }
    for region in memory.iter().chain(reserved) {
        payload.extend(&region.base.to_le_bytes());
        payload.extend(&region.size.to_le_bytes());
    }
    report(ReportKind::Memblock, payload.as_slice());
}

/// Reports one self-test check.
pub fn report_test(name: &str, passed: bool, detail: &str) {
    let mut payload = ReportBuf::new();
    let len = |text: &str| u32::try_from(text.len()).unwrap_or(u32::MAX);
    for field in [u32::from(passed), len(name), len(detail), 0] {
        payload.extend(&field.to_le_bytes());
    }
    payload.extend(name.as_bytes());
    payload.extend(detail.as_bytes());
    report(ReportKind::Test, payload.as_slice());
}

/// Reports why the boot cannot go on, prints it, and ends the run with `BootFailed`.
pub fn boot_failed(reason: core::fmt::Arguments<'_>) -> ! {
    let mut message = ReportBuf::new();
    let _ = core::fmt::Write::write_fmt(&mut message, reason);
    let text = core::str::from_utf8(message.as_slice()).unwrap_or("boot failed");
    log::error!("{text}");
    report(ReportKind::BootError, message.as_slice());
    exit(GuestStatus::BootFailed)
}

/// Reports a rejected command-line option.
pub fn report_cmdline_error(err: &CmdlineError<'_>) {
    let mut payload = ReportBuf::new();
    payload.extend(&(err.kind as u32).to_le_bytes());
    payload.extend(err.option.as_bytes());
    report(ReportKind::CmdlineError, payload.as_slice());
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

// SAFETY: a byte array of 24 (a multiple of 8), then u64 fields only.
unsafe impl Plain for shared::hypercall::SlabInfoReport {}

/// Reports every kmalloc cache as a `/proc/slabinfo` line.
pub fn report_slabinfo(kmalloc: &guest::slab::Kmalloc) {
    for cache in &kmalloc.caches {
        let (in_use, objects, slabs) = cache.counts();
        let (order, per_slab) = cache.geometry();
        let mut name = [0u8; 24];
        let bytes = cache.name().as_bytes();
        let len = bytes.len().min(name.len());
        name[..len].copy_from_slice(&bytes[..len]);
        let line = shared::hypercall::SlabInfoReport {
            name,
            active_objs: in_use,
            num_objs: objects,
            objsize: cache.object_size(),
            objperslab: per_slab,
            pagesperslab: 1 << order,
            active_slabs: cache.active_slabs(),
            num_slabs: slabs,
            waste_per_slab: cache.waste_per_slab(),
        };
        report(ReportKind::SlabInfo, line.bytes());
    }
}
