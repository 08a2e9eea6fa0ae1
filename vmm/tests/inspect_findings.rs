//! Every corruption `check` can name, injected into a fresh sound image (no KVM needed):
//! one test per [`FindingKind`], each asserting the kind and that the finding names the
//! right zone and order, cache and slab, frame or address. An exhaustive `match` maps each
//! kind to its corruption, so a new kind does not compile without one. The image has no
//! processes: the kinds about a process's memory are injected into the RAM of a real
//! guest, stopped while its processes live, by `tests/tests/process_inspect.rs`.

mod support;

mod inspect {
    mod check_finds {
        use crate::support::image::{Image, IOREMAP_PHYS};
        use shared::layout::{KERNEL_VIRT_BASE, MIB, PAGE_OFFSET, PAGE_SIZE, VMEMMAP_BASE};
        use shared::mm::{Region, PCP_CAPACITY};
        use shared::page::{MAX_ORDER, NO_PFN, PG_BUDDY, PG_HEAD, PG_PCP};
        use shared::pte::PteFlags;
        use std::collections::BTreeSet;
        use vmm::inspect::check::FindingKind;

        /// Corrupts an image minimally so that `check` must find one kind; returns the
        /// fragments one finding of that kind must contain.
        type Corruption = fn(&mut Image) -> Vec<String>;

        /// The kinds about processes, which `tests/tests/process_inspect.rs` injects (one
        /// test each) into a real guest's RAM: the image here has none.
        const PROCESS_KINDS: [FindingKind; 10] = [
            FindingKind::TaskList,
            FindingKind::ProcessVmas,
            FindingKind::RssMismatch,
            FindingKind::UserPteOutsideVma,
            FindingKind::UserPteExceedsVma,
            FindingKind::MapcountMismatch,
            FindingKind::CowWritable,
            FindingKind::KernelHalfDiffers,
            FindingKind::LruList,
            FindingKind::SwapEntry,
        ];

        /// The corruption for each kind (`None`: one of [`PROCESS_KINDS`]).
        fn corruption(kind: FindingKind) -> Option<Corruption> {
            Some(match kind {
                FindingKind::DoubleOwner => corrupt::double_owner,
                FindingKind::BeyondLastFrame => corrupt::beyond_last_frame,
                FindingKind::OwnedByNobody => corrupt::owned_by_nobody,
                FindingKind::FreeInReservation => corrupt::free_in_reservation,
                FindingKind::FreeListLoop => corrupt::free_list_loop,
                FindingKind::FreeListBadBlock => corrupt::free_list_bad_block,
                FindingKind::FreeListWrongFlags => corrupt::free_list_wrong_flags,
                FindingKind::FreeListBackLink => corrupt::free_list_back_link,
                FindingKind::FreeListUnreadable => corrupt::free_list_unreadable,
                FindingKind::FreeCountMismatch => corrupt::free_count_mismatch,
                FindingKind::PcpOverflow => corrupt::pcp_overflow,
                FindingKind::PcpBadBlock => corrupt::pcp_bad_block,
                FindingKind::StrayBuddyFlag => corrupt::stray_buddy_flag,
                FindingKind::StrayPcpFlag => corrupt::stray_pcp_flag,
                FindingKind::MemmapUnreadable => corrupt::memmap_unreadable,
                FindingKind::BadBlockOrder => corrupt::bad_block_order,
                FindingKind::ManagedMismatch => corrupt::managed_mismatch,
                FindingKind::UnknownSlabCache => corrupt::unknown_slab_cache,
                FindingKind::SlabGeometry => corrupt::slab_geometry,
                FindingKind::SlabFreelistBadLink => corrupt::slab_freelist_bad_link,
                FindingKind::SlabFreelistLoop => corrupt::slab_freelist_loop,
                FindingKind::SlabObjectCount => corrupt::slab_object_count,
                FindingKind::SlabRightRedzone => corrupt::slab_right_redzone,
                FindingKind::SlabKmallocRedzone => corrupt::slab_kmalloc_redzone,
                FindingKind::SlabPoisonOverwritten => corrupt::slab_poison_overwritten,
                FindingKind::PartialListLoop => corrupt::partial_list_loop,
                FindingKind::PartialListBadSlab => corrupt::partial_list_bad_slab,
                FindingKind::PartialListBackLink => corrupt::partial_list_back_link,
                FindingKind::PartialListFullSlab => corrupt::partial_list_full_slab,
                FindingKind::EmptySlabCount => corrupt::empty_slab_count,
                FindingKind::CacheCounters => corrupt::cache_counters,
                FindingKind::ReservedBits => corrupt::reserved_bits,
                FindingKind::UserMapping => corrupt::user_mapping,
                FindingKind::OutsideKernelRegions => corrupt::outside_kernel_regions,
                FindingKind::OutsideRam => corrupt::outside_ram,
                FindingKind::WrongFrame => corrupt::wrong_frame,
                FindingKind::WrongRights => corrupt::wrong_rights,
                FindingKind::TableMappedOutsideDirectMap => {
                    corrupt::table_mapped_outside_direct_map
                }
                FindingKind::VmallocTarget => corrupt::vmalloc_target,
                FindingKind::TableEnumeration => corrupt::table_enumeration,
                FindingKind::KnownZeroNotZero => corrupt::known_zero_not_zero,
                FindingKind::TaskList
                | FindingKind::ProcessVmas
                | FindingKind::RssMismatch
                | FindingKind::UserPteOutsideVma
                | FindingKind::UserPteExceedsVma
                | FindingKind::MapcountMismatch
                | FindingKind::CowWritable
                | FindingKind::KernelHalfDiffers
                | FindingKind::LruList
                | FindingKind::SwapEntry => return None,
            })
        }

        /// Corrupts a fresh image for `kind` and asserts that `check` names it.
        fn assert_finds(kind: FindingKind) {
            let mut image = Image::sound();
            let corrupt = corruption(kind).expect("a kind the image can hold");
            let expected = corrupt(&mut image);
            let report = image.check();
            let texts: Vec<&str> = report
                .findings
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| f.text.as_str())
                .collect();
            assert!(
                texts.iter().any(|text| expected.iter().all(|e| text.contains(e.as_str()))),
                "{kind:?}: no finding says {expected:?}; findings: {:#?}",
                report.findings
            );
        }

        /// One test per kind, and the list of kinds tested.
        macro_rules! finding_tests {
            ($($test:ident: $kind:ident,)*) => {
                const TESTED: &[FindingKind] = &[$(FindingKind::$kind),*];
                $(
                    #[test]
                    fn $test() {
                        assert_finds(FindingKind::$kind);
                    }
                )*
            };
        }

        finding_tests! {
            double_owner: DoubleOwner,
            beyond_last_frame: BeyondLastFrame,
            owned_by_nobody: OwnedByNobody,
            free_in_reservation: FreeInReservation,
            free_list_loop: FreeListLoop,
            free_list_bad_block: FreeListBadBlock,
            free_list_wrong_flags: FreeListWrongFlags,
            free_list_back_link: FreeListBackLink,
            free_list_unreadable: FreeListUnreadable,
            free_count_mismatch: FreeCountMismatch,
            pcp_overflow: PcpOverflow,
            pcp_bad_block: PcpBadBlock,
            stray_buddy_flag: StrayBuddyFlag,
            stray_pcp_flag: StrayPcpFlag,
            memmap_unreadable: MemmapUnreadable,
            bad_block_order: BadBlockOrder,
            managed_mismatch: ManagedMismatch,
            unknown_slab_cache: UnknownSlabCache,
            slab_geometry: SlabGeometry,
            slab_freelist_bad_link: SlabFreelistBadLink,
            slab_freelist_loop: SlabFreelistLoop,
            slab_object_count: SlabObjectCount,
            slab_right_redzone: SlabRightRedzone,
            slab_kmalloc_redzone: SlabKmallocRedzone,
            slab_poison_overwritten: SlabPoisonOverwritten,
            partial_list_loop: PartialListLoop,
            partial_list_bad_slab: PartialListBadSlab,
            partial_list_back_link: PartialListBackLink,
            partial_list_full_slab: PartialListFullSlab,
            empty_slab_count: EmptySlabCount,
            cache_counters: CacheCounters,
            reserved_bits: ReservedBits,
            user_mapping: UserMapping,
            outside_kernel_regions: OutsideKernelRegions,
            outside_ram: OutsideRam,
            wrong_frame: WrongFrame,
            wrong_rights: WrongRights,
            table_mapped_outside_direct_map: TableMappedOutsideDirectMap,
            vmalloc_target: VmallocTarget,
            table_enumeration: TableEnumeration,
            known_zero_not_zero: KnownZeroNotZero,
        }

        /// Every string a JSON schema allows as a constant or in an `enum`.
        fn schema_names(value: &serde_json::Value, names: &mut BTreeSet<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(name)) = map.get("const") {
                        names.insert(name.clone());
                    }
                    if let Some(serde_json::Value::Array(list)) = map.get("enum") {
                        names.extend(list.iter().filter_map(|v| v.as_str().map(String::from)));
                    }
                    map.values().for_each(|v| schema_names(v, names));
                }
                serde_json::Value::Array(list) => list.iter().for_each(|v| schema_names(v, names)),
                _ => {}
            }
        }

        #[test]
        fn every_kind_has_a_corruption_and_a_test() {
            // The JSON schema lists every kind `check` can report, independently of the
            // tests' list; `corruption`'s exhaustive match gives each one an injection.
            let schema = serde_json::to_value(schemars::schema_for!(FindingKind)).expect("json");
            let mut all = BTreeSet::new();
            schema_names(&schema, &mut all);
            assert_eq!(all.len(), 51, "the kinds `check` knows: {all:?}");
            let tested: BTreeSet<String> = TESTED
                .iter()
                .chain(&PROCESS_KINDS)
                .map(|kind| {
                    assert_eq!(corruption(*kind).is_none(), PROCESS_KINDS.contains(kind));
                    let name = serde_json::to_value(kind).expect("json");
                    name.as_str().expect("a name").to_string()
                })
                .collect();
            assert_eq!(tested.len(), TESTED.len() + PROCESS_KINDS.len(), "a kind tested twice");
            assert_eq!(tested, all, "kinds without a test, or tests of no kind");
        }

        #[test]
        fn vmalloc_target_names_device_memory_mapped_cached() {
            let mut image = Image::sound();
            let (entry, _) = image.leaf(image.ioremap);
            let value = image.word(entry);
            image.set_word(entry, value & !PteFlags::NO_CACHE.bits());
            let report = image.check();
            let expected = format!(
                "{:#x} -> {IOREMAP_PHYS:#x} (4 KiB): device memory mapped cached",
                image.ioremap
            );
            let found = report.findings.iter().filter(|f| f.kind == FindingKind::VmallocTarget);
            assert!(
                found.clone().any(|f| f.text == expected),
                "{expected}\n{:#?}",
                report.findings
            );
            assert_eq!(report.findings.len(), 1, "nothing else: {:#?}", report.findings);
        }

        /// The corruptions, in `FindingKind`'s order.
        mod corrupt {
            use super::*;

            /// A free block's head also flagged allocated: free and allocated at once.
            pub fn double_owner(image: &mut Image) -> Vec<String> {
                let (zone, order) = image.free_list_with(1);
                let pfn = image.free_list(zone, order)[0];
                image.update_page(pfn, |page| page.flags |= PG_HEAD);
                vec![format!("pfn {pfn:#x} is both free (buddy) and other allocated")]
            }

            /// The last frame made the head of an allocated block of two pages.
            pub fn beyond_last_frame(image: &mut Image) -> Vec<String> {
                let last = image.max_pfn() - 1;
                image.update_page(last, |page| {
                    page.flags |= PG_HEAD;
                    page.order = 1;
                });
                vec![format!(
                    "pfn {last:#x}+2: other allocated beyond the last page frame {last:#x}"
                )]
            }

            /// An allocated page forgotten: its `struct page` cleared.
            pub fn owned_by_nobody(image: &mut Image) -> Vec<String> {
                let pfn = image.block(0);
                image.update_page(pfn, |page| *page = shared::page::Page::default());
                vec![format!("1 RAM pages are owned by nobody"), format!("the first pfn {pfn:#x}")]
            }

            /// memblock reserves a free page: a region appended to its reserved array.
            pub fn free_in_reservation(image: &mut Image) -> Vec<String> {
                let (zone, order) = image.free_list_with(1);
                let pfn = image.free_list(zone, order)[0];
                let at = image.region_phys(false, image.info.memblock_reserved_cnt);
                image.ram.write(at, &Region { base: pfn * PAGE_SIZE, size: PAGE_SIZE });
                image.update_info(|info| info.memblock_reserved_cnt += 1);
                vec![format!(
                    "pfn {pfn:#x} is free but inside memblock reservation {:#x}+0x1000",
                    pfn * PAGE_SIZE
                )]
            }

            /// A free list's head links to itself.
            pub fn free_list_loop(image: &mut Image) -> Vec<String> {
                let (zone, order) = image.free_list_with(1);
                let head = image.free_list(zone, order)[0];
                image.update_page(head, |page| page.next = head);
                let name = Image::zone_name(zone);
                vec![format!(
                    "zone {name} order {order} free list, block 1 (pfn {head:#x}): met twice"
                )]
            }

            /// A free list of order 1 or more starts at a frame its order does not align.
            pub fn free_list_bad_block(image: &mut Image) -> Vec<String> {
                let zone = 1;
                let order = (1..=MAX_ORDER)
                    .find(|&order| !image.free_list(zone, order).is_empty())
                    .expect("a free block above order 0");
                let bad = image.free_list(zone, order)[0] + 1;
                image.set_word(image.free_area_phys(zone, order), bad);
                let name = Image::zone_name(zone);
                vec![format!(
                    "zone {name} order {order} free list, block 0 (pfn {bad:#x}): misaligned or outside the zone"
                )]
            }

            /// A free block's `struct page` records the next order up.
            pub fn free_list_wrong_flags(image: &mut Image) -> Vec<String> {
                let (zone, order) = image.free_list_with(1);
                let head = image.free_list(zone, order)[0];
                let wrong = if order < MAX_ORDER { order + 1 } else { order - 1 };
                image.update_page(head, |page| page.order = wrong);
                let name = Image::zone_name(zone);
                let flags = image.page(head).flags;
                assert_ne!(flags & PG_BUDDY, 0);
                vec![format!(
                    "zone {name} order {order} free list, block 0 (pfn {head:#x}): not a free block of this order (flags {flags:#x}, order {wrong})"
                )]
            }

            /// The second block of a free list forgets the first.
            pub fn free_list_back_link(image: &mut Image) -> Vec<String> {
                let (zone, order) = image.free_list_with(2);
                let list = image.free_list(zone, order);
                image.update_page(list[1], |page| page.prev = NO_PFN);
                let name = Image::zone_name(zone);
                vec![format!(
                    "zone {name} order {order} free list, block 1 (pfn {:#x}): back link is {NO_PFN:#x}, expected {:#x}",
                    list[1], list[0]
                )]
            }

            /// A free list runs on to a frame past the last `struct page` (its zone made to
            /// span it).
            pub fn free_list_unreadable(image: &mut Image) -> Vec<String> {
                let zone = 1;
                let order = image.free_order(zone, 1);
                let list = image.free_list(zone, order);
                let beyond = image.max_pfn().next_multiple_of(1 << order);
                let last = *list.last().expect("a block");
                image.update_page(last, |page| page.next = beyond);
                image.update_zone(zone, |z| z.end_pfn = beyond + (1 << order));
                let name = Image::zone_name(zone);
                vec![format!(
                    "zone {name} order {order} free list, block {} (pfn {beyond:#x}): pfn {beyond:#x} is beyond the guest's last page frame",
                    list.len()
                )]
            }

            /// A free list's count is one too many.
            pub fn free_count_mismatch(image: &mut Image) -> Vec<String> {
                let (zone, order) = image.free_list_with(1);
                let held = image.free_list(zone, order).len();
                image.update_zone(zone, |z| z.free_area[order as usize].nr_free += 1);
                let name = Image::zone_name(zone);
                vec![format!(
                    "zone {name} order {order}: nr_free is {} but the list holds {held} blocks",
                    held + 1
                )]
            }

            /// A per-CPU list counts one block more than it can hold.
            pub fn pcp_overflow(image: &mut Image) -> Vec<String> {
                let (zone, order) = image.pcp_list(0);
                let over = PCP_CAPACITY as u64 + 1;
                image.update_zone(zone, |z| z.pcp[order as usize].count = over);
                let name = Image::zone_name(zone);
                vec![format!(
                    "zone {name}: per-CPU list of order {order} holds {over} blocks, more than {PCP_CAPACITY}"
                )]
            }

            /// A per-CPU block's `struct page` records another order.
            pub fn pcp_bad_block(image: &mut Image) -> Vec<String> {
                let (zone, order) = image.pcp_list(0);
                let pfn = image.zone(zone).pcp[order as usize].pfns[0];
                image.update_page(pfn, |page| page.order = order + 1);
                let name = Image::zone_name(zone);
                vec![format!("zone {name}: per-CPU block {pfn:#x} of order {order} is misaligned")]
            }

            /// An allocated page also flagged free.
            pub fn stray_buddy_flag(image: &mut Image) -> Vec<String> {
                let pfn = image.block(0);
                image.update_page(pfn, |page| page.flags |= PG_BUDDY);
                vec![format!("pfn {pfn:#x} is flagged PG_BUDDY but on no free list")]
            }

            /// A free block marked known zero whose memory holds a word.
            pub fn known_zero_not_zero(image: &mut Image) -> Vec<String> {
                let (pfn, order) = image.largest_free_block();
                image.update_page(pfn, |page| page.flags |= shared::page::PG_ZERO);
                let gpa = pfn * PAGE_SIZE + (PAGE_SIZE << order) - 8;
                image.set_word(gpa, 0x5a);
                vec![
                    format!("(pfn {pfn:#x}): marked known zero, holds data at {gpa:#x}"),
                    format!("order {order}"),
                ]
            }

            /// An allocated page also flagged per-CPU.
            pub fn stray_pcp_flag(image: &mut Image) -> Vec<String> {
                let pfn = image.block(0);
                image.update_page(pfn, |page| page.flags |= PG_PCP);
                vec![format!("pfn {pfn:#x} is flagged PG_PCP but on no per-CPU list")]
            }

            /// The memory map's 2 MiB page unmapped.
            pub fn memmap_unreadable(image: &mut Image) -> Vec<String> {
                let entry = image.entry(VMEMMAP_BASE, 2);
                let value = image.word(entry);
                image.set_word(entry, value & !PteFlags::PRESENT.bits());
                let first = &image.memory[0];
                vec![format!(
                    "struct pages of pfn {:#x}+{} unreadable",
                    first.base / PAGE_SIZE,
                    first.size / PAGE_SIZE
                )]
            }

            /// An allocated page of an order no block has.
            pub fn bad_block_order(image: &mut Image) -> Vec<String> {
                let pfn = image.block(0);
                image.update_page(pfn, |page| page.order = MAX_ORDER + 1);
                vec![format!(
                    "pfn {pfn:#x}: allocated block of order {} (at most {MAX_ORDER})",
                    MAX_ORDER + 1
                )]
            }

            /// A zone manages one page more than it accounts for.
            pub fn managed_mismatch(image: &mut Image) -> Vec<String> {
                let zone = image.zone(1);
                let (managed, free, pcp) = (zone.managed, zone.free, zone.pcp_pages());
                image.update_zone(1, |z| z.managed += 1);
                vec![format!(
                    "zone {}: managed is {} but free {free} + per-CPU {pcp} + allocated {} = {managed}",
                    Image::zone_name(1),
                    managed + 1,
                    managed - free - pcp
                )]
            }

            /// A current slab points at no cache vmcoreinfo lists.
            pub fn unknown_slab_cache(image: &mut Image) -> Vec<String> {
                let cache = (0..image.caches.len())
                    .find(|&c| image.cache(c).cpu_slab != NO_PFN)
                    .expect("a cache with a current slab");
                let slab = image.cache(cache).cpu_slab;
                let bogus = image.caches[cache].addr + 8;
                image.update_page(slab, |page| page.slab_cache = bogus);
                vec![format!("pfn {slab:#x}: slab of unknown cache {bogus:#x}")]
            }

            /// A slab claims one object more than its cache's slabs hold.
            pub fn slab_geometry(image: &mut Image) -> Vec<String> {
                let cache = image.cache_with_partial(1);
                let slab = image.partial(cache)[0];
                let raw = image.cache(cache);
                image.update_page(slab, |page| page.slab_objects += 1);
                vec![format!(
                    "cache {} slab pfn {slab:#x}: order {} and {} objects, the cache says order {} and {} objects of {} bytes",
                    image.caches[cache].name,
                    raw.order,
                    raw.objects + 1,
                    raw.order,
                    raw.objects,
                    raw.stride
                )]
            }

            /// A free object of a partial slab (debug family: the link past the red zone)
            /// links into another page.
            pub fn slab_freelist_bad_link(image: &mut Image) -> Vec<String> {
                let cache = image.cache_named("debug-kmalloc-1k");
                let slab = image.slab_with(cache, 1, 0);
                let object = image.free_objects(cache, slab)[0];
                let bad = PAGE_OFFSET + 0x123_4568;
                let link = image.link_phys(cache, object);
                image.set_word(link, bad);
                vec![format!(
                    "cache {} slab pfn {slab:#x}: freelist link {bad:#x} after 1 free objects is not an object of the slab",
                    image.caches[cache].name
                )]
            }

            /// A free object links to itself.
            pub fn slab_freelist_loop(image: &mut Image) -> Vec<String> {
                let cache = image.cache_named("kmalloc-64");
                let slab = image.slab_with(cache, 1, 0);
                let object = image.free_objects(cache, slab)[0];
                let link = image.link_phys(cache, object);
                image.set_word(link, object);
                let index = (object - (PAGE_OFFSET + slab * PAGE_SIZE)) / image.cache(cache).stride;
                vec![format!(
                    "cache {} slab pfn {slab:#x}: freelist loops back to object {index} after 1 free objects",
                    image.caches[cache].name
                )]
            }

            /// A slab's freelist cut after its first free object.
            pub fn slab_object_count(image: &mut Image) -> Vec<String> {
                let cache = image.cache_named("kmalloc-64");
                let slab = image.slab_with(cache, 2, 0);
                let object = image.free_objects(cache, slab)[0];
                let link = image.link_phys(cache, object);
                image.set_word(link, 0);
                let page = image.page(slab);
                vec![format!(
                    "cache {} slab pfn {slab:#x}: 1 free objects and {} in use, but the slab has {} objects",
                    image.caches[cache].name, page.slab_inuse, page.slab_objects
                )]
            }

            /// A live object of the `slub_debug` family whose caller asked for less than
            /// its class size (so it has a kmalloc red zone), not in the quarantined slab:
            /// (cache, slab, address, requested size).
            fn debug_object(image: &Image) -> (usize, u64, u64, u64) {
                image
                    .objects
                    .iter()
                    .filter(|o| image.caches[o.cache].name.starts_with("debug-kmalloc-"))
                    .find_map(|o| {
                        let raw = image.cache(o.cache);
                        let pfn = (o.addr - PAGE_OFFSET) / PAGE_SIZE;
                        let slab = pfn & !((1u64 << raw.order) - 1);
                        let offset = raw.requested_size_offset().expect("a debug kmalloc class");
                        let requested = image.word(o.addr - PAGE_OFFSET + offset);
                        (slab != image.quarantined.1 && requested < raw.object_size)
                            .then_some((o.cache, slab, o.addr, requested))
                    })
                    .expect("a live debug object with a kmalloc red zone")
            }

            /// The first byte after a live debug object overwritten.
            pub fn slab_right_redzone(image: &mut Image) -> Vec<String> {
                let (cache, slab, object, _) = debug_object(image);
                let size = image.cache(cache).object_size;
                let at = object - PAGE_OFFSET + size;
                image.set_word(at, image.word(at) & !0xff);
                vec![format!(
                    "cache {} slab pfn {slab:#x}: object {object:#x} (in use): Right Redzone overwritten at byte {size} (0x00, expected 0xcc)",
                    image.caches[cache].name
                )]
            }

            /// The first byte past what a live debug object's caller asked for
            /// overwritten: off by one inside the size class.
            pub fn slab_kmalloc_redzone(image: &mut Image) -> Vec<String> {
                let (cache, slab, object, requested) = debug_object(image);
                let at = object - PAGE_OFFSET + requested;
                // The word holding that byte, rewritten with the byte cleared.
                let word = at & !7;
                let shift = (at - word) * 8;
                image.set_word(word, image.word(word) & !(0xff << shift));
                vec![format!(
                    "cache {} slab pfn {slab:#x}: object {object:#x} (in use): kmalloc Redzone overwritten at byte {requested} (0x00) of {requested} requested",
                    image.caches[cache].name
                )]
            }

            /// The first byte of a free debug object's payload written: a write after
            /// free.
            pub fn slab_poison_overwritten(image: &mut Image) -> Vec<String> {
                let (cache, slab, object) = (0..image.caches.len())
                    .filter(|&c| image.caches[c].name.starts_with("debug-kmalloc-"))
                    .flat_map(|c| image.slabs(c).into_iter().map(move |slab| (c, slab)))
                    .filter(|&(_, slab)| slab != image.quarantined.1)
                    .find_map(|(c, slab)| {
                        image.free_objects(c, slab).first().map(|&o| (c, slab, o))
                    })
                    .expect("a free debug object");
                let at = object - PAGE_OFFSET;
                image.set_word(at, (image.word(at) & !0xff) | 1);
                vec![format!(
                    "cache {} slab pfn {slab:#x}: object {object:#x} (free): Poison overwritten at byte 0 (0x01): a write after free",
                    image.caches[cache].name
                )]
            }

            /// A partial list's last slab links back to its first.
            pub fn partial_list_loop(image: &mut Image) -> Vec<String> {
                let cache = image.cache_with_partial(2);
                let list = image.partial(cache);
                let last = *list.last().expect("a partial slab");
                image.update_page(last, |page| page.next = list[0]);
                vec![format!(
                    "cache {} partial list, slab {} (pfn {:#x}): met twice: the list loops",
                    image.caches[cache].name,
                    list.len(),
                    list[0]
                )]
            }

            /// A partial list starts at an allocated block that is no slab.
            pub fn partial_list_bad_slab(image: &mut Image) -> Vec<String> {
                let cache = image.cache_with_partial(1);
                let block = image.block(0);
                image.update_cache(cache, |raw| raw.partial = block);
                let flags = image.page(block).flags;
                assert_eq!(flags & !shared::page::PG_ZERO, PG_HEAD, "an allocated block");
                vec![format!(
                    "cache {} partial list, slab 0 (pfn {block:#x}): not a slab of this cache off the CPU (flags {flags:#x})",
                    image.caches[cache].name
                )]
            }

            /// A partial list's second slab forgets the first.
            pub fn partial_list_back_link(image: &mut Image) -> Vec<String> {
                let cache = image.cache_with_partial(2);
                let list = image.partial(cache);
                image.update_page(list[1], |page| page.prev = NO_PFN);
                vec![format!(
                    "cache {} partial list, slab 1 (pfn {:#x}): back link is {NO_PFN:#x}, expected {:#x}",
                    image.caches[cache].name, list[1], list[0]
                )]
            }

            /// A full slab pushed onto its cache's partial list.
            pub fn partial_list_full_slab(image: &mut Image) -> Vec<String> {
                let cache = (0..image.caches.len())
                    .find(|&c| image.full_slab(c).is_some())
                    .expect("a cache with a full slab");
                let full = image.full_slab(cache).expect("a full slab");
                let head = image.cache(cache).partial;
                image.update_page(full, |page| (page.next, page.prev) = (head, NO_PFN));
                if head != NO_PFN {
                    image.update_page(head, |page| page.prev = full);
                }
                image.update_cache(cache, |raw| raw.partial = full);
                let objects = image.page(full).slab_objects;
                vec![format!(
                    "cache {} partial list, slab 0 (pfn {full:#x}): full ({objects} of {objects} objects in use)",
                    image.caches[cache].name
                )]
            }

            /// A cache counts one empty slab more than its partial list holds.
            pub fn empty_slab_count(image: &mut Image) -> Vec<String> {
                let cache = image.cache_named("kmalloc-512");
                let empty = image.cache(cache).empty;
                assert!(empty > 0, "the image keeps an emptied kmalloc-512 slab");
                image.update_cache(cache, |raw| raw.empty += 1);
                vec![format!(
                    "cache {}: counts {} empty slabs, its partial list holds {empty}",
                    image.caches[cache].name,
                    empty + 1
                )]
            }

            /// A cache counts one object more than its slabs hold.
            pub fn cache_counters(image: &mut Image) -> Vec<String> {
                let cache = image.cache_named("debug-kmalloc-16");
                let raw = image.cache(cache);
                image.update_cache(cache, |raw| raw.in_use += 1);
                vec![format!(
                    "cache {}: counts {} objects in {} slabs, its slabs hold {} objects in {} slabs",
                    image.caches[cache].name,
                    raw.in_use + 1,
                    raw.slabs,
                    raw.in_use,
                    raw.slabs
                )]
            }

            /// PS in the direct map's PML4 entry, where it is reserved.
            pub fn reserved_bits(image: &mut Image) -> Vec<String> {
                let entry = image.entry(PAGE_OFFSET, 4);
                let value = image.word(entry) | PteFlags::HUGE.bits();
                image.set_word(entry, value);
                vec![format!(
                    "PML4 entry at {entry:#x} (for {PAGE_OFFSET:#x}) = {value:#x} sets a reserved bit"
                )]
            }

            /// A direct-map page made user-accessible.
            pub fn user_mapping(image: &mut Image) -> Vec<String> {
                let virt = PAGE_OFFSET + MIB;
                let (entry, _) = image.leaf(virt);
                let value = image.word(entry) | PteFlags::USER.bits();
                image.set_word(entry, value);
                vec![format!(
                    "{virt:#x} -> {MIB:#x} (4 KiB): a user-accessible or lower-half mapping in the kernel's tree"
                )]
            }

            /// A 2 MiB page in the kernel image's page directory, far past the image.
            pub fn outside_kernel_regions(image: &mut Image) -> Vec<String> {
                let image_pd = image.entry(KERNEL_VIRT_BASE + image.kernel.start, 2) & !0xfff;
                let slot = 100;
                let virt = KERNEL_VIRT_BASE + slot * 2 * MIB;
                let leaf =
                    PteFlags::PRESENT | PteFlags::HUGE | PteFlags::GLOBAL | PteFlags::NO_EXECUTE;
                image.set_word(image_pd + 8 * slot, (4 * MIB) | leaf.bits());
                vec![format!(
                    "{virt:#x} -> {:#x} (2048 KiB): outside the direct map, vmalloc, vmemmap and kernel image",
                    4 * MIB
                )]
            }

            /// A direct-map 2 MiB page pointed past RAM.
            pub fn outside_ram(image: &mut Image) -> Vec<String> {
                let virt = PAGE_OFFSET + 4 * MIB;
                let (entry, level) = image.leaf(virt);
                assert_eq!(level, 2, "a 2 MiB page");
                let beyond = image.ram.size().next_multiple_of(1 << 30);
                let value = (image.word(entry) & !shared::pte::ADDR_MASK) | beyond;
                image.set_word(entry, value);
                vec![format!("{virt:#x} -> {beyond:#x} (2048 KiB): maps frames beyond guest RAM")]
            }

            /// A direct-map 2 MiB page pointed at the next one's frames.
            pub fn wrong_frame(image: &mut Image) -> Vec<String> {
                let virt = PAGE_OFFSET + 4 * MIB;
                let (entry, _) = image.leaf(virt);
                let value = image.word(entry) + 2 * MIB;
                image.set_word(entry, value);
                vec![format!(
                    "{virt:#x} -> {:#x} (2048 KiB): a direct-map leaf must map frame {:#x}",
                    6 * MIB,
                    4 * MIB
                )]
            }

            /// The direct map's alias of the kernel's first text page made writable.
            pub fn wrong_rights(image: &mut Image) -> Vec<String> {
                let text = image.kernel.start;
                let (entry, _) = image.leaf(PAGE_OFFSET + text);
                let value = image.word(entry) | PteFlags::WRITABLE.bits();
                image.set_word(entry, value);
                vec![format!(
                    "{:#x} -> {text:#x} (4 KiB): a writable alias of the kernel's text or rodata",
                    PAGE_OFFSET + text
                )]
            }

            /// A vmalloc page pointed at the page table that maps it.
            pub fn table_mapped_outside_direct_map(image: &mut Image) -> Vec<String> {
                let virt = image.vmalloc[0].virt;
                let (entry, _) = image.leaf(virt);
                let table = entry & !0xfff;
                let value = (image.word(entry) & !shared::pte::ADDR_MASK) | table;
                image.set_word(entry, value);
                vec![format!(
                    "{virt:#x} -> {table:#x}: maps page table pfn {:#x}, which only the direct map may",
                    table / PAGE_SIZE
                )]
            }

            /// A vmalloc page pointed at a free frame.
            pub fn vmalloc_target(image: &mut Image) -> Vec<String> {
                let virt = image.vmalloc[0].virt;
                let (entry, _) = image.leaf(virt);
                let (zone, order) = image.free_list_with(1);
                let free = image.free_list(zone, order)[0] * PAGE_SIZE;
                let value = (image.word(entry) & !shared::pte::ADDR_MASK) | free;
                image.set_word(entry, value);
                vec![format!(
                    "{virt:#x} -> {free:#x}: a vmalloc page must be an allocated frame, pfn {:#x} is free (buddy)",
                    free / PAGE_SIZE
                )]
            }

            /// Every PML4 entry points back at the PML4: the tables alias each other.
            pub fn table_enumeration(image: &mut Image) -> Vec<String> {
                image.alias_every_pml4_entry();
                vec!["the page tables read more than".into(), "tables alias each other".into()]
            }
        }
    }
}
