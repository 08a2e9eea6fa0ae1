//! The kvm-mm guest kernel.
//!
//! Life cycle (mirrors Linux's `startup_64` → `start_kernel`):
//!
//! ```text
//! _start (entry.rs)        the VMM enters in long mode on its boot page tables, RSI = zero page
//!   set the stack, clear .bss
//! kernel_main
//!   console + logger       COM1, loglevel from the command line
//!   traps::init            IDT: the 32 exception vectors, the APIC timer's and spurious
//!   boot_params::read      e820 table and command line from the zero page
//!   cmdline                options; an unknown one ends the boot (status BadCommandLine)
//!   e820 sanitise + print  `BIOS-e820: [mem …] usable`, reported to the host
//!   mm::setup::init        memblock, direct map, vmemmap, zones, buddy (reported)
//!   translations           the walker's view of sample addresses, checked by the VMM
//!                          against KVM_TRANSLATE at a checkpoint
//!   vmcoreinfo published   where the host finds the allocators (shared::vmcoreinfo)
//!   CHECKPOINT(BOOTED)
//!   workload               `workload=NAME`
//!   zones reported again   the state after the workload
//!   exit                   debug-exit port: 0, or 1 if a check failed
//! ```
#![no_std]
#![no_main]

extern crate alloc;

mod apic;
mod boot_params;
mod cell;
mod console;
mod cpu;
mod entry;
mod extable;
mod hypercall;
mod mm;
mod panic;
mod process;
mod selftest;
mod slab_misuse;
mod stress;
mod swap;
mod traps;
mod workload;

use guest::cmdline::Options;
use guest::e820::E820Map;
use log::{error, info};
use shared::boot::{write_e820_line, E820_TYPE_RAM};
use shared::hypercall::{checkpoint, ReportKind};
use shared::layout::HIGH_MEMORY;
use shared::status::GuestStatus;
use zerocopy::{Immutable, IntoBytes};

/// The Rust entry point, called by `_start` with the zero page's physical address.
extern "C" fn kernel_main(zero_page: u64) -> ! {
    console::init();
    cpu::init();
    traps::init();

    let boot = boot_params::read(zero_page)
        .unwrap_or_else(|err| hypercall::boot_failed(format_args!("zero page: {err}")));
    let options = Options::parse(boot.cmdline).unwrap_or_else(|err| {
        error!("{err}");
        hypercall::report_cmdline_error(&err);
        hypercall::exit(GuestStatus::BadCommandLine)
    });
    log::set_max_level(options.loglevel);
    info!("Command line: {}", boot.cmdline);

    let e820 = E820Map::sanitize(boot.e820())
        .unwrap_or_else(|err| hypercall::boot_failed(format_args!("e820: {err}")));
    print_e820(&e820);
    hypercall::report(ReportKind::E820, e820.entries().as_bytes());
    let high_ram = e820
        .entries()
        .iter()
        .any(|e| e.typ == E820_TYPE_RAM && e.addr.saturating_add(e.size) > HIGH_MEMORY);
    if !high_ram {
        hypercall::boot_failed(format_args!(
            "e820: no usable RAM above 1 MiB; the kernel has nowhere to live"
        ));
    }

    let mut mm = mm::setup::init(&e820, options.slub_debug)
        .unwrap_or_else(|err| hypercall::boot_failed(format_args!("{err}")));
    mm::setup::print_memblock(&mm.memblock);
    hypercall::report_memblock(&mm.memblock);
    hypercall::report_value(ReportKind::BootTimes, &mm.times);
    hypercall::report_zones(&mm.buddy);
    info!(
        "Memory: {}K/{}K available",
        mm.buddy.nr_free_pages() * 4,
        mm.memblock.memory.total() / 1024
    );

    mm::translations::report_and_check(&mut mm);
    // From here on the memory managers live in one fixed place, for `alloc` too.
    mm::global::install(mm);
    // Outside the borrow: `alloc` takes the memory managers itself.
    let slots = usize::try_from(options.swap).unwrap_or(usize::MAX);
    let swap = guest::swap_map::SwapMap::try_new(slots).unwrap_or_else(|| {
        hypercall::boot_failed(format_args!(
            "swap: no memory for the map of {slots} slots; give the guest more memory or less swap"
        ))
    });
    mm::global::with(|mm| {
        mm.swap = swap;
        mm::vmcoreinfo::publish(mm, &e820);
    });
    hypercall::checkpoint(checkpoint::BOOTED);
    let passed = workload::run(&options, &e820);
    mm::global::with(|mm| {
        hypercall::report_zones(&mm.buddy);
        hypercall::report_slabinfo(&mm.kmalloc);
    });
    hypercall::exit(if passed { GuestStatus::Success } else { GuestStatus::CheckFailed })
}

fn print_e820(map: &E820Map) {
    info!("BIOS-provided physical RAM map:");
    for &entry in map.entries() {
        let mut line = console::Line::new();
        // The line buffer truncates instead of failing.
        let _ = write_e820_line(&mut line, "BIOS-e820", entry);
        info!("{}", line.as_str());
    }
}

/// A report payload under construction (room for the largest e820 map).
pub struct ReportBuf {
    bytes: [u8; ReportBuf::CAPACITY],
    len: usize,
}

impl ReportBuf {
    /// Bytes a payload can hold: the largest is memblock's, two full region sets.
    pub const CAPACITY: usize = 8 + 2 * guest::memblock::MAX_REGIONS * 16;

    /// An empty payload.
    pub const fn new() -> Self {
        Self { bytes: [0; Self::CAPACITY], len: 0 }
    }

    /// Appends what fits of `value`'s bytes.
    pub fn push<T: IntoBytes + Immutable>(&mut self, value: &T) {
        self.extend(value.as_bytes());
    }

    /// Appends what fits of `data`.
    pub fn extend(&mut self, data: &[u8]) {
        let n = data.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
    }

    /// The payload so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Default for ReportBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Write for ReportBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.extend(s.as_bytes());
        Ok(())
    }
}
