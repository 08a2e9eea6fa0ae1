//! Code-generation hints for hot paths: the lib's only assembly (the kernel binary's CPU
//! code is in `src/bin/kernel`).
//!
//! [`hide`] is Linux's `OPTIMIZER_HIDE_VAR`: the compiler can no longer see where a
//! reference came from, so it keeps the address in one register instead of recomputing it
//! inside every load that uses it. `VmaTree::find` uses it (docs/PERFORMANCE.md, "The VMA
//! tree").

/// `r`, unchanged, through an empty `asm!` block: the optimiser treats the result as a new
/// address. Costs no instruction.
#[inline(always)]
pub fn hide<T>(r: &T) -> &T {
    // An address, not a pointer, goes through the assembly: its provenance is exposed here
    // and taken back below, which Rust's memory model defines without reasoning about asm.
    let mut addr = core::ptr::from_ref(r).expose_provenance();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the assembly is empty: it reads and writes no memory, touches no flags and
    // leaves the register holding `addr` as it was.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) addr, options(pure, nomem, nostack, preserves_flags));
    }
    // SAFETY: `addr` is still the address of `r`, whose provenance was exposed above, and
    // `r` is valid for the lifetime returned.
    unsafe { &*core::ptr::with_exposed_provenance::<T>(addr) }
}

#[cfg(test)]
mod tests {
    use super::hide;

    #[test]
    fn hide_returns_the_same_reference() {
        let values = [1u64, 2, 3];
        assert!(core::ptr::eq(hide(&values[1]), &values[1]));
        assert_eq!(*hide(&values[2]), 3);
    }
}
