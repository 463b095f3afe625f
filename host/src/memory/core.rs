//! The core-dump backend: guest RAM from an ELF core written by QEMU's `dump-guest-memory`.
//!
//! Each `PT_LOAD` segment holds one guest-physical range (`p_paddr`). A dump is a still picture:
//! writes are refused, and pause/resume are not supported.

use std::path::Path;

use object::elf::{FileHeader64, ET_CORE, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use super::mapped::{Access, MappedFile};
use super::segments::{Segment, SegmentMap};
use super::{Gpa, GuestMemory, MemoryError, Pause, PhysRange};

/// A read-only ELF core dump of a guest.
#[derive(Debug)]
pub struct CoreMemory {
    map: MappedFile,
    segments: SegmentMap,
}

impl CoreMemory {
    /// Maps the core file at `path` and reads its program headers.
    pub fn open(path: &Path) -> Result<Self, MemoryError> {
        let map = MappedFile::open(path, Access::ReadOnly)?;
        // SAFETY: the slice lives only while the headers are parsed, and a dump is not written
        // while it is read. If it shrinks meanwhile the lost pages read as zeros, which `intact`
        // reports below.
        let segments = load_segments(unsafe { map.bytes() });
        map.intact()?;
        let segments = segments.map_err(|reason| MemoryError::BadFile { path: path.to_path_buf(), reason })?;
        Ok(Self { map, segments })
    }
}

/// The guest-physical segments of an ELF64 core.
fn load_segments(data: &[u8]) -> Result<SegmentMap, String> {
    let header = FileHeader64::<Endianness>::parse(data).map_err(|e| format!("not an ELF64 file: {e}"))?;
    let endian = header.endian().map_err(|e| format!("bad ELF header: {e}"))?;
    if header.e_type(endian) != ET_CORE {
        return Err("not an ELF core file (e_type is not ET_CORE)".into());
    }
    let headers = header.program_headers(endian, data).map_err(|e| format!("bad program headers: {e}"))?;
    let segments = headers
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD)
        .map(|ph| {
            if ph.p_filesz(endian) != ph.p_memsz(endian) {
                return Err(format!("segment at paddr {:#x} is incomplete in the file", ph.p_paddr(endian)));
            }
            Ok(Segment {
                range: PhysRange { start: Gpa(ph.p_paddr(endian)), len: ph.p_filesz(endian) },
                file_offset: ph.p_offset(endian),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    SegmentMap::new(segments, data.len() as u64)
}

impl GuestMemory for CoreMemory {
    fn describe(&self) -> String {
        format!("core:{} ({} MiB)", self.map.path().display(), self.ram_size() >> 20)
    }

    fn ranges(&self) -> &[PhysRange] {
        self.segments.ranges()
    }

    fn check_backing(&self) -> Result<(), MemoryError> {
        self.map.check()
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        // In bounds: `SegmentMap::new` checked every segment against the file's length.
        self.segments.for_each_piece(gpa, buf.len(), |file_offset, start, end| self.map.copy_to(file_offset, &mut buf[start..end]))?;
        self.map.intact()
    }

    fn write_phys(&mut self, _gpa: Gpa, _data: &[u8]) -> Result<(), MemoryError> {
        Err(MemoryError::ReadOnly { backend: self.describe() })
    }

    fn pause(&mut self) -> Result<Pause, MemoryError> {
        Ok(Pause::Still)
    }

    fn resume(&mut self) -> Result<(), MemoryError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::elf::EM_X86_64;
    use object::write::elf::{FileHeader as WFileHeader, ProgramHeader as WProgramHeader, Writer};

    /// Builds a small ELF core with two RAM segments: 0x0..0x2000 and 0x3000..0x4000.
    fn synthetic_core() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(Endianness::Little, true, &mut out);
        w.reserve_file_header();
        w.reserve_program_headers(2);
        let low = w.reserve(0x2000, 0x1000);
        let high = w.reserve(0x1000, 0x1000);
        w.write_file_header(&WFileHeader {
            os_abi: 0,
            abi_version: 0,
            e_type: ET_CORE,
            e_machine: EM_X86_64,
            e_entry: 0,
            e_flags: 0,
        })
        .expect("header");
        for (offset, paddr, len) in [(low, 0u64, 0x2000u64), (high, 0x3000, 0x1000)] {
            w.write_program_header(&WProgramHeader {
                p_type: PT_LOAD,
                p_flags: 0,
                p_offset: offset as u64,
                p_vaddr: 0,
                p_paddr: paddr,
                p_filesz: len,
                p_memsz: len,
                p_align: 0,
            });
        }
        w.pad_until(low);
        let pattern: Vec<u8> = (0..0x3000u32).map(|i| (i % 251) as u8).collect();
        w.write(&pattern[..0x2000]);
        w.pad_until(high);
        w.write(&pattern[0x2000..]);
        out
    }

    #[test]
    fn core_segments_map_to_guest_physical_addresses() {
        let path = std::env::temp_dir().join(format!("xsched-core-test-{}", std::process::id()));
        std::fs::write(&path, synthetic_core()).expect("write core");
        let mut mem = CoreMemory::open(&path).expect("open");
        assert_eq!(
            mem.ranges(),
            &[PhysRange { start: Gpa(0), len: 0x2000 }, PhysRange { start: Gpa(0x3000), len: 0x1000 }]
        );
        let mut buf = [0u8; 16];
        mem.read_phys(Gpa(0xff8), &mut buf).expect("read across a page");
        let expected: Vec<u8> = (0xff8u32..0x1008).map(|i| (i % 251) as u8).collect();
        assert_eq!(&buf[..], &expected[..]);
        mem.read_phys(Gpa(0x3000), &mut buf).expect("read second segment");
        assert_eq!(buf[0], (0x2000u32 % 251) as u8);
        assert!(matches!(mem.read_phys(Gpa(0x1ff8), &mut buf), Err(MemoryError::OutOfRange { .. })));
        assert!(matches!(mem.write_phys(Gpa(0), &[1]), Err(MemoryError::ReadOnly { .. })));
        assert_eq!(mem.pause().expect("a core is still"), Pause::Still);
        std::fs::remove_file(path).expect("cleanup");
    }

    #[test]
    fn non_core_files_are_refused_with_a_reason() {
        assert!(load_segments(b"not an elf at all").expect_err("refused").contains("not an ELF64"));
    }

    #[test]
    fn a_core_that_shrinks_while_mapped_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core");
        std::fs::write(&path, synthetic_core()).expect("write core");
        let mem = CoreMemory::open(&path).expect("open");
        // Keep the headers, lose the RAM (a dump being rewritten in place).
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(0x1000).expect("truncate");
        let error = mem.read_u64(Gpa(0x3000)).expect_err("past the end");
        assert!(matches!(error, MemoryError::Shrunk { now: 0x1000, .. }), "{error}");
        assert!(error.to_string().starts_with(&format!("{} shrank while mapped", path.display())), "{error}");
        assert!(matches!(mem.check_backing(), Err(MemoryError::Shrunk { .. })));
    }
}
