//! The inspector on a guest RAM image built on the host (no KVM needed): a sound image
//! checks clean with every page accounted for, and every command reads what the guest's
//! allocators hold, through a RAM file and through mapped memory alike.

mod support;

mod inspect {
    use super::support::image::{Image, Mapped, IOREMAP_PHYS};
    use shared::hypercall::{SlabInfoReport, ZoneReport};
    use shared::layout::{KERNEL_VIRT_BASE, MIB, PAGE_OFFSET, PAGE_SIZE, VMEMMAP_BASE};
    use shared::page::{PAGE_STRUCT_SIZE, PG_BUDDY};
    use shared::pte::{table_index, PageSize, PteFlags, ADDR_MASK};
    use vmm::inspect::pagetable::{parse_range, AddressWalk, MemRun, PageTableDump};
    use vmm::inspect::{state, Command, InspectError, Inspector, Output, RamReader};

    fn pages(bytes: u64) -> u64 {
        bytes / PAGE_SIZE
    }

    /// Pages of RAM memblock knows.
    fn ram_pages(image: &Image) -> u64 {
        image.memory.iter().map(|r| pages(r.size)).sum()
    }

    fn in_memory(image: &Image, pfn: u64) -> bool {
        image.memory.iter().any(|r| (r.base / PAGE_SIZE..r.end() / PAGE_SIZE).contains(&pfn))
    }

    #[test]
    fn a_sound_image_checks_clean_with_every_page_owned_as_the_allocators_say() {
        let image = Image::sound();
        let report = image.check();
        assert!(report.ok(), "{:#?}", report.findings);
        assert_eq!(report.ram_pages, ram_pages(&image));
        let total: u64 = report.pages.iter().map(|c| c.pages).sum();
        assert_eq!(total, report.ram_pages, "every RAM page has exactly one owner");
        let owned = |owner: &str| {
            report.pages.iter().find(|c| c.owner == owner).map(|c| c.pages).expect(owner)
        };
        let kernel = &image.kernel;
        let memmap = (pages(image.memmap), pages(image.memmap + PageSize::Size2M.bytes()));
        let tables: Vec<u64> = image.tables.iter().map(|&t| pages(t)).collect();
        let vmalloc_frames: u64 = image.vmalloc.iter().map(|a| a.frames.len() as u64).sum();
        let blocks: u64 = image.blocks.iter().map(|&(_, order)| 1u64 << order).sum();
        let slab_pages: u64 = image.caches.iter().map(|c| c.raw.slabs << c.raw.order).sum();
        let reserved = image
            .reserved
            .iter()
            .flat_map(|r| r.base / PAGE_SIZE..r.end() / PAGE_SIZE)
            .filter(|&pfn| in_memory(&image, pfn))
            .filter(|&pfn| !(pages(kernel.start)..pages(kernel.end)).contains(&pfn))
            .filter(|&pfn| !(memmap.0..memmap.1).contains(&pfn) && !tables.contains(&pfn))
            .count() as u64;
        assert_eq!(owned("free (buddy)"), image.zones.iter().map(|z| z.free).sum::<u64>());
        assert_eq!(owned("per-CPU lists"), image.zones.iter().map(|z| z.pcp_pages()).sum::<u64>());
        assert_eq!(owned("slab"), slab_pages);
        assert_eq!(owned("page tables"), image.tables.len() as u64);
        assert_eq!(owned("vmemmap"), memmap.1 - memmap.0);
        assert_eq!(owned("kernel image"), pages(kernel.end - kernel.start));
        assert_eq!(owned("memblock reserved"), reserved);
        assert_eq!(owned("other allocated"), blocks + vmalloc_frames);
        assert_eq!(owned("owned by nobody"), 0);
        assert!(owned("per-CPU lists") > 0 && slab_pages > 0 && vmalloc_frames > 0);
        for (count, cache) in report.caches.iter().zip(&image.caches) {
            let raw = &cache.raw;
            assert_eq!(count.name, cache.name);
            assert_eq!(
                (count.slabs, count.pages, count.objects_in_use, count.objects_free),
                (
                    raw.slabs,
                    raw.slabs << raw.order,
                    raw.in_use,
                    raw.slabs * raw.objects - raw.in_use
                ),
                "{}",
                cache.name
            );
        }
        let quarantined = &image.caches[image.quarantined.0].raw;
        assert!(quarantined.quarantined == image.quarantined.1 && quarantined.written_off > 0);
        assert!(report.caches.iter().any(|c| c.name.starts_with("debug-") && c.slabs > 0));
    }

    /// What every listing command must say: the allocators' own state.
    fn expected_outputs(image: &Image) -> Vec<(Command, Output)> {
        let zones: Vec<ZoneReport> =
            image.zones.iter().filter(|z| z.present > 0).map(ZoneReport::of).collect();
        let slabs: Vec<SlabInfoReport> =
            image.caches.iter().map(|c| SlabInfoReport::of(&c.raw, c.name.as_bytes())).collect();
        let memblock = state::MemblockRegions {
            memory: image.memory.clone(),
            reserved: image.reserved.clone(),
        };
        vec![
            (Command::E820, Output::E820(image.e820.clone())),
            (Command::Memblock, Output::Memblock(memblock)),
            (Command::Buddyinfo, Output::Buddyinfo(zones.clone())),
            (Command::Zoneinfo, Output::Zoneinfo(zones)),
            (Command::Slabinfo, Output::Slabinfo(slabs)),
        ]
    }

    #[test]
    fn e820_memblock_buddyinfo_zoneinfo_and_slabinfo_read_what_the_allocators_hold() {
        let image = Image::sound();
        assert_eq!(image.zones.iter().filter(|z| z.present > 0).count(), 2, "DMA and DMA32");
        for (command, expected) in expected_outputs(&image) {
            let output = image.run(&command).unwrap_or_else(|err| panic!("{command:?}: {err}"));
            assert_eq!(output, expected, "{}", command.name());
        }
    }

    #[test]
    fn mapped_memory_reads_what_a_file_holds() {
        let image = Image::sound();
        let memory = image.memory();
        let mut mapped = Inspector::new(RamReader::mapped(&memory));
        for (command, expected) in expected_outputs(&image) {
            let output = mapped.run(&command).unwrap_or_else(|err| panic!("{command:?}: {err}"));
            assert_eq!(output, expected, "{}", command.name());
        }
        let from_file = image.run(&Command::Check).expect("check");
        assert_eq!(mapped.run(&Command::Check).expect("check"), from_file);
        let dump = Command::Pagetable { range: None, tlb: true, pid: None };
        assert_eq!(mapped.run(&dump).expect("pagetable"), image.run(&dump).expect("pagetable"));
    }

    fn translate(image: &Image, virt: u64) -> AddressWalk {
        match image.run(&Command::Translate { addrs: vec![virt], pid: None }) {
            Ok(Output::Translate(mut list)) if list.len() == 1 => list.remove(0),
            other => panic!("{other:?}"),
        }
    }

    /// Asserts that `virt` translates to `phys` in a page of `size`, through entries each
    /// found where the one above points.
    fn assert_maps(image: &Image, virt: u64, phys: u64, size: PageSize) {
        let t = translate(image, virt);
        assert_eq!((t.phys, t.page_size, &t.stop), (Some(phys), Some(size.bytes()), &None));
        let levels = usize::from(5 - size.level());
        assert_eq!(t.levels.len(), levels, "{t:?}");
        let mut table = image.info.cr3;
        for (entry, level) in t.levels.iter().zip((1..=4u8).rev()) {
            assert_eq!(entry.entry_addr, table + 8 * table_index(virt, level) as u64, "{t:?}");
            assert!(entry.flags.starts_with('P'), "{t:?}");
            table = entry.value & ADDR_MASK;
        }
        assert_eq!(table, phys & !(size.bytes() - 1), "the leaf's frame");
        let text = vmm::inspect::pagetable::address_walk_text(&t);
        assert!(text.contains(&format!("= guest-physical {phys:#x} (")), "{text}");
    }

    #[test]
    fn translate_walks_the_direct_map_image_vmemmap_and_vmalloc_level_by_level() {
        let image = Image::sound();
        assert_maps(&image, PAGE_OFFSET + 5 * MIB + 0x123, 5 * MIB + 0x123, PageSize::Size2M);
        assert_maps(&image, PAGE_OFFSET + MIB + 0x10, MIB + 0x10, PageSize::Size4K);
        let text = image.kernel.start + 0x42;
        assert_maps(&image, KERNEL_VIRT_BASE + text, text, PageSize::Size4K);
        assert_maps(&image, PAGE_OFFSET + text, text, PageSize::Size4K);
        let pfn = 0x1234;
        let descriptor = VMEMMAP_BASE + pfn * PAGE_STRUCT_SIZE as u64;
        assert_maps(&image, descriptor, image.memmap + pfn * 64, PageSize::Size2M);
        for area in &image.vmalloc {
            for (page, &frame) in (0u64..).zip(&area.frames) {
                let virt = area.virt + page * PAGE_SIZE + 8;
                assert_maps(&image, virt, frame + 8, PageSize::Size4K);
            }
        }
        assert_maps(&image, image.ioremap + PAGE_SIZE, IOREMAP_PHYS + PAGE_SIZE, PageSize::Size4K);
    }

    #[test]
    fn translate_says_where_an_unmapped_address_stops() {
        let image = Image::sound();
        let last = image.vmalloc.last().expect("an area");
        let guard = last.virt + last.frames.len() as u64 * PAGE_SIZE;
        let hole = image.memory[0].end();
        for (virt, levels, stop) in [
            (0, 1, "PML4 entry not present"),
            (guard, 4, "PT entry not present"),
            (PAGE_OFFSET + hole, 4, "PT entry not present"),
            (PAGE_OFFSET + image.ram.size(), 3, "PD entry not present"),
            (KERNEL_VIRT_BASE + image.kernel.end, 4, "PT entry not present"),
            (0x0000_8000_0000_0000, 0, "not a canonical address"),
        ] {
            let t = translate(&image, virt);
            assert_eq!((t.phys, t.stop.as_deref(), t.levels.len()), (None, Some(stop), levels));
            let text = vmm::inspect::pagetable::address_walk_text(&t);
            assert!(text.ends_with(&format!("  not mapped: {stop}\n")), "{text}");
        }
    }

    /// QEMU's `info mem` runs of `mappings`: adjacent ranges of equal rights merge.
    fn runs_of(mappings: &[Mapped]) -> Vec<MemRun> {
        let mut sorted = mappings.to_vec();
        sorted.sort_by_key(|m| m.virt);
        let mut runs: Vec<MemRun> = Vec::new();
        for m in sorted {
            let writable = m.flags.contains(PteFlags::WRITABLE);
            match runs.last_mut() {
                Some(run) if run.end == m.virt && run.writable == writable => run.end += m.len,
                _ => {
                    runs.push(MemRun { start: m.virt, end: m.virt + m.len, user: false, writable })
                }
            }
        }
        runs
    }

    fn dump(image: &Image, range: Option<&str>, tlb: bool) -> PageTableDump {
        let range = range.map(|r| parse_range(r).expect("a range"));
        match image.run(&Command::Pagetable { range, tlb, pid: None }) {
            Ok(Output::Pagetable(dump)) => dump,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pagetable_runs_are_the_mappings_the_kernel_made() {
        let image = Image::sound();
        let all = dump(&image, None, false);
        assert_eq!(all.runs, runs_of(&image.mappings));
        assert!(all.reserved.is_empty() && all.truncated.is_none());
        let direct_ro = all.runs.iter().find(|r| r.start == PAGE_OFFSET + image.kernel.start);
        let direct_ro = direct_ro.expect("the text alias");
        assert_eq!((direct_ro.end, direct_ro.writable), (PAGE_OFFSET + image.kernel.data, false));
        let text = vmm::inspect::pagetable::dump_text(&all);
        let line = format!(
            "{:016x}-{:016x} {:016x} -r-",
            direct_ro.start,
            direct_ro.end,
            direct_ro.end - direct_ro.start
        );
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }

    #[test]
    fn pagetable_tlb_lists_every_page_once_with_qemu_letters() {
        let image = Image::sound();
        let all = dump(&image, None, true);
        assert!(all.runs.is_empty());
        // The pages tile the mappings exactly, each at its own frame.
        let mut sorted = image.mappings.clone();
        sorted.sort_by_key(|m| m.virt);
        let mut pages = all.pages.iter().peekable();
        for m in &sorted {
            let mut at = m.virt;
            while at < m.virt + m.len {
                let page = pages.next().expect("a page for every mapped byte");
                assert_eq!((page.virt, page.phys), (at, m.phys + (at - m.virt)), "{m:?}");
                at += page.size;
            }
            assert_eq!(at, m.virt + m.len, "no page straddles a mapping's end");
        }
        assert!(pages.peek().is_none(), "nothing mapped beyond the kernel's mappings");
        let letters = |virt: u64| {
            let page = all.pages.iter().find(|p| p.virt == virt).expect("a page there");
            let level = PageSize::from_bytes(page.size).expect("a page size").level();
            let entry = shared::pte::PageTableEntry::from_raw(page.entry);
            vmm::inspect::pagetable::tlb_flags(entry, level)
        };
        let k = &image.kernel;
        assert_eq!(letters(KERNEL_VIRT_BASE + k.start), "-G-------", "text: global, executable");
        assert_eq!(letters(KERNEL_VIRT_BASE + k.rodata), "XG-------", "rodata");
        assert_eq!(letters(KERNEL_VIRT_BASE + k.data), "XG------W", "data");
        assert_eq!(letters(PAGE_OFFSET + 4 * MIB), "XGP-----W", "a 2 MiB direct-map page");
        assert_eq!(letters(VMEMMAP_BASE), "XGP-----W", "the memory map");
        assert_eq!(letters(image.ioremap), "XG---C--W", "device memory, uncached");
        let text = vmm::inspect::pagetable::dump_text(&all);
        let line = format!("{:016x}: {:016x} XG------W", KERNEL_VIRT_BASE + k.data, k.data);
        assert!(text.lines().any(|l| l == line), "{line}");
    }

    #[test]
    fn pagetable_range_keeps_only_the_pages_it_overlaps() {
        let image = Image::sound();
        let text = KERNEL_VIRT_BASE + image.kernel.start;
        let three = format!("{:x}-{:x}", text + PAGE_SIZE, text + 4 * PAGE_SIZE);
        let listed: Vec<u64> =
            dump(&image, Some(&three), true).pages.iter().map(|p| p.virt).collect();
        assert_eq!(listed, [1, 2, 3].map(|p| text + p * PAGE_SIZE));
        // A range that cuts into a 2 MiB page lists the whole page, and nothing beyond.
        let cut = format!("{:x}-{:x}", PAGE_OFFSET + 5 * MIB, PAGE_OFFSET + 7 * MIB);
        let runs = dump(&image, Some(&cut), false).runs;
        let writable = true;
        let expected = MemRun {
            start: PAGE_OFFSET + 4 * MIB,
            end: PAGE_OFFSET + 8 * MIB,
            user: false,
            writable,
        };
        assert_eq!(runs, [expected]);
        // Across the start of the direct map: only its first pages.
        let across = format!("{:x}-{:x}", PAGE_OFFSET - PAGE_SIZE, PAGE_OFFSET + 2 * PAGE_SIZE);
        let listed: Vec<u64> =
            dump(&image, Some(&across), true).pages.iter().map(|p| p.virt).collect();
        assert_eq!(listed, [PAGE_OFFSET, PAGE_OFFSET + PAGE_SIZE]);
        assert!(dump(&image, Some("0-800000000000"), false).runs.is_empty(), "no lower half");
        let vmalloc =
            format!("{:x}-{:x}", shared::layout::VMALLOC_START, shared::layout::VMALLOC_END);
        let in_vmalloc: Vec<Mapped> = image
            .mappings
            .iter()
            .filter(|m| {
                (shared::layout::VMALLOC_START..shared::layout::VMALLOC_END).contains(&m.virt)
            })
            .copied()
            .collect();
        assert_eq!(dump(&image, Some(&vmalloc), false).runs, runs_of(&in_vmalloc));
    }

    fn page(image: &Image, pfn: u64) -> Result<state::PageInfo, InspectError> {
        match image.run(&Command::Page { pfn }) {
            Ok(Output::Page(info)) => Ok(info),
            Ok(other) => panic!("{other:?}"),
            Err(err) => Err(err),
        }
    }

    #[test]
    fn page_decodes_a_free_block_a_slab_an_allocated_block_and_a_table() {
        let image = Image::sound();
        let (zone, order) = image.free_list_with(2);
        let list = image.free_list(zone, order);
        let free = page(&image, list[1]).expect("a free block");
        // Handed off at boot and never used: known zero as well.
        assert_eq!(free.flag_names, ["buddy", "zero"]);
        assert_eq!((free.order, free.zone.as_deref()), (order, Some(Image::zone_name(zone))));
        assert_eq!((free.prev, free.next), (list[0], list.get(2).copied().unwrap_or(u64::MAX)));
        assert_eq!(free.addr, VMEMMAP_BASE + list[1] * PAGE_STRUCT_SIZE as u64);
        assert!(state::page_text(&free).contains("next:"), "{free:?}");
        assert_eq!(free.flags, PG_BUDDY | shared::page::PG_ZERO);

        let cache = image.cache_with_partial(1);
        let slab = image.partial(cache)[0];
        let info = page(&image, slab).expect("a slab");
        assert_eq!(info.flag_names, ["head", "slab"]);
        assert_eq!(info.slab_cache_name.as_deref(), Some(image.caches[cache].name.as_str()));
        assert_eq!(info.slab_cache, image.caches[cache].addr);
        let free_objects = image.free_objects(cache, slab);
        assert_eq!(info.slab_freelist, free_objects[0]);
        assert_eq!(
            u64::from(info.slab_objects),
            u64::from(info.slab_inuse) + free_objects.len() as u64
        );
        let text = state::page_text(&info);
        let cache_line = format!("slab: cache:{} ", image.caches[cache].name);
        assert!(text.contains(&cache_line), "{text}");

        let (block, order) = image.blocks[0];
        let info = page(&image, block).expect("an allocated block");
        // Allocation takes the known-zero mark off (it is about free memory).
        assert_eq!(
            (info.flag_names.as_slice(), info.order, info.refcount),
            (&["head"][..], order, 1)
        );

        let root = image.info.cr3 / PAGE_SIZE;
        let info = page(&image, root).expect("the root table");
        assert_eq!(info.flag_names, ["table"]);
        let used =
            image.ram.range(image.info.cr3, PAGE_SIZE).chunks(8).filter(|e| e[0] & 1 != 0).count();
        assert_eq!(info.private, used as u64, "the census counted the root's entries");
    }

    #[test]
    fn page_past_the_last_frame_is_an_argument_error() {
        let image = Image::sound();
        let err = page(&image, image.max_pfn()).expect_err("no such frame");
        assert!(matches!(err, InspectError::Argument(_)), "{err:?}");
        let last = image.max_pfn() - 1;
        assert!(err.to_string().contains(&format!("beyond the guest's last page frame {last:#x}")));
        assert_eq!(err.exit_code(), 64);
        assert!(page(&image, last).is_ok(), "the last frame decodes");
    }
}
