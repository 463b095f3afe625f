//! Benchmark: what one park and one unpark cost a live guest, beside a bare pause/resume of the
//! same guest in the same run (the floor every operation pays).
//!
//! `cargo run --release --example park_bench -- DOMAIN PID [ROUNDS]`; `scripts/bench-park.sh`
//! boots a lab guest and runs it.

use std::time::{Duration, Instant};

use xsched::actuate::actuator::Actuator;
use xsched::actuate::park::{ParkOutcome, TaskIdentity, UnparkOutcome};
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
    let actuator = Actuator::for_domain(&domain)?;
    let snap = domain.snapshot()?;
    let t = snap.guest.tasks.iter().find(|t| t.record.pid == pid).ok_or_else(|| anyhow::anyhow!("no pid {pid}"))?;
    let task = TaskIdentity { addr: t.record.addr, pid, start_time: t.record.start_time };

    let (mut ping, mut park, mut unpark) = (Vec::new(), Vec::new(), Vec::new());
    let mut retries = 0;
    for _ in 0..rounds {
        ping.push(domain.ping()?);
        loop {
            let started = Instant::now();
            let outcome = actuator.park(&mut domain, &task)?;
            let took = started.elapsed();
            if let ParkOutcome::Parked { .. } = outcome {
                park.push(took);
                break;
            }
            retries += 1;
        }
        // Let the kernel take the task off its CPU before it is given back.
        std::thread::sleep(Duration::from_millis(5));
        loop {
            let started = Instant::now();
            let outcome = actuator.unpark(&mut domain, &task)?;
            let took = started.elapsed();
            match outcome {
                UnparkOutcome::Unparked { .. } => {
                    unpark.push(took);
                    break;
                }
                UnparkOutcome::NotParked { .. } => break,
                UnparkOutcome::Deferred(_) => retries += 1,
            }
        }
    }
    println!("{rounds} rounds on {}, pid {pid} ({} retries)", domain.name, retries);
    for (name, samples) in [("pause+resume (baseline)", &mut ping), ("park", &mut park), ("unpark", &mut unpark)] {
        samples.sort();
        let at = |percent: usize| samples.get(samples.len().saturating_sub(1) * percent / 100).copied().unwrap_or_default();
        println!("{name:<24} median {:>8.1} µs   p90 {:>8.1} µs   n={}", micros(at(50)), micros(at(90)), samples.len());
    }
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
