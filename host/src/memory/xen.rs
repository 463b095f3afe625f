//! The Xen backend: a domain's RAM through one foreign mapping, pause and unpause through libxenctrl.
//!
//! [`XenMemory::open`] runs in a privileged domain (dom0) and maps every frame of the target's
//! guest-physical space into one window of this process, once: frame `n` lives at
//! `window + n * PAGE_SIZE`. Frames Xen refuses to map (the MMIO hole, unpopulated or ballooned-out
//! frames) are holes; the mapped runs are [`GuestMemory::ranges`], so an access never touches a
//! hole (privcmd answers one with SIGBUS). The mapping is a snapshot of the guest's physmap at
//! open: frames the guest populates later are not seen, and frames it releases later keep their
//! old contents here.
//!
//! Translated guests (HVM, PVH): their frame numbers are what the foreign mapping takes. PV
//! guests run on machine frames: their pseudo-physical frames are mapped through the guest's own
//! p2m ([`p2m`]), so the window is still indexed by (pseudo-)physical frame, and the machine
//! frames in their page-table entries are translated back ([`GuestMemory::table_frame`]).
//!
//! Verified against the Xen 4.17 headers (`xenctrl.h`, `xenforeignmemory.h`) and the bindgen
//! output of `xenctrl-sys`/`xenforeignmemory-sys`; it runs only under a Xen hypervisor.

use std::ffi::{c_int, c_void};
use std::io;
use std::ptr::{self, NonNull};

use xenctrl_sys as xc;
use xenforeignmemory_sys as xfm;

use super::{check_access, Gpa, GuestMemory, MemoryError, Pause, PhysRange, PAGE_SIZE};

mod p2m;

use p2m::{P2m, P2mRoot};

/// Pages per `xenforeignmemory_map2` call: 1 GiB of guest RAM. Bounds the frame and error arrays
/// (3 MiB together) and, on a PVH dom0, the ballooned pages privcmd takes for one call.
const CHUNK_PAGES: usize = 1 << 18;

/// Room above the domain's maximum memory for the gaps a toolstack leaves in its physmap: the
/// MMIO hole below 4 GiB pushes that much RAM above 4 GiB.
const PHYSMAP_SLACK: u64 = 4 << 30;

/// [`PAGE_SIZE`] as a `usize`, for offsets into the window.
const PAGE_BYTES: usize = 4096;
const _: () = assert!(PAGE_BYTES as u64 == PAGE_SIZE);

/// A Xen domain's guest-physical memory, mapped once, plus domain pause/unpause.
#[derive(Debug)]
pub struct XenMemory {
    domid: u32,
    xc: XcHandle,
    /// The window reads go through, and its mapped runs.
    map: ForeignMap,
    ranges: Vec<PhysRange>,
    /// A PV guest's second, writable window and its runs. Xen maps a PV guest's typed pages (page
    /// tables, descriptor tables) read-only only, so the read window is read-only and this one
    /// has holes there; a translated guest's one window is writable (`None`).
    writable: Option<(ForeignMap, Vec<PhysRange>)>,
    /// Whether this handle holds one of the domain's toolstack pauses.
    paused: bool,
    /// A PV guest's p2m (its page-table entries hold machine frames); `None` for translated guests.
    p2m: Option<P2m>,
}

impl XenMemory {
    /// Opens domain `domid` and maps its RAM.
    ///
    /// Fails if the domain does not exist (`ESRCH`), is a 32-bit PV guest, is a PV guest that has
    /// not published its p2m yet, or no frame of it can be mapped.
    pub fn open(domid: u32) -> Result<Self, MemoryError> {
        let xc = XcHandle::open(domid)?;
        let info = xc.domain_info(domid)?;
        let fmem = Fmem::open(domid)?;
        let (pages, p2m) = if info.hvm() != 0 {
            let max_gpfn = xc.maximum_gpfn(domid)?;
            let pages = window_pages(max_gpfn, info.max_memkb);
            if pages <= max_gpfn {
                log::warn!(
                    "xen:{domid}: highest guest frame {max_gpfn:#x} lies beyond max memory + 4 GiB; \
                     mapping frames below {pages:#x} only"
                );
            }
            (pages, None)
        } else {
            let width = xc.guest_width(domid)?;
            if width != 8 {
                return Err(MemoryError::Unsupported {
                    backend: format!("xen:{domid}"),
                    action: "read a 32-bit PV guest",
                });
            }
            let p2m = read_p2m(&fmem, domid, info.shared_info_frame, info.max_memkb)?;
            (p2m.len(), Some(p2m))
        };
        let pages = usize::try_from(pages).map_err(|_| MemoryError::Xen {
            domid,
            call: "xc_domain_getinfo",
            source: io::Error::other(format!(
                "{pages:#x} guest frames do not fit this address space"
            )),
        })?;
        // Translated guests: frame n is what the foreign mapping takes for frame n. PV guests: the
        // machine frame their p2m names (a hole, which the mapping refuses, for none).
        let frame_of = |pfn: u64| match &p2m {
            None => pfn,
            Some(p2m) => p2m.mfn(pfn).unwrap_or(INVALID_FRAME),
        };
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let started = std::time::Instant::now();
        let (map, ranges, writable) = if p2m.is_some() {
            let (map, ranges) = map_window(fmem, domid, pages, libc::PROT_READ, &frame_of)?;
            let writable = map_window(Fmem::open(domid)?, domid, pages, rw, &frame_of)?;
            (map, ranges, Some(writable))
        } else {
            let (map, ranges) = map_window(fmem, domid, pages, rw, &frame_of)?;
            (map, ranges, None)
        };
        log::debug!("xen:{domid}: {pages} frames mapped in {:?}", started.elapsed());
        Ok(Self {
            domid,
            xc,
            map,
            ranges,
            writable,
            paused: false,
            p2m,
        })
    }
}

/// Maps `pages` pages of the domain into a new window with protection `prot`, window page n from
/// frame `frame_of(n)`; returns it with its mapped runs. Fails if no page maps.
fn map_window(
    fmem: Fmem,
    domid: u32,
    pages: usize,
    prot: c_int,
    frame_of: &dyn Fn(u64) -> u64,
) -> Result<(ForeignMap, Vec<PhysRange>), MemoryError> {
    let too_big = || MemoryError::Xen {
        domid,
        call: "xenforeignmemory_map2",
        source: io::Error::other(format!(
            "{pages:#x} guest frames do not fit this address space"
        )),
    };
    let mut map = ForeignMap::new(fmem, domid, pages, prot)?;
    let mut ranges = Vec::new();
    let mut frames = Vec::with_capacity(CHUNK_PAGES.min(pages));
    let mut errs = Vec::with_capacity(CHUNK_PAGES.min(pages));
    let mut first_err = None;
    while let Some(first) = map.map_next_chunk(domid, frame_of, &mut frames, &mut errs)? {
        first_err = first_err.or_else(|| errs.iter().copied().find(|&e| e != 0));
        push_mapped_runs(&mut ranges, first as u64, &errs).ok_or_else(too_big)?;
    }
    if ranges.is_empty() {
        // Per-page errors are negative errnos (privcmd's IOCTL_PRIVCMD_MMAPBATCH_V2).
        let errno = first_err.map_or(libc::EINVAL, |e| e.saturating_neg());
        return Err(MemoryError::Xen {
            domid,
            call: "xenforeignmemory_map2",
            source: io::Error::from_raw_os_error(errno),
        });
    }
    Ok((map, ranges))
}

/// A frame number no domain owns: what a PV hole is mapped as, so the mapping refuses that page.
const INVALID_FRAME: u64 = u64::MAX;

/// Reads a 64-bit PV guest's p2m through its shared-info page (see [`p2m`]), as Xen's own save
/// and core-dump code does. The p2m may cover at most max memory plus [`PHYSMAP_SLACK`]: a guest
/// claiming more is cut off there.
fn read_p2m(
    fmem: &Fmem,
    domid: u32,
    shared_info_frame: u64,
    max_memkb: u64,
) -> Result<P2m, MemoryError> {
    let bad = |what: String| MemoryError::Xen {
        domid,
        call: "reading the p2m",
        source: io::Error::other(what),
    };
    let shared = fmem.read_frames(domid, &[shared_info_frame])?;
    let root = P2mRoot::parse(&shared).ok_or_else(|| bad("short shared-info page".into()))?;
    if !root.is_published() {
        return Err(bad(format!(
            "the guest publishes no p2m frame list (pfn_to_mfn_frame_list_list = {:#x}): still booting?",
            root.frame_list_list
        )));
    }
    let cap = frame_cap(max_memkb);
    if root.max_pfn > cap {
        log::warn!(
            "xen:{domid}: the p2m claims {:#x} frames; reading the first {cap:#x}",
            root.max_pfn
        );
    }
    let pfns = root.max_pfn.min(cap);
    let (p2m_pages, list_pages) = p2m::pages_for(pfns);
    let frame_list_list = fmem.read_frames(domid, &[root.frame_list_list])?;
    let lists = level(&frame_list_list, list_pages)
        .ok_or_else(|| bad("a frame-list MFN is not a machine frame".into()))?;
    let frame_lists = fmem.read_frames(domid, &lists)?;
    let pages = level(&frame_lists, p2m_pages)
        .ok_or_else(|| bad("a p2m page MFN is not a machine frame".into()))?;
    let raw = p2m::entries(&fmem.read_frames(domid, &pages)?, pfns)
        .ok_or_else(|| bad("short p2m".into()))?;
    let map = P2m::from_entries(&raw);
    log::debug!("xen:{domid}: p2m of {pfns:#x} frames in {p2m_pages} pages");
    Ok(map)
}

/// The first `count` MFNs of one level of the p2m tree, each checked to be a machine frame.
fn level(pages: &[u8], count: u64) -> Option<Vec<u64>> {
    p2m::entries(pages, count)?
        .into_iter()
        .map(p2m::valid_mfn)
        .collect()
}

impl GuestMemory for XenMemory {
    fn describe(&self) -> String {
        format!("xen:{} ({} MiB)", self.domid, self.ram_size() >> 20)
    }

    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        check_access(&self.ranges, gpa, buf.len())?;
        let src = self.map.at(gpa, buf.len())?;
        // SAFETY: `check_access` put `gpa .. gpa + buf.len()` inside one run of pages that
        // `xenforeignmemory_map2` mapped (readable), and `at` inside the window, which stays
        // mapped while `self` lives; `buf` is our own memory, so the two cannot overlap. The guest
        // may change these bytes at any time; a byte copy through raw pointers never forms a Rust
        // reference to them.
        unsafe { ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write_phys(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), MemoryError> {
        let (map, ranges) = match &self.writable {
            Some((map, ranges)) => (map, ranges.as_slice()),
            None => (&self.map, self.ranges.as_slice()),
        };
        check_access(ranges, gpa, data.len())?;
        let dst = map.at(gpa, data.len())?;
        // SAFETY: as in `read_phys`, with the pages of a window mapped PROT_WRITE; `data` cannot
        // overlap the window.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Takes one toolstack pause (`XEN_DOMCTL_pausedomain`, synchronous: no vCPU runs on return).
    /// A handle holds at most one: pausing twice is a no-op, so one `resume` always undoes it.
    /// Xen counts pauses, so one is taken even when someone else (`xl pause`) holds the domain:
    /// it cannot run while it is read, and `resume` drops only this handle's.
    fn pause(&mut self) -> Result<Pause, MemoryError> {
        if self.paused {
            return Ok(Pause::Taken);
        }
        let held_by_others = self.xc.domain_info(self.domid)?.paused() != 0;
        self.xc.pause(self.domid)?;
        self.paused = true;
        Ok(if held_by_others { Pause::HeldByOthers } else { Pause::Taken })
    }

    /// Drops this handle's pause. Pauses taken by others (`xl pause`) stay.
    fn resume(&mut self) -> Result<(), MemoryError> {
        if self.paused {
            self.xc.unpause(self.domid)?;
            self.paused = false;
        }
        Ok(())
    }

    /// Drops one toolstack pause that a killed xsched took.
    fn resume_abandoned(&mut self) -> Result<(), MemoryError> {
        self.xc.unpause(self.domid)
    }

    /// Whether anyone holds a pause of the domain (this handle, `xl pause`, a killed xsched).
    fn is_paused(&mut self) -> Result<bool, MemoryError> {
        Ok(self.xc.domain_info(self.domid)?.paused() != 0)
    }

    /// Sends an NMI to every vCPU (`XEN_DOMCTL_SENDTRIGGER_NMI`): Xen marks it pending and wakes
    /// a blocked vCPU, which then re-checks its runqueue.
    fn kick(&mut self) -> Result<(), MemoryError> {
        let info = self.xc.domain_info(self.domid)?;
        for vcpu in 0..=info.max_vcpu_id {
            self.xc.send_nmi(self.domid, vcpu)?;
        }
        Ok(())
    }

    /// For a PV guest, the pfn its p2m maps machine frame `frame` at; else `frame` itself.
    fn table_frame(&self, frame: u64) -> Option<u64> {
        match &self.p2m {
            None => Some(frame),
            Some(p2m) => p2m.pfn(frame),
        }
    }
}

impl Drop for XenMemory {
    /// Never leaves the guest frozen: a pause still held is dropped (then the fields unmap and close).
    fn drop(&mut self) {
        if let Err(e) = self.resume() {
            log::error!("{e}");
        }
    }
}

/// Frames to map for a guest whose highest frame is `max_gpfn` and whose maximum memory is
/// `max_memkb` KiB: all of them, but at most max memory plus [`PHYSMAP_SLACK`].
///
/// The highest frame is the guest's to move (it can populate a frame anywhere); the maximum
/// memory is the toolstack's. A toolstack lays RAM out below that bound, so the cap costs nothing
/// in a sane guest and keeps a hostile one from making us map terabytes of holes.
fn window_pages(max_gpfn: u64, max_memkb: u64) -> u64 {
    max_gpfn.saturating_add(1).min(frame_cap(max_memkb))
}

/// The most frames mapped for a guest of `max_memkb` KiB maximum memory: that plus [`PHYSMAP_SLACK`].
fn frame_cap(max_memkb: u64) -> u64 {
    max_memkb
        .div_ceil(PAGE_SIZE >> 10)
        .saturating_add(PHYSMAP_SLACK / PAGE_SIZE)
}

/// Appends the ranges of the pages mapped in one chunk to `ranges`.
///
/// `errs` is the per-page error array `xenforeignmemory_map2` filled for frames `first_pfn ..`:
/// 0 for a mapped page, a negative errno for a hole. A run starting where the last range ends
/// extends it, so chunks pushed in increasing frame order build a sorted list of disjoint,
/// maximal ranges. `None` if an address overflows.
fn push_mapped_runs(ranges: &mut Vec<PhysRange>, first_pfn: u64, errs: &[c_int]) -> Option<()> {
    let mut pfn = first_pfn;
    for run in errs.chunk_by(|a, b| (*a == 0) == (*b == 0)) {
        let pages = u64::try_from(run.len()).ok()?;
        if run.first() == Some(&0) {
            let start = Gpa(pfn.checked_mul(PAGE_SIZE)?);
            let len = pages.checked_mul(PAGE_SIZE)?;
            start.checked_add(len)?;
            match ranges.last_mut() {
                Some(last) if last.end() == start.raw() => last.len = last.len.checked_add(len)?,
                _ => ranges.push(PhysRange { start, len }),
            }
        }
        pfn = pfn.checked_add(pages)?;
    }
    Some(())
}

/// An open libxenctrl interface.
#[derive(Debug)]
struct XcHandle(NonNull<xc::xc_interface>);

// SAFETY: the handle is not tied to the thread that opened it: libxenctrl handles opened without
// XC_OPENFLAG_NON_REENTRANT may be used from any thread (xenctrl.h). `XcHandle` is not `Sync`, so
// it is used from one thread at a time.
unsafe impl Send for XcHandle {}

impl XcHandle {
    fn open(domid: u32) -> Result<Self, MemoryError> {
        // SAFETY: null loggers make libxenctrl log to stderr; flags 0 ask for a normal, reentrant
        // handle. It returns an owned handle or NULL with errno set.
        let raw = unsafe { xc::xc_interface_open(ptr::null_mut(), ptr::null_mut(), 0) };
        NonNull::new(raw)
            .map(Self)
            .ok_or_else(|| last_error(domid, "xc_interface_open"))
    }

    /// The domain's information; `ESRCH` if no domain `domid` exists.
    fn domain_info(&self, domid: u32) -> Result<xc::xc_dominfo_t, MemoryError> {
        let mut info = xc::xc_dominfo_t::default();
        // SAFETY: the handle is open; `info` is one writable `xc_dominfo_t` and max_doms is 1 (its
        // layout matches gcc's for xenctrl.h 4.17: checked by hand, as bindgen's layout tests are
        // off in xenctrl-sys). Returns the number of domains filled in, or -1 with errno set.
        let n = unsafe { xc::xc_domain_getinfo(self.0.as_ptr(), domid, 1, &mut info) };
        if n < 0 {
            return Err(last_error(domid, "xc_domain_getinfo"));
        }
        // It returns the first domain at or after `domid`: another one means ours does not exist.
        if n == 0 || info.domid != domid {
            return Err(MemoryError::Xen {
                domid,
                call: "xc_domain_getinfo",
                source: io::Error::from_raw_os_error(libc::ESRCH),
            });
        }
        Ok(info)
    }

    /// The domain's highest guest frame number (`XENMEM_maximum_gpfn`; inclusive).
    fn maximum_gpfn(&self, domid: u32) -> Result<u64, MemoryError> {
        let mut gpfn: xc::xen_pfn_t = 0;
        // SAFETY: the handle is open and `gpfn` is writable; 0 on success, else -1 with errno set.
        if unsafe { xc::xc_domain_maximum_gpfn(self.0.as_ptr(), domid, &mut gpfn) } != 0 {
            return Err(last_error(domid, "xc_domain_maximum_gpfn"));
        }
        Ok(gpfn)
    }

    /// The guest's word size in bytes (4 or 8; a PV guest's matters).
    fn guest_width(&self, domid: u32) -> Result<u32, MemoryError> {
        let mut width: std::ffi::c_uint = 0;
        // SAFETY: the handle is open and `width` is writable; 0 on success, else -1 with errno set.
        if unsafe { xc::xc_domain_get_guest_width(self.0.as_ptr(), domid, &mut width) } != 0 {
            return Err(last_error(domid, "xc_domain_get_guest_width"));
        }
        Ok(width)
    }

    /// Sends an NMI to one vCPU of the domain.
    fn send_nmi(&self, domid: u32, vcpu: u32) -> Result<(), MemoryError> {
        // SAFETY: the handle is open; 0 on success, else -1 with errno set.
        if unsafe {
            xc::xc_domain_send_trigger(self.0.as_ptr(), domid, xc::XEN_DOMCTL_SENDTRIGGER_NMI, vcpu)
        } != 0
        {
            return Err(last_error(domid, "xc_domain_send_trigger(NMI)"));
        }
        Ok(())
    }

    fn pause(&self, domid: u32) -> Result<(), MemoryError> {
        // SAFETY: the handle is open; 0 on success, else -1 with errno set.
        if unsafe { xc::xc_domain_pause(self.0.as_ptr(), domid) } != 0 {
            return Err(last_error(domid, "xc_domain_pause"));
        }
        Ok(())
    }

    fn unpause(&self, domid: u32) -> Result<(), MemoryError> {
        // SAFETY: the handle is open; 0 on success, else -1 with errno set.
        if unsafe { xc::xc_domain_unpause(self.0.as_ptr(), domid) } != 0 {
            return Err(last_error(domid, "xc_domain_unpause"));
        }
        Ok(())
    }
}

impl Drop for XcHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `xc_interface_open` and is closed once, here.
        if unsafe { xc::xc_interface_close(self.0.as_ptr()) } != 0 {
            log::warn!("xc_interface_close: {}", io::Error::last_os_error());
        }
    }
}

/// An open foreign-memory handle.
#[derive(Debug)]
struct Fmem(NonNull<xfm::xenforeignmemory_handle>);

// SAFETY: the handle is a file descriptor and a logger, neither tied to a thread. `Fmem` is not
// `Sync`, so it is used from one thread at a time.
unsafe impl Send for Fmem {}

impl Fmem {
    fn open(domid: u32) -> Result<Self, MemoryError> {
        // SAFETY: a null logger makes the library log to stderr; no open flags. Returns an owned
        // handle or NULL with errno set.
        let fmem = unsafe { xfm::xenforeignmemory_open(ptr::null_mut(), 0) };
        NonNull::new(fmem)
            .map(Self)
            .ok_or_else(|| last_error(domid, "xenforeignmemory_open"))
    }

    /// Copies the pages `frames` (as the foreign mapping takes them) of the domain, in order, out
    /// of a temporary read-only mapping. All or nothing: a frame that does not map fails the call.
    fn read_frames(&self, domid: u32, frames: &[u64]) -> Result<Vec<u8>, MemoryError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let len = frames
            .len()
            .checked_mul(PAGE_BYTES)
            .ok_or_else(|| MemoryError::Xen {
                domid,
                call: "xenforeignmemory_map",
                source: io::Error::from_raw_os_error(libc::ENOMEM),
            })?;
        let mut errs: Vec<c_int> = vec![0; frames.len()];
        // SAFETY: the handle is open; `frames` and `errs` hold `frames.len()` elements each and
        // outlive the call. Returns a fresh mapping of `len` bytes or NULL with errno set.
        let at = unsafe {
            xfm::xenforeignmemory_map(
                self.0.as_ptr(),
                domid,
                libc::PROT_READ,
                frames.len(),
                frames.as_ptr(),
                errs.as_mut_ptr(),
            )
        };
        if at.is_null() {
            return Err(last_error(domid, "xenforeignmemory_map"));
        }
        let mut copy = Vec::new();
        if errs.iter().all(|&e| e == 0) {
            copy = vec![0u8; len];
            // SAFETY: every page of the `len`-byte mapping at `at` is mapped (no per-page error),
            // and `copy` is our own buffer of `len` bytes.
            unsafe { ptr::copy_nonoverlapping(at.cast::<u8>(), copy.as_mut_ptr(), len) };
        }
        // SAFETY: `at` and the page count are exactly this call's mapping, unmapped once here.
        if unsafe { xfm::xenforeignmemory_unmap(self.0.as_ptr(), at, frames.len()) } != 0 {
            log::warn!("xenforeignmemory_unmap: {}", io::Error::last_os_error());
        }
        match errs.iter().zip(frames).find(|(&e, _)| e != 0) {
            Some((&e, frame)) => Err(MemoryError::Xen {
                domid,
                call: "xenforeignmemory_map",
                source: io::Error::other(format!(
                    "frame {frame:#x}: {}",
                    io::Error::from_raw_os_error(e.saturating_neg())
                )),
            }),
            None => Ok(copy),
        }
    }
}

impl Drop for Fmem {
    fn drop(&mut self) {
        // SAFETY: the handle came from `xenforeignmemory_open` and is closed once, here (a
        // `ForeignMap` owning it has unmapped its window first).
        if unsafe { xfm::xenforeignmemory_close(self.0.as_ptr()) } != 0 {
            log::warn!("xenforeignmemory_close: {}", io::Error::last_os_error());
        }
    }
}

/// A foreign-memory handle and the window it maps a guest into.
///
/// The window is reserved whole (`PROT_NONE`) at open, then filled chunk by chunk with
/// `xenforeignmemory_map2(.., MAP_FIXED, ..)`, which replaces the reservation; each chunk is its
/// own privcmd mapping (such mappings never merge), unmapped on its own. QEMU's Xen map cache
/// places foreign mappings the same way.
#[derive(Debug)]
struct ForeignMap {
    fmem: Fmem,
    /// Start of the window: guest frame `n` lives at `base + n * PAGE_SIZE`.
    base: NonNull<u8>,
    /// Window size in pages.
    pages: usize,
    /// Pages from the window's start handed out to chunks so far; each chunk is [`CHUNK_PAGES`]
    /// long except the window's last.
    mapped: usize,
    /// The protection chunks are mapped with.
    prot: c_int,
    /// Where our `PROT_NONE` reservation still starts: `mapped`, or past a chunk that failed (the
    /// library may have unmapped its pages, and another thread may have mapped something there).
    reserved_from: usize,
}

// SAFETY: the handle is `Send`; the window is plain process memory. `ForeignMap` is not `Sync`,
// so it is used from one thread at a time.
unsafe impl Send for ForeignMap {}

impl ForeignMap {
    /// Reserves a window of `pages` pages (`pages > 0`) for mappings through `fmem` with
    /// protection `prot`.
    fn new(fmem: Fmem, domid: u32, pages: usize, prot: c_int) -> Result<Self, MemoryError> {
        let len = pages.checked_mul(PAGE_BYTES).ok_or(MemoryError::Xen {
            domid,
            call: "mmap",
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        // Owned from here: dropping it (on an early return) closes the handle.
        let mut map = Self {
            fmem,
            base: NonNull::dangling(),
            pages: 0,
            mapped: 0,
            prot,
            reserved_from: 0,
        };
        // SAFETY: an anonymous, inaccessible reservation at an address the kernel picks: it
        // replaces nothing. Returns MAP_FAILED with errno set on failure, never NULL (the kernel
        // keeps page 0 out of reach, vm.mmap_min_addr).
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(last_error(domid, "mmap"));
        }
        if let Some(base) = NonNull::new(base.cast::<u8>()) {
            map.base = base;
            map.pages = pages;
        }
        Ok(map)
    }

    /// Maps the window's next chunk, window page n from frame `frame_of(n)`; returns its first
    /// page, with `errs` holding the per-page results (0: mapped; negative errno: a hole), or
    /// `None` once the window is full.
    fn map_next_chunk(
        &mut self,
        domid: u32,
        frame_of: &dyn Fn(u64) -> u64,
        frames: &mut Vec<xfm::xen_pfn_t>,
        errs: &mut Vec<c_int>,
    ) -> Result<Option<usize>, MemoryError> {
        let first = self.mapped;
        let count = self.pages.saturating_sub(first).min(CHUNK_PAGES);
        // After a failed chunk, the rest of the window is no longer ours to map over.
        if count == 0 || self.reserved_from != first {
            return Ok(None);
        }
        frames.clear();
        frames.extend((first..first + count).map(|page| frame_of(page as u64)));
        errs.clear();
        errs.resize(count, 0);
        let addr = self.base.as_ptr().wrapping_add(first * PAGE_BYTES);
        // SAFETY: `first .. first + count` lies inside the window (`count` was clamped to it) and
        // is still our PROT_NONE reservation (it starts at `reserved_from`, checked above), so
        // MAP_FIXED replaces nothing but memory we own; with MAP_FIXED a success returns `addr`
        // itself. `frames` and `errs` hold `count` elements each and outlive the call.
        let got = unsafe {
            xfm::xenforeignmemory_map2(
                self.fmem.0.as_ptr(),
                domid,
                addr.cast::<c_void>(),
                self.prot,
                libc::MAP_FIXED,
                count,
                frames.as_ptr(),
                errs.as_mut_ptr(),
            )
        };
        if got.is_null() {
            // errno is valid on NULL. The library unmaps what it mapped (perhaps our reservation
            // under it): leave this chunk alone in `drop`, unmap only the reservation after it.
            let error = last_error(domid, "xenforeignmemory_map2");
            self.reserved_from = first + count;
            return Err(error);
        }
        self.mapped = first + count;
        self.reserved_from = self.mapped;
        Ok(Some(first))
    }

    /// The window address of `gpa .. gpa + len`, or `OutOfRange` if that is not inside the window.
    fn at(&self, gpa: Gpa, len: usize) -> Result<*mut u8, MemoryError> {
        let window = self.pages.saturating_mul(PAGE_BYTES);
        usize::try_from(gpa.raw())
            .ok()
            .filter(|&offset| offset.checked_add(len).is_some_and(|end| end <= window))
            .map(|offset| self.base.as_ptr().wrapping_add(offset))
            .ok_or_else(|| MemoryError::OutOfRange {
                gpa,
                len: len as u64,
            })
    }
}

impl Drop for ForeignMap {
    fn drop(&mut self) {
        let mut first = 0;
        while first < self.mapped {
            let count = (self.mapped - first).min(CHUNK_PAGES);
            let addr = self.base.as_ptr().wrapping_add(first * PAGE_BYTES);
            // SAFETY: `addr` and `count` are exactly one successful `xenforeignmemory_map2` call's
            // (chunks are CHUNK_PAGES from the window's start); nothing borrows the window beyond
            // a `read_phys`/`write_phys` call.
            if unsafe { xfm::xenforeignmemory_unmap(self.fmem.0.as_ptr(), addr.cast(), count) } != 0
            {
                log::warn!("xenforeignmemory_unmap: {}", io::Error::last_os_error());
            }
            first += count;
        }
        if self.reserved_from < self.pages {
            let addr = self
                .base
                .as_ptr()
                .wrapping_add(self.reserved_from * PAGE_BYTES);
            // SAFETY: from `reserved_from` to the window's end is still our own PROT_NONE
            // reservation.
            if unsafe { libc::munmap(addr.cast(), (self.pages - self.reserved_from) * PAGE_BYTES) }
                != 0
            {
                log::warn!("munmap: {}", io::Error::last_os_error());
            }
        }
        // `fmem` is closed after this, when the fields drop.
    }
}

/// A failed Xen call's error, from errno: call right after the call.
fn last_error(domid: u32, call: &'static str) -> MemoryError {
    MemoryError::Xen {
        domid,
        call,
        source: io::Error::last_os_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EINVAL: c_int = -libc::EINVAL;

    fn range(first_pfn: u64, pages: u64) -> PhysRange {
        PhysRange {
            start: Gpa(first_pfn * PAGE_SIZE),
            len: pages * PAGE_SIZE,
        }
    }

    fn runs(first_pfn: u64, errs: &[c_int]) -> Vec<PhysRange> {
        let mut ranges = Vec::new();
        push_mapped_runs(&mut ranges, first_pfn, errs).expect("no overflow");
        ranges
    }

    #[test]
    fn mapped_runs_become_ranges() {
        assert_eq!(runs(0, &[0, 0, 0, 0]), [range(0, 4)]);
        assert_eq!(
            runs(0, &[EINVAL, 0, 0, EINVAL, EINVAL, 0]),
            [range(1, 2), range(5, 1)]
        );
        assert_eq!(
            runs(16, &[0, EINVAL, -libc::EPERM, 0, 0]),
            [range(16, 1), range(19, 2)]
        );
        assert!(runs(0, &[EINVAL; 3]).is_empty());
        assert!(runs(0, &[]).is_empty());
    }

    #[test]
    fn chunks_merge_only_when_contiguous() {
        let mut ranges = Vec::new();
        push_mapped_runs(&mut ranges, 0, &[EINVAL, 0, 0]).expect("no overflow");
        push_mapped_runs(&mut ranges, 3, &[0, 0, EINVAL]).expect("no overflow");
        assert_eq!(ranges, [range(1, 4)]);
        push_mapped_runs(&mut ranges, 6, &[0]).expect("no overflow");
        assert_eq!(ranges, [range(1, 4), range(6, 1)]);
    }

    #[test]
    fn ranges_are_sorted_disjoint_maximal_and_exact() {
        // A fixed pseudo-random pattern of holes, pushed in uneven chunks, against a per-page model.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let errs: Vec<c_int> = (0..5000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if state % 4 == 1 {
                    EINVAL
                } else {
                    0
                }
            })
            .collect();
        let mut ranges = Vec::new();
        let mut first = 0;
        for len in [1, 7, 64, 1000, 3, 2500, 1425] {
            push_mapped_runs(&mut ranges, first as u64, &errs[first..first + len])
                .expect("no overflow");
            first += len;
        }
        assert_eq!(first, errs.len());
        for pair in ranges.windows(2) {
            assert!(
                pair[0].end() < pair[1].start.raw(),
                "{pair:?} not sorted, disjoint and maximal"
            );
        }
        for (pfn, &e) in errs.iter().enumerate() {
            let mapped = ranges
                .iter()
                .any(|r| r.contains(Gpa(pfn as u64 * PAGE_SIZE), PAGE_SIZE));
            assert_eq!(mapped, e == 0, "page {pfn}");
        }
    }

    #[test]
    fn overflowing_frames_are_refused() {
        let mut ranges = Vec::new();
        assert_eq!(
            push_mapped_runs(&mut ranges, u64::MAX / PAGE_SIZE, &[0]),
            None
        );
        assert_eq!(push_mapped_runs(&mut ranges, u64::MAX, &[EINVAL, 0]), None);
        let last = u64::MAX / PAGE_SIZE - 1;
        assert_eq!(push_mapped_runs(&mut ranges, last, &[0]), Some(()));
        assert_eq!(ranges, [range(last, 1)]);
    }

    #[test]
    fn window_is_capped_by_max_memory() {
        let slack = PHYSMAP_SLACK / PAGE_SIZE;
        // A 1 GiB guest (max_memkb counts video RAM too): all frames.
        assert_eq!(window_pages(0x3ffff, 1 << 20), 0x40000);
        // An 8 GiB guest with RAM above the hole, up to 9 GiB: all frames.
        assert_eq!(window_pages(0x23ffff, 8 << 20), 0x240000);
        // A frame populated far away is cut off at max memory + slack.
        assert_eq!(window_pages(1 << 40, 1 << 20), 0x40000 + slack);
        assert_eq!(window_pages(u64::MAX, u64::MAX), u64::MAX / 4 + 1 + slack);
        assert_eq!(window_pages(0, 0), 1);
    }
}
