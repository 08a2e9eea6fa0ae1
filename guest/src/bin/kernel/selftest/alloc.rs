//! `alloc`'s collections on the kernel's allocator. Runs outside any borrow of the memory
//! managers, which every allocation takes.

use super::{detail, ensure, CheckResult};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

pub fn collections() -> CheckResult {
    let free = crate::mm::global::with(|mm| mm.buddy.nr_free_pages());
    {
        let mut numbers: Vec<u64> = (0..2000).collect();
        numbers.retain(|n| n % 3 != 0);
        // Every third number from 0 goes: 667 of 2000.
        let kept = 2000 - 2000usize.div_ceil(3);
        ensure!(numbers.len() == kept, "Vec kept {} numbers, not {kept}", numbers.len());
        let mut tree = BTreeMap::new();
        for (i, n) in numbers.iter().enumerate().take(500) {
            tree.insert(*n, i);
        }
        ensure!(tree.len() == 500 && tree.get(&4) == Some(&2), "BTreeMap lookups");
        let boxed: Box<[u8; 5000]> = Box::new([7; 5000]);
        ensure!(boxed.iter().all(|&b| b == 7), "Box of 5000 bytes");
        // An over-aligned allocation.
        let layout = core::alloc::Layout::from_size_align(100, 256)
            .map_err(|_| detail(format_args!("layout")))?;
        // SAFETY: a valid, non-zero layout; freed below with the same layout.
        let ptr = unsafe { alloc::alloc::alloc(layout) };
        ensure!(!ptr.is_null() && ptr as u64 % 256 == 0, "256-byte alignment: {ptr:p}");
        // SAFETY: allocated above with this layout.
        unsafe { alloc::alloc::dealloc(ptr, layout) };
    }
    let after = crate::mm::global::with(|mm| {
        let (kmalloc, mut pages) = mm.slab();
        for cache in &mut kmalloc.caches {
            cache.shrink(&mut pages);
        }
        mm.buddy.drain_pcp();
        mm.buddy.nr_free_pages()
    });
    ensure!(after == free, "{after} pages free after the collections, {free} before");
    Ok(())
}
