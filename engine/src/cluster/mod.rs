//! Distributed execution on Apache DataFusion Ballista (feature `distributed`).
//!
//! Every process of a cluster is an engine opened on the same store, which must be shared
//! object storage. The client keeps the catalog and plans each query's logical plan with its
//! own rules, then submits it; the scheduler decodes it over its own engine (AUDIO tables by
//! location, see [`codec`]), lists the files, and splits the physical plan into tasks, each
//! carrying its own file groups; executors analyse their files through the shared feature
//! store and publish what they analysed when their task's files are done. Logical plans are
//! submitted (not physical ones) so that a query over 10^7 files sends its table's location,
//! not its listing, from the client.
//!
//! Credentials never travel: each process reaches the store and the audio with its own
//! (environment, instance role, `CREATE SECRET`), through its own guarded registry.

mod codec;
mod planner;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::config::{TaskSchedulingPolicy, BALLISTA_SCHEDULER_MAX_PARTITIONS_PER_TASK};
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use url::Url;

pub use codec::{AudioLogicalCodec, AudioPhysicalCodec};

use crate::audio::AudioTableFactory;
use crate::error::{EngineError, Result};
use crate::object_stores::GuardedRegistry;
use crate::progress::ScanProgress;
use crate::store::FeatureStore;

/// Ballista's scheduler port, used when a cluster URL names none.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// The codecs of one engine: AUDIO tables and scans decoded over its stores.
#[derive(Debug, Clone)]
pub struct Codecs {
    logical: Arc<AudioLogicalCodec>,
    physical: Arc<AudioPhysicalCodec>,
}

impl Codecs {
    pub(crate) fn new(
        progress: Arc<ScanProgress>,
        features: Arc<FeatureStore>,
        stores: Arc<GuardedRegistry>,
    ) -> Self {
        let tables = AudioTableFactory::new(Arc::clone(&progress), Arc::clone(&features), stores);
        Self {
            logical: Arc::new(AudioLogicalCodec::new(tables)),
            physical: Arc::new(AudioPhysicalCodec::new(features, progress)),
        }
    }

    /// `config` with these codecs and the settings every process of a cluster runs with.
    fn configure(&self, config: SessionConfig) -> SessionConfig {
        config
            .upgrade_for_ballista()
            .with_ballista_logical_extension_codec(self.logical.clone())
            .with_ballista_physical_extension_codec(self.physical.clone())
            // A task is one file group, so a failed task redoes one group.
            .set_usize(BALLISTA_SCHEDULER_MAX_PARTITIONS_PER_TASK, 1)
            // A task runs one partition of a scan: it must not take files of the others.
            .set_bool(
                "datafusion.execution.enable_file_stream_work_stealing",
                false,
            )
    }
}

/// The scheduler URL of `cluster` (`df://host:port`, `http://host:port` or `host:port`).
pub fn scheduler_url(cluster: &str) -> Result<String> {
    let with_scheme = match cluster.contains("://") {
        true => cluster.to_string(),
        false => format!("df://{cluster}"),
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| EngineError::Setting(format!("bad cluster URL '{cluster}': {e}")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| EngineError::Setting(format!("cluster URL '{cluster}' names no host")))?;
    if !url.username().is_empty() || url.password().is_some() || url.path().len() > 1 {
        return Err(EngineError::Setting(format!(
            "a cluster URL is df://host:port, not '{cluster}'"
        )));
    }
    Ok(format!(
        "http://{host}:{}",
        url.port().unwrap_or(DEFAULT_SCHEDULER_PORT)
    ))
}

/// Checks that every process of a cluster can reach the store at `store`.
pub(crate) fn check_shared_store(store: &Url) -> Result<()> {
    if store.scheme() == "file" {
        return Err(EngineError::Setting(format!(
            "a cluster needs its store on shared object storage (s3://...), not the local \
             folder {}: executors could not read or publish results there",
            store.path()
        )));
    }
    Ok(())
}

/// `state`, whose queries that read files now run on the cluster at `cluster`: planned here,
/// executed there (see [`planner`]). Ballista's upgrade builds the session anew (its function
/// list, a new default catalog): call it before registering functions and tables.
pub(crate) fn connect(state: SessionState, codecs: &Codecs, cluster: &str) -> Result<SessionState> {
    let url = scheduler_url(cluster)?;
    let config = codecs.configure(state.config().clone());
    let state = SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    let state = state.upgrade_for_ballista(url)?;
    let remote = Arc::clone(state.query_planner());
    Ok(SessionStateBuilder::new_from_existing(state)
        .with_query_planner(Arc::new(planner::ClusterPlanner { remote }))
        .build())
}

/// How long a scheduler waits by default for an executor's heartbeat before it gives the
/// executor's tasks to others. Executors poll at least every 5 s.
pub const DEFAULT_EXECUTOR_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a scheduler on `listener` until the process ends. `state` is the engine's session:
/// each job's session is built from it, with the client's settings. An executor silent for
/// `executor_timeout` is dropped and its tasks run again elsewhere.
pub async fn run_scheduler(
    state: SessionState,
    codecs: &Codecs,
    listener: tokio::net::TcpListener,
    executor_timeout: Duration,
) -> Result<()> {
    let timeout = executor_timeout.as_secs();
    if !(10..=3600).contains(&timeout) {
        return Err(EngineError::Setting(format!(
            "the executor timeout must be 10 to 3600 seconds (executors report every 5 s), \
             not {timeout}"
        )));
    }
    let address = listener
        .local_addr()
        .map_err(|e| EngineError::Cluster(e.to_string()))?;
    let base = codecs.configure(state.config().clone());
    let config_producer = Arc::new(move || base.clone());
    let session_builder = Arc::new(move |config: SessionConfig| {
        Ok(SessionStateBuilder::new_from_existing(state.clone())
            .with_config(config)
            .build())
    });
    let mut config = SchedulerConfig::default()
        .with_hostname(address.ip().to_string())
        .with_port(address.port())
        .with_scheduler_policy(TaskSchedulingPolicy::PullStaged)
        .with_override_config_producer(config_producer.clone())
        .with_override_session_builder(session_builder.clone());
    config.executor_timeout_seconds = timeout;
    config.no_executors_grace_period_seconds = timeout;
    config.expire_dead_executor_interval_seconds = (timeout / 4).max(1);
    config.override_logical_codec = Some(codecs.logical.clone());
    config.override_physical_codec = Some(codecs.physical.clone());
    let cluster = BallistaCluster::new_memory(
        format!("{}:{}", address.ip(), address.port()),
        session_builder,
        config_producer,
    );
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
            .await
            .map_err(ballista_error)?;
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .map_err(ballista_error)
}

/// Where an executor listens and whom it serves.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `host:port` or a cluster URL.
    pub scheduler: String,
    /// Where its Arrow Flight service (shuffle data) listens.
    pub bind: SocketAddr,
    /// The host name other executors and the client reach it by; `None`: the address the
    /// scheduler sees it connect from (Ballista's default).
    pub external_host: Option<String>,
    /// Tasks it runs at once; 0: one per core.
    pub concurrent_tasks: usize,
}

/// Runs an executor until the process ends or the scheduler stops it. `state` is the
/// engine's session: its functions and runtime (stores, memory pool) serve every task.
pub async fn run_executor(
    state: SessionState,
    codecs: &Codecs,
    options: ExecutorOptions,
) -> Result<()> {
    let scheduler = Url::parse(&scheduler_url(&options.scheduler)?)
        .map_err(|e| EngineError::Setting(e.to_string()))?;
    let base = codecs.configure(state.config().clone());
    let runtime = Arc::clone(state.runtime_env());
    let config = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        port: options.bind.port(),
        external_host: options.external_host,
        scheduler_host: scheduler.host_str().unwrap_or("localhost").to_string(),
        scheduler_port: scheduler.port().unwrap_or(DEFAULT_SCHEDULER_PORT),
        scheduler_connect_timeout_seconds: 30,
        vcores: options.concurrent_tasks,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        print_thread_info: false,
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(&state))),
        override_runtime_producer: Some(Arc::new(move |_| Ok(Arc::clone(&runtime)))),
        override_config_producer: Some(Arc::new(move || base.clone())),
        override_logical_codec: Some(codecs.logical.clone()),
        override_physical_codec: Some(codecs.physical.clone()),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(ballista_error)
}

fn ballista_error(e: ballista_core::error::BallistaError) -> EngineError {
    EngineError::Cluster(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_the_scheduler() {
        for (given, scheduler) in [
            ("df://10.0.0.1:50050", "http://10.0.0.1:50050"),
            ("df://scheduler", "http://scheduler:50050"),
            ("scheduler.internal:6000", "http://scheduler.internal:6000"),
            ("http://127.0.0.1:1234", "http://127.0.0.1:1234"),
        ] {
            assert_eq!(scheduler_url(given).unwrap(), scheduler, "{given}");
        }
        for (given, message) in [
            ("df://", "names no host"),
            (
                "df://user:secret@host:50050",
                "a cluster URL is df://host:port",
            ),
            ("df://host:50050/jobs", "a cluster URL is df://host:port"),
            ("df://host:99999", "bad cluster URL"),
        ] {
            let err = scheduler_url(given).unwrap_err().to_string();
            assert!(err.contains(message), "{given}: {err}");
        }
    }

    #[test]
    fn a_cluster_needs_a_shared_store() {
        let err = check_shared_store(&Url::parse("file:///srv/lake/").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("shared object storage"), "{err}");
        check_shared_store(&Url::parse("s3://lake/store/").unwrap()).unwrap();
    }
}
