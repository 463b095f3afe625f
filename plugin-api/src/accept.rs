//! Accepting a loaded library's root module: the interface's version rules, for the host.
//!
//! abi_stable's own `LibHeader::init_root_module` accepts a library only if it is at least as
//! new as the loader: its layout check lets the *library* have more prefix fields (methods,
//! module fields) than the loader, never fewer (abi_stable issue #118). xsched wants the other
//! direction too — a plugin built against 1.0 keeps loading in a 1.3 host — so [`accept`] runs
//! the same checker with the older side as the expected layout:
//!
//! - a plugin built against the host's minor version or a newer one is checked as abi_stable
//!   does (host layout expected, plugin layout found): the plugin may have more fields;
//! - a plugin built against an older minor version is checked the other way round: the host
//!   may have more fields. The plugin's prefix types record how many fields they really have,
//!   so the host reads an appended root-module field as `None`, and an appended
//!   [`PolicyObject`](crate::PolicyObject) method falls back to its default body.
//!
//! Every non-prefix type (the snapshot, the decisions) must be identical either way.

use std::fmt;

use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use abi_stable::library::{LibHeader, RootModule};
use abi_stable::sabi_types::VersionNumber;
use abi_stable::StableAbi;

/// Why a library's root module was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its root module is not an xsched policy: the name it has.
    NotAPolicy {
        /// The root module's name.
        name: String,
    },
    /// Its interface version cannot be parsed.
    BadVersion {
        /// The version string found.
        version: String,
    },
    /// It was built against another major interface version.
    Version {
        /// The plugin's interface version.
        plugin: String,
        /// The host's interface version.
        host: String,
    },
    /// It carries no layout information (built with `#[unsafe_no_layout_constant]`).
    NoLayout,
    /// Its types do not have the layout this interface version says.
    Layout {
        /// The plugin's interface version.
        plugin: String,
        /// The host's interface version.
        host: String,
        /// The differences, in one line (from `report`).
        summary: String,
        /// abi_stable's full report: both layouts and the differences.
        report: String,
    },
    /// Its root-module constructor failed or panicked.
    Init(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAPolicy { name } => write!(f, "not an xsched policy plugin (its root module is `{name}`)"),
            Self::BadVersion { version } => write!(f, "unreadable interface version {version:?}"),
            Self::Version { plugin, host } => {
                write!(f, "incompatible interface version: built against {plugin}, this xsched has {host}")
            }
            Self::NoLayout => f.write_str("the plugin carries no type-layout information to check"),
            Self::Layout { plugin, host, summary, .. } => write!(
                f,
                "layout mismatch: built against interface {plugin} (this xsched has {host}) but its types differ: {summary}"
            ),
            Self::Init(why) => write!(f, "the plugin's root module failed to initialize: {why}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Checks the root module of a loaded library against interface `M` and returns it.
///
/// The host calls this with [`PolicyModRef`](crate::PolicyModRef); tests call it with
/// hypothetical other versions of the interface.
pub fn accept<M: RootModule>(header: &'static LibHeader) -> Result<M, Refusal> {
    let consts = header.root_mod_consts();
    if consts.name().as_str() != M::NAME {
        return Err(Refusal::NotAPolicy { name: consts.name().to_string() });
    }
    let version = |v: abi_stable::sabi_types::VersionStrings| {
        VersionNumber::new(v).map_err(|_| Refusal::BadVersion { version: v.version.to_string() })
    };
    let host = version(M::VERSION_STRINGS)?;
    let plugin = version(header.version_strings())?;
    if plugin.major != host.major {
        return Err(Refusal::Version { plugin: plugin.to_string(), host: host.to_string() });
    }
    let Some(found) = header.layout() else { return Err(Refusal::NoLayout) };
    let expected = <M as StableAbi>::LAYOUT;
    // The older side's view must be a prefix of the newer side's.
    let checked = if plugin.minor >= host.minor {
        check_layout_compatibility(expected, found)
    } else {
        check_layout_compatibility(found, expected)
    };
    if let Err(errors) = checked {
        let report = errors.to_string();
        let summary = summarize(&report);
        return Err(Refusal::Layout { plugin: plugin.to_string(), host: host.to_string(), summary, report });
    }
    // SAFETY: `M`'s layout was checked against the library's just above, in the direction that
    // lets the newer side have more prefix fields; prefix types carry their real field count, so
    // fields the older side lacks read as missing, never as garbage.
    let module = unsafe { header.unchecked_layout::<M>() };
    module.map_err(|e| Refusal::Init(e.to_string()))
}

/// The differences of an abi_stable layout report in one line: each `Error:<what>` with its
/// `Expected:` and `Found:` values.
fn summarize(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let value = |label: &str, from: usize| {
        lines.get(from..).and_then(|rest| rest.iter().position(|l| *l == label).and_then(|i| rest.get(i + 1)).copied())
    };
    let found: Vec<String> = (0..lines.len())
        .filter_map(|i| {
            let what = lines.get(i)?.strip_prefix("Error:")?;
            Some(match (value("Expected:", i), value("Found:", i)) {
                (Some(e), Some(f)) => format!("{what} (expected {e}, found {f})"),
                _ => what.to_string(),
            })
        })
        .collect();
    if found.is_empty() {
        lines.first().map_or_else(String::new, |l| (*l).to_string())
    } else {
        found.join("; ")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_report_is_summarized_in_one_line() {
        let report = "Compared <this>:\n  --- Type Layout ---\n\nError:mismatched package\nExpected:\n    xsched-plugin-api\nFound:\n    other\n\nError:too many fields\nExpected:\n    3\nFound:\n    2\n";
        assert_eq!(super::summarize(report), "mismatched package (expected xsched-plugin-api, found other); too many fields (expected 3, found 2)");
        assert_eq!(super::summarize("odd\nreport"), "odd");
    }
}
