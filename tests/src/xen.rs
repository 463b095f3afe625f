//! The Xen lab from a test: builds xsched (`--features xen`) and the lab's boot files
//! (`tests/xen/build.sh`), boots Xen with a PV dom0 and two PV domUs under QEMU
//! (`tests/xen/boot.sh`), and runs commands in dom0 over its control channel.
//!
//! dom0's control channel is `tests/lab/control` on its second serial port (the QEMU lab's
//! protocol: `XSC seq cmd` → `XSC-BEGIN seq`, output, `XSC-END seq rc`). The domUs' consoles are
//! logged by xenconsoled in dom0 (`/var/log/xen/console/guest-NAME.log`); their own `/proc` view
//! (`XSV` rounds, `tests/lab/view`) is read from there. QEMU dies with the lab (drop) and with the
//! test process (`PR_SET_PDEATHSIG`).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ProcView;

/// How long Xen, dom0 and both domUs may take to come up under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long one dom0 command may take unless told otherwise.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// Console lines that mean a kernel is unhappy (a write of ours broke it, say).
const PROBLEMS: [&str; 6] = ["WARNING:", "BUG:", "Oops", "list_add corruption", "general protection", "Kernel panic"];
/// The domUs `tests/xen/domus` defines.
pub const DOMUS: [&str; 2] = ["u1", "u2"];

/// The lab's QEMU, killed and reaped when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A booted Xen lab.
pub struct XenLab {
    dir: PathBuf,
    qemu: Qemu,
    control: UnixStream,
    pending: Vec<u8>,
    seq: u64,
    /// From QEMU's start to both domUs having started their workloads.
    pub boot_time: Duration,
}

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds xsched with the Xen backend and the `priority` plugin (release: dom0 runs emulated;
/// without the default `libvirt` feature: dom0 has no libvirt, and its image no libvirt
/// libraries); returns the directory holding them.
fn build_xsched() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--no-default-features", "--features", "xen", "-p", "xsched", "-p", "priority"])
        .current_dir(workspace())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building xsched --features xen failed");
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from).join("release")
}

impl XenLab {
    /// Builds and boots the lab; returns once both domUs are up.
    pub fn boot() -> Self {
        let bin = build_xsched();
        let dir = std::env::temp_dir().join(format!("xsched-xenlab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("lab directory");
        let xen = workspace().join("tests/xen");
        let out = Command::new(xen.join("build.sh")).arg(&dir).arg(&bin).output().expect("run tests/xen/build.sh");
        assert!(out.status.success(), "tests/xen/build.sh failed: {}", String::from_utf8_lossy(&out.stderr));

        let started = Instant::now();
        let mut boot = Command::new(xen.join("boot.sh"));
        boot.arg(&dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(dir.join("qemu.log")).expect("qemu.log"));
        // SAFETY: prctl is async-signal-safe and touches no memory of ours; it makes QEMU (boot.sh
        // execs it) die with this thread, the test's, so no QEMU outlives a killed test.
        unsafe {
            boot.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let qemu = Qemu(boot.spawn().expect("start tests/xen/boot.sh"));
        let console = dir.join("console.log");
        let mut lab = loop {
            if let Ok(control) = UnixStream::connect(dir.join("control.sock")) {
                break Self { dir, qemu, control, pending: Vec::new(), seq: 0, boot_time: Duration::ZERO };
            }
            assert!(started.elapsed() < BOOT_TIMEOUT, "QEMU never opened the control socket");
            std::thread::sleep(Duration::from_millis(100));
        };
        loop {
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            assert!(!text.contains("XSCHED-LAB ERROR"), "the Xen lab failed to boot:\n{}", tail(&text, 40));
            if DOMUS.iter().all(|d| text.contains(&format!("XEN-LAB UP {d} "))) {
                break;
            }
            assert!(lab.qemu.0.try_wait().expect("wait").is_none(), "QEMU exited:\n{}", tail(&text, 40));
            assert!(started.elapsed() < BOOT_TIMEOUT, "the domUs did not come up in {BOOT_TIMEOUT:?}:\n{}", tail(&text, 40));
            std::thread::sleep(Duration::from_millis(200));
        }
        lab.boot_time = started.elapsed();
        lab
    }

    /// Runs `command` (one line of `sh`) in dom0; returns its exit code and output.
    pub fn exec(&mut self, command: &str, timeout: Duration) -> (i32, String) {
        assert!(!command.contains('\n'), "one line only");
        self.seq += 1;
        let seq = format!("{}.{}", std::process::id(), self.seq);
        self.control.write_all(format!("XSC {seq} {command}\n").as_bytes()).expect("send to dom0");
        let begin = format!("XSC-BEGIN {seq}\n").into_bytes();
        let end = format!("\nXSC-END {seq} ").into_bytes();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(b) = find(&self.pending, &begin) {
                let from = b + begin.len();
                if let Some(e) = find(&self.pending[from..], &end).map(|e| from + e) {
                    let code_at = e + end.len();
                    if let Some(nl) = self.pending[code_at..].iter().position(|&c| c == b'\n').map(|n| code_at + n) {
                        let code = String::from_utf8_lossy(&self.pending[code_at..nl]).trim().parse().expect("exit code");
                        let output = String::from_utf8_lossy(&self.pending[from..e]).into_owned();
                        self.pending.drain(..=nl);
                        return (code, output);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "dom0: no answer to {command:?} within {timeout:?}");
            self.control.set_read_timeout(Some(left)).expect("timeout");
            let mut chunk = [0u8; 65536];
            match self.control.read(&mut chunk) {
                Ok(0) => panic!("dom0's control channel closed"),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => panic!("dom0's control channel: {e}"),
            }
        }
    }

    /// Runs `command` (one line of `sh`) in dom0, requires success, returns its stdout. The output
    /// travels gzip'd and base64'd: dom0's serial port moves about 2 KB/s under TCG.
    pub fn exec_packed(&mut self, command: &str, timeout: Duration) -> String {
        let packed = self.exec_ok(&format!("set -o pipefail; ({command}) | gzip -c | base64"), timeout);
        let mut child = Command::new("sh")
            .args(["-c", "base64 -d | gzip -dc"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run base64 and gzip");
        child.stdin.take().expect("stdin").write_all(packed.as_bytes()).expect("write to base64");
        let out = child.wait_with_output().expect("base64 | gzip");
        assert!(out.status.success(), "unpacking the output of {command:?}");
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs `command` in dom0, requires exit code 0, returns its output.
    pub fn exec_ok(&mut self, command: &str, timeout: Duration) -> String {
        let (code, out) = self.exec(command, timeout);
        assert_eq!(code, 0, "dom0: {command} failed:\n{out}");
        out
    }

    /// A domU's domain id.
    pub fn domid(&mut self, domu: &str) -> u32 {
        self.exec_ok(&format!("xl domid {domu}"), EXEC_TIMEOUT).trim().parse().expect("domid")
    }

    /// The last `lines` lines of a domU's console log.
    pub fn console(&mut self, domu: &str, lines: u32) -> String {
        self.exec_packed(&format!("tail -n {lines} /var/log/xen/console/guest-{domu}.log"), EXEC_TIMEOUT)
    }

    /// The domU's next complete view of its own processes, begun after this call.
    pub fn next_view(&mut self, domu: &str) -> ProcView {
        let last = ProcView::parse_all(&self.console(domu, 200)).last().map_or(0, |v| v.round);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(view) = ProcView::parse_all(&self.console(domu, 200)).into_iter().rev().find(|v| v.round > last) {
                return view;
            }
            assert!(Instant::now() < deadline, "{domu}: no new view within 60 s");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Lines of the domUs' consoles and dom0's that say the kernel is unhappy.
    pub fn problems(&mut self) -> Vec<String> {
        let dom0 = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let domus: Vec<String> = DOMUS.iter().map(|d| self.console(d, 100_000)).collect();
        std::iter::once(dom0)
            .chain(domus)
            .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|l| PROBLEMS.iter().any(|p| l.contains(p)))
            .collect()
    }
}

impl Drop for XenLab {
    /// Stops QEMU (the `qemu` field drops after this), then removes the lab's files unless
    /// `XSCHED_XENLAB_KEEP` is set.
    fn drop(&mut self) {
        let _ = self.qemu.0.kill();
        let _ = self.qemu.0.wait();
        if std::env::var_os("XSCHED_XENLAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
