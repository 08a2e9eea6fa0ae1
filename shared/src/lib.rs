//! The contract between the kvm-mm VMM and its guest kernel.
//!
//! Everything both sides must agree on lives here, as constants and `#[repr(C)]` types
//! whose sizes are asserted at compile time:
//!
//! ```text
//!  VMM                                   guest
//!  ── writes ──────────────────────────▶ boot::      zero page subset, e820 entries
//!  ── enters long mode via ───────────▶ layout::    fixed guest-physical addresses
//!  ◀─ port I/O ──────────────────────── ports::     serial, debug exit, hypercall
//!  ◀─ hypercall requests ────────────── hypercall:: CHECKPOINT, REPORT and report payloads
//!  ◀─ debug-exit status ─────────────── status::    what the guest's exit values mean
//!  ◀─ read by the host ──────────────── page::      `struct page`, zone geometry
//!  ◀─ read by the host ──────────────── mm::        zones, free lists, memblock, slab caches
//!  ◀─ read by the host ──────────────── vmcoreinfo:: where all of the above is
//!                                       walk::      the host's page-table walker
//!  ── `workload=` on the command line ▶ workload::  the workloads the guest can run
//! ```
#![no_std]

pub mod addr;
pub mod boot;
pub mod hypercall;
pub mod layout;
pub mod mm;
pub mod page;
pub mod ports;
pub mod status;
pub mod vmcoreinfo;
pub mod walk;
pub mod workload;
