//! The panic handler: print message and location, report them, exit with status Panic.

use crate::{hypercall, ReportBuf};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use log::error;
use shared::hypercall::{PanicHeader, ReportKind};
use shared::status::GuestStatus;

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::Relaxed) {
        // A panic while reporting a panic: just stop.
        hypercall::exit(GuestStatus::Panic);
    }
    let (file, line, column) =
        info.location().map_or(("<unknown>", 0, 0), |l| (l.file(), l.line(), l.column()));
    error!("Kernel panic - not syncing: {} at {file}:{line}:{column}", info.message());

    let mut message = ReportBuf::new();
    let _ = write!(message, "{}", info.message());
    let file = &file.as_bytes()[..file.len().min(256)];
    let room = ReportBuf::CAPACITY - core::mem::size_of::<PanicHeader>() - file.len();
    let message = &message.as_slice()[..message.as_slice().len().min(room)];
    let mut encoded = ReportBuf::new();
    let len = |bytes: &[u8]| u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    encoded.push(&PanicHeader { line, column, file_len: len(file), message_len: len(message) });
    encoded.extend(file);
    encoded.extend(message);
    hypercall::report(ReportKind::Panic, encoded.as_slice());
    hypercall::exit(GuestStatus::Panic)
}
