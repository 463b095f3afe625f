//! Kernel layout profiles: what xsched knows about one guest kernel build.
//!
//! A profile is a small JSON file in `kernels/` generated from the kernel's DWARF debug info by
//! `xsched profile gen`. It names the kernel release and its `linux_banner` text (so a live guest
//! can be matched to it), and holds the addresses of the symbols xsched uses (per-CPU symbols are
//! offsets into the per-CPU area), the sizes and field offsets of the structs it reads and writes
//! (nested members as dotted paths, e.g. `se.run_node`), and the kernel constants it relies on.
//! Nothing outside this module and `linux` hard-codes a kernel offset.

pub mod btf;
mod error;
pub mod gen;
pub mod kallsyms;
pub mod spec;
pub mod system_map;
pub mod vmlinuz;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::ProfileError;

/// The profile format this build reads and writes; bump it when the format changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// One kernel build's layout: symbols, structs and constants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The profile format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The kernel release, as `uname -r` prints it (e.g. `6.1.0-56-cloud-amd64`).
    pub release: String,
    /// The architecture (`x86_64`).
    pub arch: String,
    /// The full `linux_banner` text, including its trailing newline.
    pub banner: String,
    /// Link-time addresses of symbols (for per-CPU symbols: offsets into the per-CPU area).
    #[serde(with = "hex_map")]
    pub symbols: BTreeMap<String, u64>,
    /// Struct layouts by struct name (without the `struct` keyword).
    pub structs: BTreeMap<String, StructLayout>,
    /// Kernel constants by their C name.
    pub constants: BTreeMap<String, u64>,
}

/// The size of a struct and the fields xsched uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructLayout {
    /// `sizeof(struct ...)` in bytes.
    pub size: u64,
    /// Fields by (possibly dotted) member path.
    pub fields: BTreeMap<String, FieldLayout>,
}

/// Where a field sits inside its struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldLayout {
    /// Byte offset from the start of the struct.
    pub offset: u64,
    /// Size of the field in bytes.
    pub size: u64,
}

impl Profile {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = crate::files::read_to_string(path)
            .map_err(|source| ProfileError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Parses and validates a profile from JSON text.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let profile: Profile =
            serde_json::from_str(text).map_err(|e| ProfileError::Syntax { reason: e.to_string() })?;
        profile.validate().map_err(|e| match e {
            ProfileError::MissingSymbol { .. } | ProfileError::MissingStruct { .. } | ProfileError::MissingField { .. } | ProfileError::MissingConstant { .. } | ProfileError::Invalid { .. } => {
                ProfileError::Stale { inner: Box::new(e) }
            }
            e => e,
        })?;
        Ok(profile)
    }

    /// Loads every `*.json` profile in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, Profile)>, ProfileError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|source| ProfileError::Io { path: dir.to_path_buf(), source })?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|source| ProfileError::Io { path: dir.to_path_buf(), source })?.path();
            if path.extension().is_some_and(|e| e == "json") {
                paths.push(path);
            }
        }
        paths.sort();
        paths.into_iter().map(|p| Profile::load(&p).map(|profile| (p, profile))).collect()
    }

    /// Writes the profile as pretty JSON (stable key order, so diffs stay small).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The link-time address (or per-CPU offset) of `name`.
    pub fn symbol(&self, name: &str) -> Result<u64, ProfileError> {
        self.symbols
            .get(name)
            .copied()
            .ok_or_else(|| ProfileError::MissingSymbol { release: self.release.clone(), name: name.into() })
    }

    /// What to add to a CPU's `__per_cpu_offset` for the address of per-CPU symbol `name` in
    /// its area, with `virt_shift` the kernel's virtual KASLR shift. Up to 6.x x86-64 links the
    /// per-CPU section at 0 (zero-based: the symbol is an offset); 7.x links it inside the image
    /// like any data (the symbol is an image address, moved by KASLR like the rest).
    pub fn per_cpu_symbol(&self, name: &str, virt_shift: u64) -> Result<u64, ProfileError> {
        let sym = self.symbol(name)?;
        let image = self.constant("START_KERNEL_MAP").is_ok_and(|base| sym >= base);
        Ok(if image { sym.wrapping_add(virt_shift) } else { sym })
    }

    /// The layout of `struct name`.
    pub fn struct_layout(&self, name: &str) -> Result<&StructLayout, ProfileError> {
        self.structs
            .get(name)
            .ok_or_else(|| ProfileError::MissingStruct { release: self.release.clone(), name: name.into() })
    }

    /// The layout of `field` (a dotted member path) in `struct name`.
    pub fn field(&self, name: &str, field: &str) -> Result<FieldLayout, ProfileError> {
        self.struct_layout(name)?.fields.get(field).copied().ok_or_else(|| ProfileError::MissingField {
            release: self.release.clone(),
            name: name.into(),
            field: field.into(),
        })
    }

    /// The byte offset of `field` in `struct name`.
    pub fn offset(&self, name: &str, field: &str) -> Result<u64, ProfileError> {
        self.field(name, field).map(|f| f.offset)
    }

    /// The value of the kernel constant `name`.
    pub fn constant(&self, name: &str) -> Result<u64, ProfileError> {
        self.constants
            .get(name)
            .copied()
            .ok_or_else(|| ProfileError::MissingConstant { release: self.release.clone(), name: name.into() })
    }

    /// The in-page offset of `linux_banner`: where a real banner must sit inside its page.
    pub fn banner_page_offset(&self) -> Result<u64, ProfileError> {
        Ok(self.symbol("linux_banner")? & (crate::memory::PAGE_SIZE - 1))
    }

    /// Checks the format version, that every required symbol, struct and field of
    /// [`spec::REQUIRED`] is present and every field lies inside its struct, and that the profile
    /// holds one scheduler flavour and one preempt-count location completely.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.format_version != FORMAT_VERSION {
            return Err(ProfileError::Version { found: self.format_version, expected: FORMAT_VERSION });
        }
        if !self.banner.starts_with("Linux version ") {
            return Err(ProfileError::Invalid { reason: "banner does not start with \"Linux version \"".into() });
        }
        for name in spec::REQUIRED.symbols {
            self.symbol(name)?;
        }
        for (name, fields) in spec::REQUIRED.structs {
            let layout = self.struct_layout(name)?;
            for field in *fields {
                let f = self.field(name, field)?;
                if f.offset.checked_add(f.size).is_none_or(|end| end > layout.size) {
                    return Err(ProfileError::Invalid {
                        reason: format!("{name}.{field} ({}+{}) lies outside the struct ({} bytes)", f.offset, f.size, layout.size),
                    });
                }
            }
        }
        for name in spec::REQUIRED.constants {
            self.constant(name)?;
        }
        self.flavour()?;
        spec::first_complete(self, spec::PREEMPT_COUNT).map_err(|lacks| ProfileError::Invalid {
            reason: format!("kernel {}: no per-CPU preempt count: {lacks}", self.release),
        })?;
        spec::first_complete(self, spec::KERNFS_PARENT).map_err(|lacks| ProfileError::Invalid {
            reason: format!("kernel {}: kernfs nodes have no parent field: {lacks}", self.release),
        })?;
        Ok(())
    }

    /// The scheduler flavour (a name in [`spec::FLAVOURS`]) whose fields this profile holds: decided
    /// by what the kernel's debug info has, never by its version. An error names what each
    /// flavour lacks.
    pub fn flavour(&self) -> Result<&'static str, ProfileError> {
        spec::first_complete(self, spec::FLAVOURS).map_err(|lacks| ProfileError::Invalid {
            reason: format!("kernel {}: its scheduler matches no flavour xsched knows: {lacks}", self.release),
        })
    }
}

/// Serializes a map of addresses as `"0x..."` strings, which read better than decimal in a diff.
mod hex_map {
    use std::collections::BTreeMap;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<String, u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, format!("{v:#x}"))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u64>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                let digits = v.strip_prefix("0x").ok_or_else(|| D::Error::custom(format!("symbol {k}: {v:?} is not 0x-hex")))?;
                u64::from_str_radix(digits, 16)
                    .map(|n| (k.clone(), n))
                    .map_err(|e| D::Error::custom(format!("symbol {k}: {v:?}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(release: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels").join(format!("{release}.json"));
        std::fs::read_to_string(path).expect("committed profile")
    }

    #[test]
    fn a_profile_from_an_older_xsched_is_refused_with_the_command_that_regenerates_it() {
        let mut old: Profile = serde_json::from_str(&committed("6.1.0-56-cloud-amd64")).expect("json");
        // What profiles written before the EEVDF flavour lacked.
        old.constants.remove("SCHED_FIXEDPOINT_SHIFT");
        let err = Profile::parse(&old.to_json()).expect_err("stale").to_string();
        assert!(err.contains("SCHED_FIXEDPOINT_SHIFT") && err.contains("regenerate it with `xsched profile gen"), "{err}");
    }

    #[test]
    fn both_committed_profiles_load() {
        for release in ["6.1.0-56-cloud-amd64", "6.12.117+deb12-cloud-amd64"] {
            Profile::parse(&committed(release)).unwrap_or_else(|e| panic!("{release}: {e}"));
        }
    }
}
