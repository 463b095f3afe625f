//! Kernel constants that are `#define`s, so absent from DWARF: a per-architecture table.
//!
//! Every value below was read from the Linux 6.1, 6.12 and 7.3 sources (Debian's `linux-source-6.1`,
//! 6.1.192, `linux-source-6.12`, 6.12.117, and `linux-source-7.3`, 7.3.4) at the file named beside
//! it. [`X86_64`] is valid for 6.1 and 6.12, [`X86_64_7`] for 7.3 (they differ in
//! `TIF_NEED_RESCHED` only); each table is valid for its kernel versions in [`X86_64_VERSIONS`] only; [`super::generate`] refuses any other
//! release rather than emit constants nobody checked. Constants the image records itself (the
//! scheduler features' bit numbers) come from the image ([`from_image`]).
//!
//! History that matters when widening the range (from the kernel's commit log; the headers of those
//! versions were not read here, so check each value against them before extending the range):
//! - Linux 4.14 moved `TASK_PARKED` to `0x40` and `TASK_DEAD`..`TASK_NEW` up to `0x80`..`0x800`
//!   (before, `TASK_DEAD` was `0x40` and `TASK_PARKED` `0x200`) to report parked tasks in
//!   `/proc/PID/stat` (commit 8ef9925b02c2, "sched/debug: Add explicit TASK_PARKED printing").
//! - Linux 5.14 renamed `task_struct::state` to `__state` (commit 2f064a59a11f, "sched: Change
//!   task_struct::state") and added `TASK_RTLOCK_WAIT` (`0x1000`).
//! - Linux 6.1 added `TASK_FREEZABLE` (`0x2000`) and `TASK_FROZEN` (`0x8000`) with the freezer
//!   rewrite (commit f5d39b020809); the bits in this table kept their values.
//! - Linux 6.6 replaced CFS with EEVDF: the constants here survive; the runqueue layout is a
//!   scheduler flavour of its own (see `spec::FLAVOURS`).
//! - x86 took the generic TIF bits (`include/asm-generic/thread_info_tif.h`, "x86: Use generic
//!   TIF bits", in 6.18): `TIF_NEED_RESCHED` moved from 3 to 4 (7.3 has it so).
//!
//! Where the vmlinux itself can confirm a value, [`check_image`] does so at generation time:
//! the kernel's own `task_state_array` (the `/proc/PID/stat` state letters, one per state bit),
//! `init_task`'s static initializer (`flags = PF_KTHREAD`, `prio = MAX_PRIO - 20`,
//! `policy = SCHED_NORMAL`), the nice-0 entry of `sched_prio_to_weight` and the link address of
//! `_text`. `TIF_NEED_RESCHED` and `TASK_WAKEKILL`..`TASK_NEW` can only be checked against the
//! source.

use super::elf::Image;
use super::ProfileError;
use crate::profile::Profile;

/// One `#define` of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Constant {
    /// The C name.
    pub name: &'static str,
    /// Its value.
    pub value: u64,
    /// The kernel source file that defines it.
    pub source: &'static str,
}

/// A kernel version as `major.minor` (the sublevel and distribution suffix do not matter here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    /// The major version (`6` in `6.1.0-56-cloud-amd64`).
    pub major: u32,
    /// The minor version (`1` in `6.1.0-56-cloud-amd64`).
    pub minor: u32,
}

impl KernelVersion {
    /// Parses the leading `major.minor` of a release string such as `6.1.0-56-cloud-amd64`.
    pub fn from_release(release: &str) -> Option<Self> {
        let mut parts = release.splitn(3, ['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor_text = parts.next()?;
        let digits = minor_text.find(|c: char| !c.is_ascii_digit()).map_or(minor_text, |end| &minor_text[..end]);
        let minor = digits.parse().ok()?;
        Some(Self { major, minor })
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The kernel versions xsched's x86-64 constants were checked against, each with its table:
/// [`X86_64`] for 6.1 and 6.12 (Debian's `linux-source-6.1`, 6.1.192, and `linux-source-6.12`,
/// 6.12.117: every value is the same in both), [`X86_64_7`] for 7.3 (`linux-source-7.3`, 7.3.4).
pub const X86_64_VERSIONS: &[(KernelVersion, &[Constant])] = &[
    (KernelVersion { major: 6, minor: 1 }, X86_64),
    (KernelVersion { major: 6, minor: 12 }, X86_64),
    (KernelVersion { major: 7, minor: 3 }, X86_64_7),
];

const SCHED_H: &str = "include/linux/sched.h";
const UAPI_SCHED_H: &str = "include/uapi/linux/sched.h";

/// `TIF_NEED_RESCHED` up to 6.17 (arch/x86/include/asm/thread_info.h).
const TIF_NEED_RESCHED_6: Constant = Constant { name: "TIF_NEED_RESCHED", value: 3, source: "arch/x86/include/asm/thread_info.h" };

/// The x86-64 constants of Linux 6.1 and 6.12.
pub const X86_64: &[Constant] = &with::<28, 1, 29>(X86_64_COMMON, [TIF_NEED_RESCHED_6]);

/// The x86-64 constants of Linux 7.3: the generic TIF bits moved `TIF_NEED_RESCHED` to 4, and
/// sched_ext (6.12's uapi, built into Debian's 7.x) adds the policy `SCHED_EXT`.
pub const X86_64_7: &[Constant] = &with::<28, 2, 30>(
    X86_64_COMMON,
    [
        Constant { name: "TIF_NEED_RESCHED", value: 4, source: "include/asm-generic/thread_info_tif.h" },
        Constant { name: "SCHED_EXT", value: 7, source: UAPI_SCHED_H },
    ],
);

/// `common` followed by `extra` (`M` = `N` + `E`).
const fn with<const N: usize, const E: usize, const M: usize>(common: [Constant; N], extra: [Constant; E]) -> [Constant; M] {
    let mut out = [extra[0]; M];
    let mut i = 0;
    while i < M {
        out[i] = if i < N { common[i] } else { extra[i - N] };
        i += 1;
    }
    out
}

/// The x86-64 constants every checked version shares (each defined the same in 6.1, 6.12 and 7.3).
const X86_64_COMMON: [Constant; 28] = [
    // Task states: `task_struct::__state` bits, and `exit_state` for EXIT_*.
    Constant { name: "TASK_RUNNING", value: 0x0, source: SCHED_H },
    Constant { name: "TASK_INTERRUPTIBLE", value: 0x1, source: SCHED_H },
    Constant { name: "TASK_UNINTERRUPTIBLE", value: 0x2, source: SCHED_H },
    Constant { name: "__TASK_STOPPED", value: 0x4, source: SCHED_H },
    Constant { name: "__TASK_TRACED", value: 0x8, source: SCHED_H },
    Constant { name: "EXIT_DEAD", value: 0x10, source: SCHED_H },
    Constant { name: "EXIT_ZOMBIE", value: 0x20, source: SCHED_H },
    Constant { name: "TASK_PARKED", value: 0x40, source: SCHED_H },
    Constant { name: "TASK_DEAD", value: 0x80, source: SCHED_H },
    Constant { name: "TASK_WAKEKILL", value: 0x100, source: SCHED_H },
    Constant { name: "TASK_WAKING", value: 0x200, source: SCHED_H },
    Constant { name: "TASK_NOLOAD", value: 0x400, source: SCHED_H },
    Constant { name: "TASK_NEW", value: 0x800, source: SCHED_H },
    // The bit of the per-CPU `__preempt_count` that is clear while a reschedule is pending.
    Constant { name: "PREEMPT_NEED_RESCHED", value: 0x8000_0000, source: "arch/x86/include/asm/preempt.h" },
    // Bit in `task_struct::flags`.
    Constant { name: "PF_KTHREAD", value: 0x0020_0000, source: SCHED_H },
    // Scheduling policies (`task_struct::policy`); user ABI, stable.
    Constant { name: "SCHED_NORMAL", value: 0, source: UAPI_SCHED_H },
    Constant { name: "SCHED_FIFO", value: 1, source: UAPI_SCHED_H },
    Constant { name: "SCHED_RR", value: 2, source: UAPI_SCHED_H },
    Constant { name: "SCHED_BATCH", value: 3, source: UAPI_SCHED_H },
    Constant { name: "SCHED_IDLE", value: 5, source: UAPI_SCHED_H },
    Constant { name: "SCHED_DEADLINE", value: 6, source: UAPI_SCHED_H },
    Constant { name: "MAX_RT_PRIO", value: 100, source: "include/linux/sched/prio.h" },
    // `1L << NICE_0_LOAD_SHIFT`, where the shift is `2 * SCHED_FIXEDPOINT_SHIFT` (10) on 64-bit:
    // load weights carry 10 extra bits of resolution (`scale_load`).
    Constant { name: "NICE_0_LOAD", value: 1024 << 10, source: "kernel/sched/sched.h" },
    // What `scale_load_down` shifts away on 64-bit (EEVDF weighs its sums with it).
    Constant { name: "SCHED_FIXEDPOINT_SHIFT", value: 10, source: SCHED_H },
    // `task_struct::on_rq` when the task is on a runqueue (kernel/sched/sched.h).
    Constant { name: "TASK_ON_RQ_QUEUED", value: 1, source: "kernel/sched/sched.h" },
    // Index of runnable tasks in `psi_group_cpu::tasks` (`enum psi_task_count`); its flag in
    // `task_struct::psi_flags` is `TSK_RUNNING = 1 << NR_RUNNING` (include/linux/psi_types.h).
    Constant { name: "PSI_NR_RUNNING", value: 2, source: "include/linux/psi_types.h" },
    // `__START_KERNEL_map`: the base of the kernel image mapping.
    Constant { name: "START_KERNEL_MAP", value: 0xffff_ffff_8000_0000, source: "arch/x86/include/asm/page_64_types.h" },
    // The smallest group share and hierarchical weight (`__calc_prop_weight` clamps to it).
    Constant { name: "MIN_SHARES", value: 2, source: "kernel/sched/sched.h" },
];

/// The value of `name` in `table`.
pub fn lookup(table: &[Constant], name: &str) -> Option<u64> {
    table.iter().find(|c| c.name == name).map(|c| c.value)
}

/// The constants table for `release` of `arch`, or why there is none.
pub fn table_for(arch: &str, release: &str) -> Result<&'static [Constant], String> {
    if arch != "x86_64" {
        return Err(format!("no constants table for architecture {arch}"));
    }
    let version = KernelVersion::from_release(release)
        .ok_or_else(|| format!("cannot read a kernel version from release {release:?}"))?;
    let Some((_, table)) = X86_64_VERSIONS.iter().find(|(v, _)| *v == version) else {
        let checked: Vec<String> = X86_64_VERSIONS.iter().map(|(v, _)| v.to_string()).collect();
        return Err(format!(
            "kernel {release} (version {version}) is not among the versions xsched's x86-64 constants table was \
             checked against (Linux {}); its TASK_*/TIF_*/PF_* values are unverified for this version: check them \
             against its source and extend the table in host/src/profile/gen/constants.rs",
            checked.join(", ")
        ));
    };
    Ok(table)
}

/// The prefix of constants that are bit numbers of scheduler features (`SCHED_FEAT_PLACE_LAG`):
/// `sched_feat(PLACE_LAG)` tests bit `__SCHED_FEAT_PLACE_LAG` of `sysctl_sched_features`.
const SCHED_FEAT_PREFIX: &str = "SCHED_FEAT_";

/// `INITIAL_JIFFIES` is `(unsigned int)(-300 * HZ)` (include/linux/jiffies.h): `jiffies_64`
/// starts five minutes before the wrap.
const INITIAL_JIFFIES_SECONDS: u64 = 300;

/// A constant the image itself records, or `None`:
/// - a scheduler feature's bit number is its index in the kernel's own `sched_feat_names`
///   (kernel/sched/debug.c lists the features in the order of kernel/sched/features.h, which is
///   the order of their `__SCHED_FEAT_*` bits);
/// - `TICK_NSEC` (`(NSEC_PER_SEC + HZ/2) / HZ`, include/vdso/jiffies.h) follows from `HZ`, which
///   the static initializer of `jiffies_64` (`INITIAL_JIFFIES`) gives away.
pub(super) fn from_image(image: &Image<'_>, name: &str) -> Result<Option<u64>, ProfileError> {
    if name == "TICK_NSEC" {
        return tick_nsec(image);
    }
    let Some(feature) = name.strip_prefix(SCHED_FEAT_PREFIX) else { return Ok(None) };
    // (Its pointers are relocations in an object file: only a linked image can be read.)
    let Some(names) = image.symbol_info("sched_feat_names")?.filter(|_| !image.is_relocatable()) else { return Ok(None) };
    let names = image.read_string_array(&names)?;
    Ok(names.iter().position(|n| *n == feature.as_bytes()).and_then(|i| u64::try_from(i).ok()))
}

/// The `HZ` values a kernel can be configured with (`kernel/Kconfig.hz`).
const HZ_CHOICES: [u64; 4] = [100, 250, 300, 1000];

/// `TICK_NSEC` from `HZ`, from `jiffies_64`'s initializer; `None` in images without one (objects).
/// A running kernel's `jiffies_64` has moved on: there `HZ` comes from the NTP code's
/// `tick_nsec` (kernel/time/ntp.c: `NSEC_PER_SEC / HZ`, off by at most NTP's frequency correction
/// of 500 ppm), which must lie within 0.1% of one of the configurable `HZ` values.
fn tick_nsec(image: &Image<'_>) -> Result<Option<u64>, ProfileError> {
    if image.is_running() {
        let Some(symbol) = image.symbol_info("tick_nsec")? else { return Ok(None) };
        let ntp = image.read_uint(&symbol, 0, 8)?;
        let hz = HZ_CHOICES.into_iter().find(|hz| (1_000_000_000 / hz).abs_diff(ntp) <= 1_000_000 / hz);
        return match hz {
            Some(hz) => Ok(Some((1_000_000_000 + hz / 2) / hz)),
            None => Err(image.error(format!("tick_nsec is {ntp}, which is no NSEC_PER_SEC / HZ of a configurable HZ"))),
        };
    }
    let Some(jiffies) = image.symbol_info("jiffies_64")?.filter(|_| !image.is_relocatable()) else { return Ok(None) };
    let initial = image.read_uint(&jiffies, 0, 8)?;
    let before_wrap = (1u64 << 32).checked_sub(initial).filter(|_| initial >> 32 == 0);
    let hz = before_wrap.filter(|b| b % INITIAL_JIFFIES_SECONDS == 0).map(|b| b / INITIAL_JIFFIES_SECONDS);
    match hz {
        Some(hz) if (24..=10_000).contains(&hz) => Ok(Some((1_000_000_000 + hz / 2) / hz)),
        _ => Err(image.error(format!("jiffies_64 starts at {initial:#x}, which is no INITIAL_JIFFIES of a plausible HZ"))),
    }
}

/// Checks table values against what the vmlinux itself records, where it records them.
///
/// Returns the names of the constants confirmed; a contradiction is an error. A check whose
/// symbol or struct field is absent (as in test objects) is skipped.
pub(super) fn check_image(image: &Image<'_>, profile: &Profile) -> Result<Vec<&'static str>, ProfileError> {
    let mut confirmed = Vec::new();
    let constant = |name: &str| {
        profile.constants.get(name).copied().ok_or_else(|| image.error(format!("constant {name} missing from the table")))
    };
    let contradiction = |what: String| image.error(format!("the constants table contradicts the kernel: {what}"));

    // fs/proc/array.c: `task_state_array[0]` is running, entry `i` is state bit `1 << (i - 1)`,
    // up to TASK_PARKED; the last entry, "I (idle)", is a report-only pseudo state.
    const STATES: [(&str, u8); 8] = [
        ("TASK_RUNNING", b'R'),
        ("TASK_INTERRUPTIBLE", b'S'),
        ("TASK_UNINTERRUPTIBLE", b'D'),
        ("__TASK_STOPPED", b'T'),
        ("__TASK_TRACED", b't'),
        ("EXIT_DEAD", b'X'),
        ("EXIT_ZOMBIE", b'Z'),
        ("TASK_PARKED", b'P'),
    ];
    // (Its pointers are relocations in an object file: only a linked image can be checked.)
    if let Some(array) = image.symbol_info("task_state_array")?.filter(|_| !image.is_relocatable()) {
        let strings = image.read_string_array(&array)?;
        if strings.len() != STATES.len() + 1 {
            return Err(contradiction(format!(
                "task_state_array has {} entries, expected {} (TASK_PARKED is the last reported bit)",
                strings.len(),
                STATES.len() + 1
            )));
        }
        for (index, ((name, letter), text)) in STATES.iter().zip(&strings).enumerate() {
            let expected = if index == 0 { 0 } else { 1u64 << (index - 1) };
            if text.first() != Some(letter) {
                return Err(contradiction(format!(
                    "task_state_array[{index}] is {:?}, expected the state letter {:?}",
                    String::from_utf8_lossy(text),
                    char::from(*letter)
                )));
            }
            let value = constant(name)?;
            if value != expected {
                return Err(contradiction(format!(
                    "{name} is {value:#x}, but task_state_array puts {:?} at bit value {expected:#x}",
                    String::from_utf8_lossy(text)
                )));
            }
            confirmed.push(*name);
        }
    }

    // init/init_task.c: `.flags = PF_KTHREAD, .prio = MAX_PRIO - 20, .policy = SCHED_NORMAL`,
    // with MAX_PRIO = MAX_RT_PRIO + NICE_WIDTH (40). (Not in a running kernel: init_task is CPU
    // 0's idle task by then, its flags and scheduling fields changed at boot.)
    if let Some(init) = image.symbol_info("init_task")?.filter(|_| !image.is_running()) {
        let read_field = |field: &str| -> Result<Option<u64>, ProfileError> {
            let Some(layout) = profile.structs.get("task_struct").and_then(|s| s.fields.get(field)) else {
                return Ok(None);
            };
            image.read_uint(&init, layout.offset, layout.size).map(Some)
        };
        if let Some(flags) = read_field("flags")? {
            let value = constant("PF_KTHREAD")?;
            if flags != value {
                return Err(contradiction(format!("init_task.flags is {flags:#x}, PF_KTHREAD is {value:#x}")));
            }
            confirmed.push("PF_KTHREAD");
        }
        if let Some(prio) = read_field("prio")? {
            let value = constant("MAX_RT_PRIO")?;
            if prio != value + 20 {
                return Err(contradiction(format!("init_task.prio is {prio}, expected MAX_RT_PRIO + 20 = {}", value + 20)));
            }
            confirmed.push("MAX_RT_PRIO");
        }
        if let Some(policy) = read_field("policy")? {
            let value = constant("SCHED_NORMAL")?;
            if policy != value {
                return Err(contradiction(format!("init_task.policy is {policy}, SCHED_NORMAL is {value}")));
            }
            confirmed.push("SCHED_NORMAL");
        }
    }

    // kernel/sched/core.c: `sched_prio_to_weight[20]` (nice 0) is 1024, and NICE_0_LOAD is
    // `scale_load(1024)` on 64-bit.
    if let Some(weights) = image.symbol_info("sched_prio_to_weight")? {
        let nice0 = image.read_uint(&weights, 20 * 4, 4)?;
        let value = constant("NICE_0_LOAD")?;
        if nice0 != 1024 || value != nice0 << 10 {
            return Err(contradiction(format!(
                "sched_prio_to_weight[20] is {nice0}, NICE_0_LOAD is {value:#x} (expected 1024 << 10)"
            )));
        }
        confirmed.push("NICE_0_LOAD");
    }

    // The image is linked inside the 1 GiB kernel map that starts at __START_KERNEL_map.
    if let Some(text) = profile.symbols.get("_text") {
        let value = constant("START_KERNEL_MAP")?;
        if text.checked_sub(value).is_none_or(|off| off >= 1 << 30) {
            return Err(contradiction(format!("_text ({text:#x}) is not inside the kernel map at {value:#x}")));
        }
        confirmed.push("START_KERNEL_MAP");
    }
    Ok(confirmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_releases() {
        assert_eq!(KernelVersion::from_release("6.1.0-56-cloud-amd64"), Some(KernelVersion { major: 6, minor: 1 }));
        assert_eq!(KernelVersion::from_release("6.12.9+bpo-amd64"), Some(KernelVersion { major: 6, minor: 12 }));
        assert_eq!(KernelVersion::from_release("5.14"), Some(KernelVersion { major: 5, minor: 14 }));
        assert_eq!(KernelVersion::from_release("6.1rc1"), Some(KernelVersion { major: 6, minor: 1 }));
        assert_eq!(KernelVersion::from_release("linux"), None);
        assert_eq!(KernelVersion::from_release("6"), None);
    }

    #[test]
    fn the_table_covers_every_required_constant() {
        for name in crate::profile::spec::REQUIRED.constants {
            assert!(lookup(X86_64, name).is_some(), "{name} missing from the x86-64 table");
            assert!(lookup(X86_64_7, name).is_some(), "{name} missing from the x86-64 table of 7.x");
        }
        assert_eq!(X86_64.len() + 1, X86_64_7.len());
        assert_eq!(lookup(X86_64_7, "SCHED_EXT"), Some(7));
        assert_eq!(X86_64.iter().filter(|c| c.name == "TIF_NEED_RESCHED").count(), 1);
    }

    #[test]
    fn the_generic_tif_bits_moved_need_resched_in_7x() -> Result<(), String> {
        assert_eq!(lookup(table_for("x86_64", "6.12.117+deb12-cloud-amd64")?, "TIF_NEED_RESCHED"), Some(3));
        assert_eq!(lookup(table_for("x86_64", "7.3.4+deb13-cloud-amd64")?, "TIF_NEED_RESCHED"), Some(4));
        for c in X86_64.iter().filter(|c| c.name != "TIF_NEED_RESCHED") {
            assert_eq!(lookup(X86_64_7, c.name), Some(c.value), "{}", c.name);
        }
        Ok(())
    }

    #[test]
    fn releases_outside_the_checked_versions_are_refused() {
        assert!(table_for("x86_64", "6.1.0-56-cloud-amd64").is_ok());
        assert!(table_for("x86_64", "6.12.117+deb12-cloud-amd64").is_ok());
        assert!(table_for("x86_64", "7.3.4+deb13-cloud-amd64").is_ok());
        let err = table_for("x86_64", "6.8.0-45-generic").expect_err("6.8 was not checked");
        assert!(err.contains("not among") && err.contains("6.1, 6.12"), "{err}");
        assert!(table_for("x86_64", "5.10.0-30-amd64").is_err());
        assert!(table_for("aarch64", "6.1.0").is_err());
        assert!(table_for("x86_64", "weird").is_err());
    }
}
