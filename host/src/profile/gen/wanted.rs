//! The structs a profile wants and how a definition is taken for one, whatever the type source.
//!
//! DWARF ([`super::dwarf`]) and BTF ([`super::btf`]) offer candidate definitions of each wanted
//! struct in their own order; both take the first one in which every required member path
//! resolves, add the optional paths that resolve, and name what the first rejected candidate
//! lacked. Keeping this in one place keeps both sources' profiles comparable field for field.

use std::collections::BTreeMap;

use crate::profile::{FieldLayout, StructLayout};

/// Why a size or member path does not resolve.
pub(super) enum Lookup<E> {
    /// The type information is well-formed but does not have it.
    Missing(String),
    /// The type information could not be read.
    Broken(E),
}

/// One wanted struct and, once found, its layout.
struct WantedStruct<'s> {
    name: &'s str,
    /// Whether any spec requires it (else it is searched for only while something else is).
    required: bool,
    required_paths: Vec<&'s str>,
    optional_paths: Vec<&'s str>,
    found: Option<StructLayout>,
    /// Why the first candidate definition was not taken, if it was not.
    rejected: Option<String>,
}

/// The wanted structs, in spec order.
pub(super) struct Wanted<'s> {
    structs: Vec<WantedStruct<'s>>,
}

impl<'s> Wanted<'s> {
    /// The structs of `required` and `optional` specs: a struct named in both gets the union of
    /// their member paths, and a path both required and optional is required.
    pub fn new(required: &[(&'s str, &[&'s str])], optional: &[(&'s str, &[&'s str])]) -> Self {
        let mut structs: Vec<WantedStruct<'s>> = Vec::new();
        for (list, is_required) in [(required, true), (optional, false)] {
            for (name, paths) in list {
                let index = match structs.iter().position(|w| w.name == *name) {
                    Some(index) => index,
                    None => {
                        structs.push(WantedStruct {
                            name,
                            required: false,
                            required_paths: Vec::new(),
                            optional_paths: Vec::new(),
                            found: None,
                            rejected: None,
                        });
                        structs.len() - 1
                    }
                };
                let Some(entry) = structs.get_mut(index) else { continue };
                entry.required |= is_required;
                let target = if is_required { &mut entry.required_paths } else { &mut entry.optional_paths };
                for path in *paths {
                    if !target.contains(path) {
                        target.push(path);
                    }
                }
            }
        }
        for entry in &mut structs {
            let required = entry.required_paths.clone();
            entry.optional_paths.retain(|p| !required.contains(p));
        }
        Self { structs }
    }

    /// The index of the wanted, not yet found struct called `name`.
    pub fn index_of(&self, name: &[u8]) -> Option<usize> {
        self.structs.iter().position(|w| w.found.is_none() && w.name.as_bytes() == name)
    }

    /// Whether every wanted struct has a layout.
    pub fn all_found(&self) -> bool {
        self.structs.iter().all(|w| w.found.is_some())
    }

    /// Takes a candidate definition for wanted struct `index` if its size and every required path
    /// resolve (`size` and `field` look them up in the candidate); `place` says where the
    /// candidate is, for the message naming what a rejected one lacked.
    pub fn consider<E>(
        &mut self,
        index: usize,
        place: impl FnOnce() -> String,
        size: impl FnOnce() -> Result<u64, Lookup<E>>,
        field: impl Fn(&str) -> Result<FieldLayout, Lookup<E>>,
    ) -> Result<(), E> {
        let Some(entry) = self.structs.get_mut(index) else { return Ok(()) };
        let size = match size() {
            Ok(size) => size,
            Err(Lookup::Broken(e)) => return Err(e),
            Err(Lookup::Missing(reason)) => {
                log::debug!("struct {}: skipping a definition: {reason}", entry.name);
                return Ok(());
            }
        };
        let mut fields = BTreeMap::new();
        let mut missing = Vec::new();
        for path in &entry.required_paths {
            match field(path) {
                Ok(layout) => {
                    fields.insert((*path).to_string(), layout);
                }
                Err(Lookup::Broken(e)) => return Err(e),
                Err(Lookup::Missing(reason)) => missing.push(format!("field `{}.{path}` ({reason})", entry.name)),
            }
        }
        if !missing.is_empty() {
            let reason = format!("{}{}", missing.join(", "), place());
            log::debug!("a definition of struct {} was passed over: {reason}", entry.name);
            entry.rejected.get_or_insert(reason);
            return Ok(());
        }
        for path in &entry.optional_paths {
            match field(path) {
                Ok(layout) => {
                    fields.insert((*path).to_string(), layout);
                }
                Err(Lookup::Broken(e)) => return Err(e),
                Err(Lookup::Missing(reason)) => log::debug!("optional field {}.{path} left out: {reason}", entry.name),
            }
        }
        if let Some(reason) = entry.rejected.take() {
            log::warn!("struct {}: took a later definition; the first one lacked {reason}", entry.name);
        }
        entry.found = Some(StructLayout { size, fields });
        Ok(())
    }

    /// The layouts found, or a sentence naming every required struct and field that is missing
    /// (`source` names the type information, e.g. `.debug_info`).
    pub fn finish(self, source: &str) -> Result<BTreeMap<String, StructLayout>, String> {
        let mut missing = Vec::new();
        let mut layouts = BTreeMap::new();
        for entry in self.structs {
            match entry.found {
                Some(layout) => {
                    layouts.insert(entry.name.to_string(), layout);
                }
                None if entry.required => missing.push(match entry.rejected {
                    Some(reason) => reason,
                    None => format!("struct `{}` (no complete definition in {source})", entry.name),
                }),
                None => {}
            }
        }
        if missing.is_empty() {
            Ok(layouts)
        } else {
            Err(missing.join("; "))
        }
    }
}
