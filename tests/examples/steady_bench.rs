//! Benchmark: what `xsched run` costs two real lab guests in steady state, when no decision
//! changes. Two guests (one vCPU each) run CPU hogs named `victim`; the `testing-panic` fixture
//! ranks them all in one class. Rows, each over the same window length in the same run:
//!
//! 1. baseline: no xsched; the host CPU each VM's QEMU gets;
//! 2. steady, nothing parked (`--cpus 2`): the same, with xsched running beside;
//! 3. steady, one task held parked (`--cpus 1`: one admitted, the other parked and kept so).
//!
//! For each: the VMs' QEMU CPU (and, for 2, the share of the baseline they keep), xsched's own
//! CPU (loop and supervisor), and the guest pauses per second counted from the STOP events of
//! each guest's second (operator's) QMP monitor — what a period costs the guests.
//!
//! `cargo run --release -p xsched-lab --example steady_bench -- [SECONDS]`; the kernel is
//! `$XSCHED_LAB_KERNEL` (`scripts/bench-steady.sh` runs it on each pinned kernel). Uses the
//! release `xsched` binary and plugins (built by the script).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xsched_lab::{Guest, GuestSpec, Lab, Workload};

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ).
const TICKS: f64 = 100.0;

/// utime + stime of `pid`, in ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the comm.
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Counts the STOP events a guest's operator monitor reports until `until`.
fn count_stops(guest: &Guest, until: Instant) -> std::thread::JoinHandle<u64> {
    let mut qmp = guest.operator_qmp().expect("operator monitor");
    std::thread::spawn(move || {
        let mut stops = 0;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if qmp.wait_event("STOP", left).is_err() {
                break;
            }
            stops += 1;
        }
        stops
    })
}

/// One row: over `window`, CPU % of each QEMU, of `extra` processes, and pauses per second.
fn measure(guests: &[Guest], extra: &[u32], window: Duration) -> (Vec<f64>, f64, Vec<f64>) {
    let until = Instant::now() + window;
    let counters: Vec<_> = guests.iter().map(|g| count_stops(g, until)).collect();
    let qemu_before: Vec<u64> = guests.iter().map(|g| cpu_ticks(g.qemu_pid())).collect();
    let extra_before: u64 = extra.iter().map(|&p| cpu_ticks(p)).sum();
    std::thread::sleep(window);
    let secs = window.as_secs_f64();
    let qemu: Vec<f64> = guests.iter().zip(qemu_before).map(|(g, b)| (cpu_ticks(g.qemu_pid()) - b) as f64 / TICKS / secs * 100.0).collect();
    let xsched = (extra.iter().map(|&p| cpu_ticks(p)).sum::<u64>() - extra_before) as f64 / TICKS / secs * 100.0;
    let pauses = counters.into_iter().map(|c| c.join().expect("counter") as f64 / secs).collect();
    (qemu, xsched, pauses)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from).join("release")
}

/// Starts the loop over `guests` with `cpus` host CPUs; returns it and its supervisor's pid.
fn start_xsched(guests: &[Guest], cpus: u32, config: &Path) -> (Child, u32) {
    let bin = target_dir().join("xsched");
    let mut command = Command::new(&bin);
    command.args(["run", "--plugin", target_dir().join("libtesting_panic.so").to_str().expect("utf-8")]);
    command.args(["--config", config.to_str().expect("utf-8"), "--cpus", &cpus.to_string()]);
    command.args(["--journal", guests[0].dir().join("steady.journal").to_str().expect("utf-8")]);
    command.args(["--kernels", Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels").to_str().expect("utf-8")]);
    for g in guests {
        command.args(["--domain", &format!("{}=qemu:{},qmp={}", g.name(), g.ram_file().display(), g.qmp_socket().display())]);
    }
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")), &mut first).expect("first line");
    let supervisor = first.rsplit_once("supervised by pid ").and_then(|(_, p)| p.trim().parse().ok()).expect("supervisor pid");
    // The summary lines would fill the pipe: drain them.
    let mut out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, supervisor)
}

fn stop(mut child: Child) {
    // SAFETY: a signal to the child this benchmark started.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM) };
    let _ = child.wait();
}

fn row(name: &str, (qemu, xsched, pauses): &(Vec<f64>, f64, Vec<f64>), baseline: Option<&[f64]>) {
    let kept = baseline.map_or(String::new(), |b| {
        let (with, without): (f64, f64) = (qemu.iter().sum(), b.iter().sum());
        format!("   VMs keep {:.1} % of the baseline", with / without * 100.0)
    });
    println!(
        "{name:<28} QEMU {:>6.1} % {:>6.1} %   xsched {:>5.2} %   pauses/s {:>6.1} {:>6.1}{kept}",
        qemu[0], qemu[1], xsched, pauses[0], pauses[1]
    );
}

fn main() {
    let seconds: u64 = std::env::args().nth(1).map_or(10, |s| s.parse().expect("SECONDS"));
    let window = Duration::from_secs(seconds);
    let specs = vec![
        GuestSpec::new("s1").vcpus(1).workload(Workload::cpu("victim")).view_interval_ms(0),
        GuestSpec::new("s2").vcpus(1).workload(Workload::cpu("victim")).view_interval_ms(0),
    ];
    let guests = Lab::boot(&specs).expect("boot the lab guests");
    let config = guests[0].dir().join("steady.conf");
    std::fs::write(&config, "after=4000000000 victim").expect("config");
    println!("kernel {}, window {seconds} s, period 10 ms", guests[0].kernel().pin);

    let baseline = measure(&guests, &[], window);
    row("baseline (no xsched)", &baseline, None);

    for (name, cpus) in [("steady, nothing parked", 2), ("steady, one task parked", 1)] {
        let (child, supervisor) = start_xsched(&guests, cpus, &config);
        // Attach, the first periods and the first park settle.
        std::thread::sleep(Duration::from_secs(3));
        let measured = measure(&guests, &[child.id(), supervisor], window);
        row(name, &measured, (cpus == 2).then_some(baseline.0.as_slice()));
        stop(child);
        std::thread::sleep(Duration::from_secs(1));
    }
}
