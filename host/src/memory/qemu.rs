//! The QEMU backend: guest RAM from QEMU's shared memory-backend file, pause/resume over QMP.
//!
//! QEMU is started with `-object memory-backend-file,mem-path=FILE,share=on`; mapping the same
//! file shared gives this process the guest's physical memory. The file holds RAM in order, but
//! the guest sees it split around the PCI hole below 4 GiB: the first part at 0, the rest at 4 GiB
//! ([`MachineType::split`]).

use std::path::Path;
use std::str::FromStr;

use super::mapped::{Access, MappedFile};
use super::qemu_guest::{QemuGuest, QemuRam};
use super::qemu_monitor::{Monitor, QemuMonitor};
use super::qmp::QmpClient;
use super::segments::{Segment, SegmentMap};
use super::{Gpa, MemoryError, PhysRange};

/// Start of RAM above the PCI hole.
const FOUR_GIB: u64 = 1 << 32;

/// The QEMU machine type, which decides where RAM is split around the PCI hole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MachineType {
    /// `-machine q35` (QEMU's `pc_q35_init`): at 2.75 GiB or more, 2 GiB stay below 4 GiB.
    #[default]
    Q35,
    /// `-machine pc` (i440fx, `pc_init1` with gigabyte alignment): at 3.5 GiB or more, 3 GiB stay below.
    Pc,
}

impl MachineType {
    /// How many bytes of a `ram_size`-byte guest sit below 4 GiB; the rest starts at 4 GiB.
    pub fn split(self, ram_size: u64) -> u64 {
        let (threshold, below) = match self {
            Self::Q35 => (0xb000_0000, 0x8000_0000),
            Self::Pc => (0xe000_0000, 0xc000_0000),
        };
        if ram_size >= threshold {
            below
        } else {
            ram_size
        }
    }
}

impl FromStr for MachineType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "q35" => Ok(Self::Q35),
            "pc" | "i440fx" => Ok(Self::Pc),
            other => Err(format!("unknown QEMU machine type {other:?} (expected q35 or pc)")),
        }
    }
}

/// A QEMU guest's RAM file, mapped shared: where [`QemuMemory`] reads and writes.
#[derive(Debug)]
pub struct SharedFileRam {
    ram: MappedFile,
    segments: SegmentMap,
}

/// A QEMU guest's RAM file and its QMP socket.
pub type QemuMemory = QemuGuest<SharedFileRam>;

impl QemuMemory {
    /// Maps the RAM file at `ram_file` and, if given, connects to the QMP socket for pause/resume.
    pub fn open(ram_file: &Path, qmp_socket: Option<&Path>, machine: MachineType) -> Result<Self, MemoryError> {
        let bad = |reason| MemoryError::BadFile { path: ram_file.to_path_buf(), reason };
        let ram = MappedFile::open(ram_file, Access::ReadWrite)?;
        let size = ram.len();
        if size % super::PAGE_SIZE != 0 {
            return Err(bad(format!("size {size} is not a multiple of the page size: not a QEMU RAM file")));
        }
        let below = machine.split(size);
        let mut segments = vec![Segment { range: PhysRange { start: Gpa(0), len: below }, file_offset: 0 }];
        if size > below {
            segments.push(Segment { range: PhysRange { start: Gpa(FOUR_GIB), len: size - below }, file_offset: below });
        }
        let segments = SegmentMap::new(segments, size).map_err(bad)?;
        let qmp = qmp_socket.map(QmpClient::connect).transpose()?;
        let description = format!("qemu:{} ({} MiB)", ram_file.display(), size >> 20);
        let monitor = QemuMonitor::new(qmp.map(|q| Box::new(q) as Box<dyn Monitor>));
        Ok(QemuGuest::new(SharedFileRam { ram, segments }, monitor, description))
    }
}

impl QemuRam for SharedFileRam {
    fn ranges(&self) -> &[PhysRange] {
        self.segments.ranges()
    }

    fn check_backing(&self) -> Result<(), MemoryError> {
        self.ram.check()
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        // In bounds: `SegmentMap::new` checked every segment against the file's length.
        self.segments.for_each_piece(gpa, buf.len(), |file_offset, start, end| self.ram.copy_to(file_offset, &mut buf[start..end]))?;
        self.ram.intact()
    }

    fn write_phys(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), MemoryError> {
        let ram = &mut self.ram;
        self.segments.for_each_piece(gpa, data.len(), |file_offset, start, end| ram.copy_from(file_offset, &data[start..end]))?;
        // A write that met the end of a shrunk file went to a private zero page, not the guest.
        self.ram.intact()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestMemory;

    #[test]
    fn ram_is_split_around_the_pci_hole() {
        assert_eq!(MachineType::Q35.split(256 << 20), 256 << 20);
        assert_eq!(MachineType::Q35.split(0xb000_0000), 0x8000_0000);
        assert_eq!(MachineType::Pc.split(3 << 30), 3 << 30);
        assert_eq!(MachineType::Pc.split(4 << 30), 0xc000_0000);
    }

    fn temp_ram(size: u64) -> (std::path::PathBuf, QemuMemory) {
        let path = std::env::temp_dir().join(format!("xsched-qemu-test-{}-{size}", std::process::id()));
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(size).expect("size");
        let mem = QemuMemory::open(&path, None, MachineType::Q35).expect("open");
        (path, mem)
    }

    #[test]
    fn reads_and_writes_cross_pages() {
        let (path, mut mem) = temp_ram(4 * 4096);
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        mem.write_phys(Gpa(4096 - 7), &data).expect("write across pages");
        let mut back = vec![0u8; 5000];
        mem.read_phys(Gpa(4096 - 7), &mut back).expect("read across pages");
        assert_eq!(back, data);
        let on_disk = std::fs::read(&path).expect("file");
        assert_eq!(&on_disk[4096 - 7..4096 - 7 + 5000], &data[..]);
        assert!(matches!(mem.read_phys(Gpa(4 * 4096 - 4), &mut [0u8; 8]), Err(MemoryError::OutOfRange { .. })));
        assert!(matches!(mem.pause(), Err(MemoryError::Unsupported { .. })), "no QMP socket: no pause");
        std::fs::remove_file(path).expect("cleanup");
    }

    #[test]
    fn ram_above_the_hole_sits_at_four_gib() {
        // A sparse 3 GiB file: q35 puts 2 GiB low and 1 GiB at 4 GiB.
        let (path, mut mem) = temp_ram(3 << 30);
        assert_eq!(
            mem.ranges(),
            &[PhysRange { start: Gpa(0), len: 2 << 30 }, PhysRange { start: Gpa(FOUR_GIB), len: 1 << 30 }]
        );
        mem.write_u64(Gpa(FOUR_GIB + 8), 0x1122_3344_5566_7788).expect("write high");
        assert_eq!(mem.read_u64(Gpa(FOUR_GIB + 8)).expect("read high"), 0x1122_3344_5566_7788);
        assert!(mem.read_u64(Gpa(3 << 30)).is_err(), "the hole is not RAM");
        let mut b = [0u8; 8];
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path).expect("open");
        f.seek(SeekFrom::Start((2 << 30) + 8)).expect("seek");
        f.read_exact(&mut b).expect("read");
        assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788, "high RAM follows low RAM in the file");
        std::fs::remove_file(path).expect("cleanup");
    }

    #[test]
    fn a_ram_file_that_shrinks_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ram");
        std::fs::write(&path, vec![0xa5u8; 16 * 4096]).expect("write");
        let mem = QemuMemory::open(&path, None, MachineType::Q35).expect("open");
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(8 * 4096).expect("truncate");
        // No access has met the new end yet: what is left reads as before; the check sees it.
        let mut b = [0u8; 8];
        mem.read_phys(Gpa(4096), &mut b).expect("inside what is left");
        assert_eq!(b, [0xa5; 8]);
        assert!(matches!(mem.check_backing(), Err(MemoryError::Shrunk { .. })));
        // Past the end: an error naming the file and both sizes, not SIGBUS.
        let error = mem.read_phys(Gpa(12 * 4096 - 4), &mut b).expect_err("past the end");
        assert!(matches!(error, MemoryError::Shrunk { now: 32768, was: 65536, .. }), "{error}");
        assert_eq!(error.to_string(), format!("{} shrank while mapped (now 32768 bytes, was 65536)", path.display()));
        // From then on every access fails, even inside what is left: documented in `mapped`.
        assert!(matches!(mem.read_phys(Gpa(4096), &mut b), Err(MemoryError::Shrunk { .. })));
    }

    #[test]
    fn a_write_past_a_shrunk_end_reaches_nothing_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ram");
        std::fs::write(&path, vec![0u8; 4 * 4096]).expect("write");
        let mut mem = QemuMemory::open(&path, None, MachineType::Q35).expect("open");
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(4096).expect("truncate");
        let error = mem.write_u64(Gpa(3 * 4096), 0x1122_3344).expect_err("past the end");
        assert!(matches!(error, MemoryError::Shrunk { .. }), "{error}");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 4096, "the write did not reach the file");
    }
}
