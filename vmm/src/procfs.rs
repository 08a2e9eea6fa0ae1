//! The guest's allocator state in the formats Linux users know: `/proc/buddyinfo` and a
//! `/proc/zoneinfo` subset (`mm/vmstat.c`).

use crate::report::ZoneInfo;
use std::fmt::Write;

/// `/proc/buddyinfo`: one line per zone, free blocks of each order.
pub fn buddyinfo(zones: &[ZoneInfo]) -> String {
    let mut out = String::new();
    for zone in zones {
        let _ = write!(out, "Node 0, zone {:>8} ", zone.zone);
        for count in &zone.nr_free {
            let _ = write!(out, "{count:6} ");
        }
        out.push('\n');
    }
    out
}

/// The `/proc/zoneinfo` lines for free pages, watermarks, span and start.
pub fn zoneinfo(zones: &[ZoneInfo]) -> String {
    let mut out = String::new();
    for zone in zones {
        let _ = writeln!(out, "Node 0, zone {:>8}", zone.zone);
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
        let _ = writeln!(out, "  pagesets\n    count: {}", zone.pcp);
        let _ = writeln!(out, "  start_pfn:           {}", zone.start_pfn);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> ZoneInfo {
        ZoneInfo {
            zone: "DMA32".into(),
            start_pfn: 4096,
            spanned: 61440,
            present: 61440,
            managed: 60000,
            free: 59000,
            pcp: 0,
            min: 500,
            low: 625,
            high: 750,
            nr_free: vec![1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 57],
        }
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
        let expected = "Node 0, zone    DMA32\n  pages free     59000\n        min      500\n        low      625\n        high     750\n        spanned  61440\n        present  61440\n        managed  60000\n  pagesets\n    count: 0\n  start_pfn:           4096\n";
        assert_eq!(text, expected);
    }
}
