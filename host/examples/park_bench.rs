//! Benchmark: what one park and one unpark cost a live guest, beside a bare pause/resume of the
//! same guest in the same run (the floor every operation pays), and the work each does while the
//! guest is paused (checks, the plan, the writes; the pause itself excluded).
//!
//! It drives `actuate::park` directly (as `actuate::Actuator` does) to time the inside of the
//! pause. `cargo run --release --example park_bench -- DOMAIN PID [ROUNDS]`;
//! `scripts/bench-park.sh` boots a lab guest on each pinned kernel and runs it.

use std::time::{Duration, Instant};

use xsched::actuate::park::{park, unpark, ParkLayout, ParkOutcome, TaskIdentity, UnparkOutcome};
use xsched::domain::{Domain, DomainId, DomainSpec};
use xsched::profile::Profile;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, pid, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: park_bench DOMAIN PID [ROUNDS]");
    };
    let spec: DomainSpec = spec.parse().map_err(anyhow::Error::msg)?;
    let pid: i32 = pid.parse()?;
    let rounds: usize = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(300);
    let kernels = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels");
    let profiles: Vec<Profile> = Profile::load_dir(kernels.as_ref())?.into_iter().map(|(_, p)| p).collect();
    let mut domain = Domain::attach(DomainId(0), &spec, profiles)?;
    let location = domain.kernel().location();
    let layout = ParkLayout::new(domain.kernel().profile(), location.virt_shift, location.per_cpu_offsets.clone())?;
    let snap = domain.snapshot()?;
    let t = snap.guest.tasks.iter().find(|t| t.record.pid == pid).ok_or_else(|| anyhow::anyhow!("no pid {pid}"))?;
    let task = TaskIdentity { addr: t.record.addr, pid, start_time: t.record.start_time };

    let mut samples: [Vec<Duration>; 5] = Default::default();
    let [ping, park_total, unpark_total, park_work, unpark_work] = &mut samples;
    let mut retries = 0;
    for _ in 0..rounds {
        ping.push(domain.ping()?);
        loop {
            let started = Instant::now();
            let (outcome, work) = domain.with_paused(|k, _, _| {
                let started = Instant::now();
                let outcome = park(k, &layout, &task)?;
                Ok((outcome, started.elapsed()))
            })?;
            let took = started.elapsed();
            if let ParkOutcome::Parked { .. } = outcome {
                park_total.push(took);
                park_work.push(work);
                break;
            }
            retries += 1;
        }
        // Let the kernel take the task off its CPU before it is given back.
        std::thread::sleep(Duration::from_millis(5));
        loop {
            let started = Instant::now();
            let outcome = domain.with_paused(|k, _, _| {
                let started = Instant::now();
                let outcome = unpark(k, &layout, &task)?;
                Ok((outcome, started.elapsed()))
            })?;
            let took = started.elapsed();
            match outcome {
                (UnparkOutcome::Unparked { cpu_idle, .. }, work) => {
                    if cpu_idle {
                        domain.wake_stalled_cpus()?;
                    }
                    unpark_total.push(took);
                    unpark_work.push(work);
                    break;
                }
                (UnparkOutcome::NotParked { .. }, _) => break,
                (UnparkOutcome::Deferred(_), _) => retries += 1,
            }
        }
    }
    let kernel = &domain.kernel().profile().release;
    println!("{rounds} rounds on {} ({kernel}, {}), pid {pid} ({retries} retries)", domain.name, layout.fair().flavour());
    let names = ["pause+resume (baseline)", "park", "unpark", "park: in-pause work", "unpark: in-pause work"];
    for (name, samples) in names.iter().zip(&mut samples) {
        samples.sort();
        let at = |percent: usize| samples.get(samples.len().saturating_sub(1) * percent / 100).copied().unwrap_or_default();
        println!("{name:<24} median {:>8.1} µs   p90 {:>8.1} µs   n={}", micros(at(50)), micros(at(90)), samples.len());
    }
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
