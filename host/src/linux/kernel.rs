//! A located guest kernel: its memory, its profile, and kernel-virtual reads.

use crate::memory::{Gpa, GuestMemory, Gva, Pausable};
use crate::profile::Profile;

use super::locate::KernelLocation;
use super::redo::RedoLog;
use super::virt::{KernelMemory, KernelMemoryMut};
use super::LinuxError;

/// A guest kernel that [`super::locate::locate`] found, ready to be read by virtual address.
///
/// Two address ranges translate without a page walk, because the kernel maps them linearly by
/// construction: the kernel image (`_text` .. `_end`) and the direct map of physical memory
/// (`page_offset_base` + physical address). Everything else walks the page tables.
pub struct Kernel {
    mem: Box<dyn GuestMemory>,
    profile: Profile,
    location: KernelLocation,
    /// Highest physical address of RAM plus one: the direct map's extent.
    ram_end: u64,
    /// Where batches of writes are recorded before they are made, if anywhere.
    redo: Option<&'static RedoLog>,
}

impl Kernel {
    /// Finds the kernel in `mem` among `profiles` ([`super::locate::locate_live`]: the guest is
    /// paused only to confirm what the search found) and keeps the profile that matched; when
    /// none does, one built from the guest's own BTF and kallsyms ([`super::discover`]).
    pub fn attach(mut mem: Box<dyn GuestMemory>, mut profiles: Vec<Profile>) -> Result<Self, LinuxError> {
        let (location, _) = super::discover::locate_live_or_build(mem.as_mut(), &mut profiles)?;
        let profile = profiles.swap_remove(location.profile_index);
        Ok(Self::at(mem, profile, location))
    }

    /// The kernel at a known `location` in `mem`, running the kernel `profile` describes — as
    /// an earlier [`Kernel::attach`] found it — after checking that its banner is still there
    /// (a rebooted guest has moved). No search: this is how a supervisor takes over a domain
    /// in the second after its scheduling loop died.
    pub fn reopen(mem: Box<dyn GuestMemory>, profile: Profile, location: KernelLocation) -> Result<Self, LinuxError> {
        let mut banner = vec![0u8; profile.banner.len()];
        mem.read_phys(location.banner, &mut banner)?;
        if banner != profile.banner.as_bytes() {
            return Err(LinuxError::Inconsistent { release: profile.release.clone(), what: format!("the kernel banner is no longer at {} (the guest rebooted?)", location.banner) });
        }
        Ok(Self::at(mem, profile, location))
    }

    fn at(mem: Box<dyn GuestMemory>, profile: Profile, location: KernelLocation) -> Self {
        let ram_end = mem.ranges().iter().map(|r| r.end()).max().unwrap_or(0);
        Self { mem, profile, location, ram_end, redo: None }
    }

    /// Records every batch of writes in `log` before making it (see [`super::redo`]).
    pub fn record_writes_in(&mut self, log: &'static RedoLog) {
        self.redo = Some(log);
    }

    /// The profile of the running kernel.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Where the kernel is.
    pub fn location(&self) -> &KernelLocation {
        &self.location
    }

    /// The guest's memory.
    pub fn memory(&self) -> &dyn GuestMemory {
        self.mem.as_ref()
    }

    /// The guest's memory, for writes and pause/resume.
    pub fn memory_mut(&mut self) -> &mut dyn GuestMemory {
        self.mem.as_mut()
    }

    /// The run-time address of the image symbol `name`.
    pub fn symbol(&self, name: &str) -> Result<Gva, LinuxError> {
        Ok(Gva(self.profile.symbol(name)?.wrapping_add(self.location.virt_shift)))
    }

    /// The address of per-CPU symbol `name` in CPU `cpu`'s area.
    pub fn per_cpu(&self, name: &str, cpu: u32) -> Result<Gva, LinuxError> {
        let offset = usize::try_from(cpu).ok().and_then(|c| self.location.per_cpu_offsets.get(c)).ok_or_else(|| LinuxError::Inconsistent {
            release: self.location.release.clone(),
            what: format!("CPU {cpu} is beyond nr_cpu_ids ({})", self.location.nr_cpu_ids),
        })?;
        Ok(Gva(offset.wrapping_add(self.profile.per_cpu_symbol(name, self.location.virt_shift)?)))
    }

    /// Translates a kernel-virtual address to a guest-physical one.
    pub fn translate(&self, va: Gva) -> Result<Gpa, LinuxError> {
        let loc = &self.location;
        if let Some(offset) = va.checked_offset_from(loc.virt_text).filter(|&o| o < loc.image_size) {
            return Ok(Gpa(loc.phys_text.raw() + offset));
        }
        if let Some(pa) = va.checked_offset_from(loc.page_offset_base).filter(|&pa| pa < self.ram_end) {
            return Ok(Gpa(pa));
        }
        Ok(loc.page_tables.translate(self.mem.as_ref(), va)?)
    }
}

impl Pausable for Kernel {
    fn guest_memory(&mut self) -> &mut dyn GuestMemory {
        self.mem.as_mut()
    }
}

impl KernelMemory for Kernel {
    /// Reads page by page: consecutive virtual pages need not be physically consecutive.
    fn read_virt(&self, va: Gva, buf: &mut [u8]) -> Result<(), LinuxError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = va.checked_add(done as u64).ok_or_else(|| LinuxError::Inconsistent {
                release: self.location.release.clone(),
                what: format!("read at {va} wraps around the address space"),
            })?;
            let in_page = crate::memory::to_usize(crate::memory::PAGE_SIZE - at.page_offset());
            let n = in_page.min(buf.len() - done);
            self.mem.read_phys(self.translate(at)?, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

impl KernelMemoryMut for Kernel {
    /// Writes page by page, like [`KernelMemory::read_virt`] reads. Every page is translated
    /// before the first byte is written, so a write that cannot complete changes nothing.
    fn write_virt(&mut self, va: Gva, data: &[u8]) -> Result<(), LinuxError> {
        let mut pieces = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let at = va.checked_add(done as u64).ok_or_else(|| LinuxError::Inconsistent {
                release: self.location.release.clone(),
                what: format!("write at {va} wraps around the address space"),
            })?;
            let in_page = crate::memory::to_usize(crate::memory::PAGE_SIZE - at.page_offset());
            let n = in_page.min(data.len() - done);
            pieces.push((self.translate(at)?, done, done + n));
            done += n;
        }
        for (gpa, start, end) in pieces {
            self.mem.write_phys(gpa, &data[start..end])?;
        }
        Ok(())
    }

    /// Records the batch in the redo log first, when there is one, and clears it once made.
    fn write_batch(&mut self, writes: &[(Gva, Vec<u8>)]) -> Result<(), LinuxError> {
        if let Some(log) = self.redo {
            log.record(writes)?;
        }
        writes.iter().try_for_each(|(va, data)| self.write_virt(*va, data))?;
        if let Some(log) = self.redo {
            log.clear();
        }
        Ok(())
    }
}
