//! A running statement's lifecycle: what stops it (a cancel request, `statement_timeout`) over
//! its whole execution, rows included, and the metrics recorded when its last row is sent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion_postgres::pgwire::api::results::{CopyResponse, QueryResponse, Response};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::futures::OwnedNotified;

use super::activity::Busy;
use super::errors::{self, error, with_sqlstate};
use super::metrics::{Metrics, Outcome};

/// Why a statement was stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Cancelled,
    TimedOut,
}

impl Stop {
    fn error(self) -> PgWireError {
        match self {
            Stop::Cancelled => error(
                errors::QUERY_CANCELED,
                "canceling statement due to user request",
            ),
            Stop::TimedOut => error(
                errors::QUERY_CANCELED,
                "canceling statement due to statement timeout",
            ),
        }
    }
}

/// One statement in flight: what can stop it, and its bookkeeping (kept until its last row).
pub(super) struct Running {
    stop: Shared<BoxFuture<'static, Stop>>,
    finish: Arc<Finish>,
}

impl Running {
    /// Starts the bookkeeping of a statement that `cancel` or `timeout` stop.
    pub(super) fn start(
        cancel: OwnedNotified,
        timeout: Option<Duration>,
        metrics: Arc<Metrics>,
        busy: Busy,
    ) -> Running {
        let stop = async move {
            let cancelled = async {
                cancel.await;
                Stop::Cancelled
            };
            let timed_out = async {
                match timeout {
                    Some(t) => {
                        tokio::time::sleep(t).await;
                        Stop::TimedOut
                    }
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                stop = cancelled => stop,
                stop = timed_out => stop,
            }
        }
        .boxed()
        .shared();
        Running {
            stop,
            finish: Arc::new(Finish {
                metrics,
                started: Instant::now(),
                outcome: Mutex::new(Outcome::Ok),
                _busy: busy,
            }),
        }
    }

    /// Runs the planning part of a statement, unless it is stopped first.
    pub(super) async fn run<T>(
        &self,
        work: impl std::future::Future<Output = PgWireResult<T>>,
    ) -> PgWireResult<T> {
        let result = tokio::select! {
            result = work => result,
            stop = self.stop.clone() => Err(self.finish.stopped(stop)),
        };
        if result.is_err() {
            self.finish.set(Outcome::Error);
        }
        result
    }

    /// Makes the rows of `response` stoppable and counted.
    pub(super) fn guard(&self, response: Response) -> Response {
        match response {
            Response::Query(query) => {
                let QueryResponse {
                    command_tag,
                    row_schema,
                    data_rows,
                    ..
                } = query;
                let mut guarded = QueryResponse::new(row_schema, self.stream(data_rows));
                guarded.set_command_tag(&command_tag);
                Response::Query(guarded)
            }
            Response::CopyOut(copy) => Response::CopyOut(CopyResponse::new(
                copy.format,
                copy.columns,
                self.stream(copy.data_stream),
            )),
            Response::Error(e) => {
                self.finish.set(Outcome::Error);
                Response::Error(e)
            }
            other => other,
        }
    }

    fn stream<S, T>(&self, rows: S) -> Guarded<S>
    where
        S: Stream<Item = PgWireResult<T>> + Unpin,
    {
        Guarded {
            rows,
            stop: self.stop.clone(),
            finish: Arc::clone(&self.finish),
            done: false,
        }
    }
}

/// Records a statement's outcome and latency when its last stream is done.
struct Finish {
    metrics: Arc<Metrics>,
    started: Instant,
    outcome: Mutex<Outcome>,
    _busy: Busy,
}

impl Finish {
    fn set(&self, outcome: Outcome) {
        let mut current = self.outcome.lock();
        if *current == Outcome::Ok {
            *current = outcome;
        }
    }

    fn stopped(&self, stop: Stop) -> PgWireError {
        self.set(match stop {
            Stop::Cancelled => Outcome::Cancelled,
            Stop::TimedOut => Outcome::Error,
        });
        stop.error()
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let outcome = *self.outcome.lock();
        self.metrics.query_finished(outcome, self.started.elapsed());
    }
}

/// Rows that end with an error when the statement is cancelled or times out.
struct Guarded<S> {
    rows: S,
    stop: Shared<BoxFuture<'static, Stop>>,
    finish: Arc<Finish>,
    done: bool,
}

impl<S, T> Stream for Guarded<S>
where
    S: Stream<Item = PgWireResult<T>> + Unpin,
{
    type Item = PgWireResult<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(stop) = this.stop.poll_unpin(cx) {
            this.done = true;
            return Poll::Ready(Some(Err(this.finish.stopped(stop))));
        }
        let next = this.rows.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Err(_))) => this.finish.set(Outcome::Error),
            Poll::Ready(None) => this.done = true,
            _ => {}
        }
        next.map(|item| item.map(|r| r.map_err(with_sqlstate)))
    }
}
