//! The PostgreSQL front door (`audiolake serve`): pgwire through datafusion-postgres, one
//! DataFusion session per connection over the shared engine, SCRAM passwords, TLS,
//! connection limits, idle timeouts and Prometheus metrics.
//!
//! This file is the accept loop; [`connection`] holds one connection's handlers, [`session`] its
//! statements, [`running`] the lifecycle of one statement, [`background`] the analysis jobs
//! that run without a client and [`watch`] what starts them under `--watch`.

mod activity;
mod auth;
mod background;
mod compat;
mod connection;
mod copy_out;
mod errors;
mod metrics;
mod plan_writes;
mod running;
mod scram;
mod server;
mod session;
mod statements;
mod tls;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use audiolake::AudioLake;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire::api::ConnectionManager;
use datafusion_postgres::pgwire::tokio::process_socket;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use auth::{add_user, Role, Users};
use background::Background;
use connection::Connection;
use metrics::Metrics;
use server::Server;

/// How `audiolake serve` listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub users: Option<PathBuf>,
    pub dev_no_auth: bool,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
    /// How long a connection may take to log in (PostgreSQL's `authentication_timeout`).
    pub authentication_timeout: Duration,
    pub metrics_listen: Option<SocketAddr>,
    /// Analyse every AUDIO table in the background at this interval, and local folders when
    /// their files change (`--watch`).
    pub watch: Option<Duration>,
}

/// Runs the server until SIGINT or SIGTERM, then publishes buffered analysis results; a second
/// signal while they are published stops the process at once.
pub async fn serve(lake: AudioLake, options: ServeOptions) -> Result<()> {
    let users = match (&options.users, options.dev_no_auth) {
        (Some(_), true) => bail!("--users and --dev-no-auth exclude each other"),
        (None, false) => bail!(
            "refusing to start without authentication: give --users FILE (create one with \
             `audiolake user add NAME --users FILE`), or --dev-no-auth for a trial on this machine"
        ),
        (None, true) if !options.listen.ip().is_loopback() => bail!(
            "--dev-no-auth listens on loopback only (127.0.0.1 or ::1), not on {}",
            options.listen.ip()
        ),
        (Some(path), false) => Some(Arc::new(Users::open(path)?)),
        (None, true) => None,
    };
    let tls = match &options.tls {
        Some((cert, key)) => Some(tls::load(cert, key)?),
        None => None,
    };
    setup_pg_catalog(lake.engine().session(), "datafusion", EmptyContextProvider)
        .map_err(|e| anyhow::anyhow!("cannot set up pg_catalog: {e}"))?;
    compat::correct_pg_catalog(lake.engine().session(), "datafusion")
        .map_err(|e| anyhow::anyhow!("cannot set up pg_catalog: {e}"))?;
    compat::register(lake.engine().session());

    let lake = Arc::new(lake);
    let metrics = Arc::new(Metrics::new(Arc::clone(&lake)));
    if let Some(addr) = options.metrics_listen {
        metrics.serve(addr)?;
    }
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let local = listener.local_addr()?;
    // The first line of output, for scripts and tests that listen on port 0.
    println!(
        "audiolake listening on {local} ({}, {})",
        if tls.is_some() { "TLS" } else { "no TLS" },
        if users.is_some() {
            "SCRAM-SHA-256 passwords"
        } else {
            "no authentication"
        }
    );
    let background = Background::new(Arc::clone(&lake))?;
    if let Some(interval) = options.watch {
        watch::watch(&background, interval);
    }
    let server = Arc::new(Server {
        lake: Arc::clone(&lake),
        background,
        users,
        metrics,
        connections: Arc::new(ConnectionManager::new()),
        max_connections: options.max_connections,
        tls: tls.is_some(),
        end_point: tls.as_ref().and_then(|tls| tls.end_point.clone()),
        cancels: Mutex::new(HashMap::new()),
    });
    let slots = Arc::new(Semaphore::new(options.max_connections));

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    log::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        let permit = Arc::clone(&slots).try_acquire_owned().ok();
        let server = Arc::clone(&server);
        let tls = tls.as_ref().map(|tls| tls.acceptor.clone());
        let idle_timeout = options.idle_timeout;
        let authentication_timeout = options.authentication_timeout;
        tokio::spawn(async move {
            let refused = permit.is_none();
            if refused {
                server.metrics.connection_refused();
            } else {
                server.metrics.connection_opened();
            }
            let connection = Connection::new(Arc::clone(&server), refused);
            let activity = Arc::clone(&connection.activity);
            let work = process_socket(socket, tls, connection);
            let idle = async {
                match idle_timeout {
                    Some(timeout) => {
                        activity.idle_for(timeout).await;
                        timeout
                    }
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                result = work => result,
                () = activity.unauthenticated_after(authentication_timeout) => {
                    log::info!(
                        "closed the connection from {peer}: not logged in within \
                         {authentication_timeout:?}"
                    );
                    Ok(())
                }
                timeout = idle => {
                    log::info!("closed the connection from {peer}: idle for {timeout:?}");
                    Ok(())
                }
            };
            if let Err(e) = result {
                log::info!("connection from {peer} ended: {e}");
            }
            if !refused {
                server.metrics.connection_closed();
            }
            drop(permit);
        });
    }
    eprintln!(
        "audiolake: shutting down; publishing buffered analysis results (signal again to stop at once)"
    );
    tokio::select! {
        flushed = lake.flush() => flushed.context("cannot publish buffered results"),
        () = shutdown_signal() => {
            eprintln!(
                "audiolake: stopped at once; results not yet published are lost and will be \
                 computed again when asked for"
            );
            std::process::exit(1);
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("cannot listen for SIGTERM");
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
