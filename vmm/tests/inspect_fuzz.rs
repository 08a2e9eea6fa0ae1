//! Fuzzing the inspector with hostile guest memory, no KVM needed: the synthetic image
//! (a populated allocator state the guest library built on the host, see
//! `support/image.rs`) is mapped as a VMM maps guest RAM, then each execution overwrites
//! a few words of what the inspector reads (vmcoreinfo, zones, slab caches, memblock,
//! page tables, `struct page`s, slab objects) or whole such pages with random bytes, runs
//! every command, and puts the bytes back. An execution fails on a panic or when a command
//! takes longer than [`SLOW`].
//!
//! `cargo test` runs [`DEFAULT_EXECS`] executions; set `KVM_MM_FUZZ_EXECS` for a longer
//! campaign (and `KVM_MM_FUZZ_SEED` to start elsewhere), e.g.
//! `KVM_MM_FUZZ_EXECS=100000 cargo test --release -p vmm --test inspect_fuzz -- --nocapture`.

// Random numbers become offsets into a 32 MiB image and random bytes: truncation is the point.
#![allow(clippy::cast_possible_truncation)]

mod support;

mod inspect {
    use crate::support::image::{Image, RAM_BYTES};
    use shared::page::PAGE_STRUCT_SIZE;
    use shared::vmcoreinfo::{VMCOREINFO_ADDR, VMCOREINFO_SIZE};
    use shared::walk::{for_each_leaf, Leaf, Visitor};
    use std::collections::BTreeSet;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::time::{Duration, Instant};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm::inspect::{state, Command, Inspector, RamReader};

    const DEFAULT_EXECS: u64 = 1000;
    /// Longest a command may take on the 32 MiB image before it counts as a hang: the
    /// budget keeps every one to milliseconds, so only a missing bound comes near it.
    const SLOW: Duration = Duration::from_secs(5);

    /// splitmix64: reproducible from the printed seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Pages the inspector reads in a sound image, where mutations hurt, and the slabs.
    fn hot_pages(mem: &GuestMemoryMmap) -> (Vec<u64>, Vec<u64>) {
        let mut inspector = Inspector::new(RamReader::mapped(mem));
        let found = inspector.snapshot(|view| {
            let info = view.info;
            let mut pages = BTreeSet::from([VMCOREINFO_ADDR / 4096]);
            for (addr, len) in [
                (info.zones, info.nr_zones * shared::mm::ZONE_SIZE as u64),
                (info.memblock_memory, info.memblock_memory_cnt * 16),
                (info.memblock_reserved, info.memblock_reserved_cnt * 16),
                (info.slab_caches, info.nr_slab_caches * info.slab_cache_stride),
                (info.e820, info.e820_cnt * 20),
            ] {
                for virt in (addr & !4095..addr + len).step_by(4096) {
                    pages.insert(view.phys(virt)? / 4096);
                }
            }
            struct Tables<'a>(&'a mut BTreeSet<u64>);
            impl Visitor for Tables<'_> {
                fn table(&mut self, _: u8, gpa: u64) {
                    self.0.insert(gpa / 4096);
                }
                fn leaf(&mut self, _: Leaf) -> bool {
                    true
                }
            }
            let mut budget = 1 << 24;
            let _ = for_each_leaf(
                view.ram,
                info.cr3,
                shared::walk::ALL_ADDRESSES,
                &mut budget,
                &mut Tables(&mut pages),
            );
            // The memmap of used frames, and the slabs' objects.
            let mut slabs = Vec::new();
            for pfn in 0..info.max_pfn {
                if let Ok(page) = view.page(pfn) {
                    if page.flags != 0 {
                        let at = view.page_addr(pfn);
                        pages.insert(view.phys(at)? / 4096);
                        if page.flags & shared::page::PG_SLAB != 0 {
                            slabs.push(pfn);
                        }
                    }
                }
            }
            for cache in state::caches(view)? {
                if cache.raw.cpu_slab != u64::MAX {
                    slabs.push(cache.raw.cpu_slab);
                }
            }
            Ok((
                pages.into_iter().map(|p| p * 4096).collect(),
                slabs.iter().map(|p| p * 4096).collect(),
            ))
        });
        found.expect("the seed image inspects cleanly")
    }

    fn interesting(rng: &mut Rng, gpa: u64) -> u64 {
        match rng.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => rng.below(64),
            3 => gpa,
            4 => shared::layout::PAGE_OFFSET + rng.below(2 * RAM_BYTES),
            5 => {
                let pfns = 2 * RAM_BYTES / 4096;
                shared::layout::VMEMMAP_BASE + rng.below(pfns) * PAGE_STRUCT_SIZE as u64
            }
            6 => rng.below(2 * RAM_BYTES) | 0x27,
            7 => 1 << rng.below(64),
            _ => rng.next(),
        }
    }

    #[test]
    fn fuzzed_guest_memory_never_panics_or_hangs_the_inspector() {
        let execs = std::env::var("KVM_MM_FUZZ_EXECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_EXECS);
        let seed = std::env::var("KVM_MM_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
        let image = Image::sound();
        let mem = image.memory();
        let (hot, slabs) = hot_pages(&mem);
        let vmalloc = image.vmalloc[0].virt;
        let commands = [
            Command::E820,
            Command::Memblock,
            Command::Zoneinfo,
            Command::Slabinfo,
            Command::Pagetable { range: None, tlb: false, pid: None },
            Command::Pagetable { range: None, tlb: true, pid: None },
            Command::Translate {
                addrs: vec![
                    shared::layout::KERNEL_VIRT_BASE + (2 << 20),
                    shared::layout::PAGE_OFFSET,
                    vmalloc,
                    0,
                ],
                pid: None,
            },
            Command::Page { pfn: 0x1000 },
            Command::Check,
            Command::Ps,
            Command::Maps { pid: None },
        ];
        let mut rng = Rng(seed);
        let (mut crashes, mut slowest, mut errors, mut findings) =
            (Vec::new(), (Duration::ZERO, ""), 0u64, 0u64);
        let started = Instant::now();
        for exec in 0..execs {
            // Mutate, remembering what to restore.
            let mut saved: Vec<(u64, Vec<u8>)> = Vec::new();
            let case_seed = rng.0;
            for _ in 0..1 + rng.below(6) {
                let (gpa, len) = match rng.below(8) {
                    0 => (VMCOREINFO_ADDR + rng.below(VMCOREINFO_SIZE as u64 / 8) * 8, 8),
                    1 if !slabs.is_empty() => {
                        (slabs[rng.below(slabs.len() as u64) as usize] + rng.below(512) * 8, 8)
                    }
                    2 => (hot[rng.below(hot.len() as u64) as usize], 4096),
                    _ => (hot[rng.below(hot.len() as u64) as usize] + rng.below(512) * 8, 8),
                };
                let mut old = vec![0u8; len];
                if mem.read_slice(&mut old, GuestAddress(gpa)).is_err() {
                    continue;
                }
                let new: Vec<u8> = if len == 8 {
                    let value = if rng.below(3) == 0 {
                        u64::from_le_bytes(old[..8].try_into().unwrap_or_default())
                            ^ (1 << rng.below(64))
                    } else {
                        interesting(&mut rng, gpa)
                    };
                    value.to_le_bytes().to_vec()
                } else {
                    (0..len).map(|_| rng.next() as u8).collect()
                };
                mem.write_slice(&new, GuestAddress(gpa)).expect("inside RAM");
                saved.push((gpa, old));
            }
            for command in &commands {
                let t = Instant::now();
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let mut inspector = Inspector::new(RamReader::mapped(&mem));
                    inspector.max_tries = 1;
                    inspector.run(command)
                }));
                let took = t.elapsed();
                if took > slowest.0 {
                    slowest = (took, command.name());
                }
                match result {
                    Err(_) => crashes.push(format!(
                        "exec {exec} (rng state {case_seed:#x}): {} panicked",
                        command.name()
                    )),
                    Ok(Err(_)) => errors += 1,
                    Ok(Ok(output)) => findings += u64::from(output.found_problems()),
                }
                if took > SLOW {
                    crashes.push(format!(
                        "exec {exec} (rng state {case_seed:#x}): {} took {took:?}",
                        command.name()
                    ));
                }
            }
            for (gpa, old) in saved.into_iter().rev() {
                mem.write_slice(&old, GuestAddress(gpa)).expect("restored");
            }
        }
        println!(
            "inspect fuzz: {execs} executions ({} command runs) from seed {seed} in {:.1?}: {} crashes or hangs, slowest command {} in {:?}; {errors} refused, {findings} checks with findings",
            execs * commands.len() as u64,
            started.elapsed(),
            crashes.len(),
            slowest.1,
            slowest.0
        );
        assert!(crashes.is_empty(), "{crashes:#?}");
        assert!(
            errors + findings > 0,
            "the mutations never disturbed the inspector: the harness is broken"
        );
    }
}
