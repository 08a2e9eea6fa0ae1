//! Pages and frames: an aligned start and a size, so that a misaligned address or a page
//! and frame of different sizes cannot reach the tables.

use super::MapError;
use shared::addr::{PhysAddr, VirtAddr};
use shared::pte::PageSize;

/// A virtual page: an aligned start and a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtPage {
    start: VirtAddr,
    size: PageSize,
}

impl VirtPage {
    /// The page starting at `start`, which must be aligned to `size`.
    pub fn new(start: VirtAddr, size: PageSize) -> Result<Self, MapError> {
        if start.is_aligned(size.bytes()) {
            Ok(Self { start, size })
        } else {
            Err(MapError::Misaligned { addr: start.as_u64() })
        }
    }

    /// The page of `size` that holds `addr`.
    #[inline]
    pub fn containing(addr: VirtAddr, size: PageSize) -> Self {
        Self { start: addr.align_down(size.bytes()), size }
    }

    /// First address.
    #[inline]
    pub fn start(self) -> VirtAddr {
        self.start
    }

    /// Size.
    #[inline]
    pub fn size(self) -> PageSize {
        self.size
    }
}

/// A physical page frame: an aligned start and a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    start: PhysAddr,
    size: PageSize,
}

impl Frame {
    /// The frame starting at `start`, which must be aligned to `size`.
    pub fn new(start: PhysAddr, size: PageSize) -> Result<Self, MapError> {
        if start.is_aligned(size.bytes()) {
            Ok(Self { start, size })
        } else {
            Err(MapError::Misaligned { addr: start.as_u64() })
        }
    }

    /// The frame of `size` that holds `addr`.
    #[inline]
    pub fn containing(addr: PhysAddr, size: PageSize) -> Self {
        Self { start: addr.align_down(size.bytes()), size }
    }

    /// First address.
    #[inline]
    pub fn start(self) -> PhysAddr {
        self.start
    }

    /// Size.
    #[inline]
    pub fn size(self) -> PageSize {
        self.size
    }
}
