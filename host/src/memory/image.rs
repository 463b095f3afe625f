//! An in-memory guest image: synthetic physical memory for unit tests, fuzzing and benchmarks.

use super::{check_access, to_usize, Gpa, GuestMemory, MemoryError, Pause, PhysRange};

/// Guest RAM held in a `Vec`, starting at guest-physical 0. Pause and resume do nothing.
#[derive(Clone, Debug)]
pub struct ImageMemory {
    bytes: Vec<u8>,
    ranges: [PhysRange; 1],
}

impl ImageMemory {
    /// A zeroed image of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        Self::from_bytes(vec![0; len])
    }

    /// An image holding `bytes` at guest-physical 0.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let len = bytes.len() as u64;
        Self { bytes, ranges: [PhysRange { start: Gpa(0), len }] }
    }

    /// The image's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl GuestMemory for ImageMemory {
    fn describe(&self) -> String {
        format!("image ({} KiB)", self.bytes.len() >> 10)
    }

    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        check_access(&self.ranges, gpa, buf.len())?;
        // In bounds: the range starts at 0 and is `bytes.len()` long.
        let at = to_usize(gpa.raw());
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }

    fn write_phys(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), MemoryError> {
        check_access(&self.ranges, gpa, data.len())?;
        let at = to_usize(gpa.raw());
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn pause(&mut self) -> Result<Pause, MemoryError> {
        Ok(Pause::Still)
    }

    fn resume(&mut self) -> Result<(), MemoryError> {
        Ok(())
    }
}
