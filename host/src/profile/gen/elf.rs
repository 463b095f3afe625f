//! The kernel image: a vmlinux as an ELF file (format checks, symbols, bytes of initialized
//! data), or a running kernel's image as read from guest memory ([`Image::running`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use object::elf::SHF_ALLOC;
use object::read::elf::ElfFile64;
use object::{
    Architecture, CompressionFormat, Endianness, FileKind, Object, ObjectKind, ObjectSection, ObjectSymbol,
    RelocationMap, SectionFlags, SectionIndex, SectionKind, SymbolKind,
};

use super::ProfileError;

/// Longest C string read from the image (banner, state names).
const MAX_STRING: usize = 4096;
/// The size assumed at most for a symbol from a table without sizes (kallsyms, System.map),
/// which is sized by the distance to the next symbol (as drgn does).
const MAX_UNSIZED_SYMBOL: u64 = 1 << 20;

/// Where one symbol is, as the symbol table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SymbolInfo {
    /// Link-time address (section-relative in a relocatable object).
    pub address: u64,
    /// Size in bytes (0 when unknown); an upper bound only unless `exact_size`.
    pub size: u64,
    /// Whether `size` is the symbol's own (ELF symbol tables) rather than the distance to the next
    /// symbol (kallsyms, System.map), which may include padding.
    pub exact_size: bool,
    /// The section that holds it.
    pub section: Option<SectionIndex>,
    /// Whether it is global (or weak) rather than file-local.
    pub global: bool,
}

/// A running kernel's image, `_text` to `_end`, as read from its memory.
#[derive(Clone, Copy)]
struct Running<'data> {
    /// The link-time address of `bytes[0]`.
    base: u64,
    bytes: &'data [u8],
    /// How far KASLR moved the kernel: pointers in its data are link-time address + `slide`.
    slide: u64,
}

/// A parsed x86-64 ELF image over the bytes of the mapped file, or a running kernel's image.
pub(super) struct Image<'data> {
    path: &'data Path,
    elf: Option<ElfFile64<'data, Endianness>>,
    running: Option<Running<'data>>,
    /// Every defined, named data or code symbol, by name.
    symbols: HashMap<Cow<'data, str>, Vec<SymbolInfo>>,
}

impl<'data> Image<'data> {
    /// Checks that `data` is a 64-bit little-endian x86-64 ELF file and indexes its symbols.
    pub fn parse(path: &'data Path, data: &'data [u8]) -> Result<Self, ProfileError> {
        let generate = |reason: String| ProfileError::Generate { path: path.to_path_buf(), reason };
        match FileKind::parse(data) {
            Ok(FileKind::Elf64) => {}
            Ok(FileKind::Elf32) => {
                return Err(generate("a 32-bit ELF file: xsched supports x86-64 kernels only".into()));
            }
            _ if crate::profile::vmlinuz::is_bzimage(data) => {
                return Err(generate(
                    "not an ELF file but a compressed kernel image (bzImage/vmlinuz): give it as `--image` (types from \
                     its BTF), or use the vmlinux with debug info (usr/lib/debug/boot/vmlinux-RELEASE in Debian's \
                     linux-image-RELEASE-dbg package)"
                        .into(),
                ));
            }
            _ => return Err(generate("not an ELF file".into())),
        }
        let elf = ElfFile64::<Endianness>::parse(data).map_err(|e| generate(format!("malformed ELF file: {e}")))?;
        if !elf.is_little_endian() || elf.architecture() != Architecture::X86_64 {
            return Err(generate(format!(
                "an ELF file for {:?} ({}-endian): xsched supports x86-64 kernels only",
                elf.architecture(),
                if elf.is_little_endian() { "little" } else { "big" }
            )));
        }
        let mut symbols: HashMap<Cow<'data, str>, Vec<SymbolInfo>> = HashMap::new();
        for symbol in elf.symbols() {
            if symbol.is_undefined() || matches!(symbol.kind(), SymbolKind::Section | SymbolKind::File) {
                continue;
            }
            let Ok(name) = symbol.name() else { continue };
            if name.is_empty() {
                continue;
            }
            symbols.entry(Cow::Borrowed(name)).or_default().push(SymbolInfo {
                address: symbol.address(),
                size: symbol.size(),
                exact_size: true,
                section: symbol.section_index(),
                global: symbol.is_global(),
            });
        }
        Ok(Self { path, elf: Some(elf), running: None, symbols })
    }

    /// The image of a running kernel: `bytes` from `_text` (link-time address `base`) on, moved
    /// by `slide` (KASLR), with `symbols` as `(name, link-time address, global)`; `what` names it
    /// in errors. Its data is as the kernel left it, not as linked: see [`Self::is_running`].
    pub fn running(what: &'data Path, base: u64, bytes: &'data [u8], slide: u64, symbols: Vec<(String, u64, bool)>) -> Self {
        let mut image = Self { path: what, elf: None, running: Some(Running { base, bytes, slide }), symbols: HashMap::new() };
        image.replace_symbols(symbols);
        image
    }

    /// Whether this is a running kernel's image, whose variables hold run-time values (not
    /// their static initializers) and whose pointers are relocated.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// A [`ProfileError::Generate`] about this file.
    pub fn error(&self, reason: impl Into<String>) -> ProfileError {
        ProfileError::Generate { path: self.path.to_path_buf(), reason: reason.into() }
    }

    /// Whether a symbol called `name` exists.
    pub fn has_symbol(&self, name: &str) -> bool {
        self.symbols.contains_key(name)
    }

    /// Whether the file has a symbol table of its own (a vmlinux inside a vmlinuz has none).
    pub fn has_symbols(&self) -> bool {
        !self.symbols.is_empty()
    }

    /// Replaces the symbol table with `(name, address, global)` entries from a table without
    /// sizes (kallsyms, System.map): each is sized by the distance to the next higher address
    /// (at most [`MAX_UNSIZED_SYMBOL`]) and placed in the allocated section that holds it.
    pub fn replace_symbols(&mut self, entries: Vec<(String, u64, bool)>) {
        let mut addresses: Vec<u64> = entries.iter().map(|(_, a, _)| *a).collect();
        addresses.sort_unstable();
        addresses.dedup();
        let sections: Vec<(u64, u64, SectionIndex)> = self
            .elf
            .iter()
            .flat_map(|elf| elf.sections())
            .filter(|s| matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & u64::from(SHF_ALLOC) != 0))
            .filter(|s| s.kind() != SectionKind::UninitializedData && s.size() > 0)
            .map(|s| (s.address(), s.size(), s.index()))
            .collect();
        let mut symbols: HashMap<Cow<'data, str>, Vec<SymbolInfo>> = HashMap::new();
        for (name, address, global) in entries {
            let next = addresses.partition_point(|a| *a <= address);
            let size = addresses.get(next).map_or(0, |n| n - address).min(MAX_UNSIZED_SYMBOL);
            let section = sections
                .iter()
                .find(|(start, len, _)| address.checked_sub(*start).is_some_and(|o| o < *len))
                .map(|(_, _, index)| *index);
            symbols.entry(Cow::Owned(name)).or_default().push(SymbolInfo { address, size, exact_size: false, section, global });
        }
        self.symbols = symbols;
    }

    /// The link-time address and file bytes of the section called `name`, if it has any.
    pub fn section_region(&self, name: &str) -> Option<(u64, &'data [u8])> {
        let section = self.elf.as_ref()?.section_by_name(name)?;
        if section.kind() == SectionKind::UninitializedData {
            return None;
        }
        Some((section.address(), section.data().ok()?))
    }

    /// Whether this is a relocatable object (`gcc -c` output, a kernel module), whose DWARF needs
    /// its relocations applied; a linked vmlinux has them applied already.
    pub fn is_relocatable(&self) -> bool {
        self.elf.as_ref().is_some_and(|elf| elf.kind() == ObjectKind::Relocatable)
    }

    /// The symbol `name`: a global definition if there is one, else a unique local one.
    ///
    /// `Ok(None)` if absent; an error if several definitions disagree on the address.
    pub fn symbol_info(&self, name: &str) -> Result<Option<SymbolInfo>, ProfileError> {
        let Some(all) = self.symbols.get(name) else { return Ok(None) };
        let globals: Vec<&SymbolInfo> = all.iter().filter(|s| s.global).collect();
        let candidates: Vec<&SymbolInfo> = if globals.is_empty() { all.iter().collect() } else { globals };
        let Some(first) = candidates.first() else { return Ok(None) };
        if candidates.iter().any(|s| s.address != first.address) {
            let addresses: Vec<String> = candidates.iter().map(|s| format!("{:#x}", s.address)).collect();
            return Err(self.error(format!(
                "symbol `{name}` is ambiguous: {} definitions at {}",
                candidates.len(),
                addresses.join(", ")
            )));
        }
        Ok(Some(**first))
    }

    /// The addresses of `required` symbols (an error names every missing one) and of the
    /// `optional` ones that exist.
    pub fn symbol_addresses(
        &self,
        required: &[&str],
        optional: &[&str],
    ) -> Result<std::collections::BTreeMap<String, u64>, ProfileError> {
        let mut found = std::collections::BTreeMap::new();
        let mut missing = Vec::new();
        for name in required {
            match self.symbol_info(name)? {
                Some(s) => {
                    found.insert((*name).to_string(), s.address);
                }
                None => missing.push(format!("`{name}`")),
            }
        }
        if !missing.is_empty() {
            return Err(self.error(format!("symbol table lacks required symbol(s) {}", missing.join(", "))));
        }
        for name in optional {
            match self.symbol_info(name) {
                Ok(Some(s)) => {
                    found.insert((*name).to_string(), s.address);
                }
                Ok(None) => {}
                Err(e) => log::warn!("optional symbol left out: {e}"),
            }
        }
        Ok(found)
    }

    /// The file data of `symbol`'s section from `offset` bytes into the symbol to the section end.
    fn symbol_tail(&self, symbol: &SymbolInfo, offset: u64) -> Result<&'data [u8], ProfileError> {
        if let Some(running) = self.running {
            return symbol
                .address
                .checked_sub(running.base)
                .and_then(|o| o.checked_add(offset))
                .and_then(|start| usize::try_from(start).ok())
                .and_then(|start| running.bytes.get(start..))
                .ok_or_else(|| self.error(format!("symbol at {:#x}+{offset:#x} is not in the kernel image", symbol.address)));
        }
        let Some(elf) = &self.elf else { return Err(self.error("no image data")) };
        let index = symbol.section.ok_or_else(|| self.error(format!("symbol at {:#x} has no section", symbol.address)))?;
        let section = elf
            .section_by_index(index)
            .map_err(|e| self.error(format!("symbol at {:#x}: bad section index: {e}", symbol.address)))?;
        if section.kind() == SectionKind::UninitializedData {
            return Err(self.error(format!(
                "the data of the symbol at {:#x} is not in the file: its section {} has no contents (SHT_NOBITS), as in \
                 a debug-only file from `objcopy --only-keep-debug`; use the complete vmlinux",
                symbol.address,
                section.name().unwrap_or("?")
            )));
        }
        let data = section.data().map_err(|e| self.error(format!("symbol at {:#x}: {e}", symbol.address)))?;
        symbol
            .address
            .checked_sub(section.address())
            .and_then(|o| o.checked_add(offset))
            .and_then(|start| usize::try_from(start).ok())
            .and_then(|start| data.get(start..))
            .ok_or_else(|| self.error(format!("symbol at {:#x}+{offset:#x} is not in its section's file data", symbol.address)))
    }

    /// `len` bytes at `offset` into the data of `symbol`.
    pub fn symbol_bytes(&self, symbol: &SymbolInfo, offset: u64, len: u64) -> Result<&'data [u8], ProfileError> {
        let tail = self.symbol_tail(symbol, offset)?;
        usize::try_from(len).ok().and_then(|len| tail.get(..len)).ok_or_else(|| {
            self.error(format!("{len} bytes at symbol {:#x}+{offset:#x} are not in the file", symbol.address))
        })
    }

    /// A little-endian unsigned integer of `size` (1 to 8) bytes at `offset` into `symbol`.
    pub fn read_uint(&self, symbol: &SymbolInfo, offset: u64, size: u64) -> Result<u64, ProfileError> {
        if !(1..=8).contains(&size) {
            return Err(self.error(format!("cannot read a {size}-byte integer")));
        }
        let bytes = self.symbol_bytes(symbol, offset, size)?;
        Ok(bytes.iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// The NUL-terminated string that starts at `symbol` (within its size, if known).
    pub fn symbol_cstr(&self, symbol: &SymbolInfo) -> Result<&'data [u8], ProfileError> {
        let tail = self.symbol_tail(symbol, 0)?;
        let limit = if symbol.size == 0 { MAX_STRING } else { usize::try_from(symbol.size).unwrap_or(MAX_STRING) };
        Ok(until_nul(tail.get(..limit.min(MAX_STRING)).unwrap_or(tail)))
    }

    /// The strings an array of `const char *` at `symbol` points to (a linked image only).
    ///
    /// A symbol whose size is only a bound (see [`SymbolInfo::exact_size`]) ends at the first
    /// NULL pointer: the zero padding up to the next symbol.
    pub fn read_string_array(&self, symbol: &SymbolInfo) -> Result<Vec<&'data [u8]>, ProfileError> {
        if self.is_relocatable() {
            return Err(self.error("cannot follow pointers in a relocatable object"));
        }
        let count = symbol.size / 8;
        let mut strings = Vec::new();
        for i in 0..count {
            let pointer = self.read_uint(symbol, i * 8, 8)?;
            if pointer == 0 && !symbol.exact_size {
                break;
            }
            strings.push(self.cstr_at(pointer)?);
        }
        Ok(strings)
    }

    /// The NUL-terminated string at link-time virtual address `address`.
    fn cstr_at(&self, address: u64) -> Result<&'data [u8], ProfileError> {
        if let Some(running) = self.running {
            let bytes = address
                .checked_sub(running.slide)
                .and_then(|link| link.checked_sub(running.base))
                .and_then(|offset| usize::try_from(offset).ok())
                .and_then(|offset| running.bytes.get(offset..))
                .ok_or_else(|| self.error(format!("address {address:#x} is not in the kernel image")))?;
            return Ok(until_nul(bytes.get(..MAX_STRING).unwrap_or(bytes)));
        }
        let Some(elf) = &self.elf else { return Err(self.error("no image data")) };
        for section in elf.sections() {
            let SectionFlags::Elf { sh_flags } = section.flags() else { continue };
            if sh_flags & u64::from(SHF_ALLOC) == 0 || section.kind() == SectionKind::UninitializedData {
                continue;
            }
            let Some(offset) = address.checked_sub(section.address()).filter(|o| *o < section.size()) else {
                continue;
            };
            let len = (section.size() - offset).min(MAX_STRING as u64);
            if let Some(bytes) = self.section_slice(&section, offset, len) {
                return Ok(until_nul(bytes));
            }
        }
        Err(self.error(format!("address {address:#x} is not in any section with file data")))
    }

    /// `len` bytes at `offset` in an uncompressed section, if present in the file.
    fn section_slice(&self, section: &object::read::elf::ElfSection64<'data, '_, Endianness>, offset: u64, len: u64) -> Option<&'data [u8]> {
        let data = section.data().ok()?;
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        data.get(start..end)
    }

    /// The bytes of the section called `name`, or `None` if the file has none.
    ///
    /// Compressed sections (`SHF_COMPRESSED`, from `--compress-debug-sections`) are refused.
    pub fn section_data(&self, name: &str) -> Result<Option<&'data [u8]>, ProfileError> {
        let Some(section) = self.elf.as_ref().and_then(|elf| elf.section_by_name(name)) else { return Ok(None) };
        let range = section.compressed_file_range().map_err(|e| self.error(format!("section {name}: {e}")))?;
        if range.format != CompressionFormat::None {
            return Err(self.error(format!(
                "section {name} is compressed ({:?}); decompress it first (`objcopy --decompress-debug-sections`)",
                range.format
            )));
        }
        if section.kind() == SectionKind::UninitializedData {
            return Ok(Some(&[]));
        }
        section.data().map(Some).map_err(|e| self.error(format!("section {name}: {e}")))
    }

    /// The relocations of section `name` as a map from offset to value, for a relocatable object.
    pub fn relocation_map(&self, name: &str) -> Result<Option<RelocationMap>, ProfileError> {
        let Some(section) = self.elf.as_ref().and_then(|elf| elf.section_by_name(name)) else { return Ok(None) };
        section.relocation_map().map(Some).map_err(|e| self.error(format!("relocations of {name}: {e}")))
    }
}

/// The bytes before the first NUL (all of them if there is none).
fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|b| *b == 0).next().unwrap_or(bytes)
}
