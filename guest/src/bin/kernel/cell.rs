//! [`KernelCell`]: kernel-global state lent out one borrow at a time.
//!
//! The kernel runs on one CPU, but its state can still be reached twice at once: a `Vec`
//! growing inside code that already holds the memory managers, or a page fault taken
//! while its handler's state is in use. A second borrow is refused (a panic from
//! [`KernelCell::with`], `None` from [`KernelCell::try_with`]) instead of aliasing a
//! `&mut`. Every kernel-global value the kernel lends out after boot (the memory managers,
//! the pager) goes through one of these. The CPU's own tables (IDT, TSS) are `static mut`
//! written only during boot, before interrupts can read them, and the `#[global_allocator]`
//! borrows the memory managers like any other caller.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

/// Not installed yet.
const EMPTY: u8 = 0;
/// Installed and not lent out.
const FREE: u8 = 1;
/// Lent out (or being installed).
const LENT: u8 = 2;

/// A kernel-global value, lent out one borrow at a time.
pub struct KernelCell<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: access to `value` is serialised by `state` (one borrow at a time, taken with an
// atomic compare-exchange), and the kernel runs on one CPU, so `T` never crosses threads.
unsafe impl<T> Sync for KernelCell<T> {}

impl<T> KernelCell<T> {
    /// A cell to [`install`](Self::install) into later.
    pub const fn empty() -> Self {
        Self { state: AtomicU8::new(EMPTY), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// A cell holding `value` from the start.
    pub const fn new(value: T) -> Self {
        Self { state: AtomicU8::new(FREE), value: UnsafeCell::new(MaybeUninit::new(value)) }
    }

    /// Moves `value` into the cell, where it stays for good. Once only.
    pub fn install(&self, value: T) {
        if self.state.compare_exchange(EMPTY, LENT, Ordering::Acquire, Ordering::Relaxed).is_err() {
            panic!("a kernel-global value is installed twice");
        }
        // SAFETY: the state was EMPTY and is now LENT to us: nothing else touches `value`.
        unsafe { (*self.value.get()).write(value) };
        self.state.store(FREE, Ordering::Release);
    }

    /// Runs `f` with the value; `None` if it is lent out already or not installed.
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.lend(f).ok()
    }

    /// Runs `f` with the value. A second borrow while one is out is a kernel bug, and
    /// panics with a message instead of aliasing.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        match self.lend(f) {
            Ok(result) => result,
            Err(EMPTY) => panic!("a kernel-global value is used before it is installed"),
            Err(_) => panic!("a kernel-global value is borrowed twice (say, an allocation inside code that holds the memory managers)"),
        }
    }

    /// Runs `f` with the value if it is installed and not lent out; else the state it is
    /// in. One compare-exchange: every allocation comes through here.
    fn lend<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, u8> {
        self.state.compare_exchange(FREE, LENT, Ordering::Acquire, Ordering::Relaxed)?;
        // SAFETY: installed (the state was FREE) and now lent to us alone until we store
        // FREE again.
        let result = f(unsafe { (*self.value.get()).assume_init_mut() });
        self.state.store(FREE, Ordering::Release);
        Ok(result)
    }
}
