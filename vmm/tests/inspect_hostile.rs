//! Hostile guest memory (no KVM needed): images crafted to make the inspector's loops
//! multiply end with the work budget's error naming what ran long; page tables
//! that alias, point outside RAM or set reserved bits are named, not followed; torn,
//! shrinking and unpublished snapshots are refused.

mod support;

mod inspect {
    mod hostile {
        use crate::support::image::{Image, RAM_BYTES};
        use shared::layout::{MIB, PAGE_OFFSET, PAGE_SIZE};
        use shared::mm::{Region, SlabCache};
        use shared::page::{Page, PG_HEAD, PG_SLAB};
        use shared::pte::{PteFlags, ADDR_MASK};
        use shared::vmcoreinfo::{VmCoreInfo, VMCOREINFO_ADDR, VMCOREINFO_VERSION};
        use shared::walk::{translate, Stop};
        use vmm::inspect::check::FindingKind;
        use vmm::inspect::state::MAX_MEMBLOCK_REGIONS;
        use vmm::inspect::{budget_for, Command, InspectError, Output};

        /// Runs `command`, which must run out of budget quickly, with a message that
        /// contains every one of `what`; returns what it was doing.
        fn assert_budget(image: &Image, command: &Command, what: &[&str]) -> String {
            let mut inspector = image.file().inspector();
            match inspector.run(command) {
                Err(InspectError::Budget { units, what: doing }) => {
                    assert_eq!(units, budget_for(RAM_BYTES));
                    assert!(what.iter().all(|w| doing.contains(w)), "ran out while {doing:?}");
                    doing
                }
                other => panic!("{}: {other:?}", command.name()),
            }
        }

        /// Fills a free run of 1 MiB with `MAX_MEMBLOCK_REGIONS` regions each covering all
        /// of RAM; returns its kernel virtual address.
        fn regions_covering_ram(image: &mut Image) -> u64 {
            let (pfn, order) = image.largest_free_block();
            let bytes = MAX_MEMBLOCK_REGIONS * size_of::<Region>() as u64;
            assert!(PAGE_SIZE << order >= bytes, "room for the array");
            let all = Region { base: 0, size: RAM_BYTES };
            let array = vec![all; usize::try_from(MAX_MEMBLOCK_REGIONS).expect("small")];
            image.ram.write(pfn * PAGE_SIZE, array.as_slice());
            PAGE_OFFSET + pfn * PAGE_SIZE
        }

        #[test]
        fn memory_regions_each_covering_all_of_ram_run_out_of_budget() {
            let mut image = Image::sound();
            let array = regions_covering_ram(&mut image);
            image.update_info(|info| {
                (info.memblock_memory, info.memblock_memory_cnt) = (array, MAX_MEMBLOCK_REGIONS)
            });
            // Each region scans every slab again: the budget may run out in any step of
            // the scan, but the message names the region, one of tens of thousands.
            let what = "scanning the struct pages of memblock memory region";
            let of = format!("of {MAX_MEMBLOCK_REGIONS} (0x0+{RAM_BYTES:#x})");
            assert_budget(&image, &Command::Check, &[what, &of]);
            let Ok(Output::Memblock(memblock)) = image.run(&Command::Memblock) else {
                panic!("memblock lists them")
            };
            assert_eq!(memblock.memory.len() as u64, MAX_MEMBLOCK_REGIONS);
        }

        #[test]
        fn reserved_regions_each_covering_all_of_ram_run_out_of_budget() {
            let mut image = Image::sound();
            let array = regions_covering_ram(&mut image);
            image.update_info(|info| {
                (info.memblock_reserved, info.memblock_reserved_cnt) = (array, MAX_MEMBLOCK_REGIONS)
            });
            let of = format!("(0x0+{RAM_BYTES:#x})");
            assert_budget(&image, &Command::Check, &["marking memblock reserved region", &of]);
        }

        /// The third case (112 s before the work budget): every page of a long
        /// free run heads a slab of 65 535 objects (the most a slab page can claim), linked
        /// page to page. A slab whose frames already have an owner is named and not walked,
        /// so the run costs one finding per page, and no slab is walked twice.
        #[test]
        fn a_free_run_of_slab_heads_of_65535_objects_each_is_named_not_walked() {
            let mut image = Image::sound();
            let sound = image.check();
            // kmalloc-8's slabs claim 65 535 objects of 8 bytes in 2^7 pages.
            let cache = image.cache_named("kmalloc-8");
            let (order, objects, stride) = (7, u16::MAX, 8);
            image.update_cache(cache, |raw: &mut SlabCache| {
                (raw.order, raw.objects, raw.stride, raw.free_offset) =
                    (order, objects.into(), stride, 0)
            });
            // Every page of the run heads such a slab, and every word of the run links to
            // the next one: each slab's freelist runs on, page to page, to its end.
            let (first, run) = image.largest_free_block();
            let addr = image.caches[cache].addr;
            for pfn in first..first + (1 << run) {
                image.update_page(pfn, |page| {
                    *page = Page {
                        flags: PG_HEAD | PG_SLAB,
                        order,
                        slab_cache: addr,
                        slab_freelist: PAGE_OFFSET + pfn * PAGE_SIZE,
                        slab_objects: objects,
                        ..Page::default()
                    }
                });
                for word in (pfn * PAGE_SIZE..(pfn + 1) * PAGE_SIZE).step_by(8) {
                    image.set_word(word, PAGE_OFFSET + word + stride);
                }
            }
            let mut inspector = image.file().inspector();
            let Ok(Output::Check(report)) = inspector.run(&Command::Check) else {
                panic!("check ends with a report")
            };
            let expected = format!("pfn {first:#x} is both free (buddy) and slab");
            assert!(
                report
                    .findings
                    .iter()
                    .any(|f| f.kind == FindingKind::DoubleOwner && f.text == expected),
                "{expected}: {:#?}",
                report.findings
            );
            // None of the run's slabs was counted: kmalloc-8 has the slabs it had before.
            let name = &image.caches[cache].name;
            let count = |r: &vmm::inspect::check::CheckReport| {
                r.caches.iter().find(|c| &c.name == name).map(|c| c.slabs)
            };
            assert_eq!(count(&report), count(&sound));
        }

        /// Points every PML4 entry back at the PML4.
        #[test]
        fn tables_that_alias_stop_pagetable_and_are_named_by_check() {
            let mut image = Image::sound();
            image.alias_every_pml4_entry();
            let what = "enumerating the page tables (do tables alias each other?)";
            assert_budget(
                &image,
                &Command::Pagetable { range: None, tlb: false, pid: None },
                &[what],
            );
            // One line per page: the dump's line limit ends it first, and says so.
            let mut inspector = image.file().inspector();
            let tlb = inspector.run(&Command::Pagetable { range: None, tlb: true, pid: None });
            let Ok(Output::Pagetable(dump)) = tlb else { panic!("{tlb:?}") };
            let limit = vmm::inspect::pagetable::MAX_LINES;
            let why = format!("stopped after {limit} lines");
            assert_eq!((dump.pages.len(), dump.truncated), (limit, Some(why)));
            let mut inspector = image.file().inspector();
            let checked = inspector.run(&Command::Check);
            let Ok(Output::Check(report)) = checked else { panic!("{checked:?}") };
            assert_eq!(report.findings[0].kind, FindingKind::TableEnumeration, "{report:#?}");
            // Every address now walks to the PML4 itself.
            let root = image.info.cr3;
            let walked = translate(&mut image.ram, root, PAGE_OFFSET + 0x123);
            assert_eq!(walked.map(|m| m.phys), Ok(root + 0x123));
        }

        #[test]
        fn a_cr3_outside_ram_is_an_error_not_an_empty_dump() {
            let mut image = Image::sound();
            let cr3 = 4 * RAM_BYTES;
            image.update_info(|info| info.cr3 = cr3);
            let err = image
                .run(&Command::Pagetable { range: None, tlb: false, pid: None })
                .expect_err("no tables");
            assert!(matches!(err, InspectError::Corrupt(_)), "{err:?}");
            assert!(err.to_string().contains(&format!("CR3 {cr3:#x}")), "{err}");
            let Ok(Output::Translate(t)) =
                image.run(&Command::Translate { addrs: vec![PAGE_OFFSET], pid: None })
            else {
                panic!("translate reports")
            };
            assert_eq!(t[0].stop.as_deref(), Some("PML4 table is not in guest RAM"));
            let err = image.run(&Command::Check).expect_err("nothing translates");
            assert!(matches!(err, InspectError::Unmapped { .. }), "{err:?}");
        }

        /// Sets `bits` in the entry at `level` on the walk of `virt` (after `replace`, if
        /// given, replaced its value); asserts that the walker, `translate`, `pagetable`
        /// and `check` all stop there.
        fn assert_reserved(image: &mut Image, virt: u64, level: u8, value: u64) {
            let entry = image.entry(virt, level);
            image.set_word(entry, value);
            assert_eq!(translate(&mut image.ram, image.info.cr3, virt), Err(Stop::Reserved(level)));
            let Ok(Output::Translate(t)) =
                image.run(&Command::Translate { addrs: vec![virt], pid: None })
            else {
                panic!("translate reports")
            };
            let name = shared::pte::level_name(level);
            let stop = format!("{name} entry sets a reserved bit (the CPU faults on it)");
            assert_eq!(t[0].stop.as_deref(), Some(stop.as_str()));
            let Ok(Output::Pagetable(dump)) =
                image.run(&Command::Pagetable { range: None, tlb: true, pid: None })
            else {
                panic!("pagetable dumps")
            };
            let listed = dump.reserved.iter().find(|r| r.entry_addr == entry).expect("listed");
            assert_eq!((listed.level, listed.entry), (level, value));
            assert!(!dump.pages.iter().any(|p| p.virt == virt), "nothing mapped below it");
            let report = image.check();
            let expected =
                format!("{name} entry at {entry:#x} (for {:#x}) = {value:#x}", listed.virt);
            let found = report.findings.iter().find(|f| f.kind == FindingKind::ReservedBits);
            assert!(
                found.is_some_and(|f| f.text.starts_with(&expected)),
                "{expected}\n{report:#?}"
            );
        }

        #[test]
        fn reserved_bits_in_a_2m_leaf_stop_the_walk_and_are_named() {
            let mut image = Image::sound();
            let virt = PAGE_OFFSET + 4 * MIB;
            let (entry, level) = image.leaf(virt);
            assert_eq!(level, 2);
            let value = image.word(entry) | 1 << 13;
            assert_reserved(&mut image, virt, 2, value);
        }

        #[test]
        fn reserved_bits_in_a_1g_leaf_stop_the_walk_and_are_named() {
            let mut image = Image::sound();
            // The direct map's first GiB as one 1 GiB page whose bit 13 is set.
            let leaf =
                PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::HUGE | PteFlags::NO_EXECUTE;
            assert_reserved(&mut image, PAGE_OFFSET + 5 * MIB, 3, leaf.bits() | 1 << 13);
        }

        #[test]
        fn ps_in_the_direct_maps_pml4_entry_stops_the_walk_and_is_named() {
            let mut image = Image::sound();
            let entry = image.entry(PAGE_OFFSET, 4);
            let value = image.word(entry) | PteFlags::HUGE.bits();
            assert_reserved(&mut image, PAGE_OFFSET + MIB, 4, value);
        }

        #[test]
        fn a_direct_map_leaf_beyond_ram_is_named_and_not_read() {
            let mut image = Image::sound();
            let virt = PAGE_OFFSET + 4 * MIB;
            let (entry, _) = image.leaf(virt);
            let beyond = 1 << 40;
            let value = (image.word(entry) & !ADDR_MASK) | beyond;
            image.set_word(entry, value);
            let report = image.check();
            assert!(report.found(FindingKind::OutsideRam), "{report:#?}");
            let mut inspector = image.file().inspector();
            let read = inspector.snapshot(|view| view.read_virt_obj::<u64>(virt + 8));
            assert!(
                matches!(read, Err(InspectError::OutsideRam { gpa, len: 8 }) if gpa == beyond + 8),
                "{read:?}"
            );
        }

        #[test]
        fn a_snapshot_with_an_odd_sequence_count_is_retried_then_refused() {
            let mut image = Image::sound();
            image.update_info(|info| info.seq += 1);
            let file = image.file();
            let mut inspector = file.inspector();
            (inspector.max_tries, inspector.retry_delay) = (5, std::time::Duration::from_millis(1));
            let mut ran = 0;
            let result = inspector.snapshot(|_| {
                ran += 1;
                Ok(())
            });
            assert!(matches!(result, Err(InspectError::Torn { tries: 5 })), "{result:?}");
            assert_eq!(ran, 0, "no command runs on a torn snapshot");
            let memory = image.memory();
            let mut mapped = vmm::inspect::Inspector::new(vmm::inspect::RamReader::mapped(&memory));
            mapped.max_tries = 3;
            let err = mapped.run(&Command::Buddyinfo).expect_err("torn");
            assert!(err.to_string().contains("no consistent snapshot in 3 tries"), "{err}");
        }

        #[test]
        fn a_snapshot_the_guest_changed_under_is_retried() {
            let image = Image::sound();
            let file = image.file();
            let mut inspector = file.inspector();
            let seq_at = VMCOREINFO_ADDR + std::mem::offset_of!(VmCoreInfo, seq) as u64;
            let mut seqs = Vec::new();
            let zones = inspector
                .snapshot(|view| {
                    seqs.push(view.info.seq);
                    if seqs.len() == 1 {
                        // The guest completes an allocator change while the command reads.
                        let bumped = (view.info.seq + 2).to_le_bytes();
                        std::os::unix::fs::FileExt::write_all_at(
                            &std::fs::OpenOptions::new().write(true).open(&file.path).expect("rw"),
                            &bumped,
                            seq_at,
                        )
                        .expect("written");
                    }
                    vmm::inspect::state::zones(view)
                })
                .expect("the second try is consistent");
            assert_eq!(seqs, [image.info.seq, image.info.seq + 2], "two tries");
            assert_eq!(zones.len(), 2);
        }

        #[test]
        fn a_file_that_shrinks_while_read_errs_instead_of_faulting() {
            let image = Image::sound();
            let file = image.file();
            let mut inspector = file.inspector();
            let result = inspector.snapshot(|view| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&file.path)
                    .and_then(|f| f.set_len(RAM_BYTES / 4))
                    .expect("truncated");
                vmm::inspect::check::check(view)
            });
            assert!(matches!(result, Err(InspectError::FileShrank { .. })), "{result:?}");
            let again = inspector.run(&Command::Buddyinfo);
            assert!(matches!(again, Err(InspectError::FileShrank { .. })), "{again:?}");
            std::fs::write(&file.path, &image.ram.bytes()[..4096]).expect("rewritten");
            let err = vmm::inspect::RamReader::open_file(&file.path).err().expect("too short");
            assert!(matches!(err, InspectError::NotRamFile { .. }), "{err:?}");
        }

        #[test]
        fn an_unpublished_or_other_version_descriptor_is_refused() {
            let mut image = Image::sound();
            image.update_info(|info| info.magic = 0);
            let err = image.run(&Command::Zoneinfo).expect_err("not published");
            assert!(matches!(err, InspectError::NotPublished { magic: 0 }), "{err:?}");
            assert_eq!(err.exit_code(), 65);
            let mut image = Image::sound();
            let found = VMCOREINFO_VERSION + 1;
            image.update_info(|info| info.version = found);
            let err = image.run(&Command::Zoneinfo).expect_err("another version");
            assert!(matches!(err, InspectError::Version { found: f } if f == found), "{err:?}");
        }
    }
}
