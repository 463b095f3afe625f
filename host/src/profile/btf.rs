//! A reader of BTF, the kernel's own compact type information (`CONFIG_DEBUG_INFO_BTF`).
//!
//! A BTF blob is a 24-byte header, a type section and a string section (see the kernel's
//! `include/uapi/linux/btf.h` and `Documentation/bpf/btf.rst`). Type ids count the records of the
//! type section from 1 (0 is `void`). The blob may come from a guest, so everything is checked:
//! [`Btf::parse`] bounds the header's offsets and lengths, walks the type section once and sizes
//! every record by its kind and member count (an unknown kind is an error, since it could not be
//! skipped), and records one `u32` per type (at most a third of the type section's size); every
//! string and type reference is checked when followed. Nothing here recurses; callers that follow
//! type chains bound them.

/// The BTF magic number (`BTF_MAGIC`), little-endian in the blob.
pub const MAGIC: u16 = 0xeb9f;
/// The header size this reader knows (`sizeof(struct btf_header)`).
const HEADER_LEN: usize = 24;
/// Size of `struct btf_type`.
const TYPE_LEN: usize = 12;
/// Largest type id the kernel accepts (`BTF_MAX_TYPE`).
const MAX_TYPES: usize = 0x000f_ffff;
/// Pointer size on the 64-bit architectures xsched reads (BTF does not record it).
const POINTER_SIZE: u64 = 8;

/// What is wrong with a BTF blob.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    /// The blob is shorter than its header.
    #[error("BTF blob of {len} bytes is shorter than a BTF header")]
    Truncated {
        /// The blob's length.
        len: usize,
    },
    /// The magic number is not `0xeB9F` (a big-endian blob is refused too).
    #[error("no BTF magic: found {found:#06x}, expected {MAGIC:#06x}")]
    Magic {
        /// The first two bytes, little-endian.
        found: u16,
    },
    /// A BTF version other than 1.
    #[error("BTF version {found}, this reader knows version 1")]
    Version {
        /// The version byte.
        found: u8,
    },
    /// The header's lengths or offsets do not fit the blob.
    #[error("BTF header: {reason}")]
    Header {
        /// What does not fit.
        reason: String,
    },
    /// A type record is malformed.
    #[error("BTF type {id} (type section offset {offset:#x}): {reason}")]
    Type {
        /// Its type id.
        id: u32,
        /// Its offset in the type section.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A type reference names no type.
    #[error("BTF type id {id} does not exist ({count} types)")]
    NoSuchType {
        /// The id referenced.
        id: u32,
        /// How many types the blob has.
        count: usize,
    },
    /// A string reference lies outside the string section.
    #[error("BTF string offset {offset:#x} lies outside the string section ({len} bytes)")]
    String {
        /// The offset referenced.
        offset: u32,
        /// The string section's length.
        len: usize,
    },
}

/// A BTF type id; 0 is `void`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeId(pub u32);

impl TypeId {
    /// `void`.
    pub const VOID: TypeId = TypeId(0);
}

impl std::fmt::Display for TypeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The kind of a BTF type (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An integer; its size and encoding.
    Int,
    /// A pointer to the referenced type.
    Ptr,
    /// An array; element type and count follow.
    Array,
    /// A struct; its members follow.
    Struct,
    /// A union; its members follow.
    Union,
    /// An enum with 32-bit values.
    Enum,
    /// A forward declaration (`struct foo;`).
    Fwd,
    /// A typedef of the referenced type.
    Typedef,
    /// `volatile` of the referenced type.
    Volatile,
    /// `const` of the referenced type.
    Const,
    /// `restrict` of the referenced type.
    Restrict,
    /// A function (its prototype is the referenced type).
    Func,
    /// A function prototype; its parameters follow.
    FuncProto,
    /// A variable of the referenced type.
    Var,
    /// A data section and the variables in it.
    Datasec,
    /// A floating-point type.
    Float,
    /// A declaration tag on the referenced type.
    DeclTag,
    /// A type tag on the referenced type.
    TypeTag,
    /// An enum with 64-bit values.
    Enum64,
}

impl Kind {
    /// The kind of `BTF_KIND_*` number `n`.
    fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// Bytes of kind-specific data after the common record, for `vlen` entries.
    fn extra_len(self, vlen: usize) -> usize {
        match self {
            Self::Int | Self::Var | Self::DeclTag => 4,
            Self::Array => 12,
            Self::Struct | Self::Union | Self::Datasec | Self::Enum64 => vlen * 12,
            Self::Enum | Self::FuncProto => vlen * 8,
            Self::Ptr
            | Self::Fwd
            | Self::Typedef
            | Self::Volatile
            | Self::Const
            | Self::Restrict
            | Self::Func
            | Self::Float
            | Self::TypeTag => 0,
        }
    }

    /// Whether the record's third word is a size (else it is a type reference or unused).
    fn has_size(self) -> bool {
        matches!(self, Self::Int | Self::Struct | Self::Union | Self::Enum | Self::Enum64 | Self::Datasec | Self::Float)
    }
}

/// A parsed BTF blob: the string section and an index of the type records.
#[derive(Debug)]
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Offset in `types` of the record of type id `i + 1`.
    offsets: Vec<u32>,
}

/// One type record.
#[derive(Clone, Copy, Debug)]
pub struct Type<'a> {
    /// Its id.
    pub id: TypeId,
    /// Its kind.
    pub kind: Kind,
    name_off: u32,
    info: u32,
    size_or_type: u32,
    /// The kind-specific data after the common record, already sized by [`Btf::parse`].
    extra: &'a [u8],
}

/// One member of a struct or union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Offset of its name in the string section; 0 for an anonymous member.
    pub name_off: u32,
    /// Its type.
    pub type_: TypeId,
    /// Its offset from the start of the aggregate, in bits.
    pub bit_offset: u32,
    /// Its width in bits if it is a bit-field (structs with the kind flag record it), else 0.
    pub bitfield_size: u32,
}

/// The element type and count of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Array {
    /// The element type.
    pub element: TypeId,
    /// The number of elements (0 for a flexible array).
    pub count: u32,
}

/// Reads the little-endian `u32` at `offset` of `bytes`, if it is there.
fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let word: [u8; 4] = bytes.get(offset..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

/// `usize` from a `u32` read from the blob (lossless on the 64-bit hosts xsched runs on).
fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl<'a> Btf<'a> {
    /// Checks the header and indexes every type record of `blob`.
    pub fn parse(blob: &'a [u8]) -> Result<Self, BtfError> {
        let header = blob.get(..HEADER_LEN).ok_or(BtfError::Truncated { len: blob.len() })?;
        let magic = u16::from_le_bytes([header[0], header[1]]);
        if magic != MAGIC {
            return Err(BtfError::Magic { found: magic });
        }
        if header[2] != 1 {
            return Err(BtfError::Version { found: header[2] });
        }
        let word = |i: usize| u32_at(header, i).map(to_usize).unwrap_or(usize::MAX);
        let (hdr_len, type_off, type_len, str_off, str_len) = (word(4), word(8), word(12), word(16), word(20));
        let bad = |reason: String| BtfError::Header { reason };
        if hdr_len < HEADER_LEN || hdr_len > blob.len() {
            return Err(bad(format!("header length {hdr_len} (blob of {} bytes)", blob.len())));
        }
        // A longer header than this reader knows must be zero past what it knows (as the kernel checks).
        if blob.get(HEADER_LEN..hdr_len).is_some_and(|rest| rest.iter().any(|b| *b != 0)) {
            return Err(bad(format!("header of {hdr_len} bytes has unknown non-zero fields")));
        }
        let body = blob.get(hdr_len..).unwrap_or(&[]);
        let section = |name: &str, off: usize, len: usize| {
            off.checked_add(len)
                .and_then(|end| body.get(off..end))
                .ok_or_else(|| bad(format!("{name} section {off:#x}+{len:#x} lies outside the {} bytes after the header", body.len())))
        };
        let types = section("type", type_off, type_len)?;
        let strings = section("string", str_off, str_len)?;
        if type_off % 4 != 0 {
            return Err(bad(format!("type section offset {type_off:#x} is not 4-byte aligned")));
        }
        if strings.first() != Some(&0) || strings.last() != Some(&0) {
            return Err(bad("the string section does not start and end with a NUL byte".into()));
        }
        let mut offsets = Vec::with_capacity(types.len() / TYPE_LEN);
        let mut offset = 0usize;
        while offset < types.len() {
            let id = u32::try_from(offsets.len() + 1).unwrap_or(u32::MAX);
            if offsets.len() >= MAX_TYPES {
                return Err(BtfError::Type { id, offset, reason: format!("more than {MAX_TYPES} types") });
            }
            let malformed = |reason: String| BtfError::Type { id, offset, reason };
            let info = u32_at(types, offset + 4).ok_or_else(|| malformed("truncated record".into()))?;
            let kind_number = (info >> 24) & 0x1f;
            let kind = Kind::from_number(kind_number).ok_or_else(|| malformed(format!("unknown kind {kind_number}")))?;
            let vlen = to_usize(info & 0xffff);
            let end = offset
                .checked_add(TYPE_LEN + kind.extra_len(vlen))
                .filter(|end| *end <= types.len())
                .ok_or_else(|| malformed(format!("{kind:?} record with {vlen} entries runs past the type section")))?;
            offsets.push(u32::try_from(offset).map_err(|_| malformed("type section beyond 4 GiB".into()))?);
            offset = end;
        }
        Ok(Self { types, strings, offsets })
    }

    /// How many types the blob has (ids `1..=count`).
    pub fn type_count(&self) -> usize {
        self.offsets.len()
    }

    /// Every type, in id order.
    pub fn types(&self) -> impl Iterator<Item = Type<'a>> + '_ {
        (1..=self.offsets.len()).filter_map(|i| u32::try_from(i).ok()).filter_map(|id| self.type_by_id(TypeId(id)).ok())
    }

    /// The type `id` (an error for `void` or an id past the last type).
    pub fn type_by_id(&self, id: TypeId) -> Result<Type<'a>, BtfError> {
        let missing = || BtfError::NoSuchType { id: id.0, count: self.offsets.len() };
        let index = to_usize(id.0).checked_sub(1).ok_or_else(missing)?;
        let offset = to_usize(*self.offsets.get(index).ok_or_else(missing)?);
        // `parse` checked that the record and its extra data lie inside the section.
        let word = |i: usize| u32_at(self.types, offset + i).ok_or_else(missing);
        let info = word(4)?;
        let kind = Kind::from_number((info >> 24) & 0x1f).ok_or_else(missing)?;
        let start = offset + TYPE_LEN;
        let extra = self.types.get(start..start + kind.extra_len(to_usize(info & 0xffff))).ok_or_else(missing)?;
        Ok(Type { id, kind, name_off: word(0)?, info, size_or_type: word(8)?, extra })
    }

    /// The NUL-terminated string at `offset` of the string section (without its NUL).
    pub fn string(&self, offset: u32) -> Result<&'a [u8], BtfError> {
        let tail = self.strings.get(to_usize(offset)..).filter(|t| !t.is_empty());
        let tail = tail.ok_or(BtfError::String { offset, len: self.strings.len() })?;
        // `parse` checked the section ends with NUL, so every tail holds one.
        Ok(tail.split(|b| *b == 0).next().unwrap_or(tail))
    }
}

impl<'a> Type<'a> {
    /// The number of entries (members, values, parameters) of the type.
    pub fn vlen(&self) -> u32 {
        self.info & 0xffff
    }

    /// The kind flag (for structs and unions: members record bit-field sizes).
    pub fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }

    /// The type's name (empty for anonymous types).
    pub fn name(&self, btf: &Btf<'a>) -> Result<&'a [u8], BtfError> {
        btf.string(self.name_off)
    }

    /// Whether the type has a name.
    pub fn is_named(&self) -> bool {
        self.name_off != 0
    }

    /// The size in bytes of a sized kind (int, struct, union, enum, float, section), pointers
    /// included; `None` for the others, whose size (if any) follows from what they reference.
    pub fn size(&self) -> Option<u64> {
        if self.kind.has_size() {
            Some(u64::from(self.size_or_type))
        } else if self.kind == Kind::Ptr {
            Some(POINTER_SIZE)
        } else {
            None
        }
    }

    /// The type this one refers to: a pointer's target, what a typedef, qualifier or tag applies
    /// to, a function's prototype, a variable's type. `None` for kinds that carry a size instead.
    pub fn referenced(&self) -> Option<TypeId> {
        match self.kind {
            Kind::Ptr
            | Kind::Typedef
            | Kind::Volatile
            | Kind::Const
            | Kind::Restrict
            | Kind::TypeTag
            | Kind::Func
            | Kind::FuncProto
            | Kind::Var
            | Kind::DeclTag => Some(TypeId(self.size_or_type)),
            _ => None,
        }
    }

    /// The element type and count of an array (`None` for other kinds).
    pub fn array(&self) -> Option<Array> {
        if self.kind != Kind::Array {
            return None;
        }
        Some(Array { element: TypeId(u32_at(self.extra, 0)?), count: u32_at(self.extra, 8)? })
    }

    /// The members of a struct or union (empty for other kinds).
    pub fn members(&self) -> impl Iterator<Item = Member> + 'a {
        let entries: &'a [u8] = if matches!(self.kind, Kind::Struct | Kind::Union) { self.extra } else { &[] };
        let kind_flag = self.kind_flag();
        entries.chunks_exact(12).filter_map(move |m| {
            let (name_off, type_, offset) = (u32_at(m, 0)?, u32_at(m, 4)?, u32_at(m, 8)?);
            let (bit_offset, bitfield_size) = if kind_flag { (offset & 0x00ff_ffff, offset >> 24) } else { (offset, 0) };
            Some(Member { name_off, type_: TypeId(type_), bit_offset, bitfield_size })
        })
    }

    /// An integer's width in bits and its bit offset (`BTF_INT_BITS`, `BTF_INT_OFFSET`); `None`
    /// for other kinds.
    pub fn int_bits(&self) -> Option<(u32, u32)> {
        if self.kind != Kind::Int {
            return None;
        }
        let encoding = u32_at(self.extra, 0)?;
        Some((encoding & 0xff, (encoding >> 16) & 0xff))
    }
}

/// Builds BTF blobs for tests: types are appended in id order.
#[cfg(test)]
pub(crate) mod build {
    /// A BTF blob under construction.
    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        count: u32,
    }

    impl Builder {
        /// An empty blob (the string section starts with the empty name).
        pub fn new() -> Self {
            Self { strings: vec![0], ..Self::default() }
        }

        /// The offset of `name` in the string section (0 for "").
        pub fn string(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let offset = u32::try_from(self.strings.len()).expect("small");
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            offset
        }

        fn record(&mut self, name: &str, kind: u32, vlen: u32, kind_flag: bool, third: u32, extra: &[u32]) -> u32 {
            let name_off = self.string(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            for word in [name_off, info, third].iter().chain(extra) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.count += 1;
            self.count
        }

        /// An integer of `size` bytes.
        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            self.record(name, 1, 0, false, size, &[size * 8])
        }

        /// A pointer to `target`.
        pub fn ptr(&mut self, target: u32) -> u32 {
            self.record("", 2, 0, false, target, &[])
        }

        /// An array of `count` `element`s (index type: `index`).
        pub fn array(&mut self, element: u32, index: u32, count: u32) -> u32 {
            self.record("", 3, 0, false, 0, &[element, index, count])
        }

        /// A struct (`union` false) or union of `size` bytes with `(name, type, bit offset, bit-field size)` members.
        pub fn aggregate(&mut self, union: bool, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let mut extra = Vec::new();
            for (member, type_, bits, bitfield) in members {
                extra.extend([self.string(member), *type_, if kind_flag { (bitfield << 24) | bits } else { *bits }]);
            }
            let vlen = u32::try_from(members.len()).expect("few members");
            self.record(name, if union { 5 } else { 4 }, vlen, kind_flag, size, &extra)
        }

        /// A typedef (kind 8), `volatile` (9), `const` (10), `restrict` (11) or type tag (18) of `target`.
        pub fn reference(&mut self, kind: u32, name: &str, target: u32) -> u32 {
            self.record(name, kind, 0, false, target, &[])
        }

        /// A forward declaration.
        pub fn fwd(&mut self, name: &str) -> u32 {
            self.record(name, 7, 0, false, 0, &[])
        }

        /// An enum of 4 bytes.
        pub fn enumeration(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
            let mut extra = Vec::new();
            for (value_name, value) in values {
                extra.extend([self.string(value_name), u32::from_le_bytes(value.to_le_bytes())]);
            }
            self.record(name, 6, u32::try_from(values.len()).expect("few"), false, 4, &extra)
        }

        /// A raw record, for malformed input.
        pub fn raw(&mut self, words: &[u32]) {
            for word in words {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
        }

        /// The blob.
        pub fn finish(&self) -> Vec<u8> {
            let mut blob = Vec::new();
            let types = u32::try_from(self.types.len()).expect("small");
            let strings = u32::try_from(self.strings.len()).expect("small");
            blob.extend_from_slice(&super::MAGIC.to_le_bytes());
            blob.extend_from_slice(&[1, 0]);
            for word in [24, 0, types, types, strings] {
                blob.extend_from_slice(&u32::to_le_bytes(word));
            }
            blob.extend_from_slice(&self.types);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::Builder;
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let ptr = b.ptr(int);
        let array = b.array(int, int, 16);
        b.aggregate(false, "pair", 8, &[("a", int, 0, 0), ("b", int, 32, 0)]);
        b.aggregate(false, "bits", 4, &[("x", int, 0, 3), ("y", int, 3, 5)]);
        b.aggregate(true, "", 8, &[("p", ptr, 0, 0)]);
        b.reference(8, "array_t", array);
        b.fwd("opaque");
        b.enumeration("colour", &[("RED", 0), ("BLUE", -1)]);
        b.finish()
    }

    #[test]
    fn types_members_and_strings_are_read() {
        let blob = sample();
        let btf = Btf::parse(&blob).expect("parses");
        assert_eq!(btf.type_count(), 9);
        let pair = btf.type_by_id(TypeId(4)).expect("pair");
        assert_eq!((pair.kind, pair.name(&btf).expect("name"), pair.size()), (Kind::Struct, &b"pair"[..], Some(8)));
        let members: Vec<Member> = pair.members().collect();
        assert_eq!(members.len(), 2);
        assert_eq!(btf.string(members[1].name_off).expect("b"), b"b");
        assert_eq!(members[1].bit_offset, 32);
        let bits: Vec<Member> = btf.type_by_id(TypeId(5)).expect("bits").members().collect();
        assert_eq!((bits[1].bit_offset, bits[1].bitfield_size), (3, 5));
        assert_eq!(btf.type_by_id(TypeId(2)).expect("ptr").size(), Some(8));
        assert_eq!(btf.type_by_id(TypeId(3)).expect("array").array(), Some(Array { element: TypeId(1), count: 16 }));
        assert_eq!(btf.type_by_id(TypeId(7)).expect("typedef").referenced(), Some(TypeId(3)));
        assert!(!btf.type_by_id(TypeId(6)).expect("anonymous").is_named());
        assert_eq!(btf.type_by_id(TypeId(8)).expect("fwd").kind, Kind::Fwd);
        assert_eq!(btf.type_by_id(TypeId(1)).expect("int").int_bits(), Some((32, 0)));
        assert_eq!(btf.types().count(), 9);
    }

    #[test]
    fn bad_ids_and_strings_are_errors() {
        let blob = sample();
        let btf = Btf::parse(&blob).expect("parses");
        assert!(matches!(btf.type_by_id(TypeId::VOID), Err(BtfError::NoSuchType { id: 0, .. })));
        assert!(matches!(btf.type_by_id(TypeId(10)), Err(BtfError::NoSuchType { id: 10, count: 9 })));
        assert!(matches!(btf.type_by_id(TypeId(u32::MAX)), Err(BtfError::NoSuchType { .. })));
        assert!(matches!(btf.string(u32::MAX), Err(BtfError::String { .. })));
        assert_eq!(btf.string(0).expect("empty"), b"");
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = sample();
        assert_eq!(Btf::parse(&good[..10]).err(), Some(BtfError::Truncated { len: 10 }));
        let mut bad = good.clone();
        bad[0] = 0xeb;
        bad[1] = 0x9f;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::Magic { found: 0x9feb })));
        let mut bad = good.clone();
        bad[2] = 2;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::Version { found: 2 })));
        // Every header word pushed past the end, or overflowing.
        for word in [4usize, 8, 12, 16, 20] {
            for value in [u32::MAX, u32::MAX - 3, u32::try_from(good.len()).expect("small")] {
                let mut bad = good.clone();
                bad[word..word + 4].copy_from_slice(&value.to_le_bytes());
                assert!(Btf::parse(&bad).is_err(), "header word {word} = {value:#x}");
            }
        }
        // A string section without its final NUL.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] = b'x';
        assert!(matches!(Btf::parse(&bad), Err(BtfError::Header { .. })));
    }

    #[test]
    fn malformed_records_are_refused() {
        // A struct claiming 0xffff members in a short section.
        let mut b = Builder::new();
        b.raw(&[0, (4 << 24) | 0xffff, 8]);
        assert!(matches!(Btf::parse(&b.finish()), Err(BtfError::Type { id: 1, .. })));
        // An unknown kind.
        let mut b = Builder::new();
        b.raw(&[0, 25 << 24, 0]);
        assert!(matches!(Btf::parse(&b.finish()), Err(BtfError::Type { id: 1, .. })));
        // A record cut short.
        let mut b = Builder::new();
        b.int("int", 4);
        b.raw(&[0]);
        assert!(matches!(Btf::parse(&b.finish()), Err(BtfError::Type { id: 2, .. })));
    }

    #[test]
    fn every_truncation_and_byte_flip_of_a_blob_is_survived() {
        let good = sample();
        for len in 0..good.len() {
            let _ = Btf::parse(&good[..len]);
        }
        for i in 0..good.len() {
            for value in [0u8, 0xff, 0x80, 0x13] {
                let mut bad = good.clone();
                bad[i] = value;
                if let Ok(btf) = Btf::parse(&bad) {
                    for t in btf.types() {
                        let _ = (t.name(&btf), t.size(), t.array(), t.int_bits(), t.members().count());
                        if let Some(r) = t.referenced() {
                            let _ = btf.type_by_id(r);
                        }
                    }
                }
            }
        }
    }
}
