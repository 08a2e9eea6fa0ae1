//! TLB invalidation as a value: every change to live tables returns a `#[must_use]`
//! [`Flush`], which the caller either flushes or explicitly ignores.
//!
//! A flush of more than [`FLUSH_ALL_THRESHOLD`] pages invalidates everything instead of
//! page by page, and "everything" includes global entries: the kernel maps its image,
//! the direct map, vmalloc areas and demand-paged pages global, and a CR3 reload keeps
//! those, so [`Tlb::flush_all`] must be stronger than that (toggling CR4.PGE).

use shared::addr::VirtAddr;
use shared::pte::PageSize;

/// Past this many pages a range change flushes the whole TLB instead of page by page.
pub const FLUSH_ALL_THRESHOLD: u64 = 32;

/// Invalidates TLB entries.
pub trait Tlb {
    /// Invalidates the translation of one page (`invlpg`), global or not.
    fn flush_page(&self, virt: VirtAddr);
    /// Invalidates every translation, global ones included (a CR3 reload is not enough
    /// while CR4.PGE is set: toggle CR4.PGE).
    fn flush_all(&self);
}

/// What a change asks of the TLB. Dropping it without [`Flush::flush`] or
/// [`Flush::ignore`] is a compile-time warning.
#[must_use = "the TLB may still hold the old translation: call flush() or ignore()"]
#[derive(Debug, PartialEq, Eq)]
pub struct Flush {
    start: u64,
    pages: u64,
    page_bytes: u64,
}

impl Flush {
    /// Nothing to flush.
    pub const NONE: Flush = Flush { start: 0, pages: 0, page_bytes: 0 };
    /// Everything.
    const ALL: Flush = Flush { start: 0, pages: u64::MAX, page_bytes: 0 };

    /// `pages` pages of `size` from `start`.
    pub fn pages(start: u64, pages: u64, size: PageSize) -> Self {
        Self { start, pages, page_bytes: size.bytes() }
    }

    /// Merges two flushes into one covering both (by flushing everything if they are
    /// not one contiguous run of equal pages).
    pub fn and(self, other: Flush) -> Flush {
        if self.pages == 0 {
            return other;
        }
        if other.pages == 0 {
            return self;
        }
        let contiguous = self.page_bytes == other.page_bytes
            && self.start.wrapping_add(self.pages.wrapping_mul(self.page_bytes)) == other.start;
        if contiguous {
            // Saturating: two flushes of everything make everything.
            Flush { pages: self.pages.saturating_add(other.pages), ..self }
        } else {
            Self::ALL
        }
    }

    /// Whether this flush invalidates everything rather than page by page.
    pub fn is_everything(&self) -> bool {
        self.pages > FLUSH_ALL_THRESHOLD
    }

    /// Invalidates what changed: page by page, or everything past the threshold.
    pub fn flush(self, tlb: &impl Tlb) {
        if self.is_everything() {
            tlb.flush_all();
        } else {
            for page in 0..self.pages {
                tlb.flush_page(VirtAddr::new_truncate(self.start + page * self.page_bytes));
            }
        }
    }

    /// Skips the flush: for tables that are not live (not in CR3), or entries that were
    /// not present before (the TLB never caches those).
    pub fn ignore(self) {}
}
