//! Finding a guest's kernel: which profile it runs, where KASLR put it, and its page tables.
//!
//! 1. The `linux_banner` text of a profile is found through a vCPU's page tables when the
//!    hypervisor reports its `CR3` (no RAM search: the cost does not grow with the guest), else
//!    searched in guest RAM. The text also occurs elsewhere
//!    (log buffers, decompressor data), so a hit counts only if it sits at the symbol's in-page
//!    offset and matches the whole banner.
//! 2. The kernel image is physically contiguous, so the hit fixes the physical address of `_text`
//!    (the physical KASLR shift) and of the root page table `init_top_pgt`.
//! 3. The virtual shift is the 2 MiB slot of the kernel map whose translation is the physical
//!    `_text`. The hit is then validated: the banner's virtual address must translate back to it,
//!    and the kernel's own `phys_base` must agree with both shifts.
//! 4. `page_offset_base` gives the direct-map base, `__per_cpu_offset` the per-CPU areas; every
//!    online CPU's `runqueues.cpu` must name that CPU.

use memchr::memmem;

use crate::arch::x86_64::{PageTables, PagingMode};
use crate::memory::{Gpa, GuestMemory, Gva, Pause, Paused, VcpuPaging};
use crate::profile::Profile;

use super::LinuxError;

/// Bytes of RAM read per step of the banner search.
const SCAN_CHUNK: usize = 8 << 20;
/// Every banner starts with this.
const BANNER_PREFIX: &[u8] = b"Linux version ";
/// The kernel image is mapped, and randomized, in 2 MiB steps.
const KERNEL_ALIGN: u64 = 2 << 20;
/// The kernel map spans 1 GiB from `__START_KERNEL_map` (`KERNEL_IMAGE_SIZE` with KASLR).
const KERNEL_MAP_SIZE: u64 = 1 << 30;
/// The physical-address bits of `CR3` (bits 12–51; below are the PCID or flags).
const CR3_ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// The bit that tells the user half of a page-table-isolation pair from the kernel's.
const PTI_USER_BIT: u64 = 1 << 12;
/// Upper bound on `nr_cpu_ids` (`NR_CPUS` of distribution kernels is at most 8192).
const MAX_CPUS: u32 = 8192;

/// Where a guest's kernel is and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLocation {
    /// Index of the matching profile in the list given to [`locate`].
    pub profile_index: usize,
    /// The kernel release.
    pub release: String,
    /// Physical address of the banner.
    pub banner: Gpa,
    /// Physical address of `_text`.
    pub phys_text: Gpa,
    /// Virtual address of `_text`.
    pub virt_text: Gva,
    /// Physical KASLR shift: how far `_text` was loaded from its link-time physical address.
    pub phys_shift: i64,
    /// Virtual KASLR shift: how far `_text` was mapped from its link-time virtual address.
    pub virt_shift: u64,
    /// Size of the kernel image (`_end - _text`).
    pub image_size: u64,
    /// The kernel's page tables (`init_top_pgt`).
    pub page_tables: PageTables,
    /// Base of the direct map of all physical memory (`page_offset_base`).
    pub page_offset_base: Gva,
    /// `nr_cpu_ids`: CPUs the kernel may ever use.
    pub nr_cpu_ids: u32,
    /// The online CPUs, from `__cpu_online_mask`.
    pub online_cpus: Vec<u32>,
    /// Each possible CPU's per-CPU offset (`__per_cpu_offset[cpu]`).
    pub per_cpu_offsets: Vec<u64>,
}

/// Finds which of `profiles` the guest in `mem` runs and where its kernel is, in a guest that
/// does not run (a core dump, or one the caller paused).
pub fn locate(mem: &dyn GuestMemory, profiles: &[Profile]) -> Result<KernelLocation, LinuxError> {
    let hits = find_banners(mem, profiles)?;
    validate(mem, profiles, hits)
}

/// [`locate`] in a live guest, held paused only for the validation: the search of all RAM for
/// the banner runs while the guest does (the banner is read-only data of the kernel image,
/// which stays put), then the guest is paused for the few page-table and variable reads that
/// confirm a hit, and resumed whatever the outcome. A guest someone else paused is read as it is
/// and left paused: the returned [`Pause`] says which.
pub fn locate_live(mem: &mut dyn GuestMemory, profiles: &[Profile]) -> Result<(KernelLocation, Pause), LinuxError> {
    let from_registers = match mem.vcpu_paging()? {
        Some(paging) => banners_through(mem, profiles, paging)?,
        None => Vec::new(),
    };
    let hits = if from_registers.is_empty() {
        log::debug!("{}: searching RAM for the kernel banner", mem.describe());
        find_banners(mem, profiles)?
    } else {
        log::debug!("{}: kernel banner found through a vCPU's page tables", mem.describe());
        from_registers
    };
    let paused = Paused::take(mem, None)?;
    let pause = paused.pause();
    let located = validate(&*paused, profiles, hits);
    paused.end()?;
    Ok((located?, pause))
}

/// The first of the banner `hits` that checks out as a whole kernel.
fn validate(mem: &dyn GuestMemory, profiles: &[Profile], hits: Vec<(Gpa, usize)>) -> Result<KernelLocation, LinuxError> {
    if hits.is_empty() {
        return Err(LinuxError::NoMatchingProfile(no_match_message(mem, profiles)));
    }
    let mut last_error = None;
    for (gpa, index) in hits {
        match locate_at(mem, &profiles[index], index, gpa) {
            Ok(location) => return Ok(location),
            Err(e) => {
                log::debug!("banner of {} at {gpa} rejected: {e}", profiles[index].release);
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| LinuxError::NoMatchingProfile(no_match_message(mem, profiles))))
}

/// The `(address, profile index)` pairs of profiles whose banner a vCPU's page tables map where
/// the kernel would have it: for each 2 MiB slot the kernel map may put `_text` in (KASLR), the
/// banner's address at that shift is translated through the tables `CR3` names and compared.
/// No RAM search: a few thousand page-table reads whatever the guest's size. With page-table
/// isolation a vCPU in user mode runs on the user half of a pair of tables, the kernel's being
/// the 4 KiB page below: both are tried.
fn banners_through(mem: &dyn GuestMemory, profiles: &[Profile], paging: VcpuPaging) -> Result<Vec<(Gpa, usize)>, LinuxError> {
    let mode = if paging.la57 { PagingMode::FiveLevel } else { PagingMode::FourLevel };
    let root = paging.cr3 & CR3_ADDRESS;
    let mut roots = vec![root];
    if root & PTI_USER_BIT != 0 {
        roots.insert(0, root & !PTI_USER_BIT);
    }
    let mut hits = Vec::new();
    for root in roots {
        let tables = PageTables { root: Gpa(root), mode };
        for (index, profile) in profiles.iter().enumerate() {
            let text_link = profile.symbol("_text")?;
            let banner_link = profile.symbol("linux_banner")?;
            let start_kernel_map = profile.constant("START_KERNEL_MAP")?;
            for slot in 0..KERNEL_MAP_SIZE / KERNEL_ALIGN {
                let shift = (start_kernel_map + slot * KERNEL_ALIGN).wrapping_sub(text_link);
                let Ok(gpa) = tables.translate(mem, Gva(banner_link.wrapping_add(shift))) else { continue };
                if banner_at(mem, gpa, &profile.banner) && !hits.contains(&(gpa, index)) {
                    hits.push((gpa, index));
                }
            }
        }
        if !hits.is_empty() {
            break;
        }
    }
    Ok(hits)
}

/// All `(address, profile index)` pairs where a profile's full banner sits at its in-page offset.
fn find_banners(mem: &dyn GuestMemory, profiles: &[Profile]) -> Result<Vec<(Gpa, usize)>, LinuxError> {
    let offsets = profiles.iter().map(Profile::banner_page_offset).collect::<Result<Vec<_>, _>>()?;
    let mut hits = Vec::new();
    for_each_prefix_hit(mem, |gpa| {
        for (index, profile) in profiles.iter().enumerate() {
            if gpa.page_offset() == offsets[index] && banner_at(mem, gpa, &profile.banner) {
                hits.push((gpa, index));
            }
        }
    })?;
    Ok(hits)
}

/// Calls `found` with the address of every occurrence of [`BANNER_PREFIX`] in RAM.
pub(super) fn for_each_prefix_hit(mem: &dyn GuestMemory, mut found: impl FnMut(Gpa)) -> Result<(), LinuxError> {
    let finder = memmem::Finder::new(BANNER_PREFIX);
    let overlap = BANNER_PREFIX.len() as u64 - 1;
    let mut buf = vec![0u8; SCAN_CHUNK];
    for range in mem.ranges() {
        let mut at = 0u64;
        while at < range.len {
            let len = (range.len - at).min(SCAN_CHUNK as u64);
            let chunk = &mut buf[..crate::memory::to_usize(len)];
            let start = Gpa(range.start.raw() + at);
            mem.read_phys(start, chunk)?;
            for offset in finder.find_iter(chunk) {
                found(Gpa(start.raw() + offset as u64));
            }
            if at + len >= range.len {
                break;
            }
            at += len - overlap;
        }
    }
    Ok(())
}

/// Whether the NUL-terminated `banner` text is at `gpa`.
fn banner_at(mem: &dyn GuestMemory, gpa: Gpa, banner: &str) -> bool {
    let mut text = vec![0u8; banner.len() + 1];
    mem.read_phys(gpa, &mut text).is_ok() && text[..banner.len()] == *banner.as_bytes() && text[banner.len()] == 0
}

/// Explains that no profile matched, naming the kernel releases whose banners are in memory.
fn no_match_message(mem: &dyn GuestMemory, profiles: &[Profile]) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let _ = for_each_prefix_hit(mem, |gpa| {
        let mut text = [0u8; 80];
        if mem.read_phys(gpa, &mut text).is_ok() {
            let release = text[BANNER_PREFIX.len()..].split(|&b| b == b' ' || b == 0).next().unwrap_or_default();
            if !release.is_empty() && release.iter().all(|b| b.is_ascii_graphic()) && seen.len() < 8 {
                seen.insert(String::from_utf8_lossy(release).into_owned());
            }
        }
    });
    let known: Vec<&str> = profiles.iter().map(|p| p.release.as_str()).collect();
    let mut message = format!(
        "{}: no kernel profile matches this guest (profiles tried: {})",
        mem.describe(),
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    );
    match seen.iter().next() {
        Some(release) => message.push_str(&format!(
            "; the guest seems to run Linux {release}: generate its profile with \
             `xsched profile gen --vmlinux /usr/lib/debug/boot/vmlinux-{release} -o kernels/{release}.json` \
             (the vmlinux is in Debian's linux-image-{release}-dbg package)"
        )),
        None => message.push_str("; no Linux banner was found in its memory (is the guest booted?)"),
    }
    message
}

/// Checks the banner hit at `banner` against `profile` and works out the kernel's location.
fn locate_at(mem: &dyn GuestMemory, profile: &Profile, profile_index: usize, banner: Gpa) -> Result<KernelLocation, LinuxError> {
    let inconsistent = |what: String| LinuxError::Inconsistent { release: profile.release.clone(), what };
    let text_link = profile.symbol("_text")?;
    let start_kernel_map = profile.constant("START_KERNEL_MAP")?;
    // The physical address of an image symbol, before the virtual shift is known.
    let image_phys = |symbol: &str| -> Result<Gpa, LinuxError> {
        let offset = profile.symbol(symbol)?.wrapping_sub(text_link);
        let banner_offset = profile.symbol("linux_banner")?.wrapping_sub(text_link);
        banner
            .raw()
            .checked_sub(banner_offset)
            .and_then(|text| text.checked_add(offset))
            .map(Gpa)
            .ok_or_else(|| inconsistent(format!("`{symbol}` would lie outside physical memory")))
    };
    let phys_text = image_phys("_text")?;
    if phys_text.page_offset() != 0 {
        return Err(inconsistent(format!("_text would be at {phys_text}, not page aligned")));
    }
    let mode = if profile.symbols.contains_key("__pgtable_l5_enabled")
        && mem.read_u32(image_phys("__pgtable_l5_enabled")?)? != 0
    {
        PagingMode::FiveLevel
    } else {
        PagingMode::FourLevel
    };
    let page_tables = PageTables { root: image_phys("init_top_pgt")?, mode };

    let virt_text = (0..KERNEL_MAP_SIZE / KERNEL_ALIGN)
        .map(|slot| Gva(start_kernel_map + slot * KERNEL_ALIGN))
        .find(|&va| page_tables.translate(mem, va).is_ok_and(|pa| pa == phys_text))
        .ok_or_else(|| {
            let at_link = match page_tables.translate(mem, Gva(text_link)) {
                Ok(pa) => format!("maps to {pa}"),
                Err(e) => e.to_string(),
            };
            inconsistent(format!("no 2 MiB slot of the kernel map translates to _text at {phys_text} (at its link address: {at_link})"))
        })?;
    let virt_shift = virt_text
        .raw()
        .checked_sub(text_link)
        .ok_or_else(|| inconsistent(format!("_text mapped at {virt_text}, below its link address")))?;

    let banner_va = Gva(profile.symbol("linux_banner")?.wrapping_add(virt_shift));
    if page_tables.translate(mem, banner_va)? != banner {
        return Err(inconsistent(format!("linux_banner at {banner_va} does not translate to the banner found at {banner}")));
    }
    // The kernel's own record of its physical shift: __pa_symbol(x) = x - __START_KERNEL_map + phys_base.
    let phys_base = mem.read_u64(image_phys("phys_base")?)?;
    let expected_phys_base = phys_text.raw().wrapping_sub(virt_text.raw() - start_kernel_map);
    if phys_base != expected_phys_base {
        return Err(inconsistent(format!("phys_base is {phys_base:#x}, the image location implies {expected_phys_base:#x}")));
    }

    let page_offset_base = Gva(mem.read_u64(image_phys("page_offset_base")?)?);
    if !mode.is_canonical(page_offset_base) || page_offset_base.raw() >> 63 == 0 || !page_offset_base.raw().is_multiple_of(1 << 30) {
        return Err(inconsistent(format!("page_offset_base {page_offset_base} is not a 1 GiB aligned kernel address")));
    }

    let nr_cpu_ids = mem.read_u32(image_phys("nr_cpu_ids")?)?;
    if nr_cpu_ids == 0 || nr_cpu_ids > MAX_CPUS {
        return Err(inconsistent(format!("nr_cpu_ids is {nr_cpu_ids}")));
    }
    let per_cpu_offsets = (0..u64::from(nr_cpu_ids))
        .map(|cpu| image_phys("__per_cpu_offset").and_then(|base| Ok(mem.read_u64(Gpa(base.raw() + cpu * 8))?)))
        .collect::<Result<Vec<_>, _>>()?;
    let online_mask = image_phys("__cpu_online_mask")?;
    let mut online_cpus = Vec::new();
    for word in 0..nr_cpu_ids.div_ceil(64) {
        let bits = mem.read_u64(Gpa(online_mask.raw() + u64::from(word) * 8))?;
        online_cpus.extend((0..64u32).filter(|bit| (bits >> bit) & 1 == 1).map(|bit| word * 64 + bit).filter(|&cpu| cpu < nr_cpu_ids));
    }
    if online_cpus.is_empty() {
        return Err(inconsistent("no CPU is online".into()));
    }

    let location = KernelLocation {
        profile_index,
        release: profile.release.clone(),
        banner,
        phys_text,
        virt_text,
        // Two's complement difference: the kernel may sit below its link-time physical address.
        phys_shift: phys_text.raw().wrapping_sub(text_link - start_kernel_map) as i64,
        virt_shift,
        image_size: profile.symbol("_end")?.saturating_sub(text_link),
        page_tables,
        page_offset_base,
        nr_cpu_ids,
        online_cpus,
        per_cpu_offsets,
    };
    check_runqueues(mem, profile, &location)?;
    Ok(location)
}

/// Checks that every online CPU's `struct rq` (per-CPU `runqueues`) records its own CPU number.
fn check_runqueues(mem: &dyn GuestMemory, profile: &Profile, location: &KernelLocation) -> Result<(), LinuxError> {
    let runqueues = profile.per_cpu_symbol("runqueues", location.virt_shift)?;
    let cpu_field = profile.offset("rq", "cpu")?;
    for &cpu in &location.online_cpus {
        let offset = usize::try_from(cpu).ok().and_then(|c| location.per_cpu_offsets.get(c)).copied().unwrap_or_default();
        let rq = Gva(offset.wrapping_add(runqueues).wrapping_add(cpu_field));
        let gpa = location.page_tables.translate(mem, rq)?;
        let recorded = mem.read_u32(gpa)?;
        if recorded != cpu {
            return Err(LinuxError::Inconsistent {
                release: profile.release.clone(),
                what: format!("CPU {cpu}'s runqueue at {rq} says it belongs to CPU {recorded}"),
            });
        }
    }
    Ok(())
}
