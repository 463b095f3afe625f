//! Benchmark: how long attaching holds a live guest paused, seen from a second QMP monitor (the
//! operator's), beside what the attach costs in all (the RAM search runs while the guest does)
//! and a bare pause/resume of the same guest in the same run (the floor of any pause).
//!
//! `cargo run --release --example attach_bench -- DOMAIN OPERATOR_QMP [ROUNDS]`;
//! `scripts/bench-attach.sh` boots lab guests of several RAM sizes and runs it on each.

use std::time::{Duration, Instant};

use serde_json::Value;
use xsched::domain::{Domain, DomainId, DomainSpec};
use xsched::memory::qmp::QmpClient;
use xsched::profile::Profile;

/// QEMU's event timestamp, in microseconds.
fn at_us(event: &Value) -> anyhow::Result<u64> {
    let t = &event["timestamp"];
    match (t["seconds"].as_u64(), t["microseconds"].as_u64()) {
        (Some(s), Some(us)) => Ok(s * 1_000_000 + us),
        _ => anyhow::bail!("event without a timestamp: {event}"),
    }
}

/// The pause between the next STOP and RESUME events the operator's monitor reports.
fn observed_pause(operator: &mut QmpClient) -> anyhow::Result<Duration> {
    let stop = operator.wait_event("STOP", Duration::from_secs(30))?;
    let resume = operator.wait_event("RESUME", Duration::from_secs(30))?;
    Ok(Duration::from_micros(at_us(&resume)?.saturating_sub(at_us(&stop)?)))
}

fn summary(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!("{name:<34} median {:>9.3} ms   max {:>9.3} ms", median.as_secs_f64() * 1e3, max.as_secs_f64() * 1e3);
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, operator_socket, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: attach_bench DOMAIN OPERATOR_QMP [ROUNDS]");
    };
    let spec: DomainSpec = spec.parse().map_err(anyhow::Error::msg)?;
    let rounds: usize = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(10);
    let kernels = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels");
    let profiles: Vec<Profile> = Profile::load_dir(kernels.as_ref())?.into_iter().map(|(_, p)| p).collect();
    let mut operator = QmpClient::connect(operator_socket.as_ref())?;

    let (mut attach_pause, mut attach_total, mut ping_pause) = (Vec::new(), Vec::new(), Vec::new());
    let mut ram_mib = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let mut domain = Domain::attach(DomainId(0), &spec, profiles.clone())?;
        attach_total.push(started.elapsed());
        attach_pause.push(observed_pause(&mut operator)?);
        ram_mib = domain.kernel().memory().ram_size() >> 20;
        domain.ping()?;
        ping_pause.push(observed_pause(&mut operator)?);
    }
    println!("guest RAM {ram_mib} MiB, {rounds} rounds");
    summary("attach, guest paused (QMP events)", &mut attach_pause);
    summary("attach in all (search + validate)", &mut attach_total);
    summary("bare pause/resume (QMP events)", &mut ping_pause);
    Ok(())
}
