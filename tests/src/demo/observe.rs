//! A trace of a run without xsched, in the format of `xsched run --trace`, so that every variant
//! gets the same timeline: a thread reads both guests every period through the xsched library
//! while they run (never pausing them, deciding and writing nothing) and writes one line per
//! period with the scenario's tasks, each `run` while runnable and `idle` while asleep.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use xsched::domain::{Domain, DomainId, DomainSpec};
use xsched::profile::Profile;
use xsched::run::trace::{Decision, TraceLine, TraceTask};
use xsched::table::{DomainFacts, TaskTable};

use super::scenario::Scenario;
use crate::{guest, Guest};

/// The observing thread; [`Observer::stop`] ends it.
#[derive(Debug)]
pub struct Observer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<()>>,
}

/// The kernel profiles: `$XSCHED_KERNELS`, else the source tree's `kernels/`.
fn kernels_dir() -> PathBuf {
    std::env::var_os("XSCHED_KERNELS")
        .filter(|d| !d.is_empty())
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("kernels"), PathBuf::from)
}

impl Observer {
    /// Attaches to the scenario's guests and starts writing `trace`, one line every `period`;
    /// returns once both guests are attached.
    pub fn start(scenario: &Scenario, guests: &[Guest], period: Duration, trace: &Path) -> Result<Self> {
        let specs: Vec<DomainSpec> = scenario
            .guests()
            .into_iter()
            .map(|name| {
                let g = guest(guests, name);
                format!("{name}=qemu:{},qmp={}", g.ram_file().display(), g.qmp_socket().display()).parse::<DomainSpec>().map_err(|e| anyhow!("{name}: {e}"))
            })
            .collect::<Result<_>>()?;
        let dir = kernels_dir();
        let profiles: Vec<Profile> = Profile::load_dir(&dir).with_context(|| format!("loading profiles from {}", dir.display()))?.into_iter().map(|(_, p)| p).collect();
        let tasks: Vec<(String, String)> = scenario.tasks().map(|t| (t.guest.to_owned(), t.comm.to_owned())).collect();
        let file = File::create(trace).with_context(|| format!("creating {}", trace.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("demo-observer".into()).spawn(move || {
            let attached: Result<Vec<Domain>> = specs
                .iter()
                .zip(0..)
                .map(|(spec, i)| Domain::attach(DomainId(i), spec, profiles.clone()).with_context(|| format!("attaching {}", spec.name)))
                .collect();
            let mut domains = match attached {
                Ok(d) => {
                    let _ = ready_tx.send(Ok(()));
                    d
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            observe(&mut domains, &tasks, period, &stopping, BufWriter::new(file))
        })?;
        ready_rx.recv().map_err(|_| anyhow!("the observer thread ended before attaching"))??;
        Ok(Self { stop, thread })
    }

    /// Stops observing and returns what went wrong while it ran.
    pub fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow!("the observer thread panicked"))?
    }
}

fn observe(domains: &mut [Domain], tasks: &[(String, String)], period: Duration, stop: &AtomicBool, mut out: BufWriter<File>) -> Result<()> {
    let began = Instant::now();
    let mut periods = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let at = began.elapsed();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let mut pass = Vec::with_capacity(domains.len());
        for domain in domains.iter_mut() {
            pass.push(domain.snapshot_running()?);
        }
        let pass: Vec<_> = domains.iter().zip(&pass).map(|(d, snap)| (DomainFacts::of(d.id, &d.name, d.kernel()), snap)).collect();
        let table = TaskTable::build_from(&pass, None);
        periods += 1;
        let line = TraceLine { t: at.as_secs_f64(), period: periods, tasks: traced(&table, tasks), wall };
        line.write_to(&mut out).context("writing the observer's trace")?;
        std::thread::sleep(period.saturating_sub(began.elapsed() - at));
    }
    out.flush().context("writing the observer's trace")
}

/// The scenario's tasks in `table` (by domain and comm), as trace entries.
fn traced(table: &TaskTable, tasks: &[(String, String)]) -> Vec<TraceTask> {
    let domain_name = |id| table.domains.iter().find(|d| d.id == id).map_or("?", |d| d.name.as_str());
    table
        .tasks
        .iter()
        .filter(|t| tasks.iter().any(|(g, c)| *c == t.comm && g == domain_name(t.key.domain)))
        .map(|t| TraceTask {
            domain: domain_name(t.key.domain).to_owned(),
            pid: t.key.pid,
            comm: t.comm.clone(),
            state: t.state.to_string(),
            queued: t.queued,
            running: t.running,
            decision: if t.state == 'R' { Decision::Run } else { Decision::Idle },
            runtime_ns: t.runtime_ns,
        })
        .collect()
}
