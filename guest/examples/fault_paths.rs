//! The lib code of the user fault and fork paths in a plain loop, for instruction counts
//! (`valgrind --tool=callgrind`), since emulated guest instructions are what those paths
//! cost on an emulating KVM:
//!
//! ```text
//! cargo build --release -p guest --example fault_paths
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' \
//!     target/release/examples/fault_paths demand-zero 4096
//! ```
//!
//! Arguments: the path (`demand-zero`: find the VMA, allocate, zero and map a page;
//! `cow`: a write to a page shared with one other process, which copies it; `reuse`: a
//! write to a page whose other sharer has gone; `fork`: copy the entries of a process's
//! pages and take a reference on each) and how many pages. Only `measured` is counted, so
//! the count divided by the pages is the path's cost per page, set-up excluded. The
//! memory is the real buddy allocator and `struct page` array over host memory; page
//! tables are host arrays; zeroing and copying are real 4 KiB stores.
#![allow(clippy::cast_possible_truncation, reason = "small constants and page indices")]

use guest::anon::{self, AnonMemory};
use guest::buddy::{Buddy, SliceMemmap};
use guest::paging::VirtPage;
use guest::paging::{Mapper, PageSize, PageTableEntry, PteFlags, TableAlloc, TableMemory};
use guest::vma::{access_allowed, anon_flags, Vmas};
use guest::vmalloc::VmallocMemory;
use shared::addr::{PhysAddr, VirtAddr};
use shared::page::{Page, ZoneType};
use shared::process::{Vma, VmaKind};
use std::process::ExitCode;

const USAGE: &str = "usage: fault_paths demand-zero|cow|reuse|fork PAGES";
/// Page frames the buddy allocator manages (64 MiB), from 4 GiB.
const FRAMES: u64 = 1 << 14;
const BASE_PFN: u64 = 1 << 20;
/// Where the page tables' "physical" addresses start (below the frames).
const TABLE_BASE: u64 = 0x1000_0000;
const USER: u64 = 0x1000_0000_0000;
const RW: PteFlags = PteFlags::USER.union(PteFlags::WRITABLE);

/// Page tables in host arrays, data frames from the buddy allocator, backed by host memory.
struct Host {
    tables: Vec<[PageTableEntry; 512]>,
    used: Vec<u64>,
    buddy: Buddy<SliceMemmap<'static>>,
    data: Vec<[u64; 512]>,
}

impl Host {
    fn new() -> Self {
        let pages: &'static mut [Page] =
            Box::leak(vec![Page::default(); FRAMES as usize].into_boxed_slice());
        let mut buddy = Buddy::new(SliceMemmap { base_pfn: BASE_PFN, pages });
        buddy.add_present(BASE_PFN, BASE_PFN + FRAMES);
        buddy.hand_off(BASE_PFN, BASE_PFN + FRAMES);
        buddy.setup_watermarks();
        Self { tables: Vec::new(), used: Vec::new(), buddy, data: vec![[0; 512]; FRAMES as usize] }
    }

    fn frame(&mut self, frame: PhysAddr) -> &mut [u64; 512] {
        &mut self.data[(frame.pfn() - BASE_PFN) as usize]
    }
}

impl TableMemory for Host {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        &mut self.tables[((table.as_u64() - TABLE_BASE) >> 12) as usize]
    }
}

impl TableAlloc for Host {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        &mut self.used[((table.as_u64() - TABLE_BASE) >> 12) as usize]
    }
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        self.tables.push([PageTableEntry::UNUSED; 512]);
        self.used.push(0);
        Some(PhysAddr::new(TABLE_BASE + ((self.tables.len() as u64 - 1) << 12)))
    }
    fn free_table(&mut self, _table: PhysAddr) {}
}

impl VmallocMemory for Host {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        Some(PhysAddr::new(self.buddy.alloc_page(ZoneType::Normal)? << 12))
    }
    fn free_frame(&mut self, frame: PhysAddr) {
        let _ = self.buddy.free_page(frame.pfn());
    }
}

impl guest::lru::LruMemory for Host {
    fn lru_page(&mut self, pfn: u64) -> Option<&mut Page> {
        guest::buddy::Memmap::page(&mut self.buddy.memmap, pfn)
    }
    fn lruvec(&mut self) -> &mut shared::mm::Lruvec {
        &mut self.buddy.lruvec
    }
}

impl AnonMemory for Host {
    fn page(&mut self, frame: PhysAddr) -> Option<&mut Page> {
        guest::buddy::Memmap::page(&mut self.buddy.memmap, frame.pfn())
    }
    fn zero_frame(&mut self, frame: PhysAddr) -> bool {
        self.frame(frame).fill(0);
        true
    }
    fn copy_frame(&mut self, from: PhysAddr, to: PhysAddr) {
        let words = *self.frame(from);
        *self.frame(to) = words;
    }
    fn alloc_huge(&mut self) -> Option<PhysAddr> {
        Some(PhysAddr::new(self.buddy.alloc_pages(9, ZoneType::Normal)? << 12))
    }
    fn free_huge(&mut self, block: PhysAddr) {
        let _ = self.buddy.free_pages(block.pfn(), 9);
    }
    fn split_huge(&mut self, block: PhysAddr) {
        let _ = self.buddy.split_block(block.pfn(), 9);
    }
}

fn page(i: u64) -> VirtPage {
    VirtPage::new(VirtAddr::new(USER + i * 4096), PageSize::Size4K).expect("aligned")
}

/// A process with `pages` pages touched, and one VMA over them.
fn process(pages: u64) -> (Mapper<Host>, Vmas) {
    let mut tree = Mapper::create(Host::new()).expect("a root");
    let mut vmas = Vmas::new();
    vmas.map(Vma::new(USER, USER + pages * 4096, anon_flags(3), VmaKind::Anonymous)).expect("maps");
    for i in 0..pages {
        anon::map_new(&mut tree, page(i), RW).expect("maps");
    }
    (tree, vmas)
}

/// The counted part: only this function's instructions (and its callees') are collected.
#[inline(never)]
fn measured(path: &str, tree: &mut Mapper<Host>, vmas: &Vmas, child: PhysAddr, pages: u64) {
    match path {
        "demand-zero" => {
            for i in 0..pages {
                let vma = vmas.lookup(USER + i * 4096).expect("a VMA");
                assert!(access_allowed(vma.flags, true, false));
                anon::map_new(tree, page(i), RW).expect("maps");
            }
        }
        "cow" | "reuse" => {
            for i in 0..pages {
                let vma = vmas.lookup(USER + i * 4096).expect("a VMA");
                assert!(access_allowed(vma.flags, true, false));
                anon::write_fault(tree, page(i), RW).expect("served").1.ignore();
            }
        }
        _ => {
            let len = pages * 4096;
            tree.copy_present(child, VirtAddr::new(USER), len, true, &mut anon::share)
                .expect("copies")
                .ignore();
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, pages] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Some(pages) = pages.parse::<u64>().ok().filter(|&p| (1..=4096).contains(&p)) else {
        eprintln!("PAGES must be 1 to 4096, not '{pages}'\n{USAGE}");
        return ExitCode::from(2);
    };
    let (mut tree, vmas) = match path.as_str() {
        "demand-zero" => {
            let mut vmas = Vmas::new();
            let vma = Vma::new(USER, USER + pages * 4096, anon_flags(3), VmaKind::Anonymous);
            vmas.map(vma).expect("maps");
            (Mapper::create(Host::new()).expect("a root"), vmas)
        }
        "cow" | "reuse" | "fork" => process(pages),
        _ => {
            eprintln!("unknown path '{path}'\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let child = tree.memory.alloc_table().expect("a root");
    if path == "cow" || path == "reuse" {
        // Share every page with a second tree; for `reuse`, let that sharer go again.
        tree.copy_present(child, VirtAddr::new(USER), pages * 4096, true, &mut anon::share)
            .expect("copies")
            .ignore();
        if path == "reuse" {
            // SAFETY: `child` is a root of this memory that copy_present filled.
            let mut other =
                unsafe { Mapper::new(child, std::mem::replace(&mut tree.memory, Host::new())) };
            other
                .unmap_present(VirtAddr::new(USER), pages * 4096, &mut |m, f| {
                    anon::release(m, f);
                })
                .expect("unmaps")
                .ignore();
            tree.memory = other.memory;
        }
    }
    measured(path, &mut tree, &vmas, child, pages);
    println!("{path}: {pages} pages");
    ExitCode::SUCCESS
}
