//! kvm-mm's VMM as a library: configure a guest, boot it under KVM, get its outcome.
//!
//! ```no_run
//! let config = vmm::VmConfig { cmdline: "workload=boot".into(), ..Default::default() };
//! let outcome = vmm::run(&config)?;
//! assert_eq!(outcome.exit, vmm::ExitReason::GuestExit { status: 0 });
//! println!("the guest saw {} e820 ranges", outcome.e820().map_or(0, |map| map.len()));
//! # Ok::<(), vmm::Error>(())
//! ```
//!
//! Modules, in boot order: [`config`] (user input) → [`memory`] (guest RAM) → [`boot`]
//! and [`arch`] (what the guest finds at entry) → [`vm`] (KVM objects) → [`vcpu`] (the run
//! loop) with [`devices`], [`swap`] and [`report`] → [`outcome`], printed with [`procfs`].

pub mod arch;
pub mod boot;
pub mod config;
pub mod devices;
pub mod inspect;
pub mod memory;
pub mod outcome;
pub mod procfs;
pub mod report;
pub mod swap;
pub mod vcpu;
pub mod vm;

pub use config::VmConfig;
pub use outcome::{exit_code, ExitReason, Outcome};
pub use report::Report;
pub use vm::{run, Error, Vm};

/// The README's Rust example, compiled by `cargo test` (its commands are run by
/// `tests/readme.rs`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
