//! Code-generation hints for hot paths: the lib's only assembly (the kernel binary's CPU
//! code is in `src/bin/kernel`).
//!
//! [`hide`] is Linux's `OPTIMIZER_HIDE_VAR`: the compiler can no longer see where a
//! reference came from, so it keeps the address in one register instead of recomputing it
//! inside every load that uses it. `VmaTree::find` uses it (docs/PERFORMANCE.md, "The VMA
//! tree").

/// `r`, unchanged, with an address the optimiser cannot trace. On x86_64 it costs no
/// instruction; elsewhere (and under Miri, which runs no assembly) it is the identity.
#[inline(always)]
pub fn hide<T>(r: &T) -> &T {
    let p = core::ptr::from_ref(r);
    let addr = opaque(p.addr());
    // SAFETY: `addr` is `r`'s own address (`opaque` returns its argument), so the pointer
    // has `r`'s address and provenance, and `r` is valid for the lifetime returned.
    unsafe { &*p.with_addr(addr) }
}

/// `value`, through an empty `asm!` block the optimiser cannot see into.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
fn opaque(mut value: usize) -> usize {
    // SAFETY: the assembly is empty: it reads and writes no memory, uses no stack, touches
    // no flags and leaves the register holding `value` as it was.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) value, options(pure, nomem, nostack, preserves_flags));
    }
    value
}

#[cfg(not(all(target_arch = "x86_64", not(miri))))]
#[inline(always)]
fn opaque(value: usize) -> usize {
    value
}

#[cfg(test)]
mod tests {
    use super::hide;

    #[test]
    fn hide_returns_the_same_reference() {
        let values = [1u64, 2, 3];
        assert!(core::ptr::eq(hide(&values[1]), &values[1]));
        assert_eq!(*hide(&values[2]), 3);
        let unit = ();
        assert!(core::ptr::eq(hide(&unit), &unit));
    }
}
