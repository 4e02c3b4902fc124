//! The statements of one connection: datafusion-postgres's session service on a DataFusion
//! session of the connection's own, with what audiolake adds around it: statements that must
//! pass the engine, read-only users, `COPY ... TO STDOUT`, savepoints, cancellation and
//! `statement_timeout` over the whole execution (rows included), SQLSTATEs, and metrics.
//! Queries run on a path of their own: parsed and planned once (plans shared by the
//! connections, see `plan_cache`), optimised once, on a state the session keeps.

mod execute;
mod plan_cache;
mod snapshot;

use std::fmt::Debug;
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{DescribePortalResponse, FieldInfo, Response, Tag};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::{Entry, PortalStore};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, Type, DEFAULT_NAME, METADATA_USER,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::extendedquery::Execute;
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::messages::simplequery::Query;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::DfSessionService;
use futures::Sink;
use parking_lot::Mutex;

use super::activity::Activity;
use super::auth::Role;
use super::compat;
use super::copy_out;
use super::errors::{self, error, with_sqlstate};
use super::plan_writes;
use super::running::Running;
use super::server::Server;
use super::statements::{classify, pg_parser, Call, CallError, Classified, Route, Savepoint};
use plan_cache::PLANS;
use snapshot::Snapshots;

/// datafusion-postgres keeps `SET statement_timeout` in the client's metadata under this key.
const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

type DfStatementTuple = <DfSessionService as ExtendedQueryHandler>::Statement;

pub struct Session {
    server: Arc<Server>,
    ctx: Arc<SessionContext>,
    inner: Arc<DfSessionService>,
    parser: Arc<SessionParser>,
    snapshots: Arc<Snapshots>,
    activity: Arc<Activity>,
    /// This connection's cancel signal, registered with the server at the first statement
    /// (the backend key is known only after authentication).
    cancel: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    /// The savepoints of the open transaction block, oldest first.
    savepoints: Mutex<Vec<String>>,
}

impl Session {
    pub fn new(server: Arc<Server>, activity: Arc<Activity>) -> Self {
        let ctx = Arc::new(server.lake.engine().new_session());
        let inner = Arc::new(DfSessionService::new(Arc::clone(&ctx)));
        let snapshots = Arc::new(Snapshots::default());
        let parser = Arc::new(SessionParser {
            server: Arc::clone(&server),
            ctx: Arc::clone(&ctx),
            snapshots: Arc::clone(&snapshots),
            inner: inner.query_parser(),
        });
        Self {
            server,
            ctx,
            inner,
            parser,
            snapshots,
            activity,
            cancel: std::sync::OnceLock::new(),
            savepoints: Mutex::new(Vec::new()),
        }
    }

    /// The connection's own DataFusion session.
    pub fn context(&self) -> Arc<SessionContext> {
        Arc::clone(&self.ctx)
    }

    /// Starts the bookkeeping of one statement (or one simple-query batch).
    async fn begin<C: ClientInfo + ?Sized>(&self, client: &C) -> Running {
        if client.transaction_status() == TransactionStatus::Idle {
            // The last transaction block ended with its savepoints.
            self.savepoints.lock().clear();
        }
        // pgwire listens for cancels only while the handler runs, not while rows are sent;
        // this signal covers both (see `Server::cancel`).
        let cancel = self
            .cancel
            .get_or_init(|| self.server.cancel_signal(client.pid_and_secret_key()));
        let cancel = Arc::clone(cancel).notified_owned();
        let timeout = client
            .metadata()
            .get(STATEMENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Running::start(
            cancel,
            timeout,
            Arc::clone(&self.server.metrics),
            self.activity.begin(),
        )
    }

    /// Refuses statements that write to a read-only user.
    fn authorize<C: ClientInfo + ?Sized>(
        server: &Server,
        client: &C,
        items: &[Classified],
    ) -> PgWireResult<()> {
        let user = client.metadata().get(METADATA_USER).map(String::as_str);
        if server.role(user) == Role::ReadOnly {
            if let Some(item) = items.iter().find(|i| i.writes) {
                return Err(read_only_refusal(user, &item.text));
            }
        }
        Ok(())
    }

    /// Refuses a read-only user a statement whose plan writes though its text reads (see
    /// `plan_writes`).
    fn authorize_plan<C: ClientInfo + ?Sized>(
        server: &Server,
        client: &C,
        text: &str,
        plan: &LogicalPlan,
    ) -> PgWireResult<()> {
        let user = client.metadata().get(METADATA_USER).map(String::as_str);
        if server.role(user) == Role::ReadOnly && plan_writes::writes(plan) {
            return Err(read_only_refusal(user, text));
        }
        Ok(())
    }

    /// [`Self::authorize_plan`] for statements that datafusion-postgres plans itself: a
    /// read-only user's are planned here first. One that does not plan is left to the session,
    /// which reports why.
    async fn authorize_plans<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        items: &[Classified],
    ) -> PgWireResult<()> {
        let user = client.metadata().get(METADATA_USER).map(String::as_str);
        if self.server.role(user) != Role::ReadOnly {
            return Ok(());
        }
        for item in items {
            let Some(runs) = &item.runs else { continue };
            if let Ok(plan) = self.ctx.state().statement_to_plan(runs.clone()).await {
                Self::authorize_plan(&self.server, client, &item.text, &plan)?;
            }
        }
        Ok(())
    }

    async fn run_engine(&self, statement: DfStatement) -> PgWireResult<Response> {
        let tag = match &statement {
            DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE",
            DfStatement::CopyTo(_) => "COPY",
            DfStatement::Statement(inner) => match inner.as_ref() {
                Statement::CreateIndex(_) => "CREATE INDEX",
                Statement::Drop {
                    object_type: ObjectType::Index,
                    ..
                } => "DROP INDEX",
                Statement::Set(_) => "SET",
                Statement::Vacuum(_) => "REINDEX",
                Statement::CreateSecret { .. } => "CREATE SECRET",
                Statement::DropSecret { .. } => "DROP SECRET",
                _ => "DROP TABLE",
            },
            _ => "DROP TABLE",
        };
        let engine = self.server.lake.engine();
        let frame = engine
            .run_statement(statement)
            .await
            .map_err(errors::from_engine)?;
        let batches = frame.collect().await.map_err(errors::from_datafusion)?;
        let mut tag = Tag::new(tag);
        if let Some(count) = batches
            .first()
            .and_then(|b| b.column_by_name("count"))
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .filter(|c| !c.is_empty())
        {
            tag = tag.with_rows(usize::try_from(count.value(0)).unwrap_or(usize::MAX));
        }
        Ok(Response::Execution(tag))
    }

    /// `CALL analyze_table('t')` starts a background job for an AUDIO table (nothing when one
    /// runs already); `CALL stop_analysis('t')` stops it.
    async fn run_call(&self, call: Result<Call, CallError>) -> PgWireResult<Response> {
        let call = call.map_err(|e| match e {
            CallError::UnknownProcedure(message) => error(errors::UNDEFINED_FUNCTION, message),
            CallError::Arguments(message) => error(errors::INVALID_PARAMETER_VALUE, message),
        })?;
        let background = &self.server.background;
        match call {
            Call::Analyze(table) => {
                let tables = self
                    .server
                    .lake
                    .engine()
                    .audio_tables()
                    .await
                    .map_err(errors::from_engine)?;
                if !tables.contains(&table) {
                    return Err(error(
                        errors::UNDEFINED_TABLE,
                        format!("{table} is not an AUDIO table of this server"),
                    ));
                }
                background.start(&table);
            }
            Call::Stop(table) => {
                background.stop(&table);
            }
        }
        Ok(Response::Execution(Tag::new("CALL")))
    }

    /// Savepoints are names in the open transaction block, as in PostgreSQL; like `ROLLBACK`
    /// (see docs/server.md), rolling back to one undoes nothing, since statements here take
    /// effect at once.
    /// `status` is the transaction's, as the statements before this one left it.
    fn run_savepoint(
        &self,
        status: TransactionStatus,
        savepoint: Savepoint,
    ) -> PgWireResult<Response> {
        let (command, tag) = match &savepoint {
            Savepoint::Create(_) => ("SAVEPOINT", "SAVEPOINT"),
            Savepoint::Release(_) => ("RELEASE SAVEPOINT", "RELEASE"),
            Savepoint::RollbackTo(_) => ("ROLLBACK TO SAVEPOINT", "ROLLBACK"),
        };
        match status {
            TransactionStatus::Idle => {
                return Err(error(
                    errors::NO_ACTIVE_SQL_TRANSACTION,
                    format!("{command} can only be used in transaction blocks"),
                ))
            }
            // `ROLLBACK TO SAVEPOINT` arrives here in a block that was resumed for it (see
            // `resume_for_rollback_to`).
            TransactionStatus::Error => {
                return Err(error(
                    errors::IN_FAILED_SQL_TRANSACTION,
                    "current transaction is aborted, commands ignored until end of transaction \
                     block",
                ))
            }
            TransactionStatus::Transaction => {}
        }
        let mut names = self.savepoints.lock();
        let position = |name: &str| {
            names.iter().rposition(|n| n == name).ok_or_else(|| {
                error(
                    errors::INVALID_SAVEPOINT_SPECIFICATION,
                    format!("savepoint \"{name}\" does not exist"),
                )
            })
        };
        match savepoint {
            Savepoint::Create(name) => names.push(name),
            Savepoint::Release(name) => {
                let at = position(&name)?;
                names.truncate(at);
            }
            Savepoint::RollbackTo(name) => {
                let at = position(&name)?;
                names.truncate(at + 1);
            }
        }
        Ok(Response::Execution(Tag::new(tag)))
    }

    /// A failed transaction block accepts `ROLLBACK TO SAVEPOINT`, which resumes it (or fails
    /// again for an unknown savepoint). pgwire reads the block's state before the statement
    /// runs and keeps a failed block failed, so the state is set back here first, when the
    /// statement `sql` starts with one.
    fn resume_for_rollback_to<C: ClientInfo + ?Sized>(&self, client: &mut C, sql: &str) {
        if client.transaction_status() != TransactionStatus::Error {
            return;
        }
        let rolls_back = matches!(
            classify(self.server.lake.engine(), sql),
            Some(Ok(items)) if matches!(
                items.first().map(|item| &item.route),
                Some(Route::Savepoint(Savepoint::RollbackTo(_)))
            )
        );
        if rolls_back {
            client.set_transaction_status(TransactionStatus::Transaction);
        }
    }

    async fn run_copy_out(
        &self,
        copy: super::statements::CopyOut,
        format: Arc<FormatOptions>,
    ) -> PgWireResult<Response> {
        let frame = self
            .ctx
            .sql(&copy.query)
            .await
            .map_err(errors::from_datafusion)?;
        let names: Vec<String> = frame
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let rows = encode_dataframe(frame, &Format::UnifiedText, Some(format)).await?;
        Ok(Response::CopyOut(copy_out::response(
            &copy,
            &names,
            rows.data_rows,
        )))
    }

    /// Runs `text` in the session: a query on the query path (see `run_query`), anything else
    /// in datafusion-postgres's session; a single statement DataFusion refused for repeated
    /// result names runs again with them made unique (see `compat::output_names`).
    async fn run_in_session<C>(
        &self,
        client: &mut C,
        text: &str,
        query: bool,
    ) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // In a failed transaction block the session refuses the query.
        if query && client.transaction_status() != TransactionStatus::Error {
            if let Some(response) = self.run_query(client, text).await? {
                return Ok(vec![response]);
            }
        }
        self.snapshots.clear();
        let failed_block = client.transaction_status() == TransactionStatus::Error;
        let result = SimpleQueryHandler::do_query(self.inner.as_ref(), client, text).await;
        let aliased = match &result {
            Err(e) if compat::is_repeated_name_error(&e.to_string()) => {
                compat::alias_repeated_names_in(text)
            }
            _ => None,
        };
        let result = match aliased {
            Some(text) => SimpleQueryHandler::do_query(self.inner.as_ref(), client, &text)
                .await
                .map(|responses| responses.into_iter().map(compat::client_response).collect()),
            None => result,
        };
        result.map_err(|e| match failed_block {
            true => errors::in_failed_block(e),
            false => errors::with_sqlstate_in(&self.ctx.state(), text, e),
        })
    }

    /// Runs `text`, one query, from its plan (the cached one, or one made from a single parse);
    /// `None` for a query the session must run: one that writes (`SELECT ... INTO`) or whose
    /// repeated result names DataFusion refused.
    async fn run_query<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        text: &str,
    ) -> PgWireResult<Option<Response>> {
        let snapshot = self.snapshots.take(&self.ctx);
        let result = async {
            let plan = match PLANS.get(text, &[], &snapshot, &self.server.metrics).await {
                Some((_, Some((_, plan)))) => plan,
                _ => {
                    let Some(parsed) = plan_query(text, &snapshot.state).await? else {
                        return Ok(None);
                    };
                    PLANS.put(text, &[], &snapshot, &parsed).await;
                    match parsed {
                        (_, Some((_, plan))) => plan,
                        (_, None) => return Ok(None),
                    }
                }
            };
            let rows = execute::query(
                &snapshot,
                &execute::optimize(&snapshot, &plan)?,
                &Format::UnifiedText,
                format_options(client),
            )
            .await?;
            Ok(Some(Response::Query(rows)))
        }
        .await;
        self.snapshots.put(snapshot);
        result.map_err(|e| errors::with_sqlstate_in(&self.ctx.state(), text, e))
    }

    /// Runs a planned query of the extended protocol with the portal's parameters.
    async fn run_planned<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        portal: &Portal<DfStatementTuple>,
        plan: &LogicalPlan,
    ) -> PgWireResult<Response> {
        let types = self
            .parser
            .get_parameter_types(&portal.statement.statement)?;
        let snapshot = self.snapshots.take(&self.ctx);
        let result = async {
            let (sql, declared) = (
                &portal.statement.statement.0,
                &portal.statement.parameter_types,
            );
            let optimized = match PLANS.optimized(sql, declared, &snapshot, plan).await {
                Some(optimized) => execute::bind(portal, &optimized, &types)?,
                None => execute::optimize(&snapshot, &execute::bind(portal, plan, &types)?)?,
            };
            execute::query(
                &snapshot,
                &optimized,
                &portal.result_column_format,
                format_options(client),
            )
            .await
        }
        .await;
        self.snapshots.put(snapshot);
        result.map(Response::Query).map_err(with_sqlstate)
    }

    /// Runs statements one by one, as PostgreSQL does: the results of those before a failing
    /// one are kept, and nothing after it runs; the kept plans are dropped after each view
    /// statement (see `plan_cache::changes_views`).
    async fn run_each<C>(&self, client: &mut C, items: Vec<Classified>) -> Vec<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut responses = Vec::new();
        // pgwire applies the responses' transaction changes only after the last statement.
        let mut status = client.transaction_status();
        for item in items {
            let views_change = changes_views(&item);
            let result = match item.route {
                Route::Engine(statement) => self.run_engine(statement).await.map(|r| vec![r]),
                Route::Call(call) => self.run_call(call).await.map(|r| vec![r]),
                Route::Savepoint(savepoint) => {
                    self.run_savepoint(status, savepoint).map(|r| vec![r])
                }
                Route::CopyOut(copy) => self
                    .run_copy_out(copy, format_options(client))
                    .await
                    .map(|r| vec![r]),
                Route::Session => self.run_in_session(client, &item.text, item.query).await,
            };
            // The statements after it must not read a kept plan of the view as it was.
            if views_change {
                PLANS.clear();
            }
            match result {
                Ok(r) => {
                    for response in &r {
                        match response {
                            Response::TransactionStart(_) => {
                                status = status.to_in_transaction_state();
                            }
                            Response::TransactionEnd(_) => {
                                status = status.to_idle_state();
                                self.savepoints.lock().clear();
                            }
                            _ => {}
                        }
                    }
                    responses.extend(r);
                }
                Err(e) => {
                    responses.push(Response::Error(Box::new(e.into())));
                    break;
                }
            }
        }
        responses
    }
}

fn format_options<C: ClientInfo + ?Sized>(client: &C) -> Arc<FormatOptions> {
    Arc::new(FormatOptions::from_client_metadata(client.metadata()))
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.resume_for_rollback_to(client, &query.query);
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let running = self.begin(client).await;
        let engine = self.server.lake.engine();
        let result = async {
            match classify(engine, query) {
                Some(Err(message)) => Err(error(errors::FEATURE_NOT_SUPPORTED, message)),
                Some(Ok(items)) => {
                    Self::authorize(&self.server, client, &items)?;
                    self.authorize_plans(client, &items).await?;
                    match items.as_slice() {
                        [item] if matches!(item.route, Route::Session) && !item.rewritten => {
                            let result = self.run_in_session(client, query, item.query).await;
                            if changes_views(item) {
                                PLANS.clear();
                            }
                            result
                        }
                        _ => Ok(self.run_each(client, items).await),
                    }
                }
                None => self.run_in_session(client, query, false).await,
            }
        };
        running
            .run(result)
            .await
            .map(|responses| responses.into_iter().map(|r| running.guard(r)).collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = DfStatementTuple;
    type QueryParser = SessionParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        if let Some(Entry::Value(portal)) = client.portal_store().get_portal(name) {
            self.resume_for_rollback_to(client, &portal.statement.statement.0);
        }
        self._on_execute(client, message).await
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (sql, planned) = &portal.statement.statement;
        // A DECLAREd cursor is a portal whose query datafusion-postgres keeps unplanned and
        // whose rows it sends as text; psycopg's named cursors describe it to learn the columns.
        let is_query = planned.is_none()
            && matches!(
                classify(self.server.lake.engine(), sql).as_ref(),
                Some(Ok(items)) if matches!(&items[..], [item] if matches!(item.route, Route::Session) && !item.writes)
            );
        if is_query {
            let planned = async {
                let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)?.remove(0);
                let plan = self
                    .ctx
                    .state()
                    .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
                    .await?;
                Ok::<_, DataFusionError>((statement, plan))
            }
            .await
            .map_err(|e| with_sqlstate(PgWireError::ApiError(Box::new(e))))?;
            let fields = self
                .parser
                .get_result_schema(&(sql.clone(), Some(planned)), Some(&Format::UnifiedText))?;
            return Ok(DescribePortalResponse::new(fields));
        }
        let described =
            ExtendedQueryHandler::do_describe_portal(self.inner.as_ref(), client, portal).await?;
        Ok(DescribePortalResponse::new(compat::client_fields(
            described.fields,
        )))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let running = self.begin(client).await;
        let (sql, planned) = &portal.statement.statement;
        // The parser left statements that do not run in the session unplanned.
        let own = if planned.is_none() {
            match classify(self.server.lake.engine(), sql) {
                Some(Ok(mut items)) if !items.is_empty() => Some(items.swap_remove(0).route),
                _ => None,
            }
        } else {
            None
        };
        let result = async {
            match own {
                Some(Route::Engine(statement)) => self.run_engine(statement).await,
                Some(Route::CopyOut(copy)) => self.run_copy_out(copy, format_options(client)).await,
                Some(Route::Call(call)) => self.run_call(call).await,
                Some(Route::Savepoint(savepoint)) => {
                    self.run_savepoint(client.transaction_status(), savepoint)
                }
                _ => match planned {
                    Some((Statement::Query(_), plan))
                        if !plan_writes::writes(plan)
                            && client.transaction_status() != TransactionStatus::Error =>
                    {
                        self.run_planned(client, portal, plan).await
                    }
                    _ => {
                        self.snapshots.clear();
                        let failed_block = client.transaction_status() == TransactionStatus::Error;
                        let result = ExtendedQueryHandler::do_query(
                            self.inner.as_ref(),
                            client,
                            portal,
                            max_rows,
                        )
                        .await
                        .map(compat::client_response)
                        .map_err(|e| match failed_block {
                            true => errors::in_failed_block(e),
                            false => with_sqlstate(e),
                        });
                        if matches!(planned, Some((s, _)) if plan_cache::changes_views(s)) {
                            PLANS.clear();
                        }
                        result
                    }
                },
            }
        };
        running.run(result).await.map(|r| running.guard(r))
    }
}

/// Whether `item` makes, replaces, alters or drops a view (see `plan_cache::changes_views`).
fn changes_views(item: &Classified) -> bool {
    matches!(&item.runs, Some(DfStatement::Statement(s)) if plan_cache::changes_views(s))
}

/// datafusion-postgres's parser, with statements that run elsewhere left unplanned and
/// read-only users checked before anything is planned.
pub struct SessionParser {
    server: Arc<Server>,
    /// The connection's session (for planning, and the SQLSTATEs of planning errors).
    ctx: Arc<SessionContext>,
    snapshots: Arc<Snapshots>,
    inner: Arc<datafusion_postgres::Parser>,
}

#[async_trait]
impl QueryParser for SessionParser {
    type Statement = DfStatementTuple;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let snapshot = self.snapshots.take(&self.ctx);
        let parsed = match PLANS.get(sql, types, &snapshot, &self.server.metrics).await {
            Some(parsed) => Ok(Some(parsed)),
            None => {
                let parsed = self.parse_anew(client, sql, types).await;
                if let Ok(Some(parsed)) = &parsed {
                    PLANS.put(sql, types, &snapshot, parsed).await;
                }
                parsed
            }
        };
        self.snapshots.put(snapshot);
        parsed
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let fields = self.inner.get_result_schema(stmt, column_format)?;
        Ok(compat::client_fields(fields))
    }
}

impl SessionParser {
    /// `sql` classified, and planned unless it runs elsewhere, with read-only users checked
    /// before anything is planned.
    async fn parse_anew<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<DfStatementTuple>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match classify(self.server.lake.engine(), sql) {
            Some(Err(message)) => return Err(error(errors::FEATURE_NOT_SUPPORTED, message)),
            Some(Ok(items)) => {
                Session::authorize(&self.server, client, &items)?;
                if items.len() > 1 {
                    return Err(error(
                        errors::SYNTAX_ERROR,
                        "cannot insert multiple commands into a prepared statement",
                    ));
                }
                if let Some(item) = items.first() {
                    if !matches!(item.route, Route::Session) {
                        return Ok(Some((sql.to_owned(), None)));
                    }
                    if item.rewritten {
                        let parsed = self.parse_in_session(client, &item.text, types).await?;
                        return self.authorized(client, &item.text, parsed);
                    }
                }
            }
            None => {}
        }
        let parsed = self.parse_in_session(client, sql, types).await?;
        self.authorized(client, sql, parsed)
    }

    /// `parsed`, unless a read-only user may not run its plan.
    fn authorized<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        sql: &str,
        parsed: Option<DfStatementTuple>,
    ) -> PgWireResult<Option<DfStatementTuple>> {
        if let Some((_, Some((_, plan)))) = &parsed {
            Session::authorize_plan(&self.server, client, sql, plan)?;
        }
        Ok(parsed)
    }

    /// datafusion-postgres's parse and plan of `sql`, again with unique result names when
    /// DataFusion refused repeated ones (see `compat::output_names`), with the parameter types
    /// PostgreSQL would infer (see `compat::parameters`).
    async fn parse_in_session<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<DfStatementTuple>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let result = self.inner.parse_sql(client, sql, types).await;
        let aliased = match &result {
            Err(e) if compat::is_repeated_name_error(&e.to_string()) => {
                compat::alias_repeated_names_in(sql)
            }
            _ => None,
        };
        let result = match aliased {
            Some(sql) => self.inner.parse_sql(client, &sql, types).await,
            None => result,
        };
        match result.map_err(|e| errors::with_sqlstate_in(&self.ctx.state(), sql, e))? {
            Some((sql, Some((statement, plan)))) => {
                let plan = compat::infer_parameter_types(plan)
                    .map_err(|e| with_sqlstate(PgWireError::ApiError(Box::new(e))))?;
                Ok(Some((sql, Some((statement, plan)))))
            }
            other => Ok(other),
        }
    }
}

/// The error a read-only user gets for a statement that writes.
fn read_only_refusal(user: Option<&str>, text: &str) -> PgWireError {
    error(
        errors::INSUFFICIENT_PRIVILEGE,
        format!(
            "permission denied: user {} is read-only and cannot run: {text}",
            user.unwrap_or_default()
        ),
    )
}

/// `text`, one query, parsed as datafusion-postgres parses it and planned on `state` (with the
/// parameter types PostgreSQL would infer, as a prepared statement's); `None` for what the
/// session must run: a query that writes (`SELECT ... INTO`) or whose repeated result names
/// DataFusion refused, or text datafusion-postgres's parser refuses (it says why).
async fn plan_query(text: &str, state: &SessionState) -> PgWireResult<Option<DfStatementTuple>> {
    let api = |e: DataFusionError| PgWireError::ApiError(Box::new(e));
    let Ok(mut statements) = pg_parser().parse(text) else {
        return Ok(None);
    };
    let (Some(statement), None) = (statements.pop(), statements.pop()) else {
        return Ok(None);
    };
    let plan = match state
        .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
        .await
    {
        Err(e) if compat::is_repeated_name_error(&e.to_string()) => return Ok(None),
        planned => compat::infer_parameter_types(planned.map_err(api)?).map_err(api)?,
    };
    if plan_writes::writes(&plan) {
        return Ok(None);
    }
    Ok(Some((statement.to_string(), Some((statement, plan)))))
}
