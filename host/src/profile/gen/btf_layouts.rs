//! Struct layouts from BTF, with the semantics of the DWARF path ([`super::dwarf`]).
//!
//! Candidates are the `BTF_KIND_STRUCT` records of each wanted name, in type-id order (the kernel's
//! BTF is deduplicated, so there is normally one); a member path's components are searched
//! through anonymous structs and unions (bounded depth), typedefs and qualifiers are peeled off
//! (bounded chains), bit-fields are refused, pointers are 8 bytes, an array is its element's size
//! times its count, and a forward declaration is an incomplete type.

use std::collections::BTreeMap;

use super::wanted::{Lookup, Wanted};
use crate::profile::btf::{Btf, BtfError, Kind, Member, TypeId};
use crate::profile::{FieldLayout, StructLayout};

/// How many typedef/qualifier/array links a type chain may have before it counts as a cycle.
const MAX_TYPE_CHAIN: usize = 64;
/// How deeply anonymous structs and unions may nest.
const MAX_ANONYMOUS_DEPTH: usize = 16;

type BtfLookup = Lookup<BtfError>;

impl From<BtfError> for BtfLookup {
    fn from(e: BtfError) -> Self {
        Lookup::Broken(e)
    }
}

/// The struct layouts of `required` (an error names everything missing) and `optional` specs,
/// or why the BTF could not be read.
pub(super) fn struct_layouts(
    btf: &Btf<'_>,
    required: &[(&str, &[&str])],
    optional: &[(&str, &[&str])],
) -> Result<Result<BTreeMap<String, StructLayout>, String>, BtfError> {
    let mut wanted = Wanted::new(required, optional);
    for candidate in btf.types() {
        if wanted.all_found() {
            break;
        }
        if candidate.kind != Kind::Struct || !candidate.is_named() {
            continue;
        }
        let Some(index) = wanted.index_of(candidate.name(btf)?) else { continue };
        let types = Types { btf };
        let id = candidate.id;
        let place = || format!(" in its first definition (BTF type {id})");
        wanted.consider(index, place, || types.resolve(id).map(|r| r.size), |path| types.field(id, path))?;
    }
    Ok(wanted.finish("the BTF"))
}

/// A type with typedefs and qualifiers peeled off.
struct Resolved {
    kind: Kind,
    id: TypeId,
    size: u64,
}

/// Type and member lookups in one BTF blob.
struct Types<'b, 'a> {
    btf: &'b Btf<'a>,
}

impl Types<'_, '_> {
    /// Offset and size of the (dotted) member `path` of the struct `id`.
    fn field(&self, id: TypeId, path: &str) -> Result<FieldLayout, BtfLookup> {
        let mut aggregate = id;
        let mut position = 0u64;
        let mut member_type = TypeId::VOID;
        let mut walked = String::new();
        for (i, component) in path.split('.').enumerate() {
            if component.is_empty() {
                return Err(Lookup::Missing(format!("empty component in path `{path}`")));
            }
            if i > 0 {
                let resolved = self.resolve_member(member_type, &walked)?;
                if !matches!(resolved.kind, Kind::Struct | Kind::Union) {
                    return Err(Lookup::Missing(format!("`{walked}` is not an embedded struct or union")));
                }
                aggregate = resolved.id;
                walked.push('.');
            }
            walked.push_str(component);
            let (member_offset, member) = self
                .find_member(aggregate, component.as_bytes(), 0)?
                .ok_or_else(|| Lookup::Missing(format!("no member `{component}`")))?;
            if self.is_bit_field(aggregate, &member)? {
                return Err(Lookup::Missing(format!("`{walked}` is a bit-field")));
            }
            position = position
                .checked_add(member_offset)
                .ok_or_else(|| Lookup::Missing(format!("offset of `{walked}` overflows")))?;
            member_type = member.type_;
        }
        let size = self.resolve_member(member_type, path)?.size;
        Ok(FieldLayout { offset: position, size })
    }

    /// The member `name` of the struct or union `aggregate`, looking inside anonymous members;
    /// returns its byte offset from the start of `aggregate` (bit-fields rounded down, refused later).
    fn find_member(&self, aggregate: TypeId, name: &[u8], depth: usize) -> Result<Option<(u64, Member)>, BtfLookup> {
        if depth > MAX_ANONYMOUS_DEPTH {
            return Err(Lookup::Missing("anonymous members nest too deeply".into()));
        }
        for member in self.btf.type_by_id(aggregate)?.members() {
            let offset = u64::from(member.bit_offset / 8);
            if member.name_off != 0 {
                if self.btf.string(member.name_off)? == name {
                    return Ok(Some((offset, member)));
                }
                continue;
            }
            if member.type_ == TypeId::VOID {
                continue;
            }
            let inner = self.resolve(member.type_)?;
            if !matches!(inner.kind, Kind::Struct | Kind::Union) {
                continue;
            }
            if let Some((inner_offset, found)) = self.find_member(inner.id, name, depth + 1)? {
                let total = offset
                    .checked_add(inner_offset)
                    .ok_or_else(|| Lookup::Missing("offset of a member of an anonymous member overflows".into()))?;
                return Ok(Some((total, found)));
            }
        }
        Ok(None)
    }

    /// Whether `member` is a bit-field: a recorded bit-field size (structs with the kind flag), an
    /// offset inside a byte, or (without the kind flag) an integer type narrower than its bytes.
    fn is_bit_field(&self, aggregate: TypeId, member: &Member) -> Result<bool, BtfLookup> {
        if member.bitfield_size != 0 || !member.bit_offset.is_multiple_of(8) {
            return Ok(true);
        }
        if self.btf.type_by_id(aggregate)?.kind_flag() || member.type_ == TypeId::VOID {
            return Ok(false);
        }
        let ty = self.btf.type_by_id(member.type_)?;
        Ok(match (ty.int_bits(), ty.size()) {
            (Some((bits, offset)), Some(size)) => offset != 0 || u64::from(bits) != size * 8,
            _ => false,
        })
    }

    /// [`Self::resolve`] for the type of the member `what` (`void` is an error).
    fn resolve_member(&self, id: TypeId, what: &str) -> Result<Resolved, BtfLookup> {
        if id == TypeId::VOID {
            return Err(Lookup::Missing(format!("`{what}` has no type")));
        }
        self.resolve(id)
    }

    /// Follows typedefs, qualifiers and type tags from `id` and sizes the result.
    fn resolve(&self, mut id: TypeId) -> Result<Resolved, BtfLookup> {
        for _ in 0..MAX_TYPE_CHAIN {
            if id == TypeId::VOID {
                return Err(Lookup::Missing("a typedef of void".into()));
            }
            let ty = self.btf.type_by_id(id)?;
            match ty.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = ty.referenced().unwrap_or(TypeId::VOID);
                }
                Kind::Array => return Ok(Resolved { kind: ty.kind, id, size: self.array_size(id)? }),
                Kind::Fwd => return Err(Lookup::Missing(format!("an incomplete type (BTF type {id})"))),
                kind => {
                    let size = ty
                        .size()
                        .ok_or_else(|| Lookup::Missing(format!("a type without a size ({kind:?}, BTF type {id})")))?;
                    return Ok(Resolved { kind, id, size });
                }
            }
        }
        Err(Lookup::Missing("a type chain that loops".into()))
    }

    /// Element size times element count, through nested (multi-dimensional) arrays.
    fn array_size(&self, mut id: TypeId) -> Result<u64, BtfLookup> {
        let mut count = 1u64;
        for _ in 0..MAX_TYPE_CHAIN {
            let ty = self.btf.type_by_id(id)?;
            let Some(array) = ty.array() else {
                let element = self.resolve(id)?.size;
                return element.checked_mul(count).ok_or_else(|| Lookup::Missing("an array size that overflows".into()));
            };
            count = count
                .checked_mul(u64::from(array.count))
                .ok_or_else(|| Lookup::Missing("an array size that overflows".into()))?;
            id = array.element;
            if id == TypeId::VOID {
                return Err(Lookup::Missing("an array of void".into()));
            }
        }
        Err(Lookup::Missing("arrays nest too deeply".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::btf::build::Builder;

    /// `struct task { int a; union { struct { long x; int y; }; char c; }; unsigned flag : 1;
    /// const volatile long arr[4][2]; struct inner in; struct opaque *p; struct opaque o; }` and friends.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1
        let long = b.int("long", 8); // 2
        let anon_struct = b.aggregate(false, "", 16, &[("x", long, 0, 0), ("y", int, 64, 0)]); // 3
        let chr = b.int("char", 1); // 4
        let anon_union = b.aggregate(true, "", 16, &[("", anon_struct, 0, 0), ("c", chr, 0, 0)]); // 5
        let volatile = b.reference(9, "", long); // 6
        let konst = b.reference(10, "", volatile); // 7
        let row = b.array(konst, int, 2); // 8
        let table = b.array(row, int, 4); // 9
        let inner = b.aggregate(false, "inner", 8, &[("left", int, 0, 0), ("right", int, 32, 0)]); // 10
        let inner_t = b.reference(8, "inner_t", inner); // 11
        let opaque = b.fwd("opaque"); // 12
        let pointer = b.ptr(opaque); // 13
        b.aggregate(
            false,
            "task",
            152,
            &[
                ("a", int, 0, 0),
                ("", anon_union, 64, 0),
                ("flag", int, 192, 1),
                ("arr", table, 256, 0),
                ("in", inner_t, 768, 0),
                ("p", pointer, 832, 0),
                ("o", opaque, 896, 0),
            ],
        ); // 14
        // A typedef cycle, and a struct that uses it.
        b.reference(8, "loop_a", 16); // 15
        b.reference(8, "loop_b", 15); // 16
        b.aggregate(false, "cyclic", 8, &[("l", 15, 0, 0)]); // 17
        // A second, complete definition of `inner` (the first one lacks `middle`).
        b.aggregate(false, "inner", 12, &[("left", int, 0, 0), ("middle", int, 32, 0), ("right", int, 64, 0)]); // 18
        b.finish()
    }

    fn layouts(required: &[(&str, &[&str])], optional: &[(&str, &[&str])]) -> Result<BTreeMap<String, StructLayout>, String> {
        let blob = sample();
        let btf = Btf::parse(&blob).expect("parses");
        struct_layouts(&btf, required, optional).expect("well-formed")
    }

    #[test]
    fn fields_through_anonymous_members_typedefs_and_arrays() {
        let found = layouts(&[("task", &["a", "x", "y", "c", "arr", "in", "in.right", "p"])], &[]).expect("found");
        let task = &found["task"];
        assert_eq!(task.size, 152);
        let field = |p: &str| (task.fields[p].offset, task.fields[p].size);
        assert_eq!(field("a"), (0, 4));
        assert_eq!(field("x"), (8, 8));
        assert_eq!(field("y"), (16, 4));
        assert_eq!(field("c"), (8, 1));
        assert_eq!(field("arr"), (32, 64));
        assert_eq!(field("in"), (96, 8));
        assert_eq!(field("in.right"), (100, 4));
        assert_eq!(field("p"), (104, 8));
    }

    #[test]
    fn bit_fields_incomplete_types_and_loops_are_missing_with_a_reason() {
        let err = layouts(&[("task", &["flag"])], &[]).expect_err("bit-field");
        assert!(err.contains("`flag` is a bit-field") && err.contains("BTF type 14"), "{err}");
        let err = layouts(&[("task", &["o"])], &[]).expect_err("incomplete");
        assert!(err.contains("incomplete type"), "{err}");
        let err = layouts(&[("cyclic", &["l"])], &[]).expect_err("loop");
        assert!(err.contains("loops"), "{err}");
        let err = layouts(&[("task", &["a.b"])], &[]).expect_err("not an aggregate");
        assert!(err.contains("not an embedded struct"), "{err}");
        let err = layouts(&[("nothing", &["a"])], &[]).expect_err("absent");
        assert!(err.contains("no complete definition in the BTF"), "{err}");
    }

    #[test]
    fn a_later_definition_is_taken_when_the_first_lacks_a_required_field() {
        let found = layouts(&[("inner", &["middle"])], &[]).expect("second definition");
        assert_eq!(found["inner"].size, 12);
        let found = layouts(&[("inner", &["left"])], &[("inner", &["middle"])]).expect("first definition");
        assert_eq!(found["inner"].size, 8);
        assert!(!found["inner"].fields.contains_key("middle"));
        let found = layouts(&[("task", &["a"])], &[("task", &["flag", "nope"])]).expect("optional left out");
        assert_eq!(found["task"].fields.len(), 1);
    }

    #[test]
    fn hostile_blobs_end_in_errors_not_panics() {
        let good = sample();
        let spec: &[(&str, &[&str])] = &[("task", &["a", "x", "c", "arr", "in.right", "p"]), ("inner", &["middle"])];
        for i in 24..good.len() {
            for value in [0u8, 0xff, 0x01, 0x0e] {
                let mut bad = good.clone();
                bad[i] = value;
                if let Ok(btf) = Btf::parse(&bad) {
                    let _ = struct_layouts(&btf, spec, &[]);
                }
            }
        }
    }
}
