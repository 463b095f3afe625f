//! Kernel symbols from the kernel's own kallsyms tables, found by their structure.
//!
//! `scripts/kallsyms.c` writes these tables into `.rodata` (each label 8-byte aligned up to 6.x,
//! 4-byte aligned in 7.x; see [`Layout`]):
//! - `kallsyms_num_syms` (`u32`), directly followed by `kallsyms_names`: per symbol, its length in
//!   tokens (one byte, or two with the top bit of the first set, since 6.1's "kallsyms: support
//!   big kernel symbols", commit 73bbb94466fd) and its token bytes; the first expanded character
//!   is the `nm` type letter;
//! - `kallsyms_markers`: the offset in `kallsyms_names` of every 256th symbol (`u32`);
//! - `kallsyms_token_table`: 256 NUL-terminated tokens, then `kallsyms_token_index`: 256 `u16`
//!   offsets into it;
//! - `kallsyms_offsets` (`i32` per symbol, in address order) and `kallsyms_relative_base`
//!   (`CONFIG_KALLSYMS_BASE_RELATIVE`): with `CONFIG_KALLSYMS_ABSOLUTE_PERCPU` a non-negative
//!   offset is an absolute value (the per-CPU symbols) and a negative one is
//!   `relative_base - 1 - offset`; without it every offset is `relative_base + (u32)offset`;
//! - `kallsyms_seqs_of_names` (6.2, backported to 6.1.y as 3-byte entries).
//!
//! Where they sit moved between versions: through 6.3 the order is offsets, relative base,
//! num_syms, names, markers, (seqs of names,) token table, token index; since 6.4 ("scripts/kallsyms:
//! change the output order", commit 404bad70fcf7) it is num_syms, names, markers, token table,
//! token index, offsets, relative base, seqs of names. So nothing is taken from a symbol (the
//! image has none): the token table is found by the single-digit tokens `"0"`…`"9"` that every
//! kernel's table holds in a row (digits occur in names, so they stand for themselves), the
//! token index by its first entry 0 and its digit entries; the markers are searched back from the
//! token table, `kallsyms_names` and its count before them, and the offsets are tried at both
//! places. Every candidate is checked whole (each name expands within bounds, every 256th name
//! starts at its marker, the names end where the markers start, the addresses ascend), so
//! hostile bytes give an error, not a wrong table.

/// The most symbols accepted (a distribution kernel has about 150,000).
const MAX_SYMBOLS: u32 = 1 << 21;
/// The longest name (`KSYM_NAME_LEN` is 512 since 6.1), type letter excluded.
const MAX_NAME: usize = 512;
/// How far back from the token table the markers may end (past `kallsyms_seqs_of_names`).
const MARKERS_WINDOW: usize = 4 * MAX_SYMBOLS as usize + 64;
/// How many places a name table may be tried at before the search gives up (hostile input could
/// otherwise make it slow): a real kernel's tables are found within a few thousand.
const SEARCH_BUDGET: usize = 1 << 22;
/// How far past the digit tokens the token index may start.
const TOKEN_INDEX_WINDOW: usize = 64 << 10;
/// How one generation of `scripts/kallsyms.c` lays the tables out.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// The alignment of every label.
    align: u64,
    /// How far before `kallsyms_names` its count (`kallsyms_num_syms`) sits: 8 with 8-byte
    /// labels (a zero word between), 4 with 4-byte ones.
    count_gap: usize,
    /// Each `kallsyms_offsets` entry is PC-relative (`.long _text - . + offset`: the address is
    /// the entry's own plus its value) and there is no `kallsyms_relative_base`.
    pc_relative: bool,
}

/// Up to 6.x: every label `.balign 8` (`ALGN` on 64-bit), offsets from `kallsyms_relative_base`.
const LAYOUT_6: Layout = Layout { align: 8, count_gap: 8, pc_relative: false };
/// 7.x (as Debian's 7.3 has it): every label `.balign 4`, PC-relative offsets after the token
/// index, no relative base.
const LAYOUT_7: Layout = Layout { align: 4, count_gap: 4, pc_relative: true };

/// Why no kallsyms tables were found or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KallsymsError {
    /// No token table (or no token index after it) in the region.
    #[error("no kallsyms token table in the {len} bytes searched (a kernel without CONFIG_KALLSYMS?)")]
    NoTokenTable {
        /// The region's length.
        len: usize,
    },
    /// A token table but no names and markers before it.
    #[error("a kallsyms token table at {table:#x} but no kallsyms_names/kallsyms_markers before it")]
    NoNames {
        /// The token table's address.
        table: u64,
    },
    /// Names but no symbol addresses that fit them.
    #[error(
        "kallsyms names at {names:#x} ({count} symbols) but no kallsyms_offsets/kallsyms_relative_base that fit them \
         (CONFIG_KALLSYMS_BASE_RELATIVE off? then use --system-map)"
    )]
    NoOffsets {
        /// The names' address.
        names: u64,
        /// The symbol count.
        count: u32,
    },
}

/// One kernel symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Its name.
    pub name: String,
    /// Its `nm` type letter (`T`, `d`, `B`…): upper case for global symbols.
    pub kind: u8,
    /// Its address as the tables give it: link-time in a file, as relocated in a running kernel
    /// (per-CPU symbols: their offset in the per-CPU area).
    pub address: u64,
}

/// Bytes of a kernel at virtual address `base`.
#[derive(Clone, Copy, Debug)]
pub struct Region<'a> {
    /// The virtual address of `bytes[0]`.
    pub base: u64,
    /// The bytes.
    pub bytes: &'a [u8],
}

impl Region<'_> {
    fn u16_at(&self, offset: usize) -> Option<u16> {
        let bytes: [u8; 2] = self.bytes.get(offset..offset.checked_add(2)?)?.try_into().ok()?;
        Some(u16::from_le_bytes(bytes))
    }

    fn u32_at(&self, offset: usize) -> Option<u32> {
        let bytes: [u8; 4] = self.bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes))
    }

    fn u64_at(&self, offset: usize) -> Option<u64> {
        let bytes: [u8; 8] = self.bytes.get(offset..offset.checked_add(8)?)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    fn address(&self, offset: usize) -> u64 {
        self.base.wrapping_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    fn aligned(&self, offset: usize, l: Layout) -> bool {
        self.address(offset).is_multiple_of(l.align)
    }

    /// The first offset aligned as `l` aligns labels at or after `offset`.
    fn align_up(&self, offset: usize, l: Layout) -> Option<usize> {
        let misalign = usize::try_from(self.address(offset) % l.align).ok()?;
        if misalign == 0 {
            Some(offset)
        } else {
            offset.checked_add(usize::try_from(l.align).ok()? - misalign)
        }
    }
}

/// The token table: 256 tokens.
struct Tokens<'a> {
    tokens: Vec<&'a [u8]>,
    /// Offset of the table and of the index in the region.
    table: usize,
    index: usize,
}

/// Every symbol of the kallsyms tables in `region`, in address order.
pub fn symbols(region: Region<'_>) -> Result<Vec<Symbol>, KallsymsError> {
    let mut first_error = None;
    for layout in [LAYOUT_6, LAYOUT_7] {
        match symbols_in(region, layout) {
            Ok(symbols) => return Ok(symbols),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(KallsymsError::NoTokenTable { len: region.bytes.len() }))
}

/// The symbols of tables laid out as `l` lays them out.
fn symbols_in(region: Region<'_>, l: Layout) -> Result<Vec<Symbol>, KallsymsError> {
    let tokens = token_table(region, l).ok_or(KallsymsError::NoTokenTable { len: region.bytes.len() })?;
    let (names, count, markers) =
        names_before(region, &tokens, l).ok_or(KallsymsError::NoNames { table: region.address(tokens.table) })?;
    let decoded = decode_names(region, &tokens, names, count, markers)
        .ok_or(KallsymsError::NoNames { table: region.address(tokens.table) })?;
    let addresses = offsets(region, &tokens, names, count, l)
        .ok_or(KallsymsError::NoOffsets { names: region.address(names), count })?;
    Ok(decoded.into_iter().zip(addresses).map(|((kind, name), address)| Symbol { name, kind, address }).collect())
}

/// Finds the token table by its digit tokens, and its index right after it.
fn token_table(region: Region<'_>, l: Layout) -> Option<Tokens<'_>> {
    let digits = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";
    for at in memchr::memmem::find_iter(region.bytes, digits) {
        let end = at.saturating_add(TOKEN_INDEX_WINDOW).min(region.bytes.len());
        for index in (at + digits.len()..end).filter(|o| region.aligned(*o, l)) {
            if let Some(tokens) = tokens_at(region, at, index, l) {
                return Some(tokens);
            }
        }
    }
    None
}

/// The token table and index if `index` holds a token index whose digit entries point at `digits`.
fn tokens_at(region: Region<'_>, digits: usize, index: usize, l: Layout) -> Option<Tokens<'_>> {
    let entry = |i: usize| region.u16_at(index + 2 * i).map(usize::from);
    if entry(0)? != 0 {
        return None;
    }
    let zero = entry(usize::from(b'0'))?;
    let table = digits.checked_sub(zero)?;
    if (0..10).any(|k| entry(usize::from(b'0') + k) != Some(zero + 2 * k)) {
        return None;
    }
    let mut tokens = Vec::with_capacity(256);
    let mut previous_end = 0usize;
    for i in 0..256 {
        let start = entry(i)?;
        if start != previous_end {
            return None;
        }
        let from = table.checked_add(start)?;
        let rest = region.bytes.get(from..index)?;
        let len = memchr::memchr(0, rest)?;
        tokens.push(rest.get(..len)?);
        previous_end = start + len + 1;
    }
    // The index follows the table, after at most the alignment padding.
    let table_end = table + previous_end;
    (region.align_up(table_end, l)? == index).then_some(Tokens { tokens, table, index })
}

/// `kallsyms_names`, the symbol count and `kallsyms_markers`, searched back from the token table.
fn names_before(region: Region<'_>, tokens: &Tokens<'_>, l: Layout) -> Option<(usize, u32, usize)> {
    let lowest = tokens.table.saturating_sub(MARKERS_WINDOW);
    let mut end = tokens.table - tokens.table % 4;
    let mut budget = SEARCH_BUDGET;
    while end > lowest && budget > 0 {
        if let Some(found) = markers_ending_at(region, tokens, end, &mut budget, l) {
            return Some(found);
        }
        end -= 4;
    }
    None
}

/// The names, count and markers if the markers array ends at `end`; each place tried for the
/// names costs one unit of `budget`.
///
/// At least two markers are required (more than 256 symbols: every kernel has tens of thousands),
/// since a lone zero word would fit anywhere.
fn markers_ending_at(region: Region<'_>, tokens: &Tokens<'_>, end: usize, budget: &mut usize, l: Layout) -> Option<(usize, u32, usize)> {
    // Walk back over strictly decreasing markers down to the first, 0.
    let mut start = end.checked_sub(4)?;
    let last = region.u32_at(start)?;
    if last == 0 {
        return None;
    }
    let mut value = last;
    loop {
        start = start.checked_sub(4)?;
        let previous = region.u32_at(start)?;
        // Every 256 names take at least 2 bytes each.
        if previous >= value || value - previous < 512 {
            return None;
        }
        if previous == 0 {
            break;
        }
        value = previous;
    }
    let markers = start;
    let count_markers = u32::try_from((end - markers) / 4).ok()?;
    if !region.aligned(markers, l) {
        return None;
    }
    // The names end at the markers (after alignment padding) and begin after the count, which
    // says how many markers there are; the last marker's names are few, so `names` lies within
    // 256 longest names before it.
    let last_block = usize::try_from(last).ok()?;
    let highest = markers.checked_sub(last_block)?;
    let lowest = highest.saturating_sub(256 * (MAX_NAME + 2));
    let step = usize::try_from(l.align).ok()?;
    let mut names = highest - highest % step;
    while names >= lowest.max(8) && *budget > 0 {
        *budget -= 1;
        if region.aligned(names, l) && (l.count_gap == 4 || region.u32_at(names - 4) == Some(0)) {
            if let Some(count) = region.u32_at(names - l.count_gap) {
                let fits = count > 0 && count <= MAX_SYMBOLS && count.div_ceil(256) == count_markers;
                if fits && names_end(region, tokens, names + last_block, count - 256 * (count_markers - 1))
                    .and_then(|e| region.align_up(e, l))
                    == Some(markers)
                {
                    return Some((names, count, markers));
                }
            }
        }
        names = names.checked_sub(step)?;
    }
    None
}

/// Where the `count` names that start at `at` end, if each is a plausible name.
fn names_end(region: Region<'_>, tokens: &Tokens<'_>, mut at: usize, count: u32) -> Option<usize> {
    for _ in 0..count {
        let (_, next) = name_at(region, tokens, at)?;
        at = next;
    }
    Some(at)
}

/// The length in tokens of the name at `at` and where its tokens start.
fn name_length(region: Region<'_>, at: usize) -> Option<(usize, usize)> {
    let first = *region.bytes.get(at)?;
    if first & 0x80 == 0 {
        return Some((usize::from(first), at + 1));
    }
    let second = *region.bytes.get(at + 1)?;
    Some((usize::from(first & 0x7f) | usize::from(second) << 7, at + 2))
}

/// The name at `at` (type letter, then the name) and where the next one starts.
fn name_at(region: Region<'_>, tokens: &Tokens<'_>, at: usize) -> Option<((u8, Vec<u8>), usize)> {
    let (length, start) = name_length(region, at)?;
    if length == 0 || length > MAX_NAME + 1 {
        return None;
    }
    let encoded = region.bytes.get(start..start.checked_add(length)?)?;
    let mut expanded = Vec::with_capacity(length * 2);
    for byte in encoded {
        expanded.extend_from_slice(tokens.tokens.get(usize::from(*byte))?);
        if expanded.len() > MAX_NAME + 1 {
            return None;
        }
    }
    let (kind, name) = expanded.split_first()?;
    if name.is_empty() || !kind.is_ascii_alphabetic() || !name.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(((*kind, name.to_vec()), start + length))
}

/// Every name, checked against the markers.
fn decode_names(region: Region<'_>, tokens: &Tokens<'_>, names: usize, count: u32, markers: usize) -> Option<Vec<(u8, String)>> {
    let mut decoded = Vec::with_capacity(usize::try_from(count).ok()?);
    let mut at = names;
    for i in 0..count {
        if i % 256 == 0 {
            let marker = usize::try_from(region.u32_at(markers + 4 * usize::try_from(i / 256).ok()?)?).ok()?;
            if names.checked_add(marker)? != at {
                return None;
            }
        }
        let ((kind, name), next) = name_at(region, tokens, at)?;
        decoded.push((kind, String::from_utf8(name).ok()?));
        at = next;
    }
    Some(decoded)
}

/// The symbol addresses, from `kallsyms_offsets` and `kallsyms_relative_base` before the count
/// (through 6.3) or after the token index (6.4 on); in 7.x PC-relative offsets after the token
/// index.
fn offsets(region: Region<'_>, tokens: &Tokens<'_>, names: usize, count: u32, l: Layout) -> Option<Vec<u64>> {
    if l.pc_relative {
        return region.align_up(tokens.index + 512, l).and_then(|o| pc_relative_addresses(region, o, count));
    }
    let table_len = 4 * usize::try_from(count).ok()?;
    let padded = table_len.checked_add(7)? / 8 * 8;
    let before = names.checked_sub(16).and_then(|base| Some((base.checked_sub(padded)?, base)));
    let after = region.align_up(tokens.index + 512, l).and_then(|o| Some((o, region.align_up(o.checked_add(table_len)?, l)?)));
    [before, after].into_iter().flatten().find_map(|(offsets, base)| addresses(region, offsets, base, count))
}

/// The addresses if the PC-relative offsets at `offsets` (each entry's address plus its signed
/// value) decode to ascending addresses.
fn pc_relative_addresses(region: Region<'_>, offsets: usize, count: u32) -> Option<Vec<u64>> {
    let decoded: Vec<u64> = (0..usize::try_from(count).ok()?)
        .map(|i| {
            let at = offsets.checked_add(4 * i)?;
            let value = i32::from_le_bytes(region.u32_at(at)?.to_le_bytes());
            region.address(at).checked_add_signed(i64::from(value))
        })
        .collect::<Option<_>>()?;
    decoded.windows(2).all(|w| w[0] <= w[1]).then_some(decoded)
}

/// The addresses if the offsets at `offsets` and the base at `base` decode to ascending addresses.
fn addresses(region: Region<'_>, offsets: usize, base: usize, count: u32) -> Option<Vec<u64>> {
    let relative_base = region.u64_at(base)?;
    let raw: Vec<u32> = (0..usize::try_from(count).ok()?).map(|i| region.u32_at(offsets + 4 * i)).collect::<Option<_>>()?;
    // With absolute per-CPU symbols, kernel text and data are negative offsets.
    let signed = |w: u32| i32::from_le_bytes(w.to_le_bytes());
    let absolute_percpu = raw.iter().any(|w| signed(*w) < 0);
    let decoded: Vec<u64> = raw
        .iter()
        .map(|w| match signed(*w) {
            o if absolute_percpu && o >= 0 => Some(u64::from(*w)),
            // relative_base - 1 - o, with o negative.
            o if absolute_percpu => relative_base.checked_sub(1)?.checked_add(u64::from(o.unsigned_abs())),
            _ => relative_base.checked_add(u64::from(*w)),
        })
        .collect::<Option<_>>()?;
    decoded.windows(2).all(|w| w[0] <= w[1]).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xffff_ffff_8200_0000;

    /// Tokens: printable bytes stand for themselves, 0x80.. for pairs, the rest are unused.
    fn token_strings() -> Vec<Vec<u8>> {
        (0u8..=255)
            .map(|i| match i {
                0x21..=0x7e => vec![i],
                0x80..=0x9f => b"sched_".get(..usize::from(i - 0x7f).min(6)).unwrap_or_default().to_vec(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Encodes `name` with the `sched_` prefix token where it fits.
    fn encode(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        let rest = match name.strip_prefix("sched_") {
            Some(rest) => {
                body.push(0x85);
                rest
            }
            None => name,
        };
        body.extend_from_slice(rest.as_bytes());
        let mut out = if body.len() < 0x80 { vec![u8::try_from(body.len()).expect("short")] } else {
            vec![u8::try_from(body.len() & 0x7f).expect("7 bits") | 0x80, u8::try_from(body.len() >> 7).expect("short")]
        };
        out.extend(body);
        out
    }

    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }

    /// `(kind, name, address)` of `n` symbols: per-CPU ones first, then text and data.
    fn sample(n: u32) -> Vec<(u8, String, u64)> {
        (0..n)
            .map(|i| match i {
                0..=2 => (b'D', format!("percpu_{i}"), u64::from(i) * 64),
                7 => (b'T', format!("a_very_long_symbol_{}", "x".repeat(140)), BASE - 0x100_0000 + u64::from(i) * 16),
                _ => (if i % 3 == 0 { b't' } else { b'D' }, format!("sched_sym_{i}"), BASE - 0x100_0000 + u64::from(i) * 16),
            })
            .collect()
    }

    /// The tables in the 6.4+ order (`new_order`) or 6.1.y's (offsets first, 3-byte seqs before the tokens).
    fn tables(symbols: &[(u8, String, u64)], new_order: bool) -> Vec<u8> {
        let relative_base = BASE - 0x100_0000;
        let count = u32::try_from(symbols.len()).expect("few");
        let offsets: Vec<u8> = symbols
            .iter()
            .flat_map(|(_, _, a)| {
                let o = if *a < 0x100_0000 { i64::try_from(*a).expect("small") } else { -1 - i64::try_from(*a - relative_base).expect("small") };
                i32::try_from(o).expect("fits").to_le_bytes()
            })
            .collect();
        let mut out = vec![0xa5; 40];
        pad(&mut out);
        if !new_order {
            out.extend(&offsets);
            pad(&mut out);
            out.extend(relative_base.to_le_bytes());
        }
        out.extend(count.to_le_bytes());
        pad(&mut out);
        let names_start = out.len();
        let mut markers = Vec::new();
        for (i, (kind, name, _)) in symbols.iter().enumerate() {
            if i % 256 == 0 {
                markers.extend(u32::try_from(out.len() - names_start).expect("small").to_le_bytes());
            }
            out.extend(encode(*kind, name));
        }
        pad(&mut out);
        out.extend(markers);
        pad(&mut out);
        if !new_order {
            out.extend((0..count).flat_map(|i| i.to_le_bytes().into_iter().take(3)));
            pad(&mut out);
        }
        let mut index = Vec::new();
        let table_start = out.len();
        for token in token_strings() {
            index.extend(u16::try_from(out.len() - table_start).expect("small").to_le_bytes());
            out.extend(token);
            out.push(0);
        }
        pad(&mut out);
        out.extend(index);
        pad(&mut out);
        if new_order {
            out.extend(&offsets);
            pad(&mut out);
            out.extend(relative_base.to_le_bytes());
            out.extend((0..count).flat_map(|i| i.to_le_bytes().into_iter().take(3)));
        }
        out.extend([0x5a; 24]);
        out
    }

    /// The tables as 7.x writes them: 4-byte labels, the count right before the names,
    /// PC-relative offsets after the token index, no relative base.
    fn tables_7(symbols: &[(u8, String, u64)]) -> Vec<u8> {
        fn pad4(out: &mut Vec<u8>) {
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
        let count = u32::try_from(symbols.len()).expect("few");
        let mut out = vec![0xa5; 44];
        out.extend(count.to_le_bytes());
        let names_start = out.len();
        let mut markers = Vec::new();
        for (i, (kind, name, _)) in symbols.iter().enumerate() {
            if i % 256 == 0 {
                markers.extend(u32::try_from(out.len() - names_start).expect("small").to_le_bytes());
            }
            out.extend(encode(*kind, name));
        }
        pad4(&mut out);
        out.extend(markers);
        let mut index = Vec::new();
        let table_start = out.len();
        for token in token_strings() {
            index.extend(u16::try_from(out.len() - table_start).expect("small").to_le_bytes());
            out.extend(token);
            out.push(0);
        }
        pad4(&mut out);
        out.extend(index);
        pad4(&mut out);
        for (_, _, address) in symbols {
            let entry = BASE + u64::try_from(out.len()).expect("small");
            let value = i32::try_from(i64::from_le_bytes(address.wrapping_sub(entry).to_le_bytes())).expect("near the entry");
            out.extend(value.to_le_bytes());
        }
        out.extend([0x5a; 24]);
        out
    }

    #[test]
    fn tables_of_7x_decode() {
        for n in [257, 700] {
            // (PC-relative entries reach only 2 GiB: the per-CPU symbols get image addresses.)
            let symbols: Vec<_> = sample(n).into_iter().map(|(k, name, a)| (k, name, if a < BASE - 0x100_0000 { BASE - 0x200_0000 + a } else { a })).collect();
            let bytes = tables_7(&symbols);
            let found = super::symbols(Region { base: BASE, bytes: &bytes }).unwrap_or_else(|e| panic!("{n} symbols: {e}"));
            assert_eq!(found.len(), symbols.len());
            for (got, (kind, name, address)) in found.iter().zip(&symbols) {
                assert_eq!((got.kind, got.name.as_str(), got.address), (*kind, name.as_str(), *address));
            }
        }
    }

    fn check(new_order: bool, n: u32) {
        let symbols = sample(n);
        let bytes = tables(&symbols, new_order);
        let found = super::symbols(Region { base: BASE, bytes: &bytes }).unwrap_or_else(|e| panic!("{n} symbols: {e}"));
        assert_eq!(found.len(), symbols.len());
        for (got, (kind, name, address)) in found.iter().zip(&symbols) {
            assert_eq!((got.kind, got.name.as_str(), got.address), (*kind, name.as_str(), *address));
        }
    }

    #[test]
    fn tables_in_both_layouts_decode() {
        for n in [257, 512, 513, 700] {
            check(true, n);
            check(false, n);
        }
    }

    #[test]
    fn small_tables_are_not_taken_for_kallsyms() {
        let bytes = tables(&sample(100), true);
        assert!(matches!(symbols(Region { base: BASE, bytes: &bytes }), Err(KallsymsError::NoNames { .. })));
    }

    #[test]
    fn regions_without_tables_are_errors() {
        assert_eq!(symbols(Region { base: BASE, bytes: &[0; 4096] }), Err(KallsymsError::NoTokenTable { len: 4096 }));
        let symbols = sample(300);
        let mut bytes = tables(&symbols, true);
        // Cut the names short: the token table remains, the names do not fit.
        let at = memchr::memmem::find(&bytes, b"sym_100").expect("encoded name");
        bytes[at - 3] = 0;
        assert!(super::symbols(Region { base: BASE, bytes: &bytes }).is_err());
    }

    #[test]
    fn hostile_bytes_end_in_errors_or_consistent_tables() {
        let symbols = sample(300);
        let good = tables(&symbols, false);
        for i in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0x41;
            if let Ok(found) = super::symbols(Region { base: BASE, bytes: &bad }) {
                assert!(found.windows(2).all(|w| w[0].address <= w[1].address));
            }
        }
    }
}
