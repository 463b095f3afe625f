//! Which fair scheduler a guest kernel runs: CFS (Linux 6.1), EEVDF (6.6 and later, as 6.12 has it)
//! or EEVDF over a flat runqueue (7.3), decided by what its profile holds (`profile::spec::FLAVOURS`), never by its version string.
//!
//! The read side needs only the names of the fields that differ; the write side keeps one
//! module per flavour for the runqueue arithmetic (`actuate::fair`).

use crate::profile::Profile;

use super::LinuxError;

/// A fair-scheduler flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// CFS as in Linux 6.1: the timeline ordered by `vruntime`, placement against `min_vruntime`.
    Cfs,
    /// EEVDF as in Linux 6.12: the timeline ordered by `deadline`, augmented, lag placement.
    Eevdf,
    /// EEVDF over a flat runqueue as in Linux 7.3: every task in its CPU's root timeline, weighed
    /// by its hierarchical weight `h_load`; group entities hold weights and counts only.
    EevdfFlat,
}

impl Flavour {
    /// The flavour whose fields `profile` holds.
    pub fn of(profile: &Profile) -> Result<Self, LinuxError> {
        match profile.flavour()? {
            "cfs" => Ok(Self::Cfs),
            "eevdf" => Ok(Self::Eevdf),
            "eevdf-flat" => Ok(Self::EevdfFlat),
            other => Err(LinuxError::Inconsistent { release: profile.release.clone(), what: format!("no reader for the {other} flavour") }),
        }
    }

    /// The `cfs_rq` field counting the entities queued directly on it: `nr_running` up to 6.12,
    /// `nr_queued` in 7.3 (mainline 6.14 renamed it, "sched/fair: Rename cfs_rq.nr_running into
    /// nr_queued").
    pub fn nr_queued(self) -> &'static str {
        match self {
            Self::Cfs | Self::Eevdf => "nr_running",
            Self::EevdfFlat => "nr_queued",
        }
    }

    /// The `cfs_rq` field counting the tasks queued in it and below: `h_nr_running` in CFS,
    /// `h_nr_queued` in EEVDF since the count was split into queued, runnable and delayed.
    pub fn h_nr_queued(self) -> &'static str {
        match self {
            Self::Cfs => "h_nr_running",
            Self::Eevdf | Self::EevdfFlat => "h_nr_queued",
        }
    }

    /// The `cfs_rq` field that vruntimes are measured against: `min_vruntime` in CFS,
    /// `zero_vruntime` (the base of the weighted sums) in EEVDF.
    pub fn vruntime_base(self) -> &'static str {
        match self {
            Self::Cfs => "min_vruntime",
            Self::Eevdf | Self::EevdfFlat => "zero_vruntime",
        }
    }

    /// The `sched_entity` field the timeline is ordered by: `vruntime` in CFS, the virtual
    /// `deadline` in EEVDF.
    pub fn timeline_key(self) -> &'static str {
        match self {
            Self::Cfs => "vruntime",
            Self::Eevdf | Self::EevdfFlat => "deadline",
        }
    }
}

impl std::fmt::Display for Flavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cfs => "CFS",
            Self::Eevdf => "EEVDF",
            Self::EevdfFlat => "EEVDF (flat)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(release: &str) -> Profile {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels").join(format!("{release}.json"));
        Profile::load(&path).expect("committed profile")
    }

    #[test]
    fn the_committed_profiles_have_their_flavours() {
        assert_eq!(Flavour::of(&committed("6.1.0-56-cloud-amd64")).expect("6.1"), Flavour::Cfs);
        assert_eq!(Flavour::of(&committed("6.12.117+deb12-cloud-amd64")).expect("6.12"), Flavour::Eevdf);
    }

    #[test]
    fn a_profile_of_neither_flavour_names_what_each_lacks() {
        let mut profile = committed("6.12.117+deb12-cloud-amd64");
        profile.structs.get_mut("cfs_rq").expect("cfs_rq").fields.remove("avg_load");
        let err = Flavour::of(&profile).expect_err("no flavour").to_string();
        assert!(err.contains("eevdf lacks struct cfs_rq.avg_load"), "{err}");
        assert!(err.contains("cfs lacks symbol sysctl_sched_latency"), "{err}");
        assert!(profile.validate().is_err());
    }
}
