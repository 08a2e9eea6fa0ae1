//! Linux's SLUB KUnit tests (`lib/slub_kunit.c`) and the kmalloc and slab cases of the
//! KASAN KUnit tests (`mm/kasan/kasan_test_c.c`), written again for our slab allocator:
//! each test keeps the name of the C function whose assertions it checks, and a last test
//! checks kmalloc's size classes against Linux's `kmalloc_size_roundup()` for every size.
//! docs/CONFORMANCE.md lists the C functions left out, and where we differ.
//!
//! Translation of Linux's API and fixtures:
//! - `kmem_cache_create(name, size, 0, SLAB_RED_ZONE | SLAB_POISON | …)` is
//!   `KmemCache::new(name, size, 8, true)`: our `debug` is every `slub_debug` check at
//!   once (red zone, poison, consistency checks, and the requested size of kmalloc
//!   objects, which Linux records with `SLAB_STORE_USER`).
//! - `kmalloc`, `kfree`, `ksize`, `krealloc` are [`Kmalloc`]'s; a test that makes its own
//!   `SLAB_KMALLOC` cache in C (`__kmalloc_cache_noprof`) uses the kmalloc class of the
//!   same size. `kmalloc_track_caller`, `kmalloc_node` (node 0) are `kmalloc`.
//! - `validate_slab_cache()` and `slab_errors`: we have no validation pass. Misuse of an
//!   allocated object is found when it is freed (the free is refused and changes
//!   nothing); damage to a free object when it is next handed out (the allocation fails,
//!   and its slab is taken out of service). A test asserts the one [`SlabError`] we report
//!   where Linux counts a report and its fix.
//! - `KUNIT_EXPECT_KASAN_FAIL(test, write)` becomes: the write, then the `kfree` (or the
//!   next allocation) that reports it. KASAN checks each access with shadow memory; our
//!   checks compare bytes, so a case is ported where its misuse writes, or calls into the
//!   allocator, and KASAN's reads are left out. `KASAN_GRANULE_SIZE` is generic KASAN's 8,
//!   the mode whose byte-precise cases these are.

use guest::buddy::{Buddy, SliceMemmap};
use guest::slab::{
    BuddyPages, Kmalloc, KmemCache, SlabError, SlabErrorKind, SlabPages, KMALLOC_MAX_SIZE,
    KMALLOC_SIZES, RED_ACTIVE, ZERO_SIZE_PTR,
};
use shared::page::Page;

/// Generic KASAN's granule (`KASAN_GRANULE_SIZE`).
const KASAN_GRANULE_SIZE: u64 = 8;
/// SLUB's largest kmalloc cache (`KMALLOC_MAX_CACHE_SIZE`, two pages).
const KMALLOC_MAX_CACHE_SIZE: u64 = 8192;
const PAGE_SIZE: u64 = 4096;
const BASE_PFN: u64 = 1 << 20;
const PAGES: u64 = 4096;

/// Slab pages from the buddy allocator over 16 MiB of host memory.
type Backend = BuddyPages<'static, SliceMemmap<'static>>;

fn backend() -> Box<Backend> {
    // Aligned to 2 MiB, so that a block aligned to its size in frames is aligned to its
    // size in host addresses too (kmalloc's natural alignment).
    let memory: &'static mut [u8] =
        Box::leak(vec![0u8; usize::try_from((PAGES + 512) * PAGE_SIZE).expect("fits")].into());
    let arena = (memory.as_ptr() as u64).next_multiple_of(2 << 20);
    let pages: &'static mut [Page] =
        Box::leak(vec![Page::default(); usize::try_from(PAGES).expect("fits")].into());
    let mut buddy = Buddy::new(SliceMemmap { base_pfn: BASE_PFN, pages });
    buddy.add_present(BASE_PFN, BASE_PFN + PAGES);
    buddy.hand_off(BASE_PFN, BASE_PFN + PAGES);
    // SAFETY: the buddy allocator's frames are the leaked arena's pages, at this base;
    // nothing else uses the arena.
    Box::new(unsafe {
        BuddyPages::new(Box::leak(Box::new(buddy)), arena.wrapping_sub(BASE_PFN << 12))
    })
}

/// `test_kmem_cache_create(name, size, SLAB_RED_ZONE | SLAB_POISON …)`: a debug cache.
fn debug_cache(name: &'static str, size: u64) -> Box<KmemCache> {
    Box::new(KmemCache::new(name, size, 8, true).expect("valid size"))
}

fn kmalloc_debug() -> Box<Kmalloc> {
    Box::new(Kmalloc::new(true).expect("caches"))
}

fn alloc(cache: &mut KmemCache, pages: &mut Backend) -> u64 {
    cache.alloc(pages).expect("no error").expect("memory")
}

/// Frees `object` to `cache`: a live object of it, or, in debug mode, a misuse the test
/// wants refused.
fn free(cache: &mut KmemCache, pages: &mut Backend, object: u64) -> Result<(), SlabError> {
    // SAFETY: the tests pass live objects of `cache`, or misuse a debug cache on purpose,
    // which its checks refuse before they change anything.
    unsafe { cache.free(pages, object) }
}

fn kmalloc(k: &mut Kmalloc, pages: &mut Backend, size: u64) -> u64 {
    k.kmalloc(pages, size).expect("no error").expect("memory")
}

/// `kfree`, as [`free`].
fn kfree(k: &mut Kmalloc, pages: &mut Backend, addr: u64) -> Result<(), SlabError> {
    // SAFETY: as in `free`.
    unsafe { k.kfree(pages, addr) }
}

/// `krealloc`, as [`free`].
fn krealloc(k: &mut Kmalloc, pages: &mut Backend, addr: u64, size: u64) -> Result<u64, SlabError> {
    // SAFETY: as in `free`.
    unsafe { k.krealloc(pages, addr, size) }.map(|new| new.expect("memory"))
}

/// `kfree_sensitive()`: clears what `ksize` says is usable, then frees.
fn kfree_sensitive(k: &mut Kmalloc, pages: &mut Backend, addr: u64) -> Result<(), SlabError> {
    let usable = k.ksize(pages, addr);
    if usable > 0 {
        memset(addr, 0, usable);
    }
    kfree(k, pages, addr)
}

fn read(addr: u64) -> u8 {
    // SAFETY: the tests read bytes of objects, live or free, and of their red zones: all
    // inside the host arena, which lives for the whole test.
    unsafe { (addr as *const u8).read() }
}

fn write(addr: u64, byte: u8) {
    // SAFETY: the tests write bytes of objects, live or free, and of their red zones: all
    // inside the host arena, which nothing but the slab allocator and the test uses. The
    // writes that are misuse are what the test wants found.
    unsafe { (addr as *mut u8).write(byte) }
}

fn memset(addr: u64, byte: u8, len: u64) {
    for at in addr..addr + len {
        write(at, byte);
    }
}

fn bytes(addr: u64, len: u64) -> Vec<u8> {
    (addr..addr + len).map(read).collect()
}

fn read_word(addr: u64) -> u64 {
    u64::from_le_bytes(bytes(addr, 8).try_into().expect("8 bytes"))
}

fn write_word(addr: u64, value: u64) {
    for (at, byte) in (addr..).zip(value.to_le_bytes()) {
        write(at, byte);
    }
}

/// `x` rounded up to a multiple of `to` (`round_up`).
fn round_up(x: u64, to: u64) -> u64 {
    x.next_multiple_of(to)
}

/// `x` rounded down to a multiple of `to` (`round_down`).
fn round_down(x: u64, to: u64) -> u64 {
    x - x % to
}

/// The first page frame of the slab holding `object`.
fn slab_of(cache: &KmemCache, pages: &Backend, object: u64) -> u64 {
    pages.pfn(object) >> cache.geometry().0
}

/// Allocates `size` bytes, lets `misuse` write where it should not (inside the class
/// size), and expects the `kfree` to refuse the object with `kind`; then puts the bytes
/// back as they were and frees it, which must now go through.
fn kmalloc_write_found_at_kfree(
    k: &mut Kmalloc,
    pages: &mut Backend,
    size: u64,
    kind: SlabErrorKind,
    misuse: impl FnOnce(u64),
) {
    let p = kmalloc(k, pages, size);
    let span = k.ksize(pages, p);
    let before = bytes(p, span);
    misuse(p);
    let err = kfree(k, pages, p).expect_err("kfree finds the out-of-bounds write");
    assert_eq!((err.kind, err.object), (kind, p), "{err}");
    for (at, byte) in (p..).zip(before) {
        write(at, byte);
    }
    kfree(k, pages, p).expect("mended, the object frees");
}

// ---------------------------------------------------------------------------------------
// lib/slub_kunit.c
// ---------------------------------------------------------------------------------------

/// lib/slub_kunit.c `test_clobber_zone`: a write just past an allocated object.
#[test]
fn test_clobber_zone() {
    let mut pages = backend();
    let mut s = debug_cache("TestSlub_RZ_alloc", 64);
    let p = alloc(&mut s, &mut pages);
    write(p + 64, 0x12);
    // Linux: validate_slab_cache() reports it (and restores the red zone). Us: the free
    // reports it and is refused, so the object stays allocated.
    let err = free(&mut s, &mut pages, p).expect_err("red zone overwritten");
    assert_eq!(
        err,
        SlabError { cache: "TestSlub_RZ_alloc", object: p, kind: SlabErrorKind::RightRedzone }
    );
    assert_eq!(err.kind.describe(), "Right Redzone overwritten");
    assert_eq!(s.destroy(&mut *pages), Err(1), "the refused free left the object live");
    // The restoration Linux's fix does, done by hand; then the free goes through.
    write(p + 64, RED_ACTIVE);
    free(&mut s, &mut pages, p).expect("valid free");
    assert_eq!(s.destroy(&mut *pages), Ok(()));
}

/// lib/slub_kunit.c `test_next_pointer`: a free object's free pointer corrupted, then
/// repaired.
#[test]
fn test_next_pointer() {
    let mut pages = backend();
    let free_pages = pages.buddy().nr_free_pages();
    let mut s = debug_cache("TestSlub_next_ptr_free", 64);
    let p = alloc(&mut s, &mut pages);
    free(&mut s, &mut pages, p).expect("valid free");
    let ptr_addr = p + u64::from(s.raw().free_offset);
    let tmp = read_word(ptr_addr);
    write(ptr_addr, !read(ptr_addr));
    // Linux: validate_slab_cache() finds the corrupt chain (3 errors). Us: the allocation
    // that would follow it, and the slab is taken out of service.
    let err = s.alloc(&mut *pages).expect_err("corrupt free pointer");
    assert_eq!((err.kind, err.object), (SlabErrorKind::FreePointerCorrupt, p));
    assert_eq!(err.kind.describe(), "Freepointer corrupt");
    // Repaired, Linux's next validations find 2 errors (the count its first one cut
    // short), then none. Us: the slab stays out of service, and the cache goes on from a
    // sound one without an error.
    write_word(ptr_addr, tmp);
    let q = s.alloc(&mut *pages).expect("no error after the repair").expect("memory");
    assert_ne!(slab_of(&s, &pages, q), slab_of(&s, &pages, p), "not the damaged slab");
    free(&mut s, &mut pages, q).expect("valid free");
    assert_eq!(s.destroy(&mut *pages), Ok(()));
    assert_eq!(pages.buddy().nr_free_pages(), free_pages, "every slab went back");
}

/// lib/slub_kunit.c `test_first_word`: a write to the first byte of a free object.
#[test]
fn test_first_word() {
    let mut pages = backend();
    let mut s = debug_cache("TestSlub_1th_word_free", 64);
    let p = alloc(&mut s, &mut pages);
    free(&mut s, &mut pages, p).expect("valid free");
    write(p, 0x78);
    // Linux: validate_slab_cache() (2 errors). Us: when the object is next handed out.
    let err = s.alloc(&mut *pages).expect_err("poison overwritten");
    assert_eq!((err.kind, err.object), (SlabErrorKind::PoisonOverwritten, p));
    let q = alloc(&mut s, &mut pages);
    assert_ne!(q, p, "the damaged object is never handed out");
    free(&mut s, &mut pages, q).expect("valid free");
    assert_eq!(s.destroy(&mut *pages), Ok(()));
}

/// lib/slub_kunit.c `test_clobber_50th_byte`: a write to byte 50 of a free object.
#[test]
fn test_clobber_50th_byte() {
    let mut pages = backend();
    let mut s = debug_cache("TestSlub_50th_word_free", 64);
    let p = alloc(&mut s, &mut pages);
    free(&mut s, &mut pages, p).expect("valid free");
    write(p + 50, 0x9a);
    let err = s.alloc(&mut *pages).expect_err("poison overwritten");
    assert_eq!((err.kind, err.object), (SlabErrorKind::PoisonOverwritten, p));
    assert_eq!(s.destroy(&mut *pages), Ok(()));
}

/// lib/slub_kunit.c `test_clobber_redzone_free`: a write just past a free object.
#[test]
fn test_clobber_redzone_free() {
    let mut pages = backend();
    let mut s = debug_cache("TestSlub_RZ_free", 64);
    let p = alloc(&mut s, &mut pages);
    free(&mut s, &mut pages, p).expect("valid free");
    write(p + 64, 0xab);
    let err = s.alloc(&mut *pages).expect_err("red zone of a free object overwritten");
    assert_eq!(
        err,
        SlabError { cache: "TestSlub_RZ_free", object: p, kind: SlabErrorKind::RightRedzone }
    );
    assert_eq!(s.destroy(&mut *pages), Ok(()));
}

/// lib/slub_kunit.c `test_kmalloc_redzone_access`: writes between the requested size (18)
/// and the class size (32).
#[test]
fn test_kmalloc_redzone_access() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let p = kmalloc(&mut k, &mut pages, 18);
    assert_eq!(k.ksize(&mut *pages, p), 32);
    write(p + 18, 0xab);
    write(p + 19, 0xab);
    let err = kfree(&mut k, &mut pages, p).expect_err("kmalloc red zone overwritten");
    assert_eq!(
        err,
        SlabError { cache: "kmalloc-32", object: p, kind: SlabErrorKind::KmallocRedzone }
    );
    assert_eq!(err.kind.describe(), "kmalloc Redzone overwritten");
    write(p + 18, RED_ACTIVE);
    write(p + 19, RED_ACTIVE);
    kfree(&mut k, &mut pages, p).expect("mended, the object frees");
}

/// lib/slub_kunit.c `test_leak_destroy`: destroying a cache with an object still live.
#[test]
fn test_leak_destroy() {
    let mut pages = backend();
    let mut s = Box::new(KmemCache::new("TestSlub_leak_destroy", 64, 8, false).expect("valid"));
    let p = alloc(&mut s, &mut pages);
    // Linux reports it (2 errors) and leaks the cache; we refuse, with the live count.
    assert_eq!(s.destroy(&mut *pages), Err(1));
    free(&mut s, &mut pages, p).expect("valid free");
    assert_eq!(s.destroy(&mut *pages), Ok(()));
}

/// lib/slub_kunit.c `test_krealloc_redzone_zeroing`: krealloc moves the kmalloc red zone
/// within the object, and clears what a larger size grows into, in place or not.
#[test]
fn test_krealloc_redzone_zeroing() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let mut p = kmalloc(&mut k, &mut pages, 48);
    assert_eq!(k.ksize(&mut *pages, p), 64);
    memset(p, 0xff, 48);

    // Shrink.
    p = krealloc(&mut k, &mut pages, p, 40).expect("no error");
    assert!(bytes(p + 40, 24).iter().all(|&b| b == RED_ACTIVE), "{:x?}", bytes(p, 64));

    // Grow within the same 64-byte object.
    p = krealloc(&mut k, &mut pages, p, 56).expect("no error");
    assert!(bytes(p + 40, 16).iter().all(|&b| b == 0), "{:x?}", bytes(p, 64));
    assert!(bytes(p + 56, 8).iter().all(|&b| b == RED_ACTIVE), "{:x?}", bytes(p, 64));

    // Linux's validate_slab_cache() finds nothing wrong here; our check of the object's
    // red zones runs when it is freed, below and at the move.
    memset(p, 0xff, 56);
    // Grow into a bigger 128-byte object.
    let old = p;
    p = krealloc(&mut k, &mut pages, p, 112).expect("the old object's red zones are intact");
    assert_ne!(p, old);
    assert_eq!(k.ksize(&mut *pages, p), 128);
    assert!(bytes(p, 56).iter().all(|&b| b == 0xff), "{:x?}", bytes(p, 128));
    assert!(bytes(p + 56, 56).iter().all(|&b| b == 0), "{:x?}", bytes(p, 128));

    kfree(&mut k, &mut pages, p).expect("valid free");
}

// ---------------------------------------------------------------------------------------
// mm/kasan/kasan_test_c.c
// ---------------------------------------------------------------------------------------

/// mm/kasan/kasan_test_c.c `kmalloc_oob_right`: writes past the requested size, inside the
/// class size (the read past the object is not ported: our checks see writes).
#[test]
fn kmalloc_oob_right() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let size = 128 - KASAN_GRANULE_SIZE - 5;
    for offset in [size, size + 5] {
        kmalloc_write_found_at_kfree(
            &mut k,
            &mut pages,
            size,
            SlabErrorKind::KmallocRedzone,
            |p| write(p + offset, b'x'),
        );
    }
}

/// mm/kasan/kasan_test_c.c `kmalloc_track_caller_oob_right`: a write at the requested size,
/// for `kmalloc_track_caller` and `kmalloc_node_track_caller` (both `kmalloc` for us).
#[test]
fn kmalloc_track_caller_oob_right() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let size = 128 - KASAN_GRANULE_SIZE;
    for _ in ["kmalloc_track_caller", "kmalloc_node_track_caller"] {
        kmalloc_write_found_at_kfree(
            &mut k,
            &mut pages,
            size,
            SlabErrorKind::KmallocRedzone,
            |p| write(p + size, b'y'),
        );
    }
}

/// mm/kasan/kasan_test_c.c `kmalloc_big_oob_right`: a write at the requested size of a big
/// object of the largest kmalloc cache.
#[test]
fn kmalloc_big_oob_right() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let size = KMALLOC_MAX_CACHE_SIZE - 256;
    let p = kmalloc(&mut k, &mut pages, size);
    write(p + size, 0);
    let err = kfree(&mut k, &mut pages, p).expect_err("kmalloc red zone overwritten");
    assert_eq!(
        err,
        SlabError { cache: "kmalloc-8k", object: p, kind: SlabErrorKind::KmallocRedzone }
    );
}

/// mm/kasan/kasan_test_c.c `kmalloc_large_invalid_free`: `kfree` of a pointer one byte into
/// a page-allocator-backed kmalloc allocation.
#[test]
fn kmalloc_large_invalid_free() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let free_pages = pages.buddy().nr_free_pages();
    let ptr = kmalloc(&mut k, &mut pages, KMALLOC_MAX_CACHE_SIZE + 10);
    let err = kfree(&mut k, &mut pages, ptr + 1).expect_err("invalid free");
    assert_eq!(
        err,
        SlabError { cache: "kmalloc-large", object: ptr + 1, kind: SlabErrorKind::NotAnObject }
    );
    // Refused: the allocation is intact and frees whole.
    assert_eq!(k.ksize(&mut *pages, ptr), 4 * PAGE_SIZE);
    kfree(&mut k, &mut pages, ptr).expect("valid free");
    pages.drain_pcp();
    assert_eq!(pages.buddy().nr_free_pages(), free_pages);
}

/// `krealloc_more_oob_helper`: what grows in place is usable; past the new size is not.
fn krealloc_more_oob_helper(size1: u64, size2: u64) {
    assert!(size1 < size2);
    let middle = size1 + (size2 - size1) / 2;
    let mut pages = backend();
    let mut k = kmalloc_debug();

    let ptr1 = kmalloc(&mut k, &mut pages, size1);
    let ptr2 = krealloc(&mut k, &mut pages, ptr1, size2).expect("no error");
    assert_eq!(ptr2, ptr1, "{size2} bytes still fit the object");
    for offset in [size1 - 1, size1, middle, size2 - 1] {
        write(ptr2 + offset, b'x');
    }
    kfree(&mut k, &mut pages, ptr2).expect("every offset below the new size is usable");

    for offset in [size2, round_up(size2, KASAN_GRANULE_SIZE)] {
        let ptr1 = kmalloc(&mut k, &mut pages, size1);
        let ptr2 = krealloc(&mut k, &mut pages, ptr1, size2).expect("no error");
        write(ptr2 + offset, b'x');
        let err = kfree(&mut k, &mut pages, ptr2).expect_err("past the new size");
        assert_eq!((err.kind, err.object), (SlabErrorKind::KmallocRedzone, ptr2), "{offset}");
        write(ptr2 + offset, RED_ACTIVE);
        kfree(&mut k, &mut pages, ptr2).expect("mended, the object frees");
    }
}

/// `krealloc_less_oob_helper`: what shrinks in place is no longer usable.
fn krealloc_less_oob_helper(size1: u64, size2: u64) {
    assert!(size2 < size1);
    let middle = size2 + (size1 - size2) / 2;
    let mut pages = backend();
    let mut k = kmalloc_debug();

    let ptr1 = kmalloc(&mut k, &mut pages, size1);
    let ptr2 = krealloc(&mut k, &mut pages, ptr1, size2).expect("no error");
    assert_eq!(ptr2, ptr1, "a smaller size keeps the object");
    write(ptr2 + size2 - 1, b'x');
    kfree(&mut k, &mut pages, ptr2).expect("below the new size is usable");

    // size2, middle and size1 land in separate granules.
    assert!(round_up(size2, KASAN_GRANULE_SIZE) <= round_down(middle, KASAN_GRANULE_SIZE));
    assert!(round_up(middle, KASAN_GRANULE_SIZE) <= round_down(size1, KASAN_GRANULE_SIZE));
    for offset in [size2, round_up(size2, KASAN_GRANULE_SIZE), middle, size1 - 1, size1] {
        let ptr1 = kmalloc(&mut k, &mut pages, size1);
        let ptr2 = krealloc(&mut k, &mut pages, ptr1, size2).expect("no error");
        write(ptr2 + offset, b'x');
        let err = kfree(&mut k, &mut pages, ptr2).expect_err("past the new size");
        assert_eq!((err.kind, err.object), (SlabErrorKind::KmallocRedzone, ptr2), "{offset}");
        write(ptr2 + offset, RED_ACTIVE);
        kfree(&mut k, &mut pages, ptr2).expect("mended, the object frees");
    }
}

/// mm/kasan/kasan_test_c.c `krealloc_more_oob`: 201 bytes grown to 235 in kmalloc-256.
#[test]
fn krealloc_more_oob() {
    krealloc_more_oob_helper(201, 235);
}

/// mm/kasan/kasan_test_c.c `krealloc_less_oob`: 235 bytes shrunk to 201 in kmalloc-256.
#[test]
fn krealloc_less_oob() {
    krealloc_less_oob_helper(235, 201);
}

/// mm/kasan/kasan_test_c.c `krealloc_uaf`: `krealloc` of a freed object reports it,
/// returns nothing, and leaves the free object as it was.
#[test]
fn krealloc_uaf() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let (size1, size2) = (201, 235);
    let ptr1 = kmalloc(&mut k, &mut pages, size1);
    kfree(&mut k, &mut pages, ptr1).expect("valid free");
    let err = krealloc(&mut k, &mut pages, ptr1, size2).expect_err("krealloc after free");
    assert_eq!(
        err,
        SlabError { cache: "kmalloc-256", object: ptr1, kind: SlabErrorKind::DoubleFree }
    );
    // KASAN: the freed object stays poisoned. Us: its poison is intact, so handing it out
    // again finds nothing wrong.
    assert_eq!(k.kmalloc(&mut *pages, size1), Ok(Some(ptr1)));
    kfree(&mut k, &mut pages, ptr1).expect("valid free");
}

/// mm/kasan/kasan_test_c.c `kmalloc_oob_16`: a 16-byte copy into a 13-byte allocation.
#[test]
fn kmalloc_oob_16() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let ptr2 = kmalloc(&mut k, &mut pages, 16);
    memset(ptr2, 0x5a, 16);
    kmalloc_write_found_at_kfree(
        &mut k,
        &mut pages,
        16 - 3,
        SlabErrorKind::KmallocRedzone,
        |ptr1| {
            for (at, byte) in (ptr1..).zip(bytes(ptr2, 16)) {
                write(at, byte);
            }
        },
    );
    kfree(&mut k, &mut pages, ptr2).expect("valid free");
}

/// mm/kasan/kasan_test_c.c `kmalloc_oob_in_memset`: a memset one granule past the size.
#[test]
fn kmalloc_oob_in_memset() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let size = 128 - KASAN_GRANULE_SIZE;
    kmalloc_write_found_at_kfree(&mut k, &mut pages, size, SlabErrorKind::KmallocRedzone, |p| {
        memset(p, 0, size + KASAN_GRANULE_SIZE)
    });
}

/// The `kmalloc_oob_memset_*` cases: a memset of `len` bytes whose last byte is the first
/// past the requested size.
fn kmalloc_oob_memset(len: u64) {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let size = 128 - KASAN_GRANULE_SIZE;
    kmalloc_write_found_at_kfree(&mut k, &mut pages, size, SlabErrorKind::KmallocRedzone, |p| {
        memset(p + size - (len - 1), 0, len)
    });
}

/// mm/kasan/kasan_test_c.c `kmalloc_oob_memset_2`.
#[test]
fn kmalloc_oob_memset_2() {
    kmalloc_oob_memset(2);
}

/// mm/kasan/kasan_test_c.c `kmalloc_oob_memset_4`.
#[test]
fn kmalloc_oob_memset_4() {
    kmalloc_oob_memset(4);
}

/// mm/kasan/kasan_test_c.c `kmalloc_oob_memset_8`.
#[test]
fn kmalloc_oob_memset_8() {
    kmalloc_oob_memset(8);
}

/// mm/kasan/kasan_test_c.c `kmalloc_oob_memset_16`.
#[test]
fn kmalloc_oob_memset_16() {
    kmalloc_oob_memset(16);
}

/// mm/kasan/kasan_test_c.c `kmalloc_uaf_memset`: a memset of a freed object, found when
/// the object is next handed out.
#[test]
fn kmalloc_uaf_memset() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let size = 33;
    let ptr = kmalloc(&mut k, &mut pages, size);
    kfree(&mut k, &mut pages, ptr).expect("valid free");
    memset(ptr, 0, size);
    let err = k.kmalloc(&mut *pages, size).expect_err("write after free");
    assert_eq!(
        err,
        SlabError { cache: "kmalloc-64", object: ptr, kind: SlabErrorKind::PoisonOverwritten }
    );
    let next = kmalloc(&mut k, &mut pages, size);
    assert_ne!(next, ptr, "the damaged object is never handed out");
    kfree(&mut k, &mut pages, next).expect("valid free");
}

/// mm/kasan/kasan_test_c.c `kmalloc_uaf2`: KASAN's quarantine keeps a freed object from
/// the next allocation (`KUNIT_EXPECT_PTR_NE`); we have none, and like SLUB without KASAN
/// hand the last freed object out first, so the next allocation is the same object. The
/// read after free is not ported.
#[test]
fn kmalloc_uaf2() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let size = 43;
    let ptr1 = kmalloc(&mut k, &mut pages, size);
    kfree(&mut k, &mut pages, ptr1).expect("valid free");
    let ptr2 = kmalloc(&mut k, &mut pages, size);
    assert_eq!(ptr2, ptr1, "no quarantine: the freed object is reused at once");
    kfree(&mut k, &mut pages, ptr2).expect("valid free");
}

/// mm/kasan/kasan_test_c.c `kmalloc_double_kzfree`: `kfree_sensitive` twice.
#[test]
fn kmalloc_double_kzfree() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let ptr = kmalloc(&mut k, &mut pages, 16);
    kfree_sensitive(&mut k, &mut pages, ptr).expect("valid free");
    let err = kfree_sensitive(&mut k, &mut pages, ptr).expect_err("double free");
    assert_eq!(
        err,
        SlabError { cache: "kmalloc-16", object: ptr, kind: SlabErrorKind::DoubleFree }
    );
    // ksize of the free object was 0, so the second call cleared nothing: its poison is
    // intact and it is handed out again without an error.
    assert_eq!(k.kmalloc(&mut *pages, 16), Ok(Some(ptr)));
}

/// mm/kasan/kasan_test_c.c `ksize_unpoisons_memory`: `ksize` reports the class size but
/// does not make the bytes past the requested size usable. KASAN's reads of them are
/// writes here, which our checks see.
#[test]
fn ksize_unpoisons_memory() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let size = 128 - KASAN_GRANULE_SIZE - 5;

    let ptr = kmalloc(&mut k, &mut pages, size);
    let real_size = k.ksize(&mut *pages, ptr);
    assert!(real_size > size, "{real_size}");
    write(ptr, b'x');
    write(ptr + size - 1, b'x');
    kfree(&mut k, &mut pages, ptr).expect("inside the requested size");

    for offset in [size, size + 5, real_size - 1] {
        kmalloc_write_found_at_kfree(
            &mut k,
            &mut pages,
            size,
            SlabErrorKind::KmallocRedzone,
            |p| write(p + offset, b'x'),
        );
    }
}

/// mm/kasan/kasan_test_c.c `ksize_uaf`: `ksize` of a freed object is 0 (Linux's answer
/// when KASAN finds the object invalid). The reads after free are not ported.
#[test]
fn ksize_uaf() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let size = 128 - KASAN_GRANULE_SIZE;
    let ptr = kmalloc(&mut k, &mut pages, size);
    assert_eq!(k.ksize(&mut *pages, ptr), 128);
    kfree(&mut k, &mut pages, ptr).expect("valid free");
    assert_eq!(k.ksize(&mut *pages, ptr), 0);
}

/// mm/kasan/kasan_test_c.c `kfree_via_page`: a pointer rebuilt from its page and offset
/// frees the object.
#[test]
fn kfree_via_page() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let ptr = kmalloc(&mut k, &mut pages, 8);
    let page = pages.pfn(ptr);
    let offset = ptr % PAGE_SIZE;
    let again = pages.address(page) + offset;
    kfree(&mut k, &mut pages, again).expect("the same object");
    assert_eq!(k.caches[0].counts().0, 0, "kmalloc-8 has nothing allocated");
}

/// mm/kasan/kasan_test_c.c `kfree_via_phys`: a pointer rebuilt from its physical address
/// (page frame × 4096 + offset) frees the object.
#[test]
fn kfree_via_phys() {
    let mut pages = backend();
    let mut k = kmalloc_debug();
    let ptr = kmalloc(&mut k, &mut pages, 8);
    let phys = pages.pfn(ptr) * PAGE_SIZE + ptr % PAGE_SIZE;
    let virt = pages.address(phys / PAGE_SIZE) + phys % PAGE_SIZE;
    kfree(&mut k, &mut pages, virt).expect("the same object");
    assert_eq!(k.caches[0].counts().0, 0, "kmalloc-8 has nothing allocated");
}

/// mm/kasan/kasan_test_c.c `kmem_cache_double_free`.
#[test]
fn kmem_cache_double_free() {
    let mut pages = backend();
    let mut cache = debug_cache("test_cache", 200);
    let p = alloc(&mut cache, &mut pages);
    free(&mut cache, &mut pages, p).expect("valid free");
    let err = free(&mut cache, &mut pages, p).expect_err("double free");
    assert_eq!(err, SlabError { cache: "test_cache", object: p, kind: SlabErrorKind::DoubleFree });
    assert_eq!(cache.destroy(&mut *pages), Ok(()));
}

/// mm/kasan/kasan_test_c.c `kmem_cache_invalid_free`: a free of a pointer one byte into an
/// object is refused and does not free it (the C cache is `SLAB_TYPESAFE_BY_RCU`, which
/// changes nothing here).
#[test]
fn kmem_cache_invalid_free() {
    let mut pages = backend();
    let mut cache = debug_cache("test_cache", 200);
    let p = alloc(&mut cache, &mut pages);
    let err = free(&mut cache, &mut pages, p + 1).expect_err("invalid free");
    assert_eq!(
        err,
        SlabError { cache: "test_cache", object: p + 1, kind: SlabErrorKind::NotAtBoundary }
    );
    assert_eq!(cache.counts().0, 1, "the object was not freed");
    free(&mut cache, &mut pages, p).expect("valid free");
    assert_eq!(cache.destroy(&mut *pages), Ok(()));
}

/// mm/kasan/kasan_test_c.c `kmem_cache_double_destroy`: Linux frees the cache itself, so a
/// second destroy is a use after free. Ours is a value its holder owns: destroy empties it
/// and a second destroy has nothing to do, and gives no page back twice.
#[test]
fn kmem_cache_double_destroy() {
    let mut pages = backend();
    let mut cache = Box::new(KmemCache::new("test_cache", 200, 8, false).expect("valid"));
    let p = alloc(&mut cache, &mut pages);
    free(&mut cache, &mut pages, p).expect("valid free");
    assert_eq!(cache.destroy(&mut *pages), Ok(()));
    let free_pages = pages.buddy().nr_free_pages();
    assert_eq!(cache.destroy(&mut *pages), Ok(()));
    assert_eq!(cache.counts(), (0, 0, 0));
    assert_eq!(pages.buddy().nr_free_pages(), free_pages);
}

// ---------------------------------------------------------------------------------------
// kmalloc_size_roundup() and ksize()
// ---------------------------------------------------------------------------------------

/// Linux's `kmalloc_size_roundup()` (mm/slab_common.c) with the default `KMALLOC_MIN_SIZE`
/// of 8: the caches 8, 16, 32, 64, 96, 128, 192, 256, 512, 1k, 2k, 4k, 8k (sizes 65 to 96
/// go to 96, 129 to 192 to 192); whole pages (`PAGE_SIZE << get_order(size)`) above the
/// largest cache up to `KMALLOC_MAX_SIZE`; the size itself for 0 and beyond.
fn linux_kmalloc_size_roundup(size: u64) -> u64 {
    match size {
        0 => 0,
        1..=8 => 8,
        9..=16 => 16,
        17..=32 => 32,
        33..=64 => 64,
        65..=96 => 96,
        97..=128 => 128,
        129..=192 => 192,
        193..=KMALLOC_MAX_CACHE_SIZE => size.next_power_of_two(),
        // get_order(): fls((size - 1) >> PAGE_SHIFT).
        _ if size <= KMALLOC_MAX_SIZE => PAGE_SIZE << (64 - ((size - 1) >> 12).leading_zeros()),
        _ => size,
    }
}

/// Every size from 1 to 8192 goes to Linux's size class, and `ksize` reports it, with and
/// without debug; larger sizes get Linux's page blocks. (No C counterpart: the facts of
/// mm/slab_common.c's `kmalloc_info` and `size_index` tables.)
#[test]
fn kmalloc_size_roundup_and_ksize_follow_linux_classes() {
    let mut pages = backend();
    for debug in [false, true] {
        let mut k = Box::new(Kmalloc::new(debug).expect("caches"));
        for size in 1..=KMALLOC_MAX_CACHE_SIZE {
            let expected = linux_kmalloc_size_roundup(size);
            let class = Kmalloc::class(size).expect("a slab class");
            assert_eq!(KMALLOC_SIZES[class], expected, "class of {size}");
            let p = kmalloc(&mut k, &mut pages, size);
            assert_eq!(k.ksize(&mut *pages, p), expected, "ksize of {size} (debug {debug})");
            let pfn = pages.pfn(p);
            assert_eq!(k.cache_of(&mut *pages, pfn), Some(class), "{size}");
            kfree(&mut k, &mut pages, p).expect("valid free");
        }
        for size in [8193, 12_288, 12_289, 16_384, 16_385, 100_000, 1 << 20, KMALLOC_MAX_SIZE] {
            let expected = linux_kmalloc_size_roundup(size);
            assert_eq!(Kmalloc::class(size), None, "{size}");
            let p = kmalloc(&mut k, &mut pages, size);
            assert_eq!(k.ksize(&mut *pages, p), expected, "ksize of {size} (debug {debug})");
            kfree(&mut k, &mut pages, p).expect("valid free");
        }
        assert_eq!(k.kmalloc(&mut *pages, 0), Ok(Some(ZERO_SIZE_PTR)));
        assert_eq!(k.ksize(&mut *pages, ZERO_SIZE_PTR), linux_kmalloc_size_roundup(0));
        assert_eq!(k.kmalloc(&mut *pages, KMALLOC_MAX_SIZE + 1), Ok(None));
    }
}
