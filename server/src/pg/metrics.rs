//! Prometheus metrics of the server, served as text on `/metrics` (`--metrics-listen`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use audiolake::AudioLake;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How a statement ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Cancelled,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections: Counter,
    connections_refused: Counter,
    queries: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    plan_cache_hits: Counter,
    plan_cache_misses: Counter,
}

impl Metrics {
    pub fn new(lake: Arc<AudioLake>) -> Self {
        let mut registry = Registry::with_prefix("audiolake");
        let connections_open = Gauge::default();
        let connections = Counter::default();
        let connections_refused = Counter::default();
        let queries = Family::<OutcomeLabel, Counter>::default();
        // 0.1 ms to about 100 s.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0001, 2.5, 16,
        ));
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections refused because --max-connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "queries",
            "Statements run, by outcome (ok, error, cancelled)",
            queries.clone(),
        );
        registry.register(
            "query_duration_seconds",
            "Time from receiving a statement to sending its last row",
            latency.clone(),
        );
        let plan_cache_hits = Counter::default();
        let plan_cache_misses = Counter::default();
        registry.register(
            "plan_cache_hits",
            "Statements whose plan was found in the plan cache",
            plan_cache_hits.clone(),
        );
        registry.register(
            "plan_cache_misses",
            "Statements looked up in the plan cache and planned anew",
            plan_cache_misses.clone(),
        );
        registry.register_collector(Box::new(StoreCollector(lake)));
        Self {
            registry,
            connections_open,
            connections,
            connections_refused,
            queries,
            latency,
            plan_cache_hits,
            plan_cache_misses,
        }
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn query_finished(&self, outcome: Outcome, elapsed: Duration) {
        let outcome = match outcome {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        };
        self.queries.get_or_create(&OutcomeLabel { outcome }).inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// A lookup in the plan cache, `hit` when a plan was reused.
    pub fn plan_cache_lookup(&self, hit: bool) {
        match hit {
            true => self.plan_cache_hits.inc(),
            false => self.plan_cache_misses.inc(),
        };
    }

    fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Serves `GET /metrics` on `addr` from a thread of its own.
    pub fn serve(self: &Arc<Self>, addr: SocketAddr) -> Result<()> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        let metrics = Arc::clone(self);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in server.incoming_requests() {
                    let response = if request.url() == "/metrics" {
                        let header = tiny_http::Header::from_bytes(
                            "Content-Type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .expect("static header");
                        tiny_http::Response::from_string(metrics.render()).with_header(header)
                    } else {
                        tiny_http::Response::from_string("not found: try /metrics\n")
                            .with_status_code(404)
                    };
                    if let Err(e) = request.respond(response) {
                        log::warn!("metrics response failed: {e}");
                    }
                }
            })
            .context("cannot start the metrics thread")?;
        Ok(())
    }
}

/// The feature store's counters, read at each scrape.
struct StoreCollector(Arc<AudioLake>);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.0.engine().feature_store().stats();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let (hits, reused, analyzed) = (
            load(&stats.hits),
            load(&stats.reused),
            load(&stats.analyzed),
        );
        for (name, help, value) in [
            ("files_analysed", "Files decoded and analysed", analyzed),
            (
                "store_hits",
                "Files whose results were found in the feature store by path and fingerprint",
                hits,
            ),
            (
                "store_misses",
                "Files not found by fingerprint: analysed, or reused from a file with the same content",
                analyzed + reused,
            ),
            (
                "store_parts_written",
                "Parquet parts published to the feature store",
                load(&stats.parts_written),
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        // Progress of every scan, background jobs included: files still to go is the difference.
        let (done, announced) = self.0.engine().progress().snapshot();
        for (name, help, value) in [
            (
                "scan_files_announced",
                "Files that scans (queries and analysis jobs) set out to read",
                announced,
            ),
            ("scan_files_done", "Files that scans have read", done),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
