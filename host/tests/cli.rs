//! The `xsched` binary given bad arguments and bad files: each is refused with one line on
//! stderr, `xsched: ` and a message naming the flag or the file, and exit status 1 — never a
//! hang (FIFOs), a panic or a signal.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A command that has not finished by then counts as hung.
const HANG: Duration = Duration::from_secs(20);

/// A scratch directory with a FIFO, a regular file that is no core, and a valid trace.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("fifo");
        let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(status.success(), "mkfifo");
        std::fs::write(dir.path().join("not-a-core"), "hello\n").expect("write");
        let line = r#"{"t":0.0,"period":1,"tasks":[{"domain":"u1","pid":7,"comm":"db","state":"R","queued":true,"running":true,"decision":"run","runtime_ns":0}],"wall":1.0}"#;
        std::fs::write(dir.path().join("trace.jsonl"), format!("{line}\n{}\n", line.replace("\"t\":0.0", "\"t\":1.0"))).expect("write");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// Runs `xsched ARGS` in `cwd` with `env` set, and fails the test if it runs longer than
/// [`HANG`].
fn xsched(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xsched"));
    command.args(args).current_dir(cwd).env_remove("RUST_LOG").env_remove("XSCHED_JOURNAL").env_remove("XSCHED_KERNELS");
    command.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn xsched");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > HANG {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!("xsched {args:?} hung (killed after {HANG:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child.stdout.take().expect("stdout").read_to_end(&mut stdout).expect("read stdout");
    child.stderr.take().expect("stderr").read_to_end(&mut stderr).expect("read stderr");
    Output { status, stdout, stderr }
}

/// Requires `xsched ARGS` to fail with status 1 and exactly one stderr line, `xsched: …`,
/// holding every one of `names`.
fn refused(cwd: &Path, args: &[&str], env: &[(&str, &str)], names: &[&str]) {
    let out = xsched(cwd, args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "xsched {args:?}: {} (a signal has no code); stderr: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "xsched {args:?} panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "xsched {args:?}: one line on stderr, got: {stderr}");
    assert!(lines[0].starts_with("xsched: ") && stderr.ends_with('\n'), "xsched {args:?}: {stderr}");
    for name in names {
        assert!(lines[0].contains(name), "xsched {args:?}: {:?} does not name {name:?}", lines[0]);
    }
}

/// `xsched run` with a plugin and a domain (neither is reached) and `extra`.
fn run_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [&["run", "--plugin", "libpriority.so", "--domain", "u1=core:/nonexistent"][..], extra].concat()
}

#[test]
fn values_out_of_range_name_their_flag() {
    let s = Scratch::new();
    let cwd = s.dir.path();
    for (extra, flag) in [
        (&["--cpus", "0"][..], "--cpus"),
        (&["--period", "0"], "--period"),
        (&["--period", "60001"], "--period"),
        (&["--periods", "0"], "--periods"),
        (&["--cpus", "many"], "--cpus"),
    ] {
        refused(cwd, &run_with(extra), &[], &[flag]);
    }
    refused(cwd, &["ps", "--watch", "--interval", "0", "--domain", "u1=core:/nonexistent"], &[], &["--interval"]);
    refused(cwd, &["ps", "--watch", "--count", "0", "--domain", "u1=core:/nonexistent"], &[], &["--count"]);
    refused(cwd, &["ps", "--domain", "u1"], &[], &["--domain", "u1"]);
    refused(cwd, &["ps"], &[], &["--domain"]);
    refused(cwd, &["no-such-command"], &[], &["no-such-command"]);
    // Flags that a subcommand does not use are not accepted (and silently ignored) there.
    refused(cwd, &["probe", "--journal", "j", "--domain", "u1=core:/nonexistent"], &[], &["--journal"]);
    refused(cwd, &["timeline", "--kernels", "k", "t", "-o", "o.svg"], &[], &["--kernels"]);
}

#[test]
fn a_domain_named_twice_is_refused() {
    let s = Scratch::new();
    let cwd = s.dir.path();
    let twice = ["--domain", "u1=core:/a", "--domain", "u1=core:/b"];
    refused(cwd, &[&["run", "--plugin", "libpriority.so"][..], &twice].concat(), &[], &["--domain", "u1"]);
    refused(cwd, &[&["ps"][..], &twice].concat(), &[], &["--domain", "u1"]);
    refused(cwd, &["ps", "--domain", "u1=core:/a", "--domain", "u2=core:/a"], &[], &["u1", "u2", "same guest"]);
}

#[test]
fn fifos_and_directories_are_refused_without_hanging() {
    let s = Scratch::new();
    let cwd = s.dir.path();
    let fifo = s.arg("fifo");
    let dir = s.dir.path().display().to_string();
    let core = format!("u1=core:{fifo}");
    let ram = format!("u1=qemu:{fifo}");
    refused(cwd, &["ps", "--domain", &core], &[], &[&fifo, "FIFO"]);
    refused(cwd, &["probe", "--domain", &core], &[], &[&fifo, "FIFO"]);
    refused(cwd, &["probe", "--domain", &ram], &[], &[&fifo, "FIFO"]);
    refused(cwd, &["probe", "--domain", &format!("u1=core:{dir}")], &[], &[&dir, "directory"]);
    refused(cwd, &run_with(&["--config", &fifo]), &[], &["--config", &fifo, "FIFO"]);
    refused(cwd, &run_with(&["--trace", &fifo]), &[], &["--trace", &fifo, "FIFO"]);
    refused(cwd, &["release", "--all", "--journal", &fifo], &[], &["journal", &fifo, "FIFO"]);
    refused(cwd, &["park", "--domain", "u1=core:/nonexistent", "5", "--journal", &fifo], &[], &["journal", &fifo, "FIFO"]);
    refused(cwd, &["timeline", &fifo, "-o", &s.arg("out.svg")], &[], &[&fifo, "FIFO"]);
    refused(cwd, &["timeline", &s.arg("trace.jsonl"), "-o", &fifo], &[], &[&fifo, "FIFO"]);
    refused(cwd, &["profile", "gen", "--vmlinux", &fifo], &[], &[&fifo, "FIFO"]);
    let kernels = s.path("kernels");
    std::fs::create_dir(&kernels).expect("mkdir");
    std::process::Command::new("mkfifo").arg(kernels.join("6.1.json")).status().expect("mkfifo");
    refused(cwd, &["ps", "--kernels", &kernels.display().to_string(), "--domain", "u1=core:/nonexistent"], &[], &["6.1.json", "FIFO"]);
}

#[test]
fn a_mistyped_journal_is_an_error_that_names_it_and_creates_nothing() {
    let s = Scratch::new();
    let cwd = s.dir.path();
    let typo = s.arg("jornal.jsonl");
    refused(cwd, &["release", "--all", "--journal", &typo], &[], &["journal", &typo]);
    refused(cwd, &["unpark", "--domain", "u1=core:/nonexistent", "5", "--journal", &typo], &[], &["journal", &typo]);
    refused(cwd, &["release", "--all"], &[("XSCHED_JOURNAL", &typo)], &["journal", &typo]);
    assert!(!s.path("jornal.jsonl").exists(), "release and unpark created the journal");
}

#[test]
fn a_damaged_journal_still_releases() {
    let s = Scratch::new();
    let journal = s.path("journal.jsonl");
    let park = r#"{"op":"park","domain":"u1=core:/nonexistent","pid":5,"start_time":1,"addr":1,"saved_state":0}"#;
    let release = r#"{"op":"release","domain":"u1","pid":5,"start_time":1,"reason":"unparked"}"#;
    std::fs::write(&journal, format!("{park}\n\x1b[2Jgarbage\0\n{release}\n{{\"op\":\"park\",\"dom")).expect("write");
    let out = xsched(s.dir.path(), &["release", "--all", "--journal", &journal.display().to_string()], &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}: {stdout}{stderr}", out.status);
    assert!(stdout.contains("2 damaged line(s) skipped") && stdout.contains("nothing is parked"), "{stdout}");
    assert!(stderr.contains("line 2") && stderr.contains("line 4") && !stderr.contains('\x1b'), "{stderr}");
    assert_eq!(std::fs::read_to_string(&journal).expect("read"), format!("{park}\n\x1b[2Jgarbage\0\n{release}\n"), "the torn tail is cut off");
}

#[test]
fn an_empty_kernels_variable_counts_as_unset() {
    let s = Scratch::new();
    let core = format!("u1=core:{}", s.arg("not-a-core"));
    // With $XSCHED_KERNELS unset, the profiles are found (the source tree's), and the core file is
    // the problem; an empty value must not make "" the profile directory.
    refused(s.dir.path(), &["ps", "--domain", &core], &[("XSCHED_KERNELS", "")], &["not-a-core", "not an ELF"]);
}

#[test]
fn profile_gen_takes_kernels_and_help_makes_no_stale_claims() {
    let s = Scratch::new();
    let cwd = s.dir.path();
    refused(cwd, &["profile", "gen", "--vmlinux", "v", "--kernels", "k", "-o", "x.json"], &[], &["--kernels", "--output"]);
    for command in [&["--help"][..], &["probe", "--help"], &["ps", "--help"], &["timeline", "--help"], &["profile", "gen", "--help"], &["release", "--help"]] {
        let out = xsched(cwd, command, &[]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains("Usage:"), "{command:?}: {help}");
        if ["probe", "ps", "timeline", "profile"].contains(&command[0]) {
            assert!(!help.contains("--journal"), "{command:?} offers a journal it never opens: {help}");
        }
        if command[0] == "profile" {
            assert!(help.contains("--kernels") && help.contains("RELEASE.json"), "{help}");
        }
    }
}

#[test]
fn conventions_an_admin_expects() {
    let s = Scratch::new();
    let cwd = s.dir.path();
    // Bare `xsched` shows what it can do (on stderr, as a usage error: status 2).
    let out = xsched(cwd, &[], &[]);
    let help = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{help}");
    for command in ["probe", "ps", "park", "unpark", "release", "run", "timeline", "profile"] {
        assert!(help.contains(command), "bare xsched does not list {command}: {help}");
    }
    // Every subcommand that takes a domain takes it as --domain, and its help lists every kind.
    for command in ["probe", "ps", "park", "unpark", "run"] {
        let out = xsched(cwd, &[command, "--help"], &[]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command} --help: {help}");
        for form in ["--domain", "=qemu:", "=core:", "=xen:", "-v, --verbose", "-q, --quiet"] {
            assert!(help.contains(form), "{command} --help lacks {form}: {help}");
        }
    }
    refused(cwd, &["park", "5"], &[], &["--domain"]);
    refused(cwd, &["release", "--pid", "5"], &[], &["--domain"]);
    refused(cwd, &["-q", "-v", "ps", "--domain", "u1=core:/nonexistent"], &[], &["--quiet", "--verbose"]);
    // `-` is standard input and output: a trace read from stdin, the picture written to stdout.
    let trace = std::fs::File::open(s.path("trace.jsonl")).expect("trace");
    let out = Command::new(env!("CARGO_BIN_EXE_xsched"))
        .args(["timeline", "-", "-o", "-"])
        .current_dir(cwd)
        .stdin(trace)
        .output()
        .expect("run xsched timeline");
    let svg = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 tasks, 2 periods"), "the summary goes to stderr");
    // A name ending in .png gets a PNG.
    let out = xsched(cwd, &["timeline", &s.arg("trace.jsonl"), "-o", &s.arg("t.png")], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(s.path("t.png")).expect("png").starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    refused(cwd, &["timeline", &s.arg("trace.jsonl"), "-o", &s.arg("u.png")], &[("XSCHED_FONT", "/nonexistent.ttf")], &["font", "/nonexistent.ttf", "fonts-dejavu-core"]);
}

#[test]
fn the_service_files_in_dist_are_valid() {
    let s = Scratch::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The example settings parse: what stops the run is the domain list it leaves to the admin.
    let example = root.join("dist/xsched.toml");
    refused(s.dir.path(), &["run", "--config-file", &example.display().to_string()], &[], &["no domain to schedule", "xsched.toml"]);
    // A settings file's mistakes name the file and the line.
    std::fs::write(s.path("bad.toml"), "plugin = \"libpriority.so\"\nperiod-ms = 0\n").expect("write");
    refused(s.dir.path(), &["run", "--config-file", &s.arg("bad.toml")], &[], &["bad.toml", "line 2", "period-ms"]);
    // systemd accepts the unit: every key known, every command there (the binary under test
    // standing in for /usr/bin/xsched).
    let unit = std::fs::read_to_string(root.join("dist/xsched.service")).expect("unit");
    std::fs::write(s.path("xsched.service"), unit.replace("/usr/bin/xsched", env!("CARGO_BIN_EXE_xsched"))).expect("write");
    let out = Command::new("systemd-analyze").arg("verify").arg(s.path("xsched.service")).output().expect("systemd-analyze (package systemd)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
