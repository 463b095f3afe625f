//! `profile gen` on the lab's real kernel, checked against gdb and the committed profile.
//!
//! The vmlinux is `$XSCHED_VMLINUX` if set, else the pinned lab kernel that `$XSCHED_LAB_KERNEL`
//! names (`tests/lab/kernels/NAME.env`, default `6.1`; `scripts/test.sh` runs these tests once per
//! pinned kernel) in the lab cache, `${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}/kernel-<release>_<version>/vmlinux`,
//! which `scripts/install-deps.sh` (ending in `tests/lab/fetch-kernel.sh`) installs. Without it
//! these tests fail, naming that command; they are never skipped.
//!
//! gdb is the independent reader: one batch run (loading this vmlinux takes gdb ~30 s) prints
//! `ptype /o` of every struct in the profile and the address of every symbol.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod common;

use common::{kernel_env, lab_kernel_dir, repo_root};
use xsched::profile::gen;
use xsched::profile::Profile;

/// The vmlinux under test and whether it is the pinned lab kernel.
fn vmlinux() -> (PathBuf, bool) {
    if let Some(path) = std::env::var_os("XSCHED_VMLINUX").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "XSCHED_VMLINUX={} does not exist", path.display());
        return (path, false);
    }
    (lab_kernel_dir().join("vmlinux"), true)
}

fn generated() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        let (path, _) = vmlinux();
        gen::generate(&path).unwrap_or_else(|e| panic!("profile gen failed: {e}"))
    })
}

fn committed_path(release: &str) -> PathBuf {
    repo_root().join("kernels").join(format!("{release}.json"))
}

#[test]
fn regenerating_gives_exactly_the_committed_profile() {
    let (path, pinned) = vmlinux();
    let profile = generated();
    if pinned {
        assert_eq!(profile.release, kernel_env("KERNEL_RELEASE"), "the lab kernel's release");
    }
    let committed = committed_path(&profile.release);
    let text = std::fs::read_to_string(&committed).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it with `cargo run -p xsched --release -- profile gen --vmlinux {}`",
            committed.display(),
            path.display()
        )
    });
    let fresh = profile.to_json();
    if fresh != text {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.json", profile.release));
        std::fs::write(&out, &fresh).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        panic!("{} differs from a fresh generation: `diff {} {}`", committed.display(), committed.display(), out.display());
    }
    // And the committed file loads and validates as a profile.
    assert_eq!(&Profile::load(&committed).unwrap_or_else(|e| panic!("{e}")), profile);
    assert!(text.len() < 64 * 1024, "the profile should be kilobytes, is {} bytes", text.len());
}

#[test]
fn constants_are_confirmed_by_the_kernel_image() {
    let (path, _) = vmlinux();
    let confirmed = gen::verify_constants(&path, generated()).unwrap_or_else(|e| panic!("{e}"));
    for name in [
        "TASK_RUNNING",
        "TASK_INTERRUPTIBLE",
        "TASK_UNINTERRUPTIBLE",
        "__TASK_STOPPED",
        "__TASK_TRACED",
        "EXIT_DEAD",
        "EXIT_ZOMBIE",
        "TASK_PARKED",
        "PF_KTHREAD",
        "MAX_RT_PRIO",
        "SCHED_NORMAL",
        "NICE_0_LOAD",
        "START_KERNEL_MAP",
    ] {
        assert!(confirmed.contains(&name), "{name} was not checked against the image: {confirmed:?}");
    }
}

#[test]
fn the_lab_kernels_vmlinuz_is_refused() {
    let vmlinuz = lab_kernel_dir().join("vmlinuz");
    let err = gen::generate(&vmlinuz).expect_err("a bzImage is no vmlinux").to_string();
    assert!(err.contains("bzImage") && err.contains("vmlinuz") && err.contains("-dbg"), "{err}");
}

// ---- gdb ----

/// gdb's answers: `ptype /o` output per struct and `p/x &symbol` output per symbol.
struct GdbOutput {
    structs: BTreeMap<String, String>,
    symbols: BTreeMap<String, String>,
}

fn gdb() -> &'static GdbOutput {
    static OUTPUT: OnceLock<GdbOutput> = OnceLock::new();
    OUTPUT.get_or_init(|| {
        let (path, _) = vmlinux();
        let profile = generated();
        let mut args: Vec<String> = vec!["-batch".into(), "-nx".into(), path.display().to_string()];
        for name in profile.structs.keys() {
            args.extend(["-ex".into(), format!("echo @@@struct {name}\\n"), "-ex".into(), format!("ptype /o struct {name}")]);
        }
        for name in profile.symbols.keys() {
            args.extend(["-ex".into(), format!("echo @@@symbol {name}\\n"), "-ex".into(), format!("p/x (unsigned long)&{name}")]);
        }
        let output = Command::new("gdb")
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run gdb: {e}; install it with `sudo scripts/install-deps.sh`"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "gdb failed: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
        let mut result = GdbOutput { structs: BTreeMap::new(), symbols: BTreeMap::new() };
        let mut current: Option<(bool, String, String)> = None;
        let finish = |current: Option<(bool, String, String)>, result: &mut GdbOutput| {
            if let Some((is_struct, name, text)) = current {
                if is_struct { result.structs.insert(name, text) } else { result.symbols.insert(name, text) };
            }
        };
        for line in stdout.lines() {
            if let Some(rest) = line.strip_prefix("@@@") {
                finish(current.take(), &mut result);
                let (kind, name) = rest.split_once(' ').unwrap_or_else(|| panic!("bad marker {line:?}"));
                current = Some((kind == "struct", name.to_string(), String::new()));
            } else if let Some((_, _, text)) = current.as_mut() {
                text.push_str(line);
                text.push('\n');
            }
        }
        finish(current, &mut result);
        result
    })
}

/// One member in gdb's `ptype /o` tree.
#[derive(Debug, Default)]
struct Node {
    /// Absolute offset; `None` for union members, which sit at the union's offset.
    offset: Option<u64>,
    size: u64,
    name: Option<String>,
    aggregate: bool,
    bit_field: bool,
    children: Vec<Node>,
    /// `total size (bytes)` printed inside an aggregate.
    total: Option<u64>,
}

/// The member name of a C declaration as gdb prints it (`char comm[16];`, `long (*fn)(...);`).
fn declared_name(decl: &str) -> Option<String> {
    let mut text = decl.trim().trim_end_matches(';').trim();
    if let Some((before, _)) = text.rsplit_once(" : ") {
        text = before.trim();
    }
    if let Some(start) = text.find("(*") {
        let rest = text.get(start + 2..)?;
        return rest.split(')').next().map(|n| n.trim().to_string());
    }
    while text.ends_with(']') {
        text = text.get(..text.rfind('[')?)?.trim_end();
    }
    text.rsplit(|c: char| c.is_whitespace() || c == '*').next().filter(|n| !n.is_empty()).map(str::to_string)
}

/// Parses one `ptype /o` listing into its root node.
fn parse_ptype(text: &str) -> Node {
    let mut stack: Vec<Node> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed == "<no data fields>" {
            continue;
        }
        if trimmed.contains("type = ") {
            assert!(trimmed.ends_with('{'), "unexpected header {line:?}");
            stack.push(Node { aggregate: true, ..Node::default() });
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('}') {
            let mut node = stack.pop().unwrap_or_else(|| panic!("unbalanced {line:?}"));
            let name = rest.trim().trim_end_matches(';').trim();
            node.name = (!name.is_empty()).then(|| name.to_string());
            match stack.last_mut() {
                Some(parent) => parent.children.push(node),
                None => return node,
            }
            continue;
        }
        let Some(comment) = trimmed.strip_prefix("/*") else { panic!("unexpected line {line:?}") };
        let (comment, decl) = comment.split_once("*/").unwrap_or_else(|| panic!("unterminated comment {line:?}"));
        let decl = decl.trim();
        let top = stack.last_mut().unwrap_or_else(|| panic!("member outside a struct: {line:?}"));
        if decl.is_empty() {
            if let Some(total) = comment.trim().strip_prefix("total size (bytes):") {
                top.total = Some(total.trim().parse().unwrap_or_else(|e| panic!("{line:?}: {e}")));
            }
            continue; // holes and padding
        }
        let (offset, size, bit_field) = match comment.split_once('|') {
            Some((offset, size)) => {
                let bit_field = offset.contains(':');
                let offset = offset.split(':').next().unwrap_or_default().trim();
                let offset = (!offset.is_empty()).then(|| offset.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")));
                (offset, size.trim().parse().unwrap_or_else(|e| panic!("{line:?}: {e}")), bit_field)
            }
            None => (None, comment.trim().parse().unwrap_or_else(|e| panic!("{line:?}: {e}")), false),
        };
        if decl.ends_with('{') {
            stack.push(Node { offset, size, aggregate: true, ..Node::default() });
        } else {
            top.children.push(Node { offset, size, name: declared_name(decl), bit_field, ..Node::default() });
        }
    }
    panic!("ptype listing ended inside a struct:\n{text}");
}

/// Every member path (anonymous aggregates transparent) → (offset, size, bit-field).
fn flatten(node: &Node, prefix: &str, base: u64, out: &mut BTreeMap<String, (u64, u64, bool)>) {
    for child in &node.children {
        let offset = child.offset.unwrap_or(base);
        match &child.name {
            None if child.aggregate => flatten(child, prefix, offset, out),
            None => {}
            Some(name) => {
                let path = format!("{prefix}{name}");
                out.insert(path.clone(), (offset, child.size, child.bit_field));
                if child.aggregate {
                    flatten(child, &format!("{path}."), offset, out);
                }
            }
        }
    }
}

#[test]
fn gdb_listing_parser_reads_nested_unions_and_declarations() {
    let listing = "\
/* offset      |    size */  type = struct t {
/*      0      |      16 */    struct {
/*      0      |       8 */        void *p;
/*      8      |       4 */        union {
/*                     4 */            unsigned int u;
/*                     2 */            short s[2];

                                       /* total size (bytes):    4 */
                                   };
/* XXX  4-byte padding   */

                                   /* total size (bytes):   16 */
                               } named;
/*     16: 0   |       4 */    unsigned int bit : 1;
/* XXX  7-byte hole      */
/*     24      |       8 */    long (*fn)(struct restart_block *);
/*     32      |      16 */    char comm[16];
/*     48      |       0 */    struct empty {
                                   <no data fields>

                                   /* total size (bytes):    0 */
                               } nothing;

                               /* total size (bytes):   48 */
                             }
";
    let root = parse_ptype(listing);
    assert_eq!(root.total, Some(48));
    let mut flat = BTreeMap::new();
    flatten(&root, "", 0, &mut flat);
    assert_eq!(flat["named"], (0, 16, false));
    assert_eq!(flat["named.p"], (0, 8, false));
    assert_eq!(flat["named.u"], (8, 4, false));
    assert_eq!(flat["named.s"], (8, 2, false));
    assert_eq!(flat["bit"], (16, 4, true));
    assert_eq!(flat["fn"], (24, 8, false));
    assert_eq!(flat["comm"], (32, 16, false));
    assert_eq!(flat["nothing"], (48, 0, false));
    assert_eq!(declared_name("const struct sched_class *sched_class;").as_deref(), Some("sched_class"));
    assert_eq!(declared_name("struct list_head queue[100];").as_deref(), Some("queue"));
    assert_eq!(declared_name("int (*p)[4];").as_deref(), Some("p"));
}

#[test]
fn every_struct_field_matches_gdb() {
    let profile = generated();
    let gdb = gdb();
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for (name, layout) in &profile.structs {
        let listing = gdb.structs.get(name).unwrap_or_else(|| panic!("gdb printed nothing for struct {name}"));
        assert!(listing.contains("type = struct"), "gdb has no struct {name}:\n{listing}");
        let root = parse_ptype(listing);
        if root.total != Some(layout.size) {
            mismatches.push(format!("sizeof(struct {name}): profile {}, gdb {:?}", layout.size, root.total));
        }
        let mut flat = BTreeMap::new();
        flatten(&root, "", 0, &mut flat);
        for (path, field) in &layout.fields {
            match flat.get(path) {
                Some((offset, size, false)) if *offset == field.offset && *size == field.size => checked += 1,
                other => mismatches.push(format!("{name}.{path}: profile {field:?}, gdb {other:?}")),
            }
        }
    }
    assert!(mismatches.is_empty(), "profile and gdb disagree:\n{}", mismatches.join("\n"));
    let total: usize = profile.structs.values().map(|s| s.fields.len()).sum();
    assert_eq!(checked, total);
}

#[test]
fn every_symbol_matches_gdb() {
    let profile = generated();
    let gdb = gdb();
    let mut mismatches = Vec::new();
    for (name, address) in &profile.symbols {
        let printed = gdb.symbols.get(name).map(|s| s.trim()).unwrap_or_default();
        let value = printed
            .split_once(" = 0x")
            .and_then(|(_, hex)| u64::from_str_radix(hex.trim(), 16).ok());
        if value != Some(*address) {
            mismatches.push(format!("{name}: profile {address:#x}, gdb {printed:?}"));
        }
    }
    assert!(mismatches.is_empty(), "profile and gdb disagree:\n{}", mismatches.join("\n"));
}
