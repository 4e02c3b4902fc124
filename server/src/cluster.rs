//! `audiolake scheduler` and `audiolake executor`: the processes of a Ballista cluster, each an
//! engine opened on the shared store.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use audiolake::cluster::{ExecutorOptions, DEFAULT_EXECUTOR_TIMEOUT};
use clap::Args;

use crate::EngineArgs;

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// Address and port to listen on for clients and executors.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:50050")]
    bind: SocketAddr,

    /// Seconds without news from an executor after which its tasks run on the others
    /// (10 to 3600; executors report every 5 s).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_EXECUTOR_TIMEOUT.as_secs())]
    executor_timeout: u64,
}

#[derive(Args, Debug)]
pub struct ExecutorArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// The scheduler to serve, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = "localhost:50050")]
    scheduler: String,

    /// Address and port its Arrow Flight service (results of its tasks) listens on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:50051")]
    bind: SocketAddr,

    /// The host name the client and other executors reach it by (default: the address the
    /// scheduler sees it connect from).
    #[arg(long, value_name = "HOST")]
    external_host: Option<String>,

    /// Tasks run at once (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    concurrent_tasks: usize,
}

/// Refuses `--cluster` on a process that is part of the cluster.
fn in_cluster(engine: &EngineArgs, command: &str) -> Result<()> {
    if engine.cluster.is_some() {
        bail!("--cluster is for clients; `audiolake {command}` is part of the cluster itself");
    }
    Ok(())
}

pub async fn run_scheduler(args: SchedulerArgs) -> Result<()> {
    in_cluster(&args.engine, "scheduler")?;
    let lake = args.engine.open().await?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    eprintln!("audiolake scheduler listening on {}", args.bind);
    lake.engine()
        .run_scheduler(listener, Duration::from_secs(args.executor_timeout))
        .await?;
    Ok(())
}

pub async fn run_executor(args: ExecutorArgs) -> Result<()> {
    in_cluster(&args.engine, "executor")?;
    let lake = args.engine.open().await?;
    eprintln!(
        "audiolake executor on {}, serving the scheduler at {}",
        args.bind, args.scheduler
    );
    let options = ExecutorOptions {
        scheduler: args.scheduler,
        bind: args.bind,
        external_host: args.external_host,
        concurrent_tasks: args.concurrent_tasks,
    };
    lake.engine().run_executor(options).await?;
    Ok(())
}
