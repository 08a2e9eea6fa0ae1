//! Hypercall dispatch: the request the guest names is read from guest RAM (untrusted, so
//! bounds-checked) and becomes a checkpoint or a decoded report.

use crate::report::{read_report, Report};
use shared::hypercall::{Request, CHECKPOINT, REPORT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromZeros, IntoBytes};

/// What a hypercall asked for.
#[derive(Debug, PartialEq)]
pub enum Hypercall {
    /// The guest reached the checkpoint with this tag.
    Checkpoint(u64),
    /// The guest sent a report (or something that did not decode, as
    /// [`Report::Malformed`]).
    Report(Report),
}

/// Reads and decodes the hypercall whose request is at guest-physical `gpa`.
pub fn dispatch(mem: &GuestMemoryMmap, gpa: u64) -> Hypercall {
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
        nr => Hypercall::Report(Report::Malformed {
            kind: request.kind,
            problem: format!("unknown hypercall {nr}"),
        }),
    }
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
        assert_eq!(dispatch(&mem, 0x100), Hypercall::Checkpoint(2));
        mem.write_slice(b"no RAM", GuestAddress(0x800)).expect("in RAM");
        write(
            0x200,
            Request { nr: REPORT, kind: ReportKind::BootError as u32, arg: 0x800, len: 6 },
        );
        assert_eq!(
            dispatch(&mem, 0x200),
            Hypercall::Report(Report::BootError { message: "no RAM".into() })
        );
        write(0x300, Request { nr: 77, kind: 0, arg: 0, len: 0 });
        assert!(matches!(dispatch(&mem, 0x300), Hypercall::Report(Report::Malformed { .. })));
        assert!(matches!(dispatch(&mem, 0xfff0), Hypercall::Report(Report::Malformed { .. })));
    }
}
