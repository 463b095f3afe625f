//! `xsched run --config-file FILE`: the loop's settings from a TOML file (a service's
//! `/etc/xsched/xsched.toml`, see `dist/xsched.toml`), under the command line's flags: a flag
//! given wins over the file.
//!
//! ```toml
//! plugin = "libpriority.so"                  # --plugin
//! policy-config = "/etc/xsched/priority.toml" # --config
//! domains = ["db=qemu:/dev/shm/db.ram,qmp=/run/db.qmp", "web=xen:3"]   # --domain, each
//! period-ms = 10                             # --period
//! cpus = 4                                   # --cpus
//! journal = "/var/lib/xsched/journal.jsonl"  # --journal
//! kernels = "/usr/share/xsched/kernels"      # --kernels
//! metrics = "127.0.0.1:9477"                 # --metrics
//! ```
//!
//! Unknown keys and bad values are errors that name the file, the line and the key. Relative
//! paths of files (`plugin` with a directory, `policy-config`, `journal`, `kernels`) are taken
//! from the settings file's directory; the paths inside domain specs are used as written.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Deserializer};
use xsched::domain::DomainSpec;

/// The period range, milliseconds, as `--period` takes it.
pub const PERIOD_MS: std::ops::RangeInclusive<u64> = 1..=60_000;

/// The keys of a settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SettingsFile {
    /// The policy plugin.
    pub plugin: Option<PathBuf>,
    /// The policy's configuration file.
    pub policy_config: Option<PathBuf>,
    /// The domains.
    #[serde(default, deserialize_with = "domains")]
    pub domains: Vec<DomainSpec>,
    /// The period, milliseconds.
    #[serde(default, deserialize_with = "period_ms")]
    pub period_ms: Option<u64>,
    /// The host CPU budget.
    #[serde(default, deserialize_with = "cpus")]
    pub cpus: Option<u32>,
    /// The park journal.
    pub journal: Option<PathBuf>,
    /// The directory of kernel profiles.
    pub kernels: Option<PathBuf>,
    /// The metrics address.
    pub metrics: Option<SocketAddr>,
}

impl SettingsFile {
    /// Reads and checks the file at `path`; its relative file paths are made relative to its
    /// directory.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = xsched::files::read_to_string(path).with_context(|| format!("--config-file {}", path.display()))?;
        let mut settings: Self = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e.to_string())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let beside = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = dir.join(&*p);
            }
        };
        // A bare plugin file name is looked up on the plugin path, not beside the file.
        if settings.plugin.as_ref().is_some_and(|p| p.components().count() > 1) {
            beside(&mut settings.plugin);
        }
        beside(&mut settings.policy_config);
        beside(&mut settings.journal);
        beside(&mut settings.kernels);
        Ok(settings)
    }
}

/// toml's message ("TOML parse error at line 3, column 1", the line quoted as `3 | TEXT`, a
/// caret, the problem) on one line: `line 3, column 1: PROBLEM (TEXT)`.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let at = lines.first().map_or("", |l| l.trim_start_matches("TOML parse error at "));
    let quoted = lines.iter().find_map(|l| l.split_once(" | ").filter(|(n, _)| n.trim().parse::<u64>().is_ok()).map(|(_, text)| text.trim()));
    let problem = lines.last().copied().unwrap_or("");
    match quoted {
        Some(text) => format!("{at}: {problem} (`{text}`)"),
        None => format!("{at}: {problem}"),
    }
}

fn domains<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<DomainSpec>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts.iter().map(|t| t.parse().map_err(serde::de::Error::custom)).collect()
}

fn period_ms<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let ms = u64::deserialize(deserializer)?;
    if PERIOD_MS.contains(&ms) {
        Ok(Some(ms))
    } else {
        Err(serde::de::Error::custom(format!("period-ms {ms} is not in {} to {}", PERIOD_MS.start(), PERIOD_MS.end())))
    }
}

fn cpus<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(deserializer)? {
        0 => Err(serde::de::Error::custom("cpus must be at least 1")),
        n => Ok(Some(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> anyhow::Result<SettingsFile> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("xsched.toml");
        std::fs::write(&path, text).expect("write");
        SettingsFile::read(&path).map(|mut s| {
            // Paths were made relative to the temporary directory: give them back as written.
            for p in [&mut s.policy_config, &mut s.journal, &mut s.kernels, &mut s.plugin].into_iter().flatten() {
                if let Ok(rest) = p.strip_prefix(dir.path()) {
                    *p = Path::new("DIR").join(rest);
                }
            }
            s
        })
    }

    #[test]
    fn every_key_reads_and_relative_paths_are_the_files() {
        let s = read(
            r#"
            plugin = "libpriority.so"
            policy-config = "priority.toml"
            domains = ["db=qemu:/dev/shm/db.ram,qmp=/run/db.qmp", "web=xen:3"]
            period-ms = 20
            cpus = 3
            journal = "/var/lib/xsched/journal.jsonl"
            kernels = "kernels"
            metrics = "127.0.0.1:9477"
            "#,
        )
        .expect("valid");
        assert_eq!(s.plugin, Some(PathBuf::from("libpriority.so")), "a bare plugin name stays a name");
        assert_eq!(s.policy_config, Some(PathBuf::from("DIR/priority.toml")));
        assert_eq!(s.kernels, Some(PathBuf::from("DIR/kernels")));
        assert_eq!(s.journal, Some(PathBuf::from("/var/lib/xsched/journal.jsonl")));
        assert_eq!(s.domains.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["db", "web"]);
        assert_eq!((s.period_ms, s.cpus), (Some(20), Some(3)));
        assert_eq!(s.metrics, Some("127.0.0.1:9477".parse().expect("address")));
    }

    #[test]
    fn bad_files_name_the_line_and_the_key() {
        for (text, words) in [
            ("plugin = \"p.so\"\nperiod = 10\n", &["line 2", "unknown field `period`"][..]),
            ("period-ms = 0\n", &["line 1", "period-ms 0"]),
            ("cpus = 0\n", &["line 1", "cpus"]),
            ("\n\ndomains = [\"u1=qemu:\"]\n", &["line 3", "domain \"u1=qemu:\"", "missing qemu target"]),
            ("metrics = \"localhost\"\n", &["line 1", "metrics"]),
            ("plugin = [\n", &["line 1"]),
        ] {
            let error = read(text).expect_err(text).to_string();
            assert_eq!(error.lines().count(), 1, "{error}");
            assert!(error.contains("xsched.toml"), "{error}");
            for word in words {
                assert!(error.contains(word), "{text:?}: {error:?} lacks {word:?}");
            }
        }
    }
}
