//! The loop's metrics, served as OpenMetrics text (what Prometheus scrapes) on a local address:
//! `xsched run --metrics 127.0.0.1:9477`, then `GET /metrics`.
//!
//! Counters: periods, overruns, parks, unparks, deferrals, and per domain the time xsched held
//! it paused. Gauges, as of the last period: per domain its tasks, per policy class how many of
//! its tasks run (admitted) and how many are parked. The server is one thread of the loop's
//! process, started after the supervisor was forked (a fork copies no threads); it only reads
//! the metrics, which the loop updates after each period ([`Metrics::record`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::table::TaskKey;

use super::{PeriodReport, RunStats};

/// The content type of OpenMetrics text.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound (in use, not local, not permitted).
    #[error("metrics address {address}: {reason}")]
    Bind {
        /// The address given.
        address: SocketAddr,
        /// What binding it met.
        reason: String,
    },
    /// The server thread could not be started.
    #[error("metrics server thread: {0}")]
    Thread(#[from] std::io::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabel {
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

/// The loop's metrics and the thread that serves them.
#[derive(Debug)]
pub struct Metrics {
    address: SocketAddr,
    periods: Counter,
    overruns: Counter,
    parks: Counter,
    unparks: Counter,
    deferred: Counter,
    paused_seconds: Family<DomainLabel, Counter<f64, AtomicU64>>,
    tasks: Family<DomainLabel, Gauge>,
    class_running: Family<ClassLabel, Gauge>,
    class_parked: Family<ClassLabel, Gauge>,
    /// What the counters were last set from.
    last_stats: RunStats,
    last_paused: Vec<Duration>,
    /// Every class seen: one that empties reads 0 rather than vanishing.
    classes: BTreeMap<u32, ClassLabel>,
}

impl Metrics {
    /// Binds `address` and serves the metrics there from a thread of their own.
    pub fn serve(address: SocketAddr) -> Result<Self, MetricsError> {
        let server = tiny_http::Server::http(address).map_err(|e| MetricsError::Bind { address, reason: e.to_string() })?;
        let address = server.server_addr().to_ip().unwrap_or(address);
        let mut registry = Registry::with_prefix("xsched");
        let metrics = Self {
            address,
            periods: Counter::default(),
            overruns: Counter::default(),
            parks: Counter::default(),
            unparks: Counter::default(),
            deferred: Counter::default(),
            paused_seconds: Family::default(),
            tasks: Family::default(),
            class_running: Family::default(),
            class_parked: Family::default(),
            last_stats: RunStats::default(),
            last_paused: Vec::new(),
            classes: BTreeMap::new(),
        };
        registry.register("periods", "Periods completed", metrics.periods.clone());
        registry.register("overruns", "Periods that took longer than the period", metrics.overruns.clone());
        registry.register("parks", "Tasks parked", metrics.parks.clone());
        registry.register("unparks", "Tasks unparked", metrics.unparks.clone());
        registry.register("deferrals", "Parks and unparks put off to a later period", metrics.deferred.clone());
        registry.register("domain_paused_seconds", "Time xsched held the domain paused", metrics.paused_seconds.clone());
        registry.register("domain_tasks", "Tasks read in the domain at the last period", metrics.tasks.clone());
        registry.register("class_running_tasks", "Tasks of the policy class admitted to run at the last period", metrics.class_running.clone());
        registry.register("class_parked_tasks", "Tasks of the policy class parked after the last period", metrics.class_parked.clone());
        let registry = Arc::new(registry);
        std::thread::Builder::new().name("metrics".into()).spawn(move || answer(&server, &registry))?;
        Ok(metrics)
    }

    /// The address served (with the port the system chose, if port 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Takes in one period.
    pub fn record(&mut self, period: &PeriodReport<'_>, domain_names: &[String]) {
        let (now, last) = (*period.stats, self.last_stats);
        self.periods.inc_by(now.periods - last.periods);
        self.overruns.inc_by(now.overruns - last.overruns);
        self.parks.inc_by(now.parks - last.parks);
        self.unparks.inc_by(now.unparks - last.unparks);
        self.deferred.inc_by(now.deferred - last.deferred);
        self.last_stats = now;

        self.last_paused.resize(period.held_paused.len(), Duration::ZERO);
        for ((name, held), last) in domain_names.iter().zip(period.held_paused).zip(&mut self.last_paused) {
            let label = DomainLabel { domain: name.clone() };
            self.paused_seconds.get_or_create(&label).inc_by(held.saturating_sub(*last).as_secs_f64());
            *last = *held;
        }
        for summary in &period.table.domains {
            let label = DomainLabel { domain: summary.name.clone() };
            self.tasks.get_or_create(&label).set(i64::try_from(summary.tasks).unwrap_or(i64::MAX));
        }

        let class_of: HashMap<TaskKey, u32> = period.ranking.iter().map(|r| (r.key, r.class)).collect();
        let mut running: BTreeMap<u32, i64> = BTreeMap::new();
        let mut parked: BTreeMap<u32, i64> = BTreeMap::new();
        for key in &period.plan.admitted {
            if let Some(class) = class_of.get(key) {
                *running.entry(*class).or_default() += 1;
            }
        }
        let staying = period.table.tasks.iter().filter(|t| t.parked && !period.plan.unpark.contains(&t.key)).map(|t| t.key);
        for key in staying.chain(period.plan.park.iter().copied()) {
            if let Some(class) = class_of.get(&key) {
                *parked.entry(*class).or_default() += 1;
            }
        }
        for class in running.keys().chain(parked.keys()) {
            self.classes.entry(*class).or_insert_with(|| ClassLabel { class: class.to_string() });
        }
        for (class, label) in &self.classes {
            self.class_running.get_or_create(label).set(running.get(class).copied().unwrap_or(0));
            self.class_parked.get_or_create(label).set(parked.get(class).copied().unwrap_or(0));
        }
    }
}

/// Answers every request: the metrics at `/metrics` (and `/`), 404 elsewhere.
fn answer(server: &tiny_http::Server, registry: &Registry) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = if path == "/metrics" || path == "/" {
            let mut body = String::new();
            match encode(&mut body, registry) {
                Ok(()) => text_response(body, 200, CONTENT_TYPE),
                Err(e) => text_response(format!("encoding the metrics: {e}\n"), 500, "text/plain"),
            }
        } else {
            text_response("not found: the metrics are at /metrics\n".into(), 404, "text/plain")
        };
        if let Err(e) = request.respond(response) {
            log::debug!("metrics: answering a scrape: {e}");
        }
    }
}

fn text_response(body: String, status: u16, content_type: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let response = tiny_http::Response::from_string(body).with_status_code(status);
    match tiny_http::Header::from_bytes("Content-Type", content_type) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;
    use crate::domain::DomainId;
    use crate::policy::Ranked;
    use crate::run::Plan;
    use crate::table::{DomainSummary, TaskEntry, TaskTable};

    fn scrape(address: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).expect("connect");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("request");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("reply");
        reply
    }

    #[test]
    fn a_period_shows_in_a_scrape_and_an_address_in_use_is_named() {
        let mut metrics = Metrics::serve("127.0.0.1:0".parse().expect("address")).expect("serve");
        let key = |pid| TaskKey { domain: DomainId(0), pid, start_time: 1 };
        let summary = DomainSummary {
            id: DomainId(0), name: "u1".into(), release: "6.1".into(), vcpus: 1, tasks: 3, cpu_percent: 0.0,
            pause_us: 0, read_us: 0, paused_by_others: false, problems: vec![],
        };
        let table = TaskTable { interval_ms: None, domains: vec![summary], tasks: (1..=3).map(|pid| TaskEntry::plain(key(pid), "t", 'R')).collect(), ..TaskTable::default() };
        let ranking = [Ranked { key: key(1), class: 0, order: 0 }, Ranked { key: key(2), class: 2, order: 0 }, Ranked { key: key(3), class: 2, order: 1 }];
        let plan = Plan { park: vec![key(2), key(3)], admitted: vec![key(1)], ..Plan::default() };
        let stats = RunStats { periods: 4, overruns: 1, parks: 2, unparks: 0, deferred: 5 };
        let held = [Duration::from_millis(250)];
        let report = PeriodReport { started: Instant::now(), table: &table, ranking: &ranking, plan: &plan, stats: &stats, held_paused: &held };
        metrics.record(&report, &["u1".into()]);

        let reply = scrape(metrics.address(), "/metrics");
        assert!(reply.starts_with("HTTP/1.") && reply.contains(" 200 "), "{reply}");
        assert!(reply.contains(CONTENT_TYPE), "{reply}");
        for line in [
            "xsched_periods_total 4",
            "xsched_overruns_total 1",
            "xsched_parks_total 2",
            "xsched_deferrals_total 5",
            "xsched_domain_paused_seconds_total{domain=\"u1\"} 0.25",
            "xsched_domain_tasks{domain=\"u1\"} 3",
            "xsched_class_running_tasks{class=\"0\"} 1",
            "xsched_class_parked_tasks{class=\"2\"} 2",
            "xsched_class_parked_tasks{class=\"0\"} 0",
            "# EOF",
        ] {
            assert!(reply.lines().any(|l| l == line), "no line {line:?} in:\n{reply}");
        }
        assert!(scrape(metrics.address(), "/other").contains(" 404 "));

        let taken = Metrics::serve(metrics.address()).expect_err("the address is in use");
        assert!(taken.to_string().contains(&metrics.address().to_string()), "{taken}");
    }
}
