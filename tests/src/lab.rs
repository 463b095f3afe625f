//! Booting guests, alone or in parallel, and sharing them across the tests of a test binary.

use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use crate::kernel::KernelFiles;
use crate::{cleanup, Guest, GuestSpec, LabError, Libvirtd};

/// Entry point for booting lab guests.
#[derive(Debug)]
pub struct Lab;

impl Lab {
    /// Boots every spec at once and waits until each guest is ready (its workloads run and its
    /// control channel is open). Each guest boots its spec's kernel, else the lab's choice
    /// ([`GuestSpec::effective_kernel`]); a kernel the cache lacks is fetched first.
    ///
    /// On any failure every guest already started is stopped and its directory removed; the error
    /// carries the failing guest's console tail.
    pub fn boot(specs: &[GuestSpec]) -> Result<Vec<Guest>, LabError> {
        Self::boot_via(specs, None)
    }

    /// Boots every spec as a domain of `libvirtd` (see [`Lab::boot`]; each spec needs
    /// anonymous RAM, [`GuestSpec::anonymous_ram`]). The guests must be dropped before the daemon.
    pub fn boot_libvirt(libvirtd: &Libvirtd, specs: &[GuestSpec]) -> Result<Vec<Guest>, LabError> {
        Self::boot_via(specs, Some(libvirtd))
    }

    fn boot_via(specs: &[GuestSpec], libvirtd: Option<&Libvirtd>) -> Result<Vec<Guest>, LabError> {
        for spec in specs {
            spec.validate()?;
        }
        let kernels = specs
            .iter()
            .map(|spec| KernelFiles::ensure(&spec.effective_kernel()?))
            .collect::<Result<Vec<_>, _>>()?;
        cleanup::init();
        let mut guests = Vec::with_capacity(specs.len());
        for (spec, kernel) in specs.iter().zip(&kernels) {
            guests.push(Guest::launch(spec.clone(), kernel, libvirtd)?);
        }
        let mut ready = vec![false; guests.len()];
        while ready.iter().any(|r| !r) {
            for (guest, ready) in guests.iter().zip(ready.iter_mut()).filter(|(_, r)| !**r) {
                *ready = guest.poll_boot(guest.spec().effective_boot_timeout())?;
                if *ready {
                    log::info!("lab: guest {} ready after {:?}", guest.name(), guest.boot_time().unwrap_or_default());
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(guests)
    }

    /// Boots one guest (see [`Lab::boot`]).
    pub fn boot_one(spec: GuestSpec) -> Result<Guest, LabError> {
        Self::boot(std::slice::from_ref(&spec))?.pop().ok_or_else(|| LabError::Spec {
            guest: spec.name.clone(),
            reason: "boot returned no guest".into(),
        })
    }
}

/// The guests shared by every test of this test binary: booted by the first caller from `specs`
/// (later callers' `specs` are ignored), never dropped; the lab's exit hook stops them when the
/// process exits.
///
/// # Panics
///
/// If the boot fails (in every caller, with the same message).
pub fn shared_lab(specs: impl FnOnce() -> Vec<GuestSpec>) -> &'static [Guest] {
    match try_shared_lab(specs) {
        Ok(guests) => guests,
        Err(e) => panic!("lab boot failed: {e}"),
    }
}

/// [`shared_lab`] that returns the boot error (as text, since every caller gets it) instead.
pub fn try_shared_lab(specs: impl FnOnce() -> Vec<GuestSpec>) -> Result<&'static [Guest], String> {
    static SHARED: OnceLock<Result<Vec<Guest>, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| Lab::boot(&specs()).map_err(|e| e.to_string()))
        .as_deref()
        .map_err(Clone::clone)
}

/// The guest called `name`.
///
/// # Panics
///
/// If there is none (a test setup mistake).
pub fn guest<'a>(guests: &'a [Guest], name: &str) -> &'a Guest {
    match guests.iter().find(|g| g.name() == name) {
        Some(guest) => guest,
        None => panic!("no lab guest called {name:?}"),
    }
}
