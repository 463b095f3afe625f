//! Proof that profiles built from a kernel's own BTF and kallsyms equal the DWARF-built ones.
//!
//! For the pinned lab kernel `$XSCHED_LAB_KERNEL` names (default `6.1`; `scripts/test.sh` runs
//! this once per pin), from the lab cache (see `profile_gen_kernel.rs`): the profile from the
//! `vmlinuz` alone (its embedded vmlinux decompressed, struct layouts from its `.BTF`, symbols
//! from its kallsyms tables) must equal the one `profile gen --vmlinux` builds from the `-dbg`
//! package's DWARF and symbol table, field for field and symbol for symbol; so must the profile
//! from the vmlinuz with a System.map (written here from the vmlinux's symbol table). Without the
//! lab kernel these tests fail, naming the command that installs it; they are never skipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use object::{Object, ObjectSymbol, SymbolKind};
mod common;

use common::{kernel_env, lab_kernel_dir};
use xsched::profile::gen;
use xsched::profile::Profile;

/// The profile from DWARF, the reference.
fn from_dwarf() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        let path = lab_kernel_dir().join("vmlinux");
        gen::generate(&path).unwrap_or_else(|e| panic!("profile gen from DWARF failed: {e}"))
    })
}

/// Every difference between two profiles, one line each (empty when equal).
fn differences(btf: &Profile, dwarf: &Profile) -> String {
    let mut out = String::new();
    let header = |p: &Profile| (p.format_version, p.release.clone(), p.arch.clone(), p.banner.clone());
    if header(btf) != header(dwarf) {
        let _ = writeln!(out, "header: BTF {:?}, DWARF {:?}", header(btf), header(dwarf));
    }
    let names: std::collections::BTreeSet<&String> = btf.symbols.keys().chain(dwarf.symbols.keys()).collect();
    for name in names {
        let (b, d) = (btf.symbols.get(name), dwarf.symbols.get(name));
        if b != d {
            let _ = writeln!(out, "symbol {name}: BTF {b:x?}, DWARF {d:x?}");
        }
    }
    let structs: std::collections::BTreeSet<&String> = btf.structs.keys().chain(dwarf.structs.keys()).collect();
    for name in structs {
        let (b, d) = (btf.structs.get(name), dwarf.structs.get(name));
        match (b, d) {
            (Some(b), Some(d)) => {
                if b.size != d.size {
                    let _ = writeln!(out, "sizeof(struct {name}): BTF {}, DWARF {}", b.size, d.size);
                }
                let fields: std::collections::BTreeSet<&String> = b.fields.keys().chain(d.fields.keys()).collect();
                for field in fields {
                    if b.fields.get(field) != d.fields.get(field) {
                        let _ = writeln!(out, "{name}.{field}: BTF {:?}, DWARF {:?}", b.fields.get(field), d.fields.get(field));
                    }
                }
            }
            _ => {
                let _ = writeln!(out, "struct {name}: BTF {}, DWARF {}", b.is_some(), d.is_some());
            }
        }
    }
    let constants: std::collections::BTreeSet<&String> = btf.constants.keys().chain(dwarf.constants.keys()).collect();
    for name in constants {
        if btf.constants.get(name) != dwarf.constants.get(name) {
            let _ = writeln!(out, "constant {name}: BTF {:?}, DWARF {:?}", btf.constants.get(name), dwarf.constants.get(name));
        }
    }
    out
}

fn assert_same(btf: &Profile, what: &str) {
    let dwarf = from_dwarf();
    let diff = differences(btf, dwarf);
    assert!(diff.is_empty(), "the profile from {what} differs from the DWARF-built one:\n{diff}");
    assert_eq!(btf, dwarf);
    assert_eq!(btf.to_json(), dwarf.to_json());
}

#[test]
fn the_vmlinuz_alone_gives_the_dwarf_profile() {
    let vmlinuz = lab_kernel_dir().join("vmlinuz");
    let profile = gen::generate_from_btf(&vmlinuz, None).unwrap_or_else(|e| panic!("profile from the vmlinuz failed: {e}"));
    assert_eq!(profile.release, kernel_env("KERNEL_RELEASE"));
    assert_same(&profile, "the vmlinuz's BTF and kallsyms");
}

#[test]
fn the_vmlinuz_with_a_system_map_gives_the_dwarf_profile() {
    let dir = lab_kernel_dir();
    let data = std::fs::read(dir.join("vmlinux")).unwrap_or_else(|e| panic!("vmlinux: {e}"));
    let elf = object::File::parse(&*data).unwrap_or_else(|e| panic!("vmlinux: {e}"));
    // `nm -n`-style lines, as the kernel build writes System.map.
    let mut lines = BTreeMap::new();
    for symbol in elf.symbols() {
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty() || symbol.is_undefined() || matches!(symbol.kind(), SymbolKind::File | SymbolKind::Section) {
            continue;
        }
        let letter = if symbol.kind() == SymbolKind::Text { 't' } else { 'd' };
        let letter = if symbol.is_global() { letter.to_ascii_uppercase() } else { letter };
        lines.insert((symbol.address(), name.to_string()), letter);
    }
    let mut map = String::new();
    for ((address, name), letter) in &lines {
        let _ = writeln!(map, "{address:016x} {letter} {name}");
    }
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("System.map-{}", kernel_env("KERNEL_RELEASE")));
    std::fs::write(&path, map).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let profile = gen::generate_from_btf(&dir.join("vmlinuz"), Some(&path))
        .unwrap_or_else(|e| panic!("profile from the vmlinuz and System.map failed: {e}"));
    assert_same(&profile, "the vmlinuz's BTF and a System.map");
}

#[test]
fn the_vmlinux_btf_gives_the_dwarf_profile() {
    // The -dbg vmlinux carries .BTF too; with its own symbol table.
    let profile = gen::generate_from_btf(&lab_kernel_dir().join("vmlinux"), None)
        .unwrap_or_else(|e| panic!("profile from the vmlinux's BTF failed: {e}"));
    assert_same(&profile, "the vmlinux's BTF");
}

// ---- a running kernel's memory, without a profile ----

/// Physical memory holding the pinned kernel as its loader lays it out: the vmlinuz's embedded
/// vmlinux, each loadable segment at its physical address, `.bss` zero, and the NTP code's
/// `tick_nsec` as the running kernel sets it (HZ 250, the lab kernels' `CONFIG_HZ`). Not
/// relocated and without VMCOREINFO: a kernel that KASLR did not move.
fn memory_of_a_booted_kernel() -> xsched::memory::ImageMemory {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let dir = lab_kernel_dir();
    let vmlinuz = std::fs::read(dir.join("vmlinuz")).unwrap_or_else(|e| panic!("vmlinuz: {e}"));
    let vmlinux = xsched::profile::vmlinuz::decompress(&vmlinuz).unwrap_or_else(|e| panic!("decompress: {e}"));
    let elf = ElfFile64::<object::Endianness>::parse(&*vmlinux).unwrap_or_else(|e| panic!("embedded vmlinux: {e}"));
    let endian = elf.endian();
    let loads: Vec<_> = elf.elf_program_headers().iter().filter(|p| p.p_type(endian) == object::elf::PT_LOAD).collect();
    let top = loads.iter().map(|p| p.p_paddr(endian) + p.p_memsz(endian)).max().expect("segments");
    let mut ram = vec![0u8; usize::try_from(top + (1 << 20)).expect("fits")];
    for p in &loads {
        let size = |n: u64| usize::try_from(n).expect("fits");
        let (at, from, len) = (size(p.p_paddr(endian)), size(p.p_offset(endian)), size(p.p_filesz(endian)));
        ram[at..at + len].copy_from_slice(&vmlinux[from..from + len]);
    }
    // (Linux 7.x has no `tick_nsec`, and its profile needs no TICK_NSEC.)
    if let Some(tick_nsec) = dwarf_symbol("tick_nsec") {
        let at = usize::try_from(tick_nsec - 0xffff_ffff_8000_0000).expect("in the image");
        ram[at..at + 8].copy_from_slice(&4_000_000u64.to_le_bytes());
    }
    xsched::memory::ImageMemory::from_bytes(ram)
}

/// The address of `name` in the -dbg vmlinux's symbol table, if it has the symbol.
fn dwarf_symbol(name: &str) -> Option<u64> {
    let data = std::fs::read(lab_kernel_dir().join("vmlinux")).unwrap_or_else(|e| panic!("vmlinux: {e}"));
    let elf = object::File::parse(&*data).unwrap_or_else(|e| panic!("vmlinux: {e}"));
    elf.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address())
}

/// The address of `name` in the -dbg vmlinux's symbol table.
fn from_dwarf_symbol(name: &str) -> u64 {
    dwarf_symbol(name).unwrap_or_else(|| panic!("no symbol {name}"))
}

#[test]
fn a_kernel_in_memory_gives_the_dwarf_profile_without_any_file() {
    let mem = memory_of_a_booted_kernel();
    let built = xsched::linux::discover::build(&mem).unwrap_or_else(|e| panic!("no profile from memory: {e}"));
    assert!(built.source.contains("no VMCOREINFO"), "{}", built.source);
    assert_same(&built.profile, "the kernel's memory");
}

#[test]
fn forged_btf_in_memory_ends_in_an_error_not_a_profile() {
    use xsched::memory::GuestMemory;
    let start = from_dwarf_symbol("__start_BTF") - 0xffff_ffff_8000_0000;
    // A broken header.
    let mut mem = memory_of_a_booted_kernel();
    mem.write_phys(xsched::memory::Gpa(start), &[0x9e, 0xeb]).expect("write");
    let err = xsched::linux::discover::build(&mem).expect_err("forged magic").to_string();
    assert!(err.contains("malformed BTF") && err.contains("magic"), "{err}");

    // A well-formed BTF whose task_struct.tasks sits 16 bytes off: the task list does not walk.
    let mut mem = memory_of_a_booted_kernel();
    let at = usize::try_from(start).expect("small");
    let word = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let bytes = mem.bytes();
    let (type_off, type_len, str_off) = (word(bytes, at + 8) as usize, word(bytes, at + 12) as usize, word(bytes, at + 16) as usize);
    let strings = at + 24 + str_off;
    let name = memchr_name(&bytes[strings..], b"tasks").expect("the string `tasks`");
    let tasks = from_dwarf().offset("task_struct", "tasks").expect("tasks");
    let types = &bytes[at + 24 + type_off..at + 24 + type_off + type_len];
    let member = (0..types.len() - 12)
        .step_by(4)
        .find(|&o| word(types, o) == name && word(types, o + 8) == u32::try_from(tasks * 8).expect("small"))
        .expect("the member record of task_struct.tasks");
    let forged = u32::try_from(tasks * 8 + 128).expect("small");
    let gpa = xsched::memory::Gpa((at + 24 + type_off + member + 8) as u64);
    mem.write_phys(gpa, &forged.to_le_bytes()).expect("write");
    let err = xsched::linux::discover::build(&mem).expect_err("forged layout").to_string();
    assert!(err.contains("task list"), "{err}");
}

/// The offset of the NUL-terminated string `name` in a BTF string section.
fn memchr_name(strings: &[u8], name: &[u8]) -> Option<u32> {
    let mut offset = 0usize;
    for s in strings.split(|b| *b == 0) {
        if s == name {
            return u32::try_from(offset).ok();
        }
        offset += s.len() + 1;
    }
    None
}
