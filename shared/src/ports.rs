//! I/O ports the guest uses to talk to the VMM.

/// COM1, the 8250 UART the guest console writes to (eight registers from here).
pub const COM1_BASE: u16 = 0x3f8;
/// Number of COM1 registers.
pub const COM1_LEN: u16 = 8;

/// Debug-exit port (the QEMU `isa-debug-exit` default): a one-byte write ends the run and
/// the byte becomes the VMM's exit status (see [`crate::status`]).
pub const DEBUG_EXIT: u16 = 0xf4;

/// Hypercall port: a four-byte write of the guest-physical address of a
/// [`crate::hypercall::Request`] (which must lie below 4 GiB).
pub const HYPERCALL: u16 = 0xf8;
