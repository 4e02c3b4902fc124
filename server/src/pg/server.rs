//! What every connection shares: the lake, the users, metrics, and the cancel signals by
//! backend key.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use audiolake::AudioLake;
use bytes::Bytes;
use datafusion_postgres::pgwire::api::ConnectionManager;
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use datafusion_postgres::pgwire::messages::startup::SecretKey;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::auth::{Role, Users};
use super::background::Background;
use super::metrics::Metrics;

/// What every connection shares.
pub struct Server {
    pub(super) lake: Arc<AudioLake>,
    /// Background analysis jobs (`CALL analyze_table`, `--watch`).
    pub(super) background: Arc<Background>,
    pub(super) users: Option<Arc<Users>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) connections: Arc<ConnectionManager>,
    pub(super) max_connections: usize,
    pub(super) tls: bool,
    /// The TLS certificate's channel binding data (SCRAM-SHA-256-PLUS).
    pub(super) end_point: Option<Arc<[u8]>>,
    /// Cancel signals of the connections, by backend key (process id and secret).
    pub(super) cancels: Mutex<HashMap<(i32, Bytes), Weak<Notify>>>,
}

impl Server {
    /// The cancel signal of the connection with `key`, registered at its first statement.
    pub(super) fn cancel_signal(&self, (pid, secret): (i32, SecretKey)) -> Arc<Notify> {
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
    pub(super) async fn cancel(&self, request: CancelRequest) {
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
    pub(super) fn role(&self, user: Option<&str>) -> Role {
        match (&self.users, user) {
            (None, _) => Role::ReadWrite,
            (Some(users), Some(user)) => users.role(user).unwrap_or(Role::ReadOnly),
            (Some(_), None) => Role::ReadOnly,
        }
    }
}
