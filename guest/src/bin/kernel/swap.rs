//! The swap device the VMM offers (`vmm run --swap-file PATH --swap SIZE`): page-sized
//! slots in a host file, which the guest learns of from `swap=SLOTS` on its command line
//! and reaches through two hypercalls, `SWAP_WRITE` and `SWAP_READ`. The host copies each
//! page, so the emulated guest never copies 4 KiB itself.
//!
//! ```text
//! boot        Options::swap: the device's slots (0: none)
//! write/read  one page of RAM to or from one slot; false if the VMM refused
//! swap-device the workload: pages out to slots across the device, zeroed, read back
//!             into other pages and compared; a slot past the end must be refused
//! ```
//!
//! Reclaim (`guest::reclaim`, through `Mm::reclaim`) writes pages out through the same two
//! calls; the swap map (`guest::swap_map`) says which slots are in use.

use crate::hypercall;
use crate::mm;
use guest::cmdline::Options;
use shared::page::ZoneType;

/// Pages the `swap-device` workload sends out and brings back.
const PAGES: u64 = 8;

/// Word `word` of the page written to slot `slot`.
fn pattern(slot: u64, word: u64) -> u64 {
    slot << 32 ^ word ^ 0x5157_4150_0000_0000
}

/// The words of the page at `frame`.
///
/// # Safety
/// `frame` is a page of RAM the caller allocated, and no other reference to it is live
/// while the one returned is.
unsafe fn words<'a>(frame: u64) -> &'a mut [u64; 512] {
    // SAFETY: the caller's contract; the direct map reaches every page of RAM.
    unsafe { &mut *(mm::direct_map(frame) as *mut [u64; 512]) }
}

/// Fills the page at `frame` with slot `slot`'s pattern.
///
/// # Safety
/// As for [`words`].
unsafe fn fill(frame: u64, slot: u64) {
    // SAFETY: the caller's contract.
    for (word, value) in (0..).zip(unsafe { words(frame) }.iter_mut()) {
        *value = pattern(slot, word);
    }
}

/// Whether the page at `frame` holds slot `slot`'s pattern.
///
/// # Safety
/// As for [`words`].
unsafe fn holds(frame: u64, slot: u64) -> bool {
    // SAFETY: the caller's contract.
    let words = unsafe { words(frame) };
    (0..).zip(words.iter()).all(|(word, &value)| value == pattern(slot, word))
}

/// The `swap-device` workload; returns whether its checks passed.
pub fn run(options: &Options) -> bool {
    let slots = options.swap;
    if slots == 0 {
        log::error!("swap-device: no swap device; run with --swap-file PATH --swap SIZE");
        return false;
    }
    log::info!("swap: device of {slots} slots ({} KiB)", slots * 4);
    let frames: Option<alloc::vec::Vec<u64>> = (0..PAGES)
        .map(|_| mm::global::with(|mm| mm.buddy.alloc_page(ZoneType::Normal)).map(|pfn| pfn * 4096))
        .collect();
    let Some(frames) = frames else {
        log::error!("swap-device: no memory for its pages");
        return false;
    };
    // Slots across the device: both ends, the middle, and some between.
    let slot_of = |i: u64| match i {
        0 => 0,
        1 => slots - 1,
        _ => (slots / PAGES * i + i) % slots,
    };
    for (i, &frame) in (0..).zip(&frames) {
        // SAFETY: a page allocated above, referenced nowhere else.
        unsafe { fill(frame, slot_of(i)) };
    }
    let written = (0..).zip(&frames).all(|(i, &frame)| hypercall::swap_write(frame, slot_of(i)));
    let zeroed = frames.iter().all(|&frame| hypercall::zero_pages(frame, 1));
    // Back into other pages: page i gets the slot page PAGES-1-i went to.
    let read =
        (0..).zip(&frames).all(|(i, &frame)| hypercall::swap_read(frame, slot_of(PAGES - 1 - i)));
    // SAFETY: as above.
    let intact =
        (0..).zip(&frames).all(|(i, &frame)| unsafe { holds(frame, slot_of(PAGES - 1 - i)) });
    let round_trip = written && zeroed && read && intact;
    let mut detail = crate::console::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut detail,
        format_args!(
            "{PAGES} pages to slots 0..{slots}: written {written}, read {read}, intact {intact}"
        ),
    );
    hypercall::report_test("swap pages round trip", round_trip, detail.as_str());
    // The device's end is the VMM's to guard: slot `slots` is refused, the page unchanged.
    let frame = frames[0];
    let refused = !hypercall::swap_read(frame, slots) && !hypercall::swap_write(frame, slots);
    // SAFETY: as above.
    let unchanged = unsafe { holds(frame, slot_of(PAGES - 1)) };
    hypercall::report_test("swap slot past the end refused", refused && unchanged, "");
    mm::global::with(|mm| {
        for &frame in &frames {
            if let Err(err) = mm.buddy.free_page(frame / 4096) {
                log::error!("swap-device: freeing {frame:#x}: {err:?}");
            }
        }
    });
    round_trip && refused && unchanged
}
