//! The PostgreSQL front door (`audiolake serve`): pgwire through datafusion-postgres, one
//! DataFusion session per connection over the shared engine, SCRAM-SHA-256 passwords, TLS,
//! connection limits, idle timeouts and Prometheus metrics.

mod auth;
mod compat;
mod copy_out;
mod errors;
mod metrics;
mod session;
mod statements;
mod tls;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use audiolake::AudioLake;
use bytes::Bytes;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::ScramAuth;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use datafusion_postgres::pgwire::messages::startup::SecretKey;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::tokio::process_socket;
use futures::Sink;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

pub use auth::{add_user, Role, Users};
use metrics::Metrics;
use session::Session;

/// How `audiolake serve` listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub users: Option<PathBuf>,
    pub dev_no_auth: bool,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
    pub metrics_listen: Option<SocketAddr>,
}

/// What every connection shares.
pub struct Server {
    lake: Arc<AudioLake>,
    users: Option<Arc<Users>>,
    metrics: Arc<Metrics>,
    connections: Arc<ConnectionManager>,
    max_connections: usize,
    tls: bool,
    /// Cancel signals of the connections, by backend key (process id and secret).
    cancels: Mutex<HashMap<(i32, Bytes), Weak<Notify>>>,
}

impl Server {
    /// The cancel signal of the connection with `key`, registered at its first statement.
    fn cancel_signal(&self, (pid, secret): (i32, SecretKey)) -> Arc<Notify> {
        let mut cancels = self.cancels.lock();
        cancels.retain(|_, signal| signal.strong_count() > 0);
        let key = (pid, secret.to_bytes());
        if let Some(signal) = cancels.get(&key).and_then(Weak::upgrade) {
            return signal;
        }
        let signal = Arc::new(Notify::new());
        cancels.insert(key, Arc::downgrade(&signal));
        signal
    }

    /// A CancelRequest: stops the statement running on the connection with that key, if any.
    async fn cancel(&self, request: CancelRequest) {
        self.connections
            .cancel(request.pid, &request.secret_key)
            .await;
        let key = (request.pid, request.secret_key.to_bytes());
        let signal = self.cancels.lock().get(&key).and_then(Weak::upgrade);
        if let Some(signal) = signal {
            signal.notify_waiters();
        }
    }

    /// A user's role; everyone may write when there is no users file (`--dev-no-auth`).
    fn role(&self, user: Option<&str>) -> Role {
        match (&self.users, user) {
            (None, _) => Role::ReadWrite,
            (Some(users), Some(user)) => users.role(user).unwrap_or(Role::ReadOnly),
            (Some(_), None) => Role::ReadOnly,
        }
    }
}

/// Runs the server until SIGINT or SIGTERM, then publishes buffered analysis results.
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
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
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
    let server = Arc::new(Server {
        lake: Arc::clone(&lake),
        users,
        metrics,
        connections: Arc::new(ConnectionManager::new()),
        max_connections: options.max_connections,
        tls: tls.is_some(),
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
        let tls = tls.clone();
        let idle_timeout = options.idle_timeout;
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
            let result = match idle_timeout {
                Some(timeout) => tokio::select! {
                    result = work => result,
                    () = activity.idle_for(timeout) => {
                        log::info!("closed the connection from {peer}: idle for {timeout:?}");
                        Ok(())
                    }
                },
                None => work.await,
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
    eprintln!("audiolake: shutting down; publishing buffered analysis results");
    lake.flush()
        .await
        .context("cannot publish buffered results")?;
    Ok(())
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

/// When a connection last did something, and whether a statement is running now.
#[derive(Debug)]
pub struct Activity {
    running: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            running: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.running.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// Returns once the connection has run nothing for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = *self.last.lock();
            let idle = last.elapsed();
            if self.running.load(Ordering::SeqCst) == 0 && idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout.saturating_sub(idle).max(Duration::from_millis(100))).await;
        }
    }
}

/// A statement in progress; the connection is not idle while one is alive.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The handlers of one connection.
struct Connection {
    session: Arc<Session>,
    startup: Arc<Startup>,
    cancel: Arc<Cancel>,
    activity: Arc<Activity>,
}

impl Connection {
    fn new(server: Arc<Server>, refused: bool) -> Self {
        let activity = Arc::new(Activity::new());
        let auth = match &server.users {
            Some(users) => Auth::Scram(
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(ScramAuth::new(Arc::clone(users) as Arc<dyn AuthSource>))
                    .with_connection_manager(Arc::clone(&server.connections)),
            ),
            None => Auth::None(NoAuth(Arc::clone(&server.connections))),
        };
        Self {
            startup: Arc::new(Startup {
                refuse: refused.then_some(server.max_connections),
                require_tls: server.tls,
                auth,
            }),
            cancel: Arc::new(Cancel(Arc::clone(&server))),
            session: Arc::new(Session::new(server, Arc::clone(&activity))),
            activity,
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn extended_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

struct Cancel(Arc<Server>);

#[async_trait]
impl CancelHandler for Cancel {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.0.cancel(request).await;
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        log::info!("error sent to {}: {error}", client.socket_addr());
    }
}

enum Auth {
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
    None(NoAuth),
}

/// `--dev-no-auth`: anyone on this machine is let in.
struct NoAuth(Arc<ConnectionManager>);

impl NoopStartupHandler for NoAuth {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.0))
    }
}

/// Authentication, after refusing connections past `--max-connections` (with PostgreSQL's
/// error) and, when the server has TLS, connections without it.
struct Startup {
    refuse: Option<usize>,
    require_tls: bool,
    auth: Auth,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(_) = &message {
            if let Some(max) = self.refuse {
                return Err(errors::fatal(
                    "53300",
                    format!(
                        "sorry, too many clients already (the server allows {max}, see --max-connections)"
                    ),
                ));
            }
            if self.require_tls && !client.is_secure() {
                return Err(errors::fatal(
                    "28000",
                    "this server accepts TLS connections only; connect with sslmode=require",
                ));
            }
        }
        match &self.auth {
            Auth::Scram(handler) => handler.on_startup(client, message).await,
            Auth::None(handler) => handler.on_startup(client, message).await,
        }
    }
}
