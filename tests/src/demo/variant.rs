//! The ways each scenario is played: without xsched; the best an operator can do without it —
//! a higher host CPU weight for one VM's QEMU (libvirt's `<cputune><shares>`) and, inside its
//! guest, the background task at nice 19 or in `SCHED_IDLE` — in both weight orders; and with
//! xsched.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::scenario::Scenario;
use crate::host_cgroup::{HostWeights, DEFAULT_WEIGHT};
use crate::Guest;

/// The heavier VM's host CPU weight in a weights variant (cgroup v2's scale, where the other VM
/// keeps the default 100): 2:1, `cpu.shares` 2048 against 1024 on cgroup v1.
pub const HEAVIER_WEIGHT: u32 = 2 * DEFAULT_WEIGHT;

/// What the guest does to its own background task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InGuest {
    /// `renice 19`: the lowest CFS weight (15 against 1024).
    Nice19,
    /// `chrt -i 0`: `SCHED_IDLE` (weight 3, below every nice level).
    SchedIdle,
}

/// One way of playing a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Nothing: default weights, the background task at nice 0.
    Without,
    /// The operator's way: guest `heavier` (`u1` or `u2`) gets [`HEAVIER_WEIGHT`] on the host,
    /// and the background task's guest lowers it.
    Weights {
        /// The guest whose QEMU gets the higher host weight.
        heavier: &'static str,
        /// What the background task's guest does to it.
        inside: InGuest,
    },
    /// xsched runs the scenario's policy (default weights, nice 0).
    Xsched,
}

/// The weights variants, in the order they run: u1 heavier (nice 19, `SCHED_IDLE`), then u2.
pub const BASELINES: [Variant; 4] = [
    Variant::Weights { heavier: "u1", inside: InGuest::Nice19 },
    Variant::Weights { heavier: "u1", inside: InGuest::SchedIdle },
    Variant::Weights { heavier: "u2", inside: InGuest::Nice19 },
    Variant::Weights { heavier: "u2", inside: InGuest::SchedIdle },
];

impl Variant {
    /// Its short name, used in file names and `--baseline`: `without`, `weights-u1-nice19`,
    /// `weights-u2-idle`, `xsched`, ...
    pub fn name(&self) -> String {
        match self {
            Self::Without => "without".into(),
            Self::Weights { heavier, inside: InGuest::Nice19 } => format!("weights-{heavier}-nice19"),
            Self::Weights { heavier, inside: InGuest::SchedIdle } => format!("weights-{heavier}-idle"),
            Self::Xsched => "xsched".into(),
        }
    }

    /// What it is, short, for the report's tables: `without xsched`, `u1:u2 2:1 + nice 19`,
    /// `u2:u1 2:1 + SCHED_IDLE`, `with xsched`.
    pub fn label(&self, scenario: &Scenario) -> String {
        match self {
            Self::Without => "without xsched".into(),
            Self::Weights { heavier, inside } => {
                let lighter = scenario.guests().into_iter().find(|g| g != heavier).unwrap_or("other");
                let how = match inside {
                    InGuest::Nice19 => "nice 19",
                    InGuest::SchedIdle => "SCHED_IDLE",
                };
                format!("{heavier}:{lighter} 2:1 + {how}")
            }
            Self::Xsched => "with xsched".into(),
        }
    }

    /// The background task's setting in its guest: `nice 0`, `nice 19` or `SCHED_IDLE`.
    pub fn background_setting(&self) -> &'static str {
        match self {
            Self::Weights { inside: InGuest::Nice19, .. } => "nice 19",
            Self::Weights { inside: InGuest::SchedIdle, .. } => "SCHED_IDLE",
            Self::Without | Self::Xsched => "nice 0",
        }
    }

    /// Sets the variant up: for a weights variant, the guests' QEMUs in host cgroups with the
    /// heavier one's weight (removed when the returned guard drops) and the background task's
    /// nice level or policy, each checked where it took effect (the weight file, every QEMU
    /// thread's cgroup, the guest's `/proc/PID/stat`). The other variants leave the QEMUs where
    /// they are and the background task as it started, at nice 0, `SCHED_OTHER`.
    pub fn apply(&self, guests: &[Guest], background: (&Guest, u32)) -> Result<Option<HostWeights>> {
        let Self::Weights { heavier, inside } = self else { return Ok(None) };
        let weights = HostWeights::create(guests)?;
        weights.set(heavier, HEAVIER_WEIGHT)?;
        set_in_guest(background, Some(*inside))?;
        Ok(Some(weights))
    }

    /// Undoes the guest's part of [`Self::apply`]: nice 0, `SCHED_OTHER` (the workload's start).
    pub fn undo(&self, background: (&Guest, u32)) -> Result<()> {
        match self {
            Self::Weights { .. } => set_in_guest(background, None),
            Self::Without | Self::Xsched => Ok(()),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Variant {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        BASELINES.into_iter().chain([Self::Without, Self::Xsched]).find(|v| v.name() == s).with_context(|| {
            let names: Vec<String> = BASELINES.iter().map(Variant::name).collect();
            format!("no variant {s:?} (the baselines are {})", names.join(", "))
        })
    }
}

/// Which baseline variants each scenario plays (`--baseline [SCENARIO:]VARIANT|none`, repeatable):
/// with none given, all four for every scenario; else only those named, `none` for none, and a
/// scenario a choice does not name gets none.
#[derive(Clone, Debug, Default)]
pub struct BaselineChoice(Option<Vec<(Option<String>, Option<Variant>)>>);

impl BaselineChoice {
    /// From the `--baseline` values.
    pub fn parse(values: &[String]) -> Result<Self> {
        if values.is_empty() {
            return Ok(Self(None));
        }
        let mut choices = Vec::new();
        for value in values {
            let (scenario, variant) = value.split_once(':').map_or((None, value.as_str()), |(s, v)| (Some(s.to_owned()), v));
            if let Some(s) = &scenario {
                if s != "priority" && s != "idle" {
                    bail!("--baseline {value}: no scenario {s:?} (there are priority and idle)");
                }
            }
            let variant = if variant == "none" { None } else { Some(variant.parse::<Variant>().with_context(|| format!("--baseline {value}"))?) };
            if let Some(v @ (Variant::Without | Variant::Xsched)) = variant {
                bail!("--baseline {value}: {v} always runs; name a baseline (weights-…) or none");
            }
            choices.push((scenario, variant));
        }
        Ok(Self(Some(choices)))
    }

    /// Every variant `scenario` plays, in order: without, the chosen baselines, xsched.
    pub fn variants(&self, scenario: &str) -> Vec<Variant> {
        let baselines: Vec<Variant> = match &self.0 {
            None => BASELINES.to_vec(),
            Some(choices) => BASELINES
                .into_iter()
                .filter(|b| choices.iter().any(|(s, v)| s.as_deref().is_none_or(|s| s == scenario) && *v == Some(*b)))
                .collect(),
        };
        [Variant::Without].into_iter().chain(baselines).chain([Variant::Xsched]).collect()
    }
}

/// Sets the background task's nice level and policy in its guest (`None`: nice 0,
/// `SCHED_OTHER`) and checks them in the guest's `/proc/PID/stat`.
fn set_in_guest((guest, pid): (&Guest, u32), inside: Option<InGuest>) -> Result<()> {
    let (command, nice, policy) = match inside {
        None => (format!("chrt -o -p 0 {pid} && renice 0 -p {pid} >/dev/null"), 0, 0),
        Some(InGuest::Nice19) => (format!("renice 19 -p {pid} >/dev/null"), 19, 0),
        // SCHED_IDLE is policy 5.
        Some(InGuest::SchedIdle) => (format!("chrt -i -p 0 {pid}"), 0, 5),
    };
    // One guest command for both: each costs a round trip under TCG.
    let stat = guest.exec_ok(&format!("{command} && cat /proc/{pid}/stat"))?;
    let got = nice_and_policy(&stat).with_context(|| format!("guest {}: no nice and policy in /proc/{pid}/stat: {stat:?}", guest.name()))?;
    if got != (nice, policy) {
        bail!("guest {}: `{command}` left pid {pid} at nice {} policy {}, not nice {nice} policy {policy}", guest.name(), got.0, got.1);
    }
    Ok(())
}

/// The nice level (field 19) and scheduling policy (field 41) of a `/proc/PID/stat` line.
fn nice_and_policy(stat: &str) -> Option<(i64, i64)> {
    let fields: Vec<&str> = stat.trim().rsplit_once(") ")?.1.split(' ').collect();
    // Fields 3 onwards follow the comm: field n is at index n - 3.
    Some((fields.get(16)?.parse().ok()?, fields.get(38)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_choices_select_per_scenario() {
        for v in BASELINES {
            assert_eq!(v.name().parse::<Variant>().expect("parse"), v);
        }
        let all = BaselineChoice::parse(&[]).expect("default");
        assert_eq!(all.variants("idle").len(), 6);
        let one = BaselineChoice::parse(&["priority:weights-u1-nice19".into()]).expect("one");
        assert_eq!(one.variants("priority"), [Variant::Without, BASELINES[0], Variant::Xsched]);
        assert_eq!(one.variants("idle"), [Variant::Without, Variant::Xsched]);
        assert_eq!(BaselineChoice::parse(&["none".into()]).expect("none").variants("priority").len(), 2);
        for bad in ["weights-u3-nice19", "dinner:weights-u1-idle", "xsched"] {
            assert!(BaselineChoice::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn nice_and_policy_come_from_their_fields_whatever_the_comm() {
        // A line with nice 19 and policy 5 (SCHED_IDLE), and a comm with a space.
        let stat = "77 (bk up) R 1 70 70 0 -1 4194304 100 0 0 0 500 3 0 0 39 19 1 0 900 2400000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 5 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(nice_and_policy(stat), Some((19, 5)));
    }
}
