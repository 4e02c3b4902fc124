//! The handlers of one connection: startup (connection limit, TLS required, SCRAM or no
//! authentication, the database's name), the session's statements, cancel requests and error logging.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, ErrorHandler, PgWireConnectionState, PgWireServerHandlers,
    METADATA_DATABASE, METADATA_USER,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::Sink;

use super::activity::Activity;
use super::compat;
use super::errors;
use super::scram::ScramStartup;
use super::server::Server;
use super::session::Session;

/// The handlers of one connection.
pub(super) struct Connection {
    session: Arc<Session>,
    startup: Arc<Startup>,
    cancel: Arc<Cancel>,
    pub(super) activity: Arc<Activity>,
}

impl Connection {
    pub(super) fn new(server: Arc<Server>, refused: bool) -> Self {
        let activity = Arc::new(Activity::new());
        let auth = match &server.users {
            Some(users) => Auth::Scram(Box::new(ScramStartup::new(
                Arc::clone(users),
                Arc::clone(&server.connections),
                server.end_point.clone(),
            ))),
            None => Auth::None(NoAuth(Arc::clone(&server.connections))),
        };
        let session = Arc::new(Session::new(Arc::clone(&server), Arc::clone(&activity)));
        Self {
            startup: Arc::new(Startup {
                refuse: refused.then_some(server.max_connections),
                require_tls: server.tls,
                auth,
                ctx: session.context(),
                activity: Arc::clone(&activity),
            }),
            cancel: Arc::new(Cancel(server)),
            session,
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
    Scram(Box<ScramStartup>),
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
/// error) and, when the server has TLS, connections without it; then the session takes the
/// name of the database the client asked for.
struct Startup {
    refuse: Option<usize>,
    require_tls: bool,
    auth: Auth,
    ctx: Arc<SessionContext>,
    activity: Arc<Activity>,
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
        let startup = matches!(message, PgWireFrontendMessage::Startup(_));
        match &self.auth {
            Auth::Scram(handler) => handler.on_startup(client, message).await?,
            Auth::None(handler) => handler.on_startup(client, message).await?,
        }
        if startup {
            // The handler has saved the startup parameters; PostgreSQL's default database is
            // the user's name.
            let metadata = client.metadata();
            let database = metadata
                .get(METADATA_DATABASE)
                .or_else(|| metadata.get(METADATA_USER))
                .map_or("", String::as_str);
            compat::connect_database(&self.ctx, database);
        }
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            self.activity.authenticated();
        }
        Ok(())
    }
}
