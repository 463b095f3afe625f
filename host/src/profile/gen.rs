//! `xsched profile gen`: builds a [`super::Profile`] from a vmlinux's symbols and DWARF, or from a
//! kernel image's BTF and kallsyms ([`generate_from_btf`]).
//!
//! The vmlinux (hundreds of MB, most of it DWARF) is mapped, never read whole. From its ELF symbol
//! table come the `linux_banner` text (hence the release) and the symbol addresses; from
//! `.debug_info` the struct layouts, found by a lazy scan that stops once every wanted struct is
//! seen (see `dwarf`); from a per-architecture table the `#define` constants DWARF does not record
//! (see [`constants`]), cross-checked against the image where the image records them. The table
//! covers a range of kernel versions; any other release is refused.
//!
//! Linked images (a vmlinux) are read as they are; relocatable objects (`gcc -c` output) have
//! their DWARF relocations applied, which lets tests feed small C files through the same path.

mod btf_layouts;
pub mod constants;
mod dwarf;
mod elf;
mod wanted;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use super::btf::Btf;
use super::spec::{self, ProfileSpec};
use super::{kallsyms, system_map, vmlinuz, Profile, ProfileError, StructLayout, FORMAT_VERSION};
use elf::Image;

/// The banner prefix that precedes the release.
const BANNER_PREFIX: &str = "Linux version ";

/// Generates the profile of the kernel `vmlinux`: everything in [`spec::REQUIRED`] (an error
/// names whatever is missing) and what exists of [`spec::OPTIONAL`], of every scheduler flavour
/// ([`spec::FLAVOURS`]) and of every preempt-count location; the result must hold one flavour
/// and one location completely (an error names what each lacks).
///
/// Fails if the file is not an x86-64 ELF file, has no DWARF, lacks a required symbol, struct or
/// field, or is a kernel version outside the constants table's range.
pub fn generate(vmlinux: &Path) -> Result<Profile, ProfileError> {
    let alternatives = spec::FLAVOURS.iter().chain(spec::PREEMPT_COUNT).chain(spec::KERNFS_PARENT).map(|(_, s)| *s);
    let optional: Vec<&ProfileSpec> = [&spec::OPTIONAL, &spec::CLASSES].into_iter().chain(alternatives).collect();
    let profile = generate_with_spec(vmlinux, &spec::REQUIRED, &optional)?;
    profile.validate().map_err(|e| ProfileError::Generate {
        path: vmlinux.to_path_buf(),
        reason: format!("the generated profile does not validate: {e}"),
    })?;
    Ok(profile)
}

/// Generates a profile holding `required` (an error names whatever is missing) and what exists of
/// `optional`, with the same checks as [`generate`] but without validating against
/// [`spec::REQUIRED`]. For tests and tools that want other symbols and structs.
pub fn generate_with_spec(
    vmlinux: &Path,
    required: &ProfileSpec,
    optional: &[&ProfileSpec],
) -> Result<Profile, ProfileError> {
    let map = map_file(vmlinux)?;
    let image = Image::parse(vmlinux, &map)?;
    dwarf::require_debug_info(&image)?;
    build(&image, required, optional, |required, optional| dwarf::struct_layouts(&image, required, optional))
}

/// Generates the profile of a kernel without DWARF: the struct layouts from its BTF (`.BTF`), the
/// symbols from `system_map` if given, else from the image's symbol table, else from its kallsyms
/// tables. `image` is a vmlinuz (bzImage: its embedded vmlinux is decompressed) or a vmlinux.
///
/// Everything else is as in [`generate`]: the same spec, constants table, image checks and
/// validation, so the profile equals the DWARF-built one of the same kernel.
pub fn generate_from_btf(image: &Path, system_map: Option<&Path>) -> Result<Profile, ProfileError> {
    let map = map_file(image)?;
    let decompressed;
    let data: &[u8] = if vmlinuz::is_bzimage(&map) {
        decompressed = vmlinuz::decompress(&map).map_err(|e| ProfileError::Generate { path: image.to_path_buf(), reason: e.to_string() })?;
        &decompressed
    } else {
        &map
    };
    let mut elf = Image::parse(image, data)?;
    let symbols = match system_map {
        Some(path) => {
            let symbols = system_map::read(path).map_err(|e| ProfileError::Generate { path: path.to_path_buf(), reason: e.to_string() })?;
            Some(symbols.into_iter().map(|s| (s.name, s.address, s.kind.is_ascii_uppercase())).collect())
        }
        None if elf.has_symbols() => None,
        None => {
            let (base, bytes) = elf.section_region(".rodata").ok_or_else(|| elf.error("no .rodata section to find kallsyms in"))?;
            let symbols = kallsyms::symbols(kallsyms::Region { base, bytes })
                .map_err(|e| elf.error(format!("{e}; give the kernel's System.map with --system-map")))?;
            log::info!("{}: {} symbols from the image's kallsyms tables", image.display(), symbols.len());
            Some(symbols.into_iter().map(|s| (s.name, s.address, s.kind.is_ascii_uppercase())).collect())
        }
    };
    if let Some(symbols) = symbols {
        elf.replace_symbols(symbols);
        let missing: Vec<&str> = spec::REQUIRED.symbols.iter().copied().filter(|s| !elf.has_symbol(s)).collect();
        if !missing.is_empty() {
            return Err(elf.error(format!(
                "the kernel's {} lacks required symbol(s) {} (kallsyms holds data symbols only with \
                 CONFIG_KALLSYMS_ALL): give the kernel's System.map with --system-map",
                if system_map.is_some() { "System.map" } else { "kallsyms" },
                missing.join(", ")
            )));
        }
    }
    let blob = elf.section_data(".BTF")?.filter(|b| !b.is_empty()).ok_or_else(|| {
        elf.error(
            "no BTF (.BTF section absent or empty): a kernel built without CONFIG_DEBUG_INFO_BTF; use the vmlinux with \
             debug info (usr/lib/debug/boot/vmlinux-RELEASE in Debian's linux-image-RELEASE-dbg package) with --vmlinux",
        )
    })?;
    from_btf(&elf, blob)
}

/// Generates the profile of a running kernel from its memory: `image` holds its image from
/// `_text` on (link-time address `text`, moved by `slide`), `symbols` its kallsyms symbols as
/// `(name, link-time address, global)`, `btf` its BTF; `what` names the guest in errors. The
/// checks against the image are those a running kernel still allows (see [`constants`]).
pub fn generate_running(
    what: &Path,
    text: u64,
    image: &[u8],
    slide: u64,
    symbols: Vec<(String, u64, bool)>,
    btf: &[u8],
) -> Result<Profile, ProfileError> {
    from_btf(&Image::running(what, text, image, slide, symbols), btf)
}

/// The profile of `elf` with struct layouts from the BTF `blob`, validated.
fn from_btf(elf: &Image<'_>, blob: &[u8]) -> Result<Profile, ProfileError> {
    let btf = Btf::parse(blob).map_err(|e| elf.error(format!("malformed BTF: {e}")))?;
    let alternatives = spec::FLAVOURS.iter().chain(spec::PREEMPT_COUNT).chain(spec::KERNFS_PARENT).map(|(_, s)| *s);
    let optional: Vec<&ProfileSpec> = [&spec::OPTIONAL, &spec::CLASSES].into_iter().chain(alternatives).collect();
    let profile = build(elf, &spec::REQUIRED, &optional, |required, optional| {
        btf_layouts::struct_layouts(&btf, required, optional)
            .map_err(|e| elf.error(format!("malformed BTF: {e}")))?
            .map_err(|missing| elf.error(format!("BTF lacks what xsched needs: {missing}")))
    })?;
    profile.validate().map_err(|e| elf.error(format!("the generated profile does not validate: {e}")))?;
    Ok(profile)
}

/// The profile of `image` with struct layouts from `layouts`: banner, release, symbols and
/// constants (table and image), checked against the image.
fn build(
    image: &Image<'_>,
    required: &ProfileSpec,
    optional: &[&ProfileSpec],
    layouts: impl FnOnce(&[(&str, &[&str])], &[(&str, &[&str])]) -> Result<BTreeMap<String, StructLayout>, ProfileError>,
) -> Result<Profile, ProfileError> {
    let (banner, release) = banner(image)?;
    let arch = "x86_64";
    // Refuse an unsupported version before the expensive part.
    let table = constants::table_for(arch, &release).map_err(|reason| image.error(reason))?;
    let optional_symbols: Vec<&str> = optional.iter().flat_map(|s| s.symbols.iter().copied()).collect();
    let optional_structs: Vec<(&str, &[&str])> = optional.iter().flat_map(|s| s.structs.iter().copied()).collect();
    let symbols = image.symbol_addresses(required.symbols, &optional_symbols)?;
    let structs = layouts(required.structs, &optional_structs)?;
    // An alternative's constants only where the kernel has its symbols and fields: a flavour
    // that does not apply contributes nothing (a running 7.x kernel, say, records no TICK_NSEC,
    // which only 6.12's EEVDF needs).
    let present = |spec: &&&ProfileSpec| {
        spec.symbols.iter().all(|s| symbols.contains_key(*s))
            && spec.structs.iter().all(|(name, fields)| structs.get(*name).is_some_and(|l| fields.iter().all(|f| l.fields.contains_key(*f))))
    };
    let optional_constants: Vec<&str> = optional.iter().filter(present).flat_map(|s| s.constants.iter().copied()).collect();
    let mut constants = BTreeMap::new();
    for (name, is_required) in required.constants.iter().map(|c| (*c, true)).chain(optional_constants.iter().map(|c| (*c, false))) {
        match constants::lookup(table, name).map_or_else(|| constants::from_image(image, name), |v| Ok(Some(v)))? {
            Some(value) => {
                constants.insert(name.to_string(), value);
            }
            None if is_required => {
                return Err(image.error(format!("constant `{name}` is neither in the {arch} constants table nor recorded by the image")));
            }
            None => {}
        }
    }
    let profile = Profile { format_version: FORMAT_VERSION, release, arch: arch.into(), banner, symbols, structs, constants };
    let confirmed = constants::check_image(image, &profile)?;
    log::debug!("constants confirmed by the image: {}", confirmed.join(", "));
    Ok(profile)
}

/// Checks `profile`'s constants against what the vmlinux records (see [`constants`]) and returns
/// the names of those it confirmed; a contradiction is an error.
pub fn verify_constants(vmlinux: &Path, profile: &Profile) -> Result<Vec<&'static str>, ProfileError> {
    let map = map_file(vmlinux)?;
    let image = Image::parse(vmlinux, &map)?;
    constants::check_image(&image, profile)
}

/// Maps `path` read-only.
fn map_file(path: &Path) -> Result<Mmap, ProfileError> {
    let io = |source| ProfileError::Io { path: path.to_path_buf(), source };
    let file = crate::files::open_regular(File::options().read(true), path).map_err(io)?;
    // SAFETY: the mapping is private and read-only, and lives only for this generation. The one
    // hazard is another process truncating or rewriting the vmlinux meanwhile (SIGBUS or changing
    // bytes); that is the usual contract of tools that map build artifacts, and every read of the
    // bytes is bounds-checked, so changed contents yield errors, never out-of-bounds access.
    unsafe { Mmap::map(&file) }.map_err(io)
}

/// The `linux_banner` text and the release it names.
fn banner(image: &Image<'_>) -> Result<(String, String), ProfileError> {
    let symbol = image
        .symbol_info("linux_banner")?
        .ok_or_else(|| image.error("symbol table lacks `linux_banner`: not a Linux kernel image?"))?;
    let bytes = image.symbol_cstr(&symbol)?;
    let text = std::str::from_utf8(bytes).map_err(|_| image.error("`linux_banner` is not UTF-8 text"))?;
    let release = text
        .strip_prefix(BANNER_PREFIX)
        .and_then(|rest| rest.split_whitespace().next())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| image.error(format!("`linux_banner` does not start with {BANNER_PREFIX:?}: {text:?}")))?;
    Ok((text.to_string(), release.to_string()))
}
