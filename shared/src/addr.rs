//! Address newtypes: what kind of address a value is, and that it is a valid one of that
//! kind, is carried by its type.
//!
//! Constructors follow the `x86_64` crate's ladder: `new` (panics on an invalid address,
//! for constants), `try_new` (`None`), and for virtual addresses `new_truncate` (sign
//! extends bit 47). Arithmetic that could leave the valid range is `checked_add`.

/// A physical address: below 2^52 (x86_64's architectural limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct PhysAddr(u64);

/// A canonical 4-level virtual address: bits 63..47 all equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct VirtAddr(u64);

impl PhysAddr {
    /// One past the largest physical address.
    pub const LIMIT: u64 = 1 << 52;

    /// The address; panics if it is not below [`Self::LIMIT`].
    #[inline]
    pub const fn new(addr: u64) -> Self {
        match Self::try_new(addr) {
            Some(addr) => addr,
            None => panic!("physical address beyond 52 bits"),
        }
    }

    /// The address, if it is below [`Self::LIMIT`].
    #[inline]
    pub const fn try_new(addr: u64) -> Option<Self> {
        if addr < Self::LIMIT {
            Some(Self(addr))
        } else {
            None
        }
    }

    /// The address with the bits from 52 up cleared.
    #[inline]
    pub const fn new_masked(addr: u64) -> Self {
        Self(addr & (Self::LIMIT - 1))
    }

    /// The raw value.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether the address is a multiple of `align` (a power of two).
    #[inline]
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }

    /// The address rounded down to `align` (a power of two).
    #[inline]
    pub const fn align_down(self, align: u64) -> Self {
        Self(self.0 & !(align - 1))
    }

    /// `self + offset`, if still a physical address.
    #[inline]
    pub const fn checked_add(self, offset: u64) -> Option<Self> {
        match self.0.checked_add(offset) {
            Some(sum) => Self::try_new(sum),
            None => None,
        }
    }

    /// The number of the 4 KiB page frame holding the address.
    #[inline]
    pub const fn pfn(self) -> u64 {
        self.0 >> 12
    }
}

impl VirtAddr {
    /// The address; panics if it is not canonical.
    #[inline]
    pub const fn new(addr: u64) -> Self {
        match Self::try_new(addr) {
            Some(addr) => addr,
            None => panic!("non-canonical virtual address"),
        }
    }

    /// The address, if it is canonical.
    #[inline]
    pub const fn try_new(addr: u64) -> Option<Self> {
        if Self::is_canonical(addr) {
            Some(Self(addr))
        } else {
            None
        }
    }

    /// Whether `addr` is canonical: bits 63..47 all equal.
    #[inline]
    pub const fn is_canonical(addr: u64) -> bool {
        // Bits 63..47 all equal: the sign extension of bit 47 changes nothing.
        (((addr << 16) as i64) >> 16) as u64 == addr
    }

    /// The address with bits 63..48 replaced by copies of bit 47.
    #[inline]
    pub const fn new_truncate(addr: u64) -> Self {
        Self((((addr << 16) as i64) >> 16) as u64)
    }

    /// The address in the 48-bit linear space where the lower half and the upper half are
    /// one contiguous range: bits 63..48 cleared.
    #[inline]
    pub const fn linear(self) -> u64 {
        self.0 & 0xffff_ffff_ffff
    }

    /// The raw value.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether the address is a multiple of `align` (a power of two).
    #[inline]
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }

    /// The address rounded down to `align` (a power of two).
    #[inline]
    pub const fn align_down(self, align: u64) -> Self {
        Self(self.0 & !(align - 1))
    }

    /// `self + offset`, if the sum is still canonical.
    #[inline]
    pub const fn checked_add(self, offset: u64) -> Option<Self> {
        match self.0.checked_add(offset) {
            Some(sum) => Self::try_new(sum),
            None => None,
        }
    }
}

impl core::fmt::LowerHex for PhysAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::LowerHex::fmt(&self.0, f)
    }
}

impl core::fmt::LowerHex for VirtAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::LowerHex::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_must_be_canonical() {
        assert!(VirtAddr::try_new(0x0000_7fff_ffff_ffff).is_some());
        assert!(VirtAddr::try_new(0xffff_8000_0000_0000).is_some());
        assert_eq!(VirtAddr::try_new(0x0000_8000_0000_0000), None);
        assert_eq!(VirtAddr::try_new(0xfff0_0000_0000_0000), None);
        assert_eq!(VirtAddr::new_truncate(0x0000_8000_0000_1000).as_u64(), 0xffff_8000_0000_1000);
        assert_eq!(
            VirtAddr::new(0x0000_7fff_ffff_f000).checked_add(0x1000),
            None,
            "the sum leaves the lower half"
        );
    }

    #[test]
    fn physical_addresses_stay_below_2_pow_52() {
        assert!(PhysAddr::try_new((1 << 52) - 1).is_some());
        assert_eq!(PhysAddr::try_new(1 << 52), None);
        assert_eq!(PhysAddr::new((1 << 52) - 4096).checked_add(4096), None);
        let addr = PhysAddr::new(0x1234_5678);
        assert_eq!((addr.pfn(), addr.align_down(4096).as_u64()), (0x12345, 0x1234_5000));
        assert!(!addr.is_aligned(4096) && addr.align_down(4096).is_aligned(4096));
    }
}
