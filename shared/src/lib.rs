//! The contract between the kvm-mm VMM and its guest kernel.
//!
//! Everything both sides must agree on lives here, as constants and `#[repr(C)]` types
//! whose sizes are asserted at compile time. Every type that crosses between guest and
//! host derives `zerocopy`'s `FromBytes`, `IntoBytes`, `Immutable` and `KnownLayout`: the
//! compiler proves it has no padding, the guest sends it with `as_bytes()`, and the host
//! decodes it from untrusted bytes with `read_from_bytes()`, with no hand-written
//! decoder. With the `serde` feature (the VMM's), the same types serialise to JSON.
//!
//! ```text
//!  VMM                                   guest
//!  ── writes ──────────────────────────▶ boot::      zero page subset, e820 entries
//!  ── enters long mode via ───────────▶ layout::    fixed guest-physical addresses
//!  ◀─ port I/O ──────────────────────── ports::     serial, debug exit, hypercall
//!  ◀─ hypercall requests ────────────── hypercall:: CHECKPOINT, REPORT and report payloads
//!  ◀─ user programs' system calls ───── syscall::   numbers, errors, the trampoline page
//!  ◀─ debug-exit status ─────────────── status::    what the guest's exit values mean
//!  ◀─ read by the host ──────────────── page::      `struct page`, zone geometry
//!  ◀─ read by the host ──────────────── mm::        zones, free lists, memblock, slab caches
//!  ◀─ read by the host ──────────────── process::   VMAs and the tree that orders them
//!  ◀─ read by the host ──────────────── vmcoreinfo:: where all of the above is
//!                                       addr::      physical and (canonical) virtual addresses
//!                                       pte::       page-table entries, flags, page sizes
//!                                       walk::      the page-table walker both sides use
//!  ── `workload=` on the command line ▶ workload::  the workloads the guest can run
//! ```
#![cfg_attr(not(feature = "serde"), no_std)]

pub mod addr;
pub mod boot;
pub mod hypercall;
pub mod layout;
pub mod mm;
pub mod page;
pub mod ports;
pub mod process;
pub mod pte;
pub mod status;
pub mod syscall;
pub mod vmcoreinfo;
pub mod walk;
pub mod workload;
