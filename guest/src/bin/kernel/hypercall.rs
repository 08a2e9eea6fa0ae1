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
    call(&Request {
        nr: CHECKPOINT,
        kind: 0,
        arg: tag,
        len: 0,
    });
}

/// Hands the VMM a report of `kind`.
pub fn report(kind: ReportKind, payload: &[u8]) {
    let len = payload.len() as u64;
    call(&Request {
        nr: REPORT,
        kind: kind as u32,
        arg: virt_to_phys(payload),
        len,
    });
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
