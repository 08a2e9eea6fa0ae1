//! The guest's allocator state in the formats Linux users know: `/proc/buddyinfo`, a
//! `/proc/zoneinfo` subset (`mm/vmstat.c`) and `/proc/slabinfo` version 2.1
//! (`mm/slab_common.c`).

use shared::hypercall::{SlabInfoReport, ZoneReport};
use shared::mm::{PCP_BATCH, PCP_HIGH};
use std::fmt::Write;

/// `/proc/buddyinfo`: one line per zone, free blocks of each order.
pub fn buddyinfo(zones: &[ZoneReport]) -> String {
    let mut out = String::new();
    for zone in zones {
        let _ = write!(out, "Node 0, zone {:>8} ", zone.zone_name());
        for count in &zone.nr_free {
            let _ = write!(out, "{count:6} ");
        }
        out.push('\n');
    }
    out
}

/// The `/proc/zoneinfo` lines for free pages, watermarks, span and start.
pub fn zoneinfo(zones: &[ZoneReport]) -> String {
    let mut out = String::new();
    for zone in zones {
        let _ = writeln!(out, "Node 0, zone {:>8}", zone.zone_name());
        let _ = writeln!(out, "  pages free     {}", zone.free);
        for (name, value) in [
            ("min", zone.min),
            ("low", zone.low),
            ("high", zone.high),
            ("spanned", zone.spanned),
            ("present", zone.present),
            ("managed", zone.managed),
        ] {
            let _ = writeln!(out, "        {name:<8} {value}");
        }
        let protection: Vec<String> = zone.protection.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "        protection: ({})", protection.join(", "));
        // One CPU; high and batch in pages, as Linux prints them.
        let _ = writeln!(out, "  pagesets\n    cpu: 0");
        for (name, value) in
            [("count", zone.pcp), ("high", PCP_HIGH as u64), ("batch", PCP_BATCH as u64)]
        {
            let _ = writeln!(out, "              {:<6} {value}", format!("{name}:"));
        }
        let _ = writeln!(out, "  start_pfn:           {}", zone.start_pfn);
    }
    out
}

/// `/proc/slabinfo`, version 2.1: its header and one line per cache (SLUB reports no
/// tunables, so those columns are zero, as Linux prints them).
pub fn slabinfo<'a>(caches: impl IntoIterator<Item = &'a SlabInfoReport>) -> String {
    let mut out = String::from(
        "slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n",
    );
    for c in caches {
        let _ = writeln!(
            out,
            "{:<17} {:6} {:6} {:6} {:4} {:4} : tunables {:4} {:4} {:4} : slabdata {:6} {:6} {:6}",
            c.name(),
            c.active_objs,
            c.num_objs,
            c.objsize,
            c.objperslab,
            c.pagesperslab,
            0,
            0,
            0,
            c.active_slabs,
            c.num_slabs,
            0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> ZoneReport {
        ZoneReport {
            zone: shared::page::ZoneType::Dma32 as u32,
            reserved: 0,
            start_pfn: 4096,
            spanned: 61440,
            present: 61440,
            managed: 60000,
            free: 59000,
            pcp: 0,
            min: 500,
            low: 625,
            high: 750,
            nr_free: [1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 57],
            protection: [0, 0, 31],
        }
    }

    #[test]
    fn slabinfo_has_the_version_2_1_header_and_columns() {
        let raw = shared::mm::SlabCache {
            object_size: 64,
            stride: 64,
            objects: 64,
            slabs: 1,
            in_use: 3,
            ..Default::default()
        };
        let cache = SlabInfoReport::of(&raw, b"kmalloc-64");
        let text = slabinfo([&cache]);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("slabinfo - version: 2.1"));
        assert!(
            lines.next().is_some_and(
                |l| l.starts_with("# name            <active_objs> <num_objs> <objsize>")
            )
        );
        assert_eq!(
            lines.next(),
            Some("kmalloc-64             3     64     64   64    1 : tunables    0    0    0 : slabdata      1      1      0")
        );
    }

    #[test]
    fn buddyinfo_matches_the_kernel_layout() {
        assert_eq!(
            buddyinfo(&[zone()]),
            "Node 0, zone    DMA32      1      2      3      0      0      0      0      0      0      0     57 \n"
        );
    }

    #[test]
    fn zoneinfo_has_the_counters_in_kernel_order() {
        let text = zoneinfo(&[zone()]);
        let expected = "Node 0, zone    DMA32\n  pages free     59000\n        min      500\n        low      625\n        high     750\n        spanned  61440\n        present  61440\n        managed  60000\n        protection: (0, 0, 31)\n  pagesets\n    cpu: 0\n              count: 0\n              high:  186\n              batch: 31\n  start_pfn:           4096\n";
        assert_eq!(text, expected);
    }
}
