//! A profile for a guest whose kernel no profile describes, built from the guest's own memory.
//!
//! Every `CONFIG_DEBUG_INFO_BTF` kernel carries its types (BTF) and, with `CONFIG_KALLSYMS_ALL`,
//! its symbols (kallsyms) in its image, so nothing is needed from the host:
//! 1. the `Linux version ` banners in RAM are candidates (no profile says where the real one is);
//! 2. around each, the kallsyms tables are searched by their structure
//!    ([`crate::profile::kallsyms`]); they give the run-time addresses of `linux_banner`, `_text`
//!    and `_end`, which must put the banner where it was found: the image is physically
//!    contiguous, so this fixes where the whole image is, and it is read;
//! 3. its BTF lies between kallsyms' `__start_BTF` and `__stop_BTF`;
//! 4. the KASLR shift (to turn run-time addresses into the link-time ones profiles hold) is the
//!    kernel's own `KERNELOFFSET=` in its VMCOREINFO note (`vmcoreinfo_data`, a page of the
//!    direct map), else `_text` is taken to be linked at the default `__START_KERNEL`
//!    (0xffffffff81000000, `CONFIG_PHYSICAL_START` 16 MiB), which the provenance then says;
//! 5. the profile is built as `profile gen` builds one ([`gen::generate_running`]: the same spec,
//!    constants table and the image checks a running kernel allows), and cached.
//!
//! The result is used like any profile: [`super::locate`] then validates it against the guest
//! (page tables, `phys_base`, each CPU's runqueue), so a forged BTF or symbol table ends in an
//! error rather than in writes through a wrong profile.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::memory::{Gpa, GuestMemory, Pause};
use crate::profile::kallsyms::{self, Region};
use crate::profile::{gen, Profile, ProfileError};

use super::locate::{self, KernelLocation};
use super::LinuxError;

/// How much RAM around a banner is searched for the kallsyms tables (they follow `linux_banner`
/// in `.rodata`).
const WINDOW: u64 = 32 << 20;
/// The largest kernel image read (`_end - _text`; a distribution kernel's is 40–60 MiB).
const MAX_IMAGE: u64 = 256 << 20;
/// The longest banner accepted.
const MAX_BANNER: usize = 512;
/// How many distinct banner candidates are tried.
const MAX_CANDIDATES: usize = 32;
/// `__START_KERNEL_map`: kernel-map addresses are relocated by KASLR, per-CPU offsets are not.
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// The default link address of `_text` (`__START_KERNEL` with `CONFIG_PHYSICAL_START` 16 MiB).
const DEFAULT_TEXT: u64 = 0xffff_ffff_8100_0000;
/// KASLR moves the kernel in steps of this (`CONFIG_PHYSICAL_ALIGN`, 2 MiB).
const KASLR_ALIGN: u64 = 2 << 20;
/// Environment variable naming the directory of profiles built from guests.
pub const CACHE_ENV: &str = "XSCHED_PROFILE_CACHE";

/// Why no profile could be built from a guest's memory.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// No banner in RAM led to a kernel image with kallsyms and BTF.
    #[error("no kernel in its memory could be read without a profile: {reason}")]
    NotFound {
        /// What each candidate lacked (the last one's reason).
        reason: String,
    },
    /// The tables were found but the profile does not build or validate.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The cache could not be written.
    #[error("{path}: {source}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A profile built from a guest, as cached: where it came from, and the profile.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedProfile {
    /// Where the profile came from, in a sentence.
    pub source: String,
    /// The profile.
    pub profile: Profile,
}

/// The directory of profiles built from guests: `$XSCHED_PROFILE_CACHE`, else
/// `$XDG_CACHE_HOME/xsched/profiles`, else `~/.cache/xsched/profiles`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"));
    base.join("xsched").join("profiles")
}

/// The cached profiles in `dir` that load (others are passed over with a debug message).
fn cached(dir: &Path) -> Vec<(PathBuf, CachedProfile)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(PathBuf, CachedProfile)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|path| {
            let text = crate::files::read_to_string(&path).ok()?;
            match serde_json::from_str::<CachedProfile>(&text).map_err(|e| e.to_string()).and_then(|c| {
                c.profile.validate().map_err(|e| e.to_string())?;
                Ok(c)
            }) {
                Ok(cached) => Some((path, cached)),
                Err(e) => {
                    log::debug!("{}: not a usable cached profile: {e}", path.display());
                    None
                }
            }
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// [`locate::locate_live`], and when no profile in `profiles` matches: with a profile cached
/// from an earlier guest of the same kernel, else with one built from the guest's own memory
/// ([`build`]) and cached; either is appended to `profiles` and said in one line on stderr.
pub fn locate_live_or_build(mem: &mut dyn GuestMemory, profiles: &mut Vec<Profile>) -> Result<(KernelLocation, Pause), LinuxError> {
    let no_match = match locate::locate_live(mem, profiles) {
        Err(LinuxError::NoMatchingProfile(message)) => message,
        other => return other,
    };
    let dir = cache_dir();
    for (path, entry) in cached(&dir) {
        profiles.push(entry.profile);
        match locate::locate_live(mem, profiles) {
            Ok(found) => {
                eprintln!(
                    "xsched: {}: no profile in the kernels directory matches; using {} ({})",
                    mem.describe(),
                    path.display(),
                    entry.source
                );
                return Ok(found);
            }
            Err(LinuxError::NoMatchingProfile(_)) => {
                profiles.pop();
            }
            Err(e) => return Err(e),
        }
    }
    let started = Instant::now();
    let built = build(&*mem).map_err(|e| LinuxError::NoMatchingProfile(format!("{no_match}; nor could xsched build one from the guest's own BTF and kallsyms: {e}")))?;
    let path = dir.join(format!("{}.json", built.profile.release.replace('/', "_")));
    let saved = save(&path, &built);
    profiles.push(built.profile);
    let found = locate::locate_live(mem, profiles)?;
    let cache = match saved {
        Ok(()) => format!("cached in {}", path.display()),
        Err(e) => format!("not cached: {e}"),
    };
    eprintln!(
        "xsched: {}: no profile in the kernels directory matches; built one for Linux {} from the guest's own BTF and kallsyms in {:.1} s ({cache})",
        mem.describe(),
        found.0.release,
        started.elapsed().as_secs_f64()
    );
    Ok(found)
}

/// Writes `built` to `path` (creating the cache directory).
fn save(path: &Path, built: &CachedProfile) -> Result<(), DiscoverError> {
    let io = |source| DiscoverError::Cache { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut text = serde_json::to_string_pretty(built).unwrap_or_default();
    text.push('\n');
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text).map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

/// Builds the profile of the kernel in `mem` from its own BTF and kallsyms (see the module docs).
pub fn build(mem: &dyn GuestMemory) -> Result<CachedProfile, DiscoverError> {
    // Every plausible banner: the text also sits in log buffers, whose windows hold no kallsyms.
    let mut candidates: Vec<(Gpa, Vec<u8>)> = Vec::new();
    locate::for_each_prefix_hit(mem, |gpa| {
        if candidates.len() >= MAX_CANDIDATES {
            return;
        }
        let mut text = vec![0u8; MAX_BANNER];
        if mem.read_phys(gpa, &mut text).is_err() {
            return;
        }
        let Some(len) = text.iter().position(|b| *b == 0) else { return };
        text.truncate(len);
        if text.ends_with(b"\n") && text.iter().all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\n') {
            candidates.push((gpa, text));
        }
    })
    .map_err(|e| DiscoverError::NotFound { reason: e.to_string() })?;
    let mut last = String::from("no `Linux version` banner in RAM (is the guest booted?)");
    for (gpa, text) in &candidates {
        match from_banner(mem, *gpa, text) {
            Ok(Some(built)) => return Ok(built),
            Ok(None) => {}
            Err(DiscoverError::NotFound { reason }) => last = reason,
            Err(e) => return Err(e),
        }
    }
    Err(DiscoverError::NotFound { reason: last })
}

/// `len` bytes of RAM from `start`, clipped to the RAM range holding `at`.
fn read_around(mem: &dyn GuestMemory, at: Gpa, start: u64, len: u64) -> Option<(Gpa, Vec<u8>)> {
    let range = mem.ranges().iter().find(|r| at.raw() >= r.start.raw() && at.raw() < r.end())?;
    let from = start.max(range.start.raw());
    let to = start.saturating_add(len).min(range.end());
    let mut bytes = vec![0u8; usize::try_from(to.checked_sub(from)?).ok()?];
    mem.read_phys(Gpa(from), &mut bytes).ok()?;
    Some((Gpa(from), bytes))
}

/// The profile of the kernel whose banner is at `banner`, if kallsyms and BTF are found there;
/// `Ok(None)` when this hit is not inside a kernel image (a copy of the text).
fn from_banner(mem: &dyn GuestMemory, banner: Gpa, text: &[u8]) -> Result<Option<CachedProfile>, DiscoverError> {
    let not_found = |reason: String| DiscoverError::NotFound { reason };
    let Some((window_start, window)) = read_around(mem, banner, banner.raw().saturating_sub(WINDOW), 2 * WINDOW) else {
        return Ok(None);
    };
    // The window is physical; the tables' alignment is the same in virtual addresses.
    let symbols = match kallsyms::symbols(Region { base: window_start.raw(), bytes: &window }) {
        Ok(symbols) => symbols,
        Err(e) => return Err(not_found(format!("near the banner at {banner}: {e}"))),
    };
    drop(window);
    let address = |name: &str| symbols.iter().find(|s| s.name == name).map(|s| s.address);
    let (Some(banner_va), Some(text_va), Some(end_va)) = (address("linux_banner"), address("_text"), address("_end")) else {
        return Err(not_found("kallsyms lacks linux_banner, _text or _end".into()));
    };
    let Some(phys_text) = banner_va.checked_sub(text_va).and_then(|o| banner.raw().checked_sub(o)) else { return Ok(None) };
    if phys_text % 4096 != 0 || banner_va % 4096 != banner.page_offset() {
        return Ok(None);
    }
    let size = end_va.checked_sub(text_va).filter(|s| *s > 0 && *s <= MAX_IMAGE).ok_or_else(|| {
        not_found(format!("kallsyms puts _text at {text_va:#x} and _end at {end_va:#x}: not a kernel image"))
    })?;
    let Some((start, image)) = read_around(mem, banner, phys_text, size) else { return Ok(None) };
    if start.raw() != phys_text || u64::try_from(image.len()).ok() != Some(size) {
        return Err(not_found(format!("the kernel image ({size:#x} bytes at {}) is not all in RAM", Gpa(phys_text))));
    }
    let at = |va: u64| va.checked_sub(text_va).and_then(|o| usize::try_from(o).ok());
    if at(banner_va).and_then(|o| image.get(o..o + text.len())) != Some(text) {
        return Ok(None);
    }
    let btf = match (address("__start_BTF").and_then(at), address("__stop_BTF").and_then(at)) {
        (Some(from), Some(to)) => image.get(from..to).ok_or_else(|| not_found("__start_BTF..__stop_BTF lies outside the image".into()))?,
        _ => return Err(not_found("kallsyms has no __start_BTF/__stop_BTF: a kernel without CONFIG_DEBUG_INFO_BTF".into())),
    };
    let read_u64 = |va: u64| at(va).and_then(|o| image.get(o..o + 8)).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let kernel_offset = address("vmcoreinfo_data")
        .and_then(read_u64)
        .zip(address("page_offset_base").and_then(read_u64))
        .and_then(|(note, direct_map)| vmcoreinfo_kernel_offset(mem, note.checked_sub(direct_map)?));
    let (slide, how) = match kernel_offset {
        Some(slide) => (slide, "KASLR offset from its VMCOREINFO"),
        None => (
            text_va.wrapping_sub(DEFAULT_TEXT),
            "no VMCOREINFO: _text taken to be linked at 0xffffffff81000000, the default; only the symbols' link-time base rests on that",
        ),
    };
    if slide % KASLR_ALIGN != 0 || text_va.wrapping_sub(slide) < START_KERNEL_MAP {
        return Err(not_found(format!("a KASLR offset of {slide:#x} does not fit _text at {text_va:#x}")));
    }
    let link = |address: u64| if address >= START_KERNEL_MAP { address.wrapping_sub(slide) } else { address };
    let table: Vec<(String, u64, bool)> = symbols.iter().map(|s| (s.name.clone(), link(s.address), s.kind.is_ascii_uppercase())).collect();
    let what = PathBuf::from(format!("{} (kernel image at {})", mem.describe(), Gpa(phys_text)));
    let profile = gen::generate_running(&what, text_va.wrapping_sub(slide), &image, slide, table, btf)?;
    let direct_map = address("page_offset_base").and_then(read_u64).unwrap_or_default();
    // The guest runs meanwhile: a fork or exit may change the list under the walk, so a walk
    // that fails is tried again before the profile is refused.
    let mut walked = walk_tasks(mem, &profile, &image, slide, direct_map);
    for _ in 1..WALK_TRIES {
        if walked.is_ok() {
            break;
        }
        walked = walk_tasks(mem, &profile, &image, slide, direct_map);
    }
    let tasks = walked.map_err(|reason| not_found(format!("the profile built from its BTF does not fit the guest's task list: {reason}")))?;
    log::debug!("the profile built from the guest's BTF walks its task list: {tasks} tasks");
    let source = format!(
        "built by xsched {} from the BTF ({} bytes) and kallsyms ({} symbols) of a running guest, {}; kernel image at physical {}",
        env!("CARGO_PKG_VERSION"),
        btf.len(),
        symbols.len(),
        how,
        Gpa(phys_text)
    );
    Ok(Some(CachedProfile { source, profile }))
}

/// The most tasks [`walk_tasks`] follows.
const MAX_TASKS: usize = 1 << 20;
/// How many times the task list is walked before a profile is refused (the guest runs meanwhile).
const WALK_TRIES: usize = 3;

/// Checks the profile against the kernel's own data before anything uses it: the task list
/// (`init_task.tasks`, each `task_struct` in the direct map at `direct_map`) must lead back to
/// `init_task`, with every `prev` pointing back, within [`MAX_TASKS`] steps. A layout forged in
/// the BTF (or symbols forged in kallsyms) fails here rather than steering writes.
fn walk_tasks(mem: &dyn GuestMemory, profile: &Profile, image: &[u8], slide: u64, direct_map: u64) -> Result<usize, String> {
    let text = profile.symbol("_text").map_err(|e| e.to_string())?;
    let init = profile.symbol("init_task").map_err(|e| e.to_string())?;
    let tasks = profile.offset("task_struct", "tasks").map_err(|e| e.to_string())?;
    let (next_at, prev_at) = (profile.offset("list_head", "next").map_err(|e| e.to_string())?, profile.offset("list_head", "prev").map_err(|e| e.to_string())?);
    let head = init.wrapping_add(tasks).wrapping_add(slide);
    // A kernel-image address is read from the image, a direct-map one from RAM.
    let read = |va: u64| -> Result<u64, String> {
        let image_offset = va.wrapping_sub(slide).checked_sub(text).and_then(|o| usize::try_from(o).ok());
        if let Some(bytes) = image_offset.and_then(|o| image.get(o..o.checked_add(8)?)) {
            return Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| "short read".to_string())?));
        }
        let gpa = va.checked_sub(direct_map).filter(|_| direct_map != 0).ok_or_else(|| format!("{va:#x} is neither in the image nor in the direct map"))?;
        mem.read_u64(Gpa(gpa)).map_err(|e| e.to_string())
    };
    let mut node = head;
    for count in 0..MAX_TASKS {
        let next = read(node.wrapping_add(next_at))?;
        if read(next.wrapping_add(prev_at))? != node {
            return Err(format!("task list entry {next:#x} does not point back to {node:#x}"));
        }
        if next == head {
            return Ok(count + 1);
        }
        node = next;
    }
    Err(format!("the task list does not lead back to init_task within {MAX_TASKS} entries"))
}

/// `KERNELOFFSET=` from the VMCOREINFO text at physical `note`, if it is there.
fn vmcoreinfo_kernel_offset(mem: &dyn GuestMemory, note: u64) -> Option<u64> {
    let mut page = vec![0u8; 4096];
    mem.read_phys(Gpa(note), &mut page).ok()?;
    let text = page.split(|b| *b == 0).next()?;
    let text = std::str::from_utf8(text).ok()?;
    text.starts_with("OSRELEASE=").then_some(())?;
    let value = text.lines().find_map(|l| l.strip_prefix("KERNELOFFSET="))?;
    u64::from_str_radix(value.trim(), 16).ok()
}
