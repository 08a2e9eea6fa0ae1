//! Hypercall dispatch: the request the guest names is read from guest RAM (untrusted, so
//! bounds-checked) and becomes a checkpoint, a decoded report, or page work done for the
//! guest (zeroing, copying or dropping pages it names, or copying one to or from a swap
//! slot, each page checked to be a whole page of RAM and each slot to be on the device).

use crate::inspect::to_usize;
use crate::report::{read_report, Report};
use crate::swap::SwapDevice;
use shared::hypercall::{Request, CHECKPOINT, COPY_PAGE, PAGE_WORK_DONE, REPORT};
use shared::hypercall::{SwapIo, SWAP_BATCH_MAX, SWAP_READ, SWAP_WRITE, SWAP_WRITE_BATCH};
use shared::hypercall::{DISCARD_PAGES, DISCARD_PAGES_MAX, ZERO_PAGES, ZERO_PAGES_MAX};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::{FromZeros, IntoBytes};

/// What a hypercall asked for.
#[derive(Debug, PartialEq)]
pub enum Hypercall {
    /// The guest reached the checkpoint with this tag.
    Checkpoint(u64),
    /// The guest sent a report (or something that did not decode, as
    /// [`Report::Malformed`]).
    Report(Report),
    /// Pages were zeroed, copied, dropped or swapped for the guest.
    PageWork,
}

/// A page of zeros to write from.
const ZEROS: [u8; 4096] = [0; 4096];

/// Reads and decodes the hypercall whose request is at guest-physical `gpa`; `swap` is the
/// swap device, if the guest has one.
pub fn dispatch(mem: &GuestMemoryMmap, swap: Option<&SwapDevice>, gpa: u64) -> Hypercall {
    let mut request = Request::new_zeroed();
    if let Err(err) = mem.read_slice(request.as_mut_bytes(), GuestAddress(gpa)) {
        return Hypercall::Report(Report::Malformed {
            kind: 0,
            problem: format!("hypercall request at {gpa:#x} is not in guest RAM: {err}"),
        });
    }
    match request.nr {
        CHECKPOINT => Hypercall::Checkpoint(request.arg),
        REPORT => Hypercall::Report(read_report(mem, &request)),
        ZERO_PAGES | COPY_PAGE | DISCARD_PAGES | SWAP_WRITE | SWAP_READ | SWAP_WRITE_BATCH => {
            match page_work(mem, swap, &request) {
                // Tell the guest it is done (it zeroes or copies itself if it does not see it).
                Ok(()) => match mem.write_obj(PAGE_WORK_DONE, GuestAddress(gpa + 4)) {
                    Ok(()) => Hypercall::PageWork,
                    Err(err) => Hypercall::Report(Report::Malformed {
                        kind: request.kind,
                        problem: format!("page-work hypercall at {gpa:#x}: no answer: {err}"),
                    }),
                },
                Err(problem) => {
                    Hypercall::Report(Report::Malformed { kind: request.kind, problem })
                }
            }
        }
        nr => Hypercall::Report(Report::Malformed {
            kind: request.kind,
            problem: format!("unknown hypercall {nr}"),
        }),
    }
}

/// The whole, page-aligned page of RAM at `gpa`, or why it is not one.
fn ram_page(mem: &GuestMemoryMmap, gpa: u64) -> Result<vm_memory::VolatileSlice<'_, ()>, String> {
    if gpa % 4096 != 0 {
        return Err(format!("page-work hypercall: {gpa:#x} is not page aligned"));
    }
    mem.get_slice(GuestAddress(gpa), 4096)
        .map_err(|err| format!("page-work hypercall: page {gpa:#x} is not RAM: {err}"))
}

/// `SWAP_WRITE_BATCH`: reads the batch, checks every page and slot, then writes them.
fn swap_write_batch(
    mem: &GuestMemoryMmap,
    device: &SwapDevice,
    request: &Request,
) -> Result<(), String> {
    if request.len == 0 || request.len > SWAP_BATCH_MAX {
        return Err(format!("swap batch of {} pages (1 to {SWAP_BATCH_MAX})", request.len));
    }
    let mut batch = vec![SwapIo::new_zeroed(); to_usize(request.len)];
    mem.read_slice(batch.as_mut_slice().as_mut_bytes(), GuestAddress(request.arg))
        .map_err(|err| format!("swap batch at {:#x} is not in guest RAM: {err}", request.arg))?;
    let mut pages = Vec::with_capacity(batch.len());
    for io in &batch {
        if io.slot >= device.slots() {
            return Err(format!(
                "swap slot {} is past the device's end ({} slots)",
                io.slot,
                device.slots()
            ));
        }
        pages.push((ram_page(mem, io.frame)?, io.slot));
    }
    let mut bytes = [0u8; 4096];
    for (slice, slot) in pages {
        slice.copy_to(&mut bytes[..]);
        device.write_slot(slot, &bytes)?;
    }
    Ok(())
}

/// Zeroes, copies or discards the pages `request` names, after checking that each is a
/// whole, page-aligned page of RAM (a guest's mistake is refused with the reason, never a
/// host fault).
fn page_work(
    mem: &GuestMemoryMmap,
    swap: Option<&SwapDevice>,
    request: &Request,
) -> Result<(), String> {
    if [SWAP_WRITE, SWAP_READ, SWAP_WRITE_BATCH].contains(&request.nr) {
        let device = swap.ok_or(
            "swap hypercall: this guest has no swap device (start it with --swap-file and --swap)",
        )?;
        if request.nr == SWAP_WRITE_BATCH {
            return swap_write_batch(mem, device, request);
        }
        let slice = ram_page(mem, request.arg)?;
        let mut bytes = [0u8; 4096];
        return if request.nr == SWAP_WRITE {
            slice.copy_to(&mut bytes[..]);
            device.write_slot(request.len, &bytes)
        } else {
            device.read_slot(request.len, &mut bytes)?;
            slice.copy_from(&bytes[..]);
            Ok(())
        };
    }
    if request.nr == COPY_PAGE {
        let (from, to) = (ram_page(mem, request.arg)?, ram_page(mem, request.len)?);
        if request.arg == request.len {
            return Err(format!("page-work hypercall: copy of {:#x} onto itself", request.arg));
        }
        let mut bytes = [0u8; 4096];
        from.copy_to(&mut bytes[..]);
        to.copy_from(&bytes[..]);
        return Ok(());
    }
    let max = if request.nr == DISCARD_PAGES { DISCARD_PAGES_MAX } else { ZERO_PAGES_MAX };
    if request.len == 0 || request.len > max {
        return Err(format!("page-work hypercall: {} pages (1 to {max})", request.len));
    }
    if request.nr == DISCARD_PAGES {
        let len = request.len * 4096;
        if request.arg % 4096 != 0 {
            return Err(format!("page-work hypercall: {:#x} is not page aligned", request.arg));
        }
        let range = mem.get_slice(GuestAddress(request.arg), to_usize(len)).map_err(|err| {
            format!("page-work hypercall: {len} bytes at {:#x} are not RAM: {err}", request.arg)
        })?;
        let guard = range.ptr_guard_mut();
        // SAFETY: the range is guest RAM the VMM maps shared (one region, checked just
        // now); the vCPU is stopped, and the guest asked for exactly this: its pages read
        // as zero afterwards, the file's blocks freed. No Rust reference points into it.
        let removed =
            unsafe { libc::madvise(guard.as_ptr().cast(), to_usize(len), libc::MADV_REMOVE) };
        if removed == 0 {
            return Ok(());
        }
        // A backing file that cannot punch holes: the loop below zeroes the pages, so
        // they read as zero all the same.
    }
    for index in 0..request.len {
        ram_page(mem, request.arg.saturating_add(index * 4096))?.copy_from(&ZEROS[..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::hypercall::ReportKind;

    #[test]
    fn requests_become_checkpoints_reports_or_malformed_reports() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory");
        let write = |at: u64, request: Request| {
            mem.write_slice(request.as_bytes(), GuestAddress(at)).expect("in RAM");
        };
        write(0x100, Request { nr: CHECKPOINT, kind: 0, arg: 2, len: 0 });
        assert_eq!(dispatch(&mem, None, 0x100), Hypercall::Checkpoint(2));
        mem.write_slice(b"no RAM", GuestAddress(0x800)).expect("in RAM");
        write(
            0x200,
            Request { nr: REPORT, kind: ReportKind::BootError as u32, arg: 0x800, len: 6 },
        );
        assert_eq!(
            dispatch(&mem, None, 0x200),
            Hypercall::Report(Report::BootError { message: "no RAM".into() })
        );
        write(0x300, Request { nr: 77, kind: 0, arg: 0, len: 0 });
        assert!(matches!(dispatch(&mem, None, 0x300), Hypercall::Report(Report::Malformed { .. })));
        assert!(matches!(
            dispatch(&mem, None, 0xfff0),
            Hypercall::Report(Report::Malformed { .. })
        ));
    }

    /// On the VMM's own RAM (a shared memfd), a discard punches a hole: the pages read as
    /// zero and take no host memory.
    #[test]
    fn discarding_pages_of_memfd_ram_frees_them() {
        let ram = crate::memory::GuestRam::new(16 << 20, None).expect("memfd RAM");
        let mem = &ram.memory;
        mem.write_slice(&[0x77; 0x40_0000], GuestAddress(0x40_0000)).expect("in RAM");
        mem.write_slice(
            Request { nr: DISCARD_PAGES, kind: 0, arg: 0x40_0000, len: 1024 }.as_bytes(),
            GuestAddress(0x100),
        )
        .expect("in RAM");
        let before = ram.resident_bytes();
        assert_eq!(dispatch(mem, None, 0x100), Hypercall::PageWork);
        let after = ram.resident_bytes();
        assert!(after + (4 << 20) <= before, "{before} bytes resident before, {after} after");
        let mut page = [1u8; 4096];
        mem.read_slice(&mut page, GuestAddress(0x7f_f000)).expect("in RAM");
        assert!(page.iter().all(|&b| b == 0));
    }

    #[test]
    fn page_work_zeroes_copies_and_discards_whole_pages_of_ram_and_refuses_the_rest() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory");
        let request = |nr, arg, len| {
            mem.write_slice(Request { nr, kind: 0, arg, len }.as_bytes(), GuestAddress(0x100))
                .expect("in RAM");
            dispatch(&mem, None, 0x100)
        };
        mem.write_slice(&[0xaa; 0x3000], GuestAddress(0x2000)).expect("in RAM");
        assert_eq!(request(COPY_PAGE, 0x2000, 0x8000), Hypercall::PageWork);
        let mut answered = Request::new_zeroed();
        mem.read_slice(answered.as_mut_bytes(), GuestAddress(0x100)).expect("in RAM");
        assert_eq!(answered.kind, PAGE_WORK_DONE, "the guest learns the work is done");
        let mut copied = [0u8; 4096];
        mem.read_slice(&mut copied, GuestAddress(0x8000)).expect("in RAM");
        assert!(copied.iter().all(|&b| b == 0xaa));
        assert_eq!(request(ZERO_PAGES, 0x2000, 2), Hypercall::PageWork);
        let mut page = [0u8; 0x3000];
        mem.read_slice(&mut page, GuestAddress(0x2000)).expect("in RAM");
        assert!(page[..0x2000].iter().all(|&b| b == 0), "two pages zeroed");
        assert!(page[0x2000..].iter().all(|&b| b == 0xaa), "the third kept");
        mem.write_slice(&[0xbb; 0x2000], GuestAddress(0x4000)).expect("in RAM");
        assert_eq!(request(DISCARD_PAGES, 0x4000, 2), Hypercall::PageWork);
        let mut dropped = [0u8; 0x2000];
        mem.read_slice(&mut dropped, GuestAddress(0x4000)).expect("in RAM");
        assert!(dropped.iter().all(|&b| b == 0), "discarded pages read as zero");
        for (nr, arg, len) in [
            (ZERO_PAGES, 0x2001, 1),
            (ZERO_PAGES, 0xf000, 2),
            (ZERO_PAGES, 0x2000, 0),
            (ZERO_PAGES, 0x2000, ZERO_PAGES_MAX + 1),
            (ZERO_PAGES, !0xfff, 2),
            (COPY_PAGE, 0x2000, 0x2000),
            (COPY_PAGE, 0x2000, 0x10000),
            (COPY_PAGE, 0x2800, 0x3000),
            (DISCARD_PAGES, 0x4001, 1),
            (DISCARD_PAGES, 0xf000, 2),
            (DISCARD_PAGES, 0x4000, DISCARD_PAGES_MAX + 1),
            (SWAP_WRITE, 0x2000, 0),
        ] {
            assert!(
                matches!(request(nr, arg, len), Hypercall::Report(Report::Malformed { .. })),
                "{nr} {arg:#x} {len}"
            );
        }
    }

    #[test]
    fn swap_hypercalls_copy_pages_to_slots_and_back_and_refuse_bad_slots_and_pages() {
        let path = std::env::temp_dir().join(format!("kvm-mm-swap-hc-{}", std::process::id()));
        let device = SwapDevice::create(&path, 1 << 20).expect("a swap device");
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory");
        let request = |nr, arg, len| {
            mem.write_slice(Request { nr, kind: 0, arg, len }.as_bytes(), GuestAddress(0x100))
                .expect("in RAM");
            let done = dispatch(&mem, Some(&device), 0x100);
            let mut answered = Request::new_zeroed();
            mem.read_slice(answered.as_mut_bytes(), GuestAddress(0x100)).expect("in RAM");
            (done, answered.kind == PAGE_WORK_DONE)
        };
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        mem.write_slice(&pattern, GuestAddress(0x2000)).expect("in RAM");
        assert_eq!(request(SWAP_WRITE, 0x2000, 255), (Hypercall::PageWork, true));
        assert_eq!(request(SWAP_READ, 0x5000, 255), (Hypercall::PageWork, true));
        let mut back = vec![0u8; 4096];
        mem.read_slice(&mut back, GuestAddress(0x5000)).expect("in RAM");
        assert_eq!(back, pattern, "the page came back");
        // The file holds it at slot × 4 KiB.
        let file = std::fs::read(&path).expect("the swap file");
        assert_eq!(&file[255 * 4096..], &pattern[..]);
        for (nr, arg, len) in [
            (SWAP_WRITE, 0x2000, 256),
            (SWAP_READ, 0x2000, u64::MAX),
            (SWAP_WRITE, 0x2001, 0),
            (SWAP_READ, 0xf800, 0),
            (SWAP_READ, 0x10000, 0),
        ] {
            let (done, answered) = request(nr, arg, len);
            assert!(
                matches!(done, Hypercall::Report(Report::Malformed { .. })),
                "{nr} {arg:#x} {len}"
            );
            assert!(!answered, "a refused call is not answered done");
        }
        // A batch: two pages to two slots in one call, the list at 0x800.
        mem.write_slice(&[0xcc; 4096], GuestAddress(0x3000)).expect("in RAM");
        let batch = [SwapIo { frame: 0x2000, slot: 3 }, SwapIo { frame: 0x3000, slot: 4 }];
        mem.write_slice(batch.as_bytes(), GuestAddress(0x800)).expect("in RAM");
        assert_eq!(request(SWAP_WRITE_BATCH, 0x800, 2), (Hypercall::PageWork, true));
        let file = std::fs::read(&path).expect("the swap file");
        assert_eq!(&file[3 * 4096..4 * 4096], &pattern[..]);
        assert!(file[4 * 4096..5 * 4096].iter().all(|&b| b == 0xcc));
        // A bad entry refuses the whole batch: the good page before it is not written.
        let bad = [SwapIo { frame: 0x3000, slot: 5 }, SwapIo { frame: 0x2000, slot: 256 }];
        mem.write_slice(bad.as_bytes(), GuestAddress(0x800)).expect("in RAM");
        for (arg, len) in [(0x800, 2), (0x800, 0), (0x800, SWAP_BATCH_MAX + 1), (0xfff8, 1)] {
            let (done, answered) = request(SWAP_WRITE_BATCH, arg, len);
            assert!(matches!(done, Hypercall::Report(Report::Malformed { .. })), "{arg:#x} {len}");
            assert!(!answered);
        }
        let file = std::fs::read(&path).expect("the swap file");
        assert!(file[5 * 4096..6 * 4096].iter().all(|&b| b == 0), "nothing of a refused batch");
        drop(device);
        let _ = std::fs::remove_file(&path);
    }
}
