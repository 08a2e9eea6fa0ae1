//! One work budget for a whole command.
//!
//! Every list and count in guest memory is bounded on its own, but loops nest: memblock
//! regions times the pages they cover, slabs times the objects each claims. A hostile
//! image can make each bound hold and their product take minutes. So every unit of work
//! (a word or `struct page` read, a page visited, an entry enumerated) is paid from one
//! budget per command, proportional to the guest's size and a few times what a sound
//! guest costs; when it runs out the command stops with [`InspectError::Budget`], naming
//! what it was doing.

use super::InspectError;

/// Units of work per page of guest RAM. A sound guest's `check` spends about four per
/// page (the memory-map scan, the ownership marks, the reservations, the census).
pub const UNITS_PER_PAGE: u64 = 16;
/// Units every command may spend, however small the guest: page tables, caches, lists.
pub const BASE_UNITS: u64 = 1 << 20;

/// The budget of a command on a guest with `ram_bytes` of RAM.
pub fn budget_for(ram_bytes: u64) -> u64 {
    (ram_bytes / 4096).saturating_mul(UNITS_PER_PAGE).saturating_add(BASE_UNITS)
}

/// What a command may still spend.
#[derive(Clone, Debug)]
pub struct Budget {
    left: u64,
    total: u64,
}

impl Budget {
    /// A budget of `total` units.
    pub fn new(total: u64) -> Self {
        Self { left: total, total }
    }

    /// Pays `units`; if they are not there, the error names `what` was being done.
    #[inline]
    pub fn spend(&mut self, units: u64, what: impl FnOnce() -> String) -> Result<(), InspectError> {
        match self.left.checked_sub(units) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                Err(self.exhausted(what()))
            }
        }
    }

    /// The units left, for code that counts them down itself (the page-table walker).
    pub fn left_mut(&mut self) -> &mut u64 {
        &mut self.left
    }

    /// The error for a budget spent while doing `what`.
    pub fn exhausted(&self, what: String) -> InspectError {
        InspectError::Budget { units: self.total, what }
    }

    /// Units spent so far.
    pub fn spent(&self) -> u64 {
        self.total - self.left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_budget_grows_with_the_guest_and_names_what_ran_out() {
        assert_eq!(budget_for(0), BASE_UNITS);
        assert_eq!(budget_for(256 << 20), 65_536 * UNITS_PER_PAGE + BASE_UNITS);
        assert!(budget_for(u64::MAX) > budget_for(1 << 40), "no overflow for any size");
        let mut budget = Budget::new(10);
        budget.spend(7, || unreachable!("paid")).expect("room");
        assert_eq!(budget.spent(), 7);
        let err = budget.spend(4, || "walking a free list".into()).expect_err("over");
        assert!(err.to_string().contains("stopped after 10 units of work"), "{err}");
        assert!(err.to_string().contains("while walking a free list"), "{err}");
        assert!(budget.spend(1, String::new).is_err(), "nothing left");
    }
}
