//! The kvm-mm guest kernel's algorithms, free of hardware access so that the same code runs
//! in the kernel (`src/bin/kernel`) and in host unit tests, property tests and benchmarks.
//!
//! - [`anon`]: anonymous user pages: demand-zero, fork sharing, copy-on-write.
//! - [`elf`]: the ELF loader's validation of user programs.
//! - [`hint`]: code-generation hints for hot paths (an address hidden from the optimiser).
//! - [`e820`]: sanitising the firmware memory map, as Linux's `e820__update_table`.
//! - [`cmdline`]: the kernel command line.
//! - [`buddy`]: the buddy page allocator with per-CPU order-0 caches.
//! - [`memblock`]: the boot-time memory manager (memory and reserved region sets).
//! - [`paging`]: 4-level page tables: map, unmap, protect, translate, walk.
//! - [`pager`]: demand paging of an armed area from a pool of frames.
//! - [`rng`]: the pseudo-random generator of the stress workload and the benchmarks.
//! - [`slab`]: SLUB-style caches and kmalloc over a page backend.
//! - [`vmalloc`]: virtually contiguous areas with guard pages.
//! - [`vma`]: a process's virtual memory areas, in a B+tree: map, unmap, protect, merge.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod anon;
pub mod buddy;
pub mod cmdline;
pub mod e820;
pub mod elf;
pub mod hint;
pub mod lru;
pub mod memblock;
pub mod pager;
pub mod paging;
pub mod reclaim;
pub mod rng;
pub mod slab;
pub mod swap_map;
#[cfg(test)]
mod testing;
pub mod vma;
pub mod vmalloc;
