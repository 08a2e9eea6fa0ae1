//! The local APIC's timer, in x2APIC mode (MSRs, no MMIO mapping): the tick that preempts
//! a process which keeps the CPU in user mode.
//!
//! ```text
//! init (first process launch)  x2APIC on, spurious vector, LVT timer: one-shot, TIMER_VECTOR
//! every return to user mode    while another process exists: TMICT = a full slice, so the
//!                              count starts over (Linux's one-shot tick re-armed)
//! tick (TIMER_VECTOR, CPL3)    EOI; if the count really ran out (TMCCT = 0) the process has
//!                              had the CPU in user mode for a whole slice: it is preempted
//! last process gone            TMICT = 0: the timer stops
//! ```
//!
//! One-shot, not periodic: the emulating KVM this project is developed on delivers a
//! periodic LAPIC timer's first interrupt only, while a one-shot timer armed again works
//! at CPL0 and CPL3 alike (docs/ARCHITECTURE.md, "Timer preemption"). A tick that was
//! pending while the kernel ran (interrupts are off in the kernel) reaches the process
//! right after its timer was armed again: the running count tells it apart and it is
//! ignored, so a process is only preempted for its own time in user mode. That keeps the
//! workloads whose processes trap often (all but `preempt`) as deterministic as before.

use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::registers::model_specific::Msr;

/// The timer's vector (Linux's `LOCAL_TIMER_VECTOR`).
pub const TIMER_VECTOR: u8 = 0xec;
/// The spurious-interrupt vector: delivered without an EOI (Linux's `SPURIOUS_APIC_VECTOR`).
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// KVM's APIC timer counts at 1 GHz (an APIC bus cycle of 1 ns) with divide-by-1.
const COUNTS_PER_MS: u64 = 1_000_000;
/// A process's slice in user mode: 10 ms (Linux with `HZ=100`).
pub const SLICE_MS: u64 = 10;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_LVT_TIMER: u32 = 0x832;
const X2APIC_TMICT: u32 = 0x838;
const X2APIC_TMCCT: u32 = 0x839;
const X2APIC_TDCR: u32 = 0x83e;
const SVR_ENABLE: u64 = 1 << 8;
const TDCR_DIVIDE_BY_1: u64 = 0b1011;

static AVAILABLE: AtomicBool = AtomicBool::new(false);
static ARMED: AtomicBool = AtomicBool::new(false);

/// Turns the timer on where CPUID offers x2APIC; returns whether it is on.
pub fn init() -> bool {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 21) == 0 {
        return false;
    }
    // SAFETY: CPUID offers x2APIC; these MSRs only configure the local APIC, whose timer
    // stays stopped (TMICT 0) until `arm`, and whose interrupts reach user mode only
    // (the kernel runs with RFLAGS.IF clear) through the gates `traps::init` installed.
    unsafe {
        let mut base = Msr::new(IA32_APIC_BASE);
        base.write(base.read() | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
        Msr::new(X2APIC_SVR).write(SVR_ENABLE | u64::from(SPURIOUS_VECTOR));
        Msr::new(X2APIC_TDCR).write(TDCR_DIVIDE_BY_1);
        Msr::new(X2APIC_LVT_TIMER).write(u64::from(TIMER_VECTOR));
        Msr::new(X2APIC_TMICT).write(0);
    }
    AVAILABLE.store(true, Ordering::Relaxed);
    true
}

/// Starts a full slice (`on`), or stops the timer; a no-op without a timer.
#[inline]
pub fn set(on: bool) {
    // A lone process returning to user mode (the common case) costs one load: every
    // instruction on the trap path is emulated on some hosts.
    if !on && !ARMED.load(Ordering::Relaxed) || !AVAILABLE.load(Ordering::Relaxed) {
        return;
    }
    ARMED.store(on, Ordering::Relaxed);
    let count = if on { SLICE_MS * COUNTS_PER_MS } else { 0 };
    // SAFETY: writing the initial count (re)starts or stops the one-shot countdown.
    unsafe { Msr::new(X2APIC_TMICT).write(count) };
}

/// Acknowledges a tick; returns whether the slice really ran out (a tick left pending
/// from kernel time finds the countdown it was re-armed with still running).
pub fn tick() -> bool {
    if !AVAILABLE.load(Ordering::Relaxed) {
        return false;
    }
    // SAFETY: the x2APIC is on (`init`); EOI ends the interrupt in service and TMCCT is
    // read-only.
    unsafe {
        Msr::new(X2APIC_EOI).write(0);
        Msr::new(X2APIC_TMCCT).read() == 0
    }
}
