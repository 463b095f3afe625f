//! `profile gen` on a small C fixture (`tests/data/profile_fixture.c`), compiled at test time.
//!
//! The fixture is built twice: as an object (`gcc -g -c`, the input `profile gen` reads; a
//! relocatable ELF whose DWARF needs its relocations applied) and as a program that prints the
//! compiler's own `offsetof`/`sizeof` for each checked member path (a linked ELF with DWARF, which
//! is read as well). The generator must agree with the compiler on both, name whatever is missing,
//! and refuse bad inputs with a clear message and without panicking.
//!
//! Needs `gcc`, `objcopy` and `nm` (`scripts/install-deps.sh` installs them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use xsched::profile::gen::{self, constants};
use xsched::profile::spec::ProfileSpec;
use xsched::profile::{FieldLayout, Profile, ProfileError};

const FIXTURE_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/profile_fixture.c");

/// The compiled fixture and the layout its compiler reports.
struct Fixture {
    dir: PathBuf,
    object: PathBuf,
    program: PathBuf,
    /// `(struct, path)` → (offset, size); the path `.` holds `sizeof(struct)`.
    truth: BTreeMap<(String, String), (u64, u64)>,
}

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("profile_gen").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Runs a tool, failing the test with a hint on how to install it if it is missing.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e}; install the build tools with `sudo scripts/install-deps.sh` (gcc, binutils)")
    });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn compile_object(dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let object = dir.join(name);
    let mut args = vec!["-g", "-O0", "-c", FIXTURE_SOURCE, "-o"];
    let object_str = object.to_str().expect("UTF-8 temp path");
    args.push(object_str);
    args.extend_from_slice(defines);
    run("gcc", &args);
    object
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = work_dir("fixture");
        let object = compile_object(&dir, "fixture.o", &[]);
        let program = dir.join("layout");
        run("gcc", &["-g", "-O0", "-DPRINT_LAYOUT", FIXTURE_SOURCE, "-o", program.to_str().expect("UTF-8 temp path")]);
        let printed = run(program.to_str().expect("UTF-8 temp path"), &[]);
        let mut truth = BTreeMap::new();
        for line in printed.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let [strukt, path, offset, size] = words[..] else { panic!("bad layout line {line:?}") };
            let number = |s: &str| s.parse::<u64>().unwrap_or_else(|e| panic!("bad number in {line:?}: {e}"));
            truth.insert((strukt.to_string(), path.to_string()), (number(offset), number(size)));
        }
        assert!(truth.len() > 30, "the layout program printed too little:\n{printed}");
        Fixture { dir, object, program, truth }
    })
}

/// A spec that lives for the test run.
fn spec(symbols: &[&str], structs: &[(&str, &[&str])]) -> &'static ProfileSpec {
    let symbols: Vec<&'static str> = symbols.iter().map(|s| &*String::leak(s.to_string())).collect();
    let structs: Vec<(&'static str, &'static [&'static str])> = structs
        .iter()
        .map(|(name, paths)| {
            let paths: Vec<&'static str> = paths.iter().map(|p| &*String::leak(p.to_string())).collect();
            (&*String::leak(name.to_string()), &*Vec::leak(paths))
        })
        .collect();
    Box::leak(Box::new(ProfileSpec { symbols: Vec::leak(symbols), structs: Vec::leak(structs), constants: &[] }))
}

const NOTHING: ProfileSpec = ProfileSpec { symbols: &[], structs: &[], constants: &[] };

/// The spec of every struct and path the layout program printed.
fn truth_spec(fixture: &Fixture) -> &'static ProfileSpec {
    let mut by_struct: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (strukt, path) in fixture.truth.keys() {
        let paths = by_struct.entry(strukt).or_default();
        if path != "." {
            paths.push(path);
        }
    }
    let structs: Vec<(&str, &[&str])> = by_struct.iter().map(|(s, p)| (*s, p.as_slice())).collect();
    spec(&["linux_banner", "fixture_counter", "fixture_outer"], &structs)
}

fn assert_matches_compiler(input: &Path) {
    let fixture = fixture();
    let profile = gen::generate_with_spec(input, truth_spec(fixture), &[])
        .unwrap_or_else(|e| panic!("generate {}: {e}", input.display()));
    let mut checked = 0;
    for ((strukt, path), (offset, size)) in &fixture.truth {
        let layout = profile.structs.get(strukt).unwrap_or_else(|| panic!("struct {strukt} missing"));
        if path == "." {
            assert_eq!(layout.size, *size, "sizeof(struct {strukt})");
        } else {
            let field = layout.fields.get(path).unwrap_or_else(|| panic!("{strukt}.{path} missing"));
            assert_eq!(*field, FieldLayout { offset: *offset, size: *size }, "{strukt}.{path} in {}", input.display());
        }
        checked += 1;
    }
    assert_eq!(checked, fixture.truth.len());
}

fn generate_err(input: &Path, required: &ProfileSpec, optional: &[&ProfileSpec]) -> String {
    match gen::generate_with_spec(input, required, optional) {
        Ok(profile) => panic!("{} should have been refused, got {profile:?}", input.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn layouts_match_the_compiler_in_an_object_file() {
    assert_matches_compiler(&fixture().object);
}

#[test]
fn layouts_match_the_compiler_in_a_linked_program() {
    assert_matches_compiler(&fixture().program);
}

#[test]
fn banner_release_and_symbols_come_from_the_symbol_table() {
    let fixture = fixture();
    let required = spec(&["linux_banner", "fixture_counter", "fixture_local", "fixture_touch"], &[]);
    let profile = gen::generate_with_spec(&fixture.program, required, &[]).expect("generate");
    assert_eq!(profile.banner, "Linux version 6.1.0-fixture (xsched@fixture) (gcc) #1 SMP\n");
    assert_eq!(profile.release, "6.1.0-fixture");
    assert_eq!(profile.arch, "x86_64");
    assert_eq!(profile.format_version, xsched::profile::FORMAT_VERSION);
    // `nm` is the independent reader of the same symbol table.
    let nm = run("nm", &[fixture.program.to_str().expect("UTF-8 temp path")]);
    for name in required.symbols {
        let line = nm
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(*name))
            .unwrap_or_else(|| panic!("nm does not list {name}"));
        let address = u64::from_str_radix(line.split_whitespace().next().unwrap_or_default(), 16).expect("nm address");
        assert_eq!(profile.symbols.get(*name), Some(&address), "{name}");
    }
}

#[test]
fn optional_entries_are_left_out_when_absent() {
    let fixture = fixture();
    let required = spec(&["linux_banner"], &[("inner", &["a"])]);
    let optional = spec(
        &["fixture_counter", "no_such_symbol"],
        &[("inner", &["b", "no_such_field", "a.not_a_struct"]), ("no_such_struct", &["x"]), ("opaque", &["x"])],
    );
    let profile = gen::generate_with_spec(&fixture.object, required, &[optional]).expect("generate");
    assert!(profile.symbols.contains_key("fixture_counter"));
    assert!(!profile.symbols.contains_key("no_such_symbol"));
    let inner = &profile.structs["inner"];
    assert_eq!(inner.fields.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert!(!profile.structs.contains_key("no_such_struct"));
    assert!(!profile.structs.contains_key("opaque"), "a declaration is not a definition");
}

#[test]
fn missing_symbols_structs_and_fields_are_named() {
    let object = &fixture().object;
    let err = generate_err(object, spec(&["linux_banner", "no_such_symbol", "other_missing"], &[]), &[]);
    assert!(err.contains(&object.display().to_string()), "{err}");
    assert!(err.contains("`no_such_symbol`") && err.contains("`other_missing`"), "{err}");

    let required = spec(
        &["linux_banner"],
        &[("outer", &["c", "nope", "in.zzz", "deep.deep_inner.nope"]), ("no_such_struct", &["x"]), ("opaque", &["x"])],
    );
    let err = generate_err(object, required, &[]);
    for expected in ["`outer.nope`", "`outer.in.zzz`", "`outer.deep.deep_inner.nope`", "`no_such_struct`", "`opaque`"] {
        assert!(err.contains(expected), "{expected} not named in: {err}");
    }
    assert!(!err.contains("`outer.c`"), "{err}");
}

#[test]
fn bit_fields_and_paths_through_pointers_are_refused() {
    let object = &fixture().object;
    let err = generate_err(object, spec(&["linux_banner"], &[("outer", &["flag"])]), &[]);
    assert!(err.contains("`outer.flag`") && err.contains("bit-field"), "{err}");
    let err = generate_err(object, spec(&["linux_banner"], &[("outer", &["ptr.a"])]), &[]);
    assert!(err.contains("`outer.ptr.a`") && err.contains("not an embedded struct"), "{err}");
    let err = generate_err(object, spec(&["linux_banner"], &[("outer", &[""])]), &[]);
    assert!(err.contains("empty component"), "{err}");
}

#[test]
fn the_real_spec_names_what_the_fixture_lacks() {
    let object = &fixture().object;
    let err = gen::generate(object).expect_err("the fixture is no kernel").to_string();
    assert!(err.contains("`init_task`") && err.contains("`runqueues`"), "{err}");
}

#[test]
fn files_that_are_not_elf_are_refused() {
    let dir = work_dir("not_elf");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "just some text, not a kernel\n").expect("write");
    let err = generate_err(&text, &NOTHING, &[]);
    assert!(err.contains("not an ELF file") && err.contains("notes.txt"), "{err}");

    let empty = dir.join("empty");
    std::fs::write(&empty, b"").expect("write");
    assert!(generate_err(&empty, &NOTHING, &[]).contains("not an ELF file"));

    // The boot-protocol header of a bzImage (what /boot/vmlinuz is).
    let mut bzimage = vec![0u8; 0x1000];
    bzimage[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    bzimage[0x202..0x206].copy_from_slice(b"HdrS");
    let vmlinuz = dir.join("vmlinuz");
    std::fs::write(&vmlinuz, &bzimage).expect("write");
    let err = generate_err(&vmlinuz, &NOTHING, &[]);
    assert!(err.contains("bzImage") && err.contains("-dbg"), "{err}");

    let missing = dir.join("does-not-exist");
    match gen::generate(&missing) {
        Err(ProfileError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn stripped_files_are_refused_for_lack_of_dwarf() {
    let fixture = fixture();
    let stripped = fixture.dir.join("stripped.o");
    run("objcopy", &["--strip-debug", fixture.object.to_str().expect("UTF-8"), stripped.to_str().expect("UTF-8")]);
    let err = generate_err(&stripped, spec(&["linux_banner"], &[("outer", &["c"])]), &[]);
    assert!(err.contains("no DWARF") && err.contains("stripped.o"), "{err}");
    // Without a symbol table either, the missing DWARF is still what is reported.
    let bare = fixture.dir.join("bare.o");
    run("objcopy", &["--strip-all", fixture.object.to_str().expect("UTF-8"), bare.to_str().expect("UTF-8")]);
    let err = generate_err(&bare, spec(&["linux_banner"], &[("outer", &["c"])]), &[]);
    assert!(err.contains("no DWARF") && err.contains("bare.o"), "{err}");
    // A debug-only file has the DWARF but not the banner's bytes.
    let debug_only = fixture.dir.join("debug-only.o");
    run("objcopy", &["--only-keep-debug", fixture.object.to_str().expect("UTF-8"), debug_only.to_str().expect("UTF-8")]);
    let err = generate_err(&debug_only, spec(&["linux_banner"], &[("outer", &["c"])]), &[]);
    assert!(err.contains("only-keep-debug") && err.contains(".rodata"), "{err}");
}

#[test]
fn other_architectures_are_refused() {
    let fixture = fixture();
    let original = std::fs::read(&fixture.object).expect("read object");
    let dir = work_dir("arch");

    let mut elf32 = original.clone();
    elf32[4] = 1; // EI_CLASS = ELFCLASS32
    let path = dir.join("elf32.o");
    std::fs::write(&path, &elf32).expect("write");
    assert!(generate_err(&path, &NOTHING, &[]).contains("32-bit"));

    let mut arm = original;
    arm[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine = EM_AARCH64
    let path = dir.join("aarch64.o");
    std::fs::write(&path, &arm).expect("write");
    let err = generate_err(&path, &NOTHING, &[]);
    assert!(err.contains("x86-64 kernels only") && err.contains("Aarch64"), "{err}");
}

#[test]
fn releases_the_constants_table_was_not_checked_against_are_refused() {
    let dir = work_dir("old_release");
    let object = compile_object(&dir, "old.o", &["-DFIXTURE_RELEASE=\"5.10.0-30-amd64\""]);
    let err = generate_err(&object, spec(&["linux_banner"], &[]), &[]);
    assert!(err.contains("5.10.0-30-amd64") && err.contains("not among the versions"), "{err}");
}

#[test]
fn sched_policies_match_the_uapi_header() {
    // SCHED_* are user ABI: the host's <linux/sched.h> (linux-libc-dev) must agree with the table.
    let dir = work_dir("uapi");
    let source = dir.join("policies.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\n#include <linux/sched.h>\nint main(void) { printf(\"%d %d %d %d %d %d\\n\", \
         SCHED_NORMAL, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE); return 0; }\n",
    )
    .expect("write");
    let program = dir.join("policies");
    run("gcc", &[source.to_str().expect("UTF-8"), "-o", program.to_str().expect("UTF-8")]);
    let printed = run(program.to_str().expect("UTF-8"), &[]);
    let names = ["SCHED_NORMAL", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE", "SCHED_DEADLINE"];
    for (name, value) in names.iter().zip(printed.split_whitespace()) {
        let value: u64 = value.parse().expect("number");
        assert_eq!(constants::lookup(constants::X86_64, name), Some(value), "{name}");
    }
}

/// Deterministic xorshift, so a failure reproduces.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn corrupt_and_truncated_inputs_fail_without_panicking() {
    let fixture = fixture();
    let original = std::fs::read(&fixture.object).expect("read object");
    let (info_start, info_len) = {
        use object::{Object, ObjectSection};
        let file = object::File::parse(&*original).expect("parse fixture");
        let (start, len) = file.section_by_name(".debug_info").and_then(|s| s.file_range()).expect("fixture has DWARF");
        (usize::try_from(start).expect("offset"), usize::try_from(len).expect("length"))
    };
    let required = truth_spec(fixture);
    let dir = work_dir("corrupt");
    let path = dir.join("corrupt.o");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut failures = 0;
    for round in 0..300 {
        let mut bytes = original.clone();
        if round % 10 == 9 {
            // Truncate anywhere.
            let len = usize::try_from(next(&mut state) % original.len() as u64).expect("length");
            bytes.truncate(len);
        } else {
            // Flip a few bytes, mostly inside .debug_info, sometimes anywhere.
            for _ in 0..1 + round % 4 {
                let at = if round % 3 == 0 {
                    usize::try_from(next(&mut state) % bytes.len() as u64).expect("offset")
                } else {
                    info_start + usize::try_from(next(&mut state) % info_len as u64).expect("offset")
                };
                bytes[at] ^= u8::try_from(next(&mut state) % 255 + 1).expect("byte");
            }
        }
        std::fs::write(&path, &bytes).expect("write");
        if gen::generate_with_spec(&path, required, &[]).is_err() {
            failures += 1;
        }
    }
    assert!(failures > 0, "no corruption was noticed at all");
}

#[test]
fn the_generated_fixture_profile_round_trips_through_json() {
    let fixture = fixture();
    let profile = gen::generate_with_spec(&fixture.object, truth_spec(fixture), &[]).expect("generate");
    let json = profile.to_json();
    let parsed: Profile = serde_json::from_str(&json).expect("parse back");
    assert_eq!(parsed, profile);
}
