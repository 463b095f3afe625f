//! Struct layouts from DWARF, read lazily from the mapped file.
//!
//! A kernel's `.debug_info` holds one compilation unit per source file, and every unit repeats the
//! structs its file uses. So the scan walks units one at a time, looks only at each unit's
//! top-level entries (jumping over function bodies with `DW_AT_sibling`), takes the first
//! *complete* definition (no `DW_AT_declaration`, has `DW_AT_byte_size`) of each wanted struct in
//! which every required member path resolves, and stops as soon as every wanted struct is found.
//! Nothing is parsed into a tree; member paths are resolved inside the defining unit.

use std::collections::BTreeMap;

use gimli::{
    constants, AttributeValue, DebuggingInformationEntry, DwTag, EndianSlice, LittleEndian, Reader, RelocateReader,
    SectionId, Unit, UnitOffset,
};
use object::RelocationMap;

use super::elf::Image;
use super::wanted::{self, Wanted};
use super::ProfileError;
use crate::profile::{FieldLayout, StructLayout};

/// How many typedef/qualifier/array links a type chain may have before it counts as a cycle.
const MAX_TYPE_CHAIN: usize = 64;
/// How deeply anonymous structs and unions may nest.
const MAX_ANONYMOUS_DEPTH: usize = 16;

/// The struct layouts of `required` (an error names everything missing) and `optional` specs.
///
/// A struct named in both lists gets the union of their member paths; it is searched for until
/// found when any list requires it.
pub(super) fn struct_layouts(
    image: &Image<'_>,
    required: &[(&str, &[&str])],
    optional: &[(&str, &[&str])],
) -> Result<BTreeMap<String, StructLayout>, ProfileError> {
    let mut wanted = Wanted::new(required, optional);
    require_debug_info(image)?;
    if image.is_relocatable() {
        let mut maps = Vec::new();
        for id in DWARF_SECTIONS {
            if let Some(map) = image.relocation_map(id.name())? {
                maps.push((id, map));
            }
        }
        let dwarf = gimli::Dwarf::load(|id| -> Result<_, ProfileError> {
            let data = image.section_data(id.name())?.unwrap_or(&[]);
            let map = maps.iter().find(|(m, _)| *m == id).map(|(_, map)| map);
            Ok(RelocateReader::new(EndianSlice::new(data, LittleEndian), Relocations(map)))
        })?;
        scan(image, &dwarf, &mut wanted)?;
    } else {
        let dwarf = gimli::Dwarf::load(|id| -> Result<_, ProfileError> {
            Ok(EndianSlice::new(image.section_data(id.name())?.unwrap_or(&[]), LittleEndian))
        })?;
        scan(image, &dwarf, &mut wanted)?;
    }
    wanted.finish(".debug_info").map_err(|missing| image.error(format!("DWARF lacks what xsched needs: {missing}")))
}

/// Fails unless the image has a non-empty `.debug_info` section.
pub(super) fn require_debug_info(image: &Image<'_>) -> Result<(), ProfileError> {
    if image.section_data(".debug_info")?.is_none_or(|d| d.is_empty()) {
        return Err(image.error(
            "no DWARF debug info (.debug_info section absent or empty): a stripped vmlinux? use the vmlinux with debug \
             info (usr/lib/debug/boot/vmlinux-RELEASE in Debian's linux-image-RELEASE-dbg package)",
        ));
    }
    Ok(())
}

/// The sections `gimli::Dwarf::load` may ask for whose relocations matter in an object file.
const DWARF_SECTIONS: [SectionId; 8] = [
    SectionId::DebugInfo,
    SectionId::DebugAbbrev,
    SectionId::DebugStr,
    SectionId::DebugLineStr,
    SectionId::DebugStrOffsets,
    SectionId::DebugLine,
    SectionId::DebugAddr,
    SectionId::DebugTypes,
];

/// A section's relocations (none for most), applied to offsets and addresses as they are read.
#[derive(Clone, Copy, Debug)]
struct Relocations<'a>(Option<&'a RelocationMap>);

impl gimli::Relocate<usize> for Relocations<'_> {
    fn relocate_address(&self, offset: usize, value: u64) -> gimli::Result<u64> {
        Ok(match self.0 {
            Some(map) => map.relocate(offset as u64, value),
            None => value,
        })
    }

    fn relocate_offset(&self, offset: usize, value: usize) -> gimli::Result<usize> {
        match self.0 {
            Some(map) => usize::try_from(map.relocate(offset as u64, value as u64)).map_err(|_| gimli::Error::UnsupportedOffset),
            None => Ok(value),
        }
    }
}

/// Walks the units until every wanted struct is found (or the section ends).
fn scan<R: Reader<Offset = usize>>(
    image: &Image<'_>,
    dwarf: &gimli::Dwarf<R>,
    wanted: &mut Wanted<'_>,
) -> Result<(), ProfileError> {
    let malformed = |at: String, e: gimli::Error| image.error(format!("malformed DWARF {at}: {e}"));
    let mut units = dwarf.units();
    while !wanted.all_found() {
        let Some(header) = units.next().map_err(|e| malformed("in a unit header".into(), e))? else { break };
        let at = match header.offset().as_debug_info_offset() {
            Some(offset) => format!("in the unit at .debug_info+{:#x}", offset.0),
            None => "in a type unit".into(),
        };
        let unit = dwarf.unit(header).map_err(|e| malformed(at.clone(), e))?;
        scan_unit(dwarf, &unit, wanted).map_err(|e| malformed(at, e))?;
    }
    Ok(())
}

/// Looks at the top-level entries of one unit for complete definitions of wanted structs.
fn scan_unit<R: Reader<Offset = usize>>(
    dwarf: &gimli::Dwarf<R>,
    unit: &Unit<R>,
    wanted: &mut Wanted<'_>,
) -> gimli::Result<()> {
    let mut cursor = unit.entries();
    match cursor.next_dfs()? {
        Some((_, root)) if root.has_children() => {}
        _ => return Ok(()),
    }
    if cursor.next_dfs()?.is_none() {
        return Ok(());
    }
    loop {
        let candidate = match cursor.current() {
            Some(entry) if entry.tag() == constants::DW_TAG_structure_type => match entry.attr_value(constants::DW_AT_name)? {
                Some(name) => {
                    let name = dwarf.attr_string(unit, name)?;
                    match wanted.index_of(&name.to_slice()?) {
                        Some(index) if is_complete(entry)? => Some((index, entry.offset())),
                        _ => None,
                    }
                }
                None => None,
            },
            _ => None,
        };
        if let Some((index, offset)) = candidate {
            consider(dwarf, unit, offset, wanted, index)?;
            if wanted.all_found() {
                return Ok(());
            }
        }
        if cursor.next_sibling()?.is_none() {
            return Ok(());
        }
    }
}

/// Whether a struct entry is a definition with a size (not `struct foo;`).
fn is_complete<R: Reader>(entry: &DebuggingInformationEntry<'_, '_, R>) -> gimli::Result<bool> {
    Ok(entry.attr(constants::DW_AT_declaration)?.is_none() && entry.attr(constants::DW_AT_byte_size)?.is_some())
}

/// Takes the definition at `offset` for wanted struct `index` if all its required paths resolve.
fn consider<R: Reader<Offset = usize>>(
    dwarf: &gimli::Dwarf<R>,
    unit: &Unit<R>,
    offset: UnitOffset,
    wanted: &mut Wanted<'_>,
    index: usize,
) -> gimli::Result<()> {
    let types = Types { dwarf, unit };
    let place = || match (&unit.name, unit.header.offset().as_debug_info_offset()) {
        (Some(name), Some(at)) => format!(
            " in its first complete definition (unit {}, .debug_info+{:#x})",
            name.to_string_lossy().unwrap_or_default(),
            at.0
        ),
        _ => String::new(),
    };
    wanted.consider(index, place, || types.resolve(offset).map(|r| r.size), |path| types.field(offset, path))
}

/// Why a member path does not resolve.
type Lookup = wanted::Lookup<gimli::Error>;

impl From<gimli::Error> for Lookup {
    fn from(e: gimli::Error) -> Self {
        Lookup::Broken(e)
    }
}

/// A type with typedefs and qualifiers peeled off.
struct Resolved {
    tag: DwTag,
    /// The entry of the underlying type.
    offset: UnitOffset,
    /// Its size in bytes.
    size: u64,
}

/// One member of a struct or union.
struct Member {
    name: Option<String>,
    /// Byte offset inside the enclosing struct or union.
    offset: u64,
    type_: Option<UnitOffset>,
    bit_field: bool,
}

/// Type and member lookups inside one unit.
struct Types<'a, R: Reader<Offset = usize>> {
    dwarf: &'a gimli::Dwarf<R>,
    unit: &'a Unit<R>,
}

impl<R: Reader<Offset = usize>> Types<'_, R> {
    /// Offset and size of the (dotted) member `path` of the struct at `offset`.
    fn field(&self, offset: UnitOffset, path: &str) -> Result<FieldLayout, Lookup> {
        let mut aggregate = offset;
        let mut position = 0u64;
        let mut member_type = None;
        let mut walked = String::new();
        for (i, component) in path.split('.').enumerate() {
            if component.is_empty() {
                return Err(Lookup::Missing(format!("empty component in path `{path}`")));
            }
            if i > 0 {
                let resolved = self.resolve_ref(member_type, &walked)?;
                if resolved.tag != constants::DW_TAG_structure_type && resolved.tag != constants::DW_TAG_union_type {
                    return Err(Lookup::Missing(format!("`{walked}` is not an embedded struct or union")));
                }
                aggregate = resolved.offset;
                walked.push('.');
            }
            walked.push_str(component);
            let (member_offset, member) = self
                .find_member(aggregate, component, 0)?
                .ok_or_else(|| Lookup::Missing(format!("no member `{component}`")))?;
            if member.bit_field {
                return Err(Lookup::Missing(format!("`{walked}` is a bit-field")));
            }
            position = position
                .checked_add(member_offset)
                .ok_or_else(|| Lookup::Missing(format!("offset of `{walked}` overflows")))?;
            member_type = member.type_;
        }
        let size = self.resolve_ref(member_type, path)?.size;
        Ok(FieldLayout { offset: position, size })
    }

    /// The member `name` of the struct or union at `aggregate`, looking inside anonymous members;
    /// returns its offset from the start of `aggregate`.
    fn find_member(&self, aggregate: UnitOffset, name: &str, depth: usize) -> Result<Option<(u64, Member)>, Lookup> {
        if depth > MAX_ANONYMOUS_DEPTH {
            return Err(Lookup::Missing("anonymous members nest too deeply".into()));
        }
        for member in self.members(aggregate)? {
            if member.name.as_deref() == Some(name) {
                return Ok(Some((member.offset, member)));
            }
            if member.name.is_none() {
                let Some(type_) = member.type_ else { continue };
                let inner = self.resolve(type_)?;
                if inner.tag != constants::DW_TAG_structure_type && inner.tag != constants::DW_TAG_union_type {
                    continue;
                }
                if let Some((offset, found)) = self.find_member(inner.offset, name, depth + 1)? {
                    let total = member
                        .offset
                        .checked_add(offset)
                        .ok_or_else(|| Lookup::Missing(format!("offset of `{name}` overflows")))?;
                    return Ok(Some((total, found)));
                }
            }
        }
        Ok(None)
    }

    /// The `DW_TAG_member` children of the struct or union at `aggregate`.
    fn members(&self, aggregate: UnitOffset) -> Result<Vec<Member>, Lookup> {
        let mut tree = self.unit.entries_tree(Some(aggregate))?;
        let root = tree.root()?;
        let mut children = root.children();
        let mut members = Vec::new();
        while let Some(child) = children.next()? {
            let entry = child.entry();
            if entry.tag() != constants::DW_TAG_member {
                continue;
            }
            let name = match entry.attr_value(constants::DW_AT_name)? {
                Some(value) => Some(self.dwarf.attr_string(self.unit, value)?.to_string_lossy()?.into_owned()),
                None => None,
            };
            let offset = match entry.attr_value(constants::DW_AT_data_member_location)? {
                None => 0,
                Some(AttributeValue::Exprloc(expr)) => plus_uconst(expr.0)?.ok_or_else(|| {
                    Lookup::Missing(format!("member {name:?} has an unsupported location expression"))
                })?,
                Some(value) => value.udata_value().ok_or_else(|| {
                    Lookup::Missing(format!("member {name:?} has an unsupported location {value:?}"))
                })?,
            };
            let bit_field = entry.attr(constants::DW_AT_bit_size)?.is_some()
                || entry.attr(constants::DW_AT_data_bit_offset)?.is_some();
            members.push(Member { name, offset, type_: self.type_ref(entry)?, bit_field });
        }
        Ok(members)
    }

    /// The target of the `DW_AT_type` of `entry` (`None` for `void`).
    fn type_ref(&self, entry: &DebuggingInformationEntry<'_, '_, R>) -> Result<Option<UnitOffset>, Lookup> {
        match entry.attr_value(constants::DW_AT_type)? {
            None => Ok(None),
            Some(AttributeValue::UnitRef(offset)) => Ok(Some(offset)),
            Some(AttributeValue::DebugInfoRef(offset)) => offset
                .to_unit_offset(&self.unit.header)
                .map(Some)
                .ok_or_else(|| Lookup::Missing("a type in another compilation unit (DW_FORM_ref_addr)".into())),
            Some(other) => Err(Lookup::Missing(format!("an unsupported type reference {other:?}"))),
        }
    }

    /// [`Self::resolve`] for an optional type reference of the member `what`.
    fn resolve_ref(&self, type_: Option<UnitOffset>, what: &str) -> Result<Resolved, Lookup> {
        match type_ {
            Some(offset) => self.resolve(offset),
            None => Err(Lookup::Missing(format!("`{what}` has no type"))),
        }
    }

    /// Follows typedefs and qualifiers from the type at `offset` and sizes the result.
    fn resolve(&self, mut offset: UnitOffset) -> Result<Resolved, Lookup> {
        for _ in 0..MAX_TYPE_CHAIN {
            let entry = self.unit.entry(offset)?;
            let tag = entry.tag();
            match tag {
                constants::DW_TAG_typedef
                | constants::DW_TAG_const_type
                | constants::DW_TAG_volatile_type
                | constants::DW_TAG_restrict_type
                | constants::DW_TAG_atomic_type
                | constants::DW_TAG_immutable_type => match self.type_ref(&entry)? {
                    Some(next) => offset = next,
                    None => return Err(Lookup::Missing("a typedef of void".into())),
                },
                constants::DW_TAG_array_type => {
                    let size = match byte_size(&entry)? {
                        Some(size) => size,
                        None => self.array_size(&entry)?,
                    };
                    return Ok(Resolved { tag, offset, size });
                }
                _ => {
                    if entry.attr(constants::DW_AT_declaration)?.is_some() {
                        return Err(Lookup::Missing(format!("an incomplete type at unit offset {:#x}", offset.0)));
                    }
                    let size = match byte_size(&entry)? {
                        Some(size) => size,
                        None if tag == constants::DW_TAG_pointer_type => u64::from(self.unit.header.address_size()),
                        None => {
                            return Err(Lookup::Missing(format!("a type without a size ({tag}) at unit offset {:#x}", offset.0)))
                        }
                    };
                    return Ok(Resolved { tag, offset, size });
                }
            }
        }
        Err(Lookup::Missing("a type chain that loops".into()))
    }

    /// Element size times the element counts of every dimension (0 for a flexible array).
    fn array_size(&self, array: &DebuggingInformationEntry<'_, '_, R>) -> Result<u64, Lookup> {
        let element = self.resolve_ref(self.type_ref(array)?, "array element")?.size;
        let mut tree = self.unit.entries_tree(Some(array.offset()))?;
        let root = tree.root()?;
        let mut children = root.children();
        let mut size = element;
        while let Some(child) = children.next()? {
            let entry = child.entry();
            if entry.tag() != constants::DW_TAG_subrange_type {
                continue;
            }
            let count = match entry.attr_value(constants::DW_AT_count)? {
                Some(count) => count.udata_value().ok_or_else(|| Lookup::Missing(format!("an array count {count:?}")))?,
                None => match entry.attr_value(constants::DW_AT_upper_bound)? {
                    // Flexible array member: no bound.
                    None => 0,
                    Some(upper) => {
                        let lower = match entry.attr_value(constants::DW_AT_lower_bound)? {
                            Some(lower) => lower.udata_value().unwrap_or(0),
                            None => 0,
                        };
                        match upper_bound(&upper) {
                            // `x[0]`: GCC writes the upper bound -1.
                            None => 0,
                            Some(upper) => upper
                                .checked_sub(lower)
                                .and_then(|n| n.checked_add(1))
                                .ok_or_else(|| Lookup::Missing(format!("array bounds {lower}..={upper}")))?,
                        }
                    }
                },
            };
            size = size.checked_mul(count).ok_or_else(|| Lookup::Missing("an array size that overflows".into()))?;
        }
        Ok(size)
    }
}

/// The `DW_AT_byte_size` of an entry, if it has one.
fn byte_size<R: Reader>(entry: &DebuggingInformationEntry<'_, '_, R>) -> Result<Option<u64>, Lookup> {
    match entry.attr_value(constants::DW_AT_byte_size)? {
        None => Ok(None),
        Some(value) => {
            value.udata_value().map(Some).ok_or_else(|| Lookup::Missing(format!("a non-constant byte size {value:?}")))
        }
    }
}

/// An array's upper bound, or `None` when it is -1 (a zero-length array), whatever the form.
fn upper_bound<R: Reader>(value: &AttributeValue<R>) -> Option<u64> {
    match *value {
        AttributeValue::Data1(u8::MAX) | AttributeValue::Data2(u16::MAX) | AttributeValue::Data4(u32::MAX) => None,
        AttributeValue::Data8(u64::MAX) => None,
        AttributeValue::Sdata(n) => u64::try_from(n).ok(),
        _ => value.udata_value(),
    }
}

/// The constant of a `DW_OP_plus_uconst N` location (DWARF 2 style member offsets).
fn plus_uconst<R: Reader>(mut expr: R) -> gimli::Result<Option<u64>> {
    if expr.read_u8()? != constants::DW_OP_plus_uconst.0 {
        return Ok(None);
    }
    let value = expr.read_uleb128()?;
    Ok(expr.is_empty().then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bounds_of_minus_one_mean_zero_length() {
        assert_eq!(upper_bound::<EndianSlice<'_, LittleEndian>>(&AttributeValue::Data1(15)), Some(15));
        assert_eq!(upper_bound::<EndianSlice<'_, LittleEndian>>(&AttributeValue::Data1(0xff)), None);
        assert_eq!(upper_bound::<EndianSlice<'_, LittleEndian>>(&AttributeValue::Data4(u32::MAX)), None);
        assert_eq!(upper_bound::<EndianSlice<'_, LittleEndian>>(&AttributeValue::Sdata(-1)), None);
        assert_eq!(upper_bound::<EndianSlice<'_, LittleEndian>>(&AttributeValue::Udata(99)), Some(99));
    }

    #[test]
    fn plus_uconst_locations_are_read() {
        let read = |bytes: &[u8]| plus_uconst(EndianSlice::new(bytes, LittleEndian));
        assert_eq!(read(&[constants::DW_OP_plus_uconst.0, 0x90, 0x01]).ok(), Some(Some(0x90)));
        assert_eq!(read(&[constants::DW_OP_plus_uconst.0, 8, 0]).ok(), Some(None), "trailing operations");
        assert_eq!(read(&[constants::DW_OP_lit0.0]).ok(), Some(None));
        assert!(read(&[]).is_err());
    }
}
