//! The ELF loader's parser: a static x86_64 executable's header and `PT_LOAD` segments,
//! validated before anything is mapped (Linux's `load_elf_binary` checks, and a few more).
//!
//! ```text
//! ELF header (64 bytes)      e_entry, e_phoff, e_phnum
//! program headers (56 each)  PT_LOAD: p_offset, p_vaddr, p_filesz, p_memsz, p_flags
//! segment bytes              [p_offset, p_offset + p_filesz) of the file; the rest of
//!                            [p_vaddr, p_vaddr + p_memsz) is zero (bss)
//! ```
//!
//! An image is refused with its reason: truncated, not x86_64 `ET_EXEC`, a segment outside
//! the file or user space, overlapping segments, a writable and executable segment, or an
//! entry point outside executable code. The bytes are untrusted: every offset is checked
//! arithmetic, nothing panics.

use shared::process::TASK_SIZE;

/// Segments a program may have.
pub const MAX_SEGMENTS: usize = 8;
/// Lowest address a segment may start at (Linux's default `mmap_min_addr`).
pub const MIN_ADDR: u64 = 0x1_0000;
const PAGE: u64 = 4096;

/// Segment flag: executable (`PF_X`).
pub const PF_X: u32 = 1;
/// Segment flag: writable (`PF_W`).
pub const PF_W: u32 = 2;
/// Segment flag: readable (`PF_R`).
pub const PF_R: u32 = 4;

const PT_LOAD: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// Why an image cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// The file ends inside its header or program headers.
    Truncated,
    /// Not an ELF file (magic).
    NotElf,
    /// Not a 64-bit little-endian x86_64 static executable (`ET_EXEC`).
    Unsupported,
    /// No `PT_LOAD` segment, or more than [`MAX_SEGMENTS`].
    SegmentCount,
    /// Segment `index`'s file bytes lie outside the file, or exceed its memory size.
    OutsideFile {
        /// The segment, counting `PT_LOAD`s from 0.
        index: usize,
    },
    /// Segment `index`'s address and file offset disagree modulo the page size.
    Misaligned {
        /// The segment.
        index: usize,
    },
    /// Segment `index` reaches outside user space: below [`MIN_ADDR`] or into the kernel.
    OutsideUserSpace {
        /// The segment.
        index: usize,
    },
    /// Segment `index` shares a page with the one before it, or comes before it.
    Overlap {
        /// The segment.
        index: usize,
    },
    /// Segment `index` is both writable and executable.
    WriteAndExecute {
        /// The segment.
        index: usize,
    },
    /// The entry point is not in an executable segment.
    EntryOutside,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated => write!(f, "truncated: the file ends inside its headers"),
            Self::NotElf => write!(f, "not an ELF file"),
            Self::Unsupported => write!(f, "not a 64-bit x86_64 static executable"),
            Self::SegmentCount => {
                write!(f, "needs 1 to {MAX_SEGMENTS} loadable segments")
            }
            Self::OutsideFile { index } => write!(f, "segment {index} lies outside the file"),
            Self::Misaligned { index } => {
                write!(f, "segment {index}: address and file offset differ within a page")
            }
            Self::OutsideUserSpace { index } => {
                write!(f, "segment {index} lies outside user space")
            }
            Self::Overlap { index } => {
                write!(f, "segment {index} overlaps the one before it")
            }
            Self::WriteAndExecute { index } => {
                write!(f, "segment {index} is writable and executable")
            }
            Self::EntryOutside => write!(f, "the entry point is outside the executable code"),
        }
    }
}

/// A loadable segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address of its first byte.
    pub vaddr: u64,
    /// Bytes in memory.
    pub memsz: u64,
    /// File offset of its bytes.
    pub offset: u64,
    /// Bytes from the file; the rest of `memsz` is zero.
    pub filesz: u64,
    /// `PF_R`, `PF_W`, `PF_X`.
    pub flags: u32,
}

impl Segment {
    /// The pages it occupies: `[start, end)`, page aligned.
    pub fn pages(&self) -> (u64, u64) {
        let start = self.vaddr & !(PAGE - 1);
        let end = (self.vaddr + self.memsz).div_ceil(PAGE) * PAGE;
        (start, end)
    }
}

/// A validated program.
#[derive(Clone, Debug)]
pub struct Program<'a> {
    /// The entry point.
    pub entry: u64,
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
    image: &'a [u8],
}

impl<'a> Program<'a> {
    /// Parses and validates `image`.
    pub fn parse(image: &'a [u8]) -> Result<Self, ElfError> {
        let header = image.get(..EHDR_SIZE).ok_or(ElfError::Truncated)?;
        if header[..4] != *b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        // ELFCLASS64, ELFDATA2LSB, EV_CURRENT; ET_EXEC, EM_X86_64.
        if header[4] != 2 || header[5] != 1 || header[6] != 1 {
            return Err(ElfError::Unsupported);
        }
        if u16_at(header, 16) != 2 || u16_at(header, 18) != 62 {
            return Err(ElfError::Unsupported);
        }
        let entry = u64_at(header, 24);
        let phoff = usize::try_from(u64_at(header, 32)).map_err(|_| ElfError::Truncated)?;
        if usize::from(u16_at(header, 54)) != PHDR_SIZE {
            return Err(ElfError::Unsupported);
        }
        let phnum = usize::from(u16_at(header, 56));
        let table_end = phnum.checked_mul(PHDR_SIZE).and_then(|n| n.checked_add(phoff));
        let table = table_end.and_then(|end| image.get(phoff..end)).ok_or(ElfError::Truncated)?;

        let mut program =
            Self { entry, segments: [Segment::default(); MAX_SEGMENTS], count: 0, image };
        for phdr in table.chunks_exact(PHDR_SIZE) {
            if u32_at(phdr, 0) != PT_LOAD {
                continue;
            }
            let index = program.count;
            if index == MAX_SEGMENTS {
                return Err(ElfError::SegmentCount);
            }
            let segment = Segment {
                flags: u32_at(phdr, 4),
                offset: u64_at(phdr, 8),
                vaddr: u64_at(phdr, 16),
                filesz: u64_at(phdr, 32),
                memsz: u64_at(phdr, 40),
            };
            check_segment(&segment, index, image.len() as u64)?;
            if let Some(prev) = index.checked_sub(1).map(|i| program.segments[i]) {
                if segment.pages().0 < prev.pages().1 {
                    return Err(ElfError::Overlap { index });
                }
            }
            program.segments[index] = segment;
            program.count += 1;
        }
        if program.count == 0 {
            return Err(ElfError::SegmentCount);
        }
        let executable = program
            .segments()
            .iter()
            .any(|s| s.flags & PF_X != 0 && s.vaddr <= entry && entry < s.vaddr + s.memsz);
        if !executable {
            return Err(ElfError::EntryOutside);
        }
        Ok(program)
    }

    /// The loadable segments, in address order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }

    /// The file bytes of `segment` (validated by [`Program::parse`]).
    pub fn file_bytes(&self, segment: &Segment) -> &'a [u8] {
        let start = usize::try_from(segment.offset).unwrap_or(usize::MAX);
        let len = usize::try_from(segment.filesz).unwrap_or(0);
        self.image.get(start..start.saturating_add(len)).unwrap_or(&[])
    }
}

fn check_segment(segment: &Segment, index: usize, file_len: u64) -> Result<(), ElfError> {
    let file_end = segment.offset.checked_add(segment.filesz);
    if segment.filesz > segment.memsz || file_end.is_none_or(|end| end > file_len) {
        return Err(ElfError::OutsideFile { index });
    }
    if segment.vaddr % PAGE != segment.offset % PAGE {
        return Err(ElfError::Misaligned { index });
    }
    let end = segment.vaddr.checked_add(segment.memsz);
    if segment.memsz == 0 || segment.vaddr < MIN_ADDR || end.is_none_or(|end| end > TASK_SIZE) {
        return Err(ElfError::OutsideUserSpace { index });
    }
    if segment.flags & (PF_W | PF_X) == PF_W | PF_X {
        return Err(ElfError::WriteAndExecute { index });
    }
    Ok(())
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// An image with `segments` (vaddr, memsz, filesz, flags), their bytes after the headers.
    #[expect(clippy::cast_possible_truncation, reason = "test images are small")]
    fn image(entry: u64, segments: &[(u64, u64, u64, u32)]) -> Vec<u8> {
        let data_start = (EHDR_SIZE + segments.len() * PHDR_SIZE).div_ceil(4096) * 4096;
        let mut out = std::vec![0u8; data_start];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4..7].copy_from_slice(&[2, 1, 1]);
        out[16..18].copy_from_slice(&2u16.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, &(vaddr, memsz, filesz, flags)) in segments.iter().enumerate() {
            let offset = (out.len() as u64).div_ceil(4096) * 4096 + vaddr % 4096;
            out.resize(offset as usize, 0);
            out.extend((0..filesz).map(|b| b as u8));
            let p = EHDR_SIZE + i * PHDR_SIZE;
            out[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            out[p + 4..p + 8].copy_from_slice(&flags.to_le_bytes());
            out[p + 8..p + 16].copy_from_slice(&offset.to_le_bytes());
            out[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
            out[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
            out[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        out
    }

    const TEXT: (u64, u64, u64, u32) = (0x40_0000, 0x1800, 0x1800, PF_R | PF_X);
    const DATA: (u64, u64, u64, u32) = (0x40_2000, 0x3000, 0x100, PF_R | PF_W);

    #[test]
    fn a_good_image_gives_its_segments_and_bytes() {
        let bytes = image(0x40_0010, &[TEXT, DATA]);
        let program = Program::parse(&bytes).expect("a valid image");
        assert_eq!(program.entry, 0x40_0010);
        assert_eq!(program.segments().len(), 2);
        let data = program.segments()[1];
        assert_eq!((data.vaddr, data.memsz, data.filesz), (0x40_2000, 0x3000, 0x100));
        assert_eq!(program.file_bytes(&data)[..3], [0, 1, 2]);
        assert_eq!(data.pages(), (0x40_2000, 0x40_5000));
    }

    #[test]
    fn each_bad_image_is_refused_with_its_reason() {
        let good = image(0x40_0010, &[TEXT, DATA]);
        assert_eq!(Program::parse(&good[..40]).err(), Some(ElfError::Truncated));
        assert_eq!(Program::parse(&good[..100]).err(), Some(ElfError::Truncated));
        let mut not_elf = good.clone();
        not_elf[0] = 0;
        assert_eq!(Program::parse(&not_elf).err(), Some(ElfError::NotElf));
        let mut shared_object = good.clone();
        shared_object[16] = 3;
        assert_eq!(Program::parse(&shared_object).err(), Some(ElfError::Unsupported));
        let overlap = image(0x40_0010, &[TEXT, (0x40_1000, 0x1000, 0, PF_R)]);
        assert_eq!(Program::parse(&overlap).err(), Some(ElfError::Overlap { index: 1 }));
        let wx = image(0x40_0010, &[(0x40_0000, 0x1000, 0x10, PF_R | PF_W | PF_X)]);
        assert_eq!(Program::parse(&wx).err(), Some(ElfError::WriteAndExecute { index: 0 }));
        let outside = image(0x40_0010, &[TEXT, DATA]);
        let entry_in_data = {
            let mut bytes = outside.clone();
            bytes[24..32].copy_from_slice(&0x40_2000u64.to_le_bytes());
            bytes
        };
        assert_eq!(Program::parse(&entry_in_data).err(), Some(ElfError::EntryOutside));
        let kernel =
            image(0xffff_ffff_8000_0000, &[(0xffff_ffff_8000_0000, 0x1000, 0, PF_R | PF_X)]);
        assert_eq!(Program::parse(&kernel).err(), Some(ElfError::OutsideUserSpace { index: 0 }));
        let straddle = image(TASK_SIZE - 0x1000, &[(TASK_SIZE - 0x1000, 0x2000, 0, PF_R | PF_X)]);
        assert_eq!(Program::parse(&straddle).err(), Some(ElfError::OutsideUserSpace { index: 0 }));
        let mut short = image(0x40_0010, &[TEXT]);
        short.truncate(short.len() - 1);
        assert_eq!(Program::parse(&short).err(), Some(ElfError::OutsideFile { index: 0 }));
        let none = image(0x40_0010, &[]);
        assert_eq!(Program::parse(&none).err(), Some(ElfError::SegmentCount));
    }

    proptest! {
        /// Any corruption of a good image is refused or accepted whole; never a panic, and
        /// an accepted image's segments keep every promise the loader relies on.
        #[test]
        fn corrupt_images_never_panic(edits in proptest::collection::vec((0usize..200, any::<u8>()), 0..8), cut in 0usize..8200) {
            let mut bytes = image(0x40_0010, &[TEXT, DATA]);
            for (at, value) in edits {
                bytes[at] = value;
            }
            bytes.truncate(cut.max(1));
            if let Ok(program) = Program::parse(&bytes) {
                let mut last_end = 0;
                for s in program.segments() {
                    prop_assert!(s.filesz <= s.memsz && s.vaddr >= MIN_ADDR);
                    prop_assert!(s.vaddr + s.memsz <= TASK_SIZE && s.pages().0 >= last_end);
                    prop_assert!(s.flags & (PF_W | PF_X) != PF_W | PF_X);
                    prop_assert_eq!(program.file_bytes(s).len() as u64, s.filesz);
                    last_end = s.pages().1;
                }
            }
        }
    }
}
