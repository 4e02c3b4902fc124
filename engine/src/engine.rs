//! The engine: one DataFusion session over guarded object stores, the AUDIO table format, and
//! the persisted catalog. Every statement passes [`Engine::run`], which checks locations before
//! anything runs and records DDL in the store.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use audiolake_udf::features::{self, musicnn};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{CreateExternalTable, DFParser, Statement};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, ObjectType, Set, Statement as SqlStatement, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::{dialect_from_str, Dialect, PostgreSqlDialect};
use url::Url;

use crate::audio::{AudioTable, AudioTableFactory, LateAnalysis, LocalFolder};
use crate::catalog::{self, Catalog, TableRecord};
use crate::error::{EngineError, Result};
use crate::functions::path_functions;
use crate::groups;
use crate::index::ddl;
use crate::index::files::IndexFiles;
use crate::index::knn::KnnRule;
use crate::index::registry::Indexes;
use crate::index::similar::Similar;
use crate::index::system_table::IndexTable;
use crate::jobs::{AnalyzeReport, Jobs, ProgressTable};
use crate::listings::{Listings, DEFAULT_LISTING_TTL};
use crate::location::{object_path, resolve_location, Access, AllowedRoots};
use crate::object_stores::GuardedRegistry;
use crate::problems::{ProblemsTable, StoreProblem, StoreProblems};
use crate::progress::ScanProgress;
use crate::secrets::{self, Secrets, CREDENTIAL_OPTIONS};
use crate::small_inputs::SmallInputs;
use crate::snapshot::SnapshotTable;
use crate::sql::{self, settings, AudiolakeDialect, OperatorPlanner};
use crate::store::{
    register_feature_tables, Buckets, CompactReport, FeatureStore, FlushPolicy, DEFAULT_RETENTION,
};

/// How to open an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where results and the catalog live: a local directory or an `s3://` prefix.
    pub store: String,
    /// Roots that may be read and written besides the store.
    pub allowed: Vec<String>,
    /// Partitions per scan; defaults to the number of cores.
    pub target_partitions: Option<usize>,
    /// When analysis results are published to the feature store.
    pub flush: FlushPolicy,
    /// How long compaction keeps the parts it replaced, for readers that listed them.
    pub retention: Duration,
    /// Bytes that query execution may hold at once (sorts, joins, aggregates), across all
    /// sessions; a query that needs more fails with "Resources exhausted". `None`: no limit.
    pub memory_limit: Option<usize>,
    /// Where the pretrained networks run: `cpu`, `cuda` or `cuda:N` (the `cuda` feature).
    pub device: String,
    /// Patches per forward pass of the networks, across the files analysed at once.
    pub batch_size: usize,
    /// The networks run on at most this many patches per track, spread evenly over it (0:
    /// every patch): the sessions' default `audiolake.musicnn_max_patches`.
    pub musicnn_max_patches: usize,
    /// Where `CREATE SECRET` keeps S3 credentials (outside the store, mode 0600); `None`: the
    /// per-user default, `~/.config/audiolake/secrets.json`.
    pub secrets_file: Option<PathBuf>,
    /// Run queries on the Ballista cluster whose scheduler is at this URL (`df://host:port`),
    /// keeping the catalog here; the store must be shared object storage. Needs the
    /// `distributed` feature.
    pub cluster: Option<String>,
    /// How long CSV, JSON and Parquet tables reuse a listing of their location before listing
    /// it again; the engine's own writes empty the cache at once. Zero: list at every query.
    pub listing_ttl: Duration,
    /// Where index graphs of an object-storage store are copied to be memory-mapped; `None`:
    /// [`default_cache_dir`](crate::index::files::default_cache_dir). A local store's are
    /// mapped where they are.
    pub index_cache: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            store: "./audiolake-data".to_string(),
            allowed: Vec::new(),
            target_partitions: None,
            flush: FlushPolicy::default(),
            retention: DEFAULT_RETENTION,
            memory_limit: None,
            device: "cpu".to_string(),
            batch_size: audiolake_models::DEFAULT_BATCH_SIZE,
            musicnn_max_patches: musicnn::DEFAULT_MAX_PATCHES,
            secrets_file: None,
            cluster: None,
            listing_ttl: DEFAULT_LISTING_TTL,
            index_cache: None,
        }
    }
}

/// Whether a statement's effect on the catalog is recorded in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    Yes,
    No,
}

/// The database: a DataFusion session over a store, with audiolake's tables, functions and
/// indexes.
///
/// # Execution overview
///
/// [`Engine::open`] resolves the store (a folder or an `s3://` prefix), builds the allowed
/// roots (the store plus `--allow` locations) and the [`GuardedRegistry`] every object store
/// is reached through, opens the [`FeatureStore`] and the vector indexes, registers the AUDIO
/// table factory, the functions and the kNN rule, then replays the catalog's table records.
///
/// [`Engine::run`] parses the text once into statements and runs them in order. It answers
/// what is the engine's own (`CREATE/DROP INDEX`, `CREATE/DROP SECRET`), checks every location
/// a statement names against the roots (and refuses the store's own folders), refuses
/// credentials in persisted table options, then plans the statement in the session; a
/// `CREATE EXTERNAL TABLE` that succeeds is recorded in the catalog. Queries then run as DataFusion plans: AUDIO scans read through the feature store
/// (`crate::audio::read_through`), kNN queries on indexed columns become index scans.
pub struct Engine {
    ctx: SessionContext,
    roots: Arc<AllowedRoots>,
    catalog: Catalog,
    progress: Arc<ScanProgress>,
    features: Arc<FeatureStore>,
    jobs: Arc<Jobs>,
    indexes: Arc<Indexes>,
    registry: Arc<GuardedRegistry>,
    listings: Arc<Listings>,
    secrets: Arc<Secrets>,
    problems: Arc<StoreProblems>,
    /// Patches per forward pass of the networks, kept for `SET audiolake.device`.
    model_batch_size: usize,
    store_url: Url,
    /// Queries run on a cluster: files are analysed by its executors, not here.
    clustered: bool,
    warnings: Vec<String>,
    #[cfg(feature = "distributed")]
    codecs: crate::cluster::Codecs,
}

impl Engine {
    /// Opens the store (creating a local one if needed), then restores the recorded tables.
    /// A table that can no longer be restored is reported in [`Engine::warnings`].
    pub async fn open(config: EngineConfig) -> Result<Self> {
        if config.device != "cpu" || config.batch_size != audiolake_models::DEFAULT_BATCH_SIZE {
            musicnn::configure(&config.device, config.batch_size)
                .map_err(|e| EngineError::Setting(e.to_string()))?;
        }
        let store_url = open_store_url(&config.store)?;
        let secrets = Arc::new(Secrets::open(
            config.secrets_file.or_else(secrets::default_file),
        )?);
        let mut roots = AllowedRoots::new();
        roots.add_store(&store_url)?;
        for location in &config.allowed {
            roots.add(location)?;
        }
        let roots = Arc::new(roots);

        let listings = Listings::new(config.listing_ttl).map_err(EngineError::Setting)?;
        let registry = Arc::new(GuardedRegistry::new(
            Arc::clone(&roots),
            Arc::clone(&secrets),
            Arc::clone(&listings),
        ));
        // Not DataFusion's default listing cache, which keeps listings forever.
        let mut runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::clone(&registry) as _)
            .with_cache_manager(listings.runtime_caches());
        if let Some(bytes) = config.memory_limit {
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        let runtime = runtime.build_arc()?;
        let mut session = settings::with_settings(
            SessionConfig::new()
                .with_information_schema(true)
                .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
                // Parquet filters read only the filter columns first: an index scan fetches its
                // k rows by key without decoding every row's vector.
                .set_bool("datafusion.execution.parquet.pushdown_filters", true),
        );
        if let Some(n) = config.target_partitions {
            session = session.with_target_partitions(n.max(1));
        }
        let max_patches = settings::check_musicnn_max_patches(config.musicnn_max_patches)
            .map_err(EngineError::Setting)?;
        session
            .options_mut()
            .set("audiolake.musicnn_max_patches", &max_patches.to_string())?;
        let progress = Arc::new(ScanProgress::default());
        let store = registry.engine_store(&store_url)?;
        let store_prefix = object_path(&store_url)?;
        let problems = Arc::new(StoreProblems::default());
        let features = Arc::new(FeatureStore::new(
            Arc::clone(&store),
            &store_prefix,
            config.flush,
            config.retention,
            Arc::clone(&problems),
        ));
        let jobs = Arc::new(Jobs::default());
        let indexes = Arc::new(Indexes::new(
            Arc::clone(&store),
            &store_prefix,
            IndexFiles::for_store(&store_url, config.index_cache),
            Arc::clone(&problems),
            Arc::clone(&jobs),
        ));
        let functions = path_functions(
            Arc::clone(&runtime.object_store_registry),
            Arc::clone(&features),
            Arc::clone(&runtime.memory_pool),
        );
        let analyze = functions
            .iter()
            .find(|f| f.name() == "analyze")
            .expect("analyze is a path function");
        let mut state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .with_analyzer_rule(Arc::new(KnnRule::new(Arc::clone(&indexes))))
            .with_optimizer_rule(Arc::new(LateAnalysis::new(Arc::new(analyze.clone()))))
            .with_physical_optimizer_rule(Arc::new(SmallInputs))
            .build();
        state.register_expr_planner(Arc::new(OperatorPlanner::default()))?;
        state.table_factories_mut().insert(
            "AUDIO".to_string(),
            Arc::new(AudioTableFactory::new(
                Arc::clone(&progress),
                Arc::clone(&features),
                Arc::clone(&registry),
            )),
        );
        let ctx = SessionContext::new_with_state(state);
        #[cfg(feature = "distributed")]
        let codecs = crate::cluster::Codecs::new(
            Arc::clone(&progress),
            Arc::clone(&features),
            Arc::clone(&registry),
        );
        // Before anything is registered: Ballista's upgrade builds the session anew.
        let ctx = match &config.cluster {
            None => ctx,
            #[cfg(feature = "distributed")]
            Some(cluster) => {
                crate::cluster::check_shared_store(&store_url)?;
                SessionContext::new_with_state(crate::cluster::connect(
                    ctx.state(),
                    &codecs,
                    cluster,
                )?)
            }
            #[cfg(not(feature = "distributed"))]
            Some(_) => {
                return Err(EngineError::Setting(
                    "this build of audiolake cannot use a cluster: build it with the \
                     `distributed` feature"
                        .to_string(),
                ))
            }
        };

        for function in functions {
            ctx.register_udf(function);
        }
        for function in sql::functions() {
            ctx.register_udf(function);
        }
        ctx.register_udtf("similar", Arc::new(Similar::new(Arc::clone(&indexes))));
        ctx.register_table(
            "audiolake_indexes",
            Arc::new(SnapshotTable(IndexTable::new(Arc::clone(&indexes)))),
        )?;
        register_feature_tables(&ctx, &store_url, &features)?;
        ctx.register_table(
            "audiolake_progress",
            Arc::new(SnapshotTable(ProgressTable::new(
                Arc::clone(&jobs),
                Arc::clone(&progress),
            ))),
        )?;

        ctx.register_table(
            "audiolake_store_problems",
            Arc::new(SnapshotTable(ProblemsTable(Arc::clone(&problems)))),
        )?;

        let catalog = Catalog::new(store, &store_prefix);
        let mut engine = Self {
            ctx,
            roots,
            catalog,
            progress,
            features,
            jobs,
            indexes,
            registry,
            listings,
            secrets,
            problems,
            model_batch_size: config.batch_size,
            store_url,
            clustered: config.cluster.is_some(),
            warnings: Vec::new(),
            #[cfg(feature = "distributed")]
            codecs,
        };
        let records = engine.catalog.load(&engine.problems).await?;
        for record in records {
            engine.move_credentials_out(&record).await;
            if let Err(e) = engine.run_with(&record.definition, Persist::No).await {
                engine
                    .warnings
                    .push(format!("table {} was not restored: {e}", record.name));
            }
        }
        if let Err(e) = engine.indexes.open().await {
            engine
                .warnings
                .push(format!("indexes were not restored: {e}"));
        }
        Ok(engine)
    }

    /// Runs one or more `;`-separated statements in order and returns the last one's result
    /// (not yet executed, for a query). DDL is recorded in the store.
    pub async fn run(&self, sql: &str) -> Result<DataFrame> {
        self.run_with(sql, Persist::Yes).await
    }

    /// Registers (or replaces) an AUDIO table for this engine's lifetime only, unrecorded.
    pub async fn register_audio_table(&self, name: &str, location: &str) -> Result<()> {
        let quoted_name = name.replace('"', "\"\"");
        let quoted_location = location.replace('\'', "''");
        let sql = format!(
            "CREATE OR REPLACE EXTERNAL TABLE \"{quoted_name}\" STORED AS AUDIO LOCATION '{quoted_location}'"
        );
        self.run_with(&sql, Persist::No).await?.collect().await?;
        Ok(())
    }

    async fn run_with(&self, sql: &str, persist: Persist) -> Result<DataFrame> {
        let statements = self.parse(sql)?;
        if statements.is_empty() {
            return Err(EngineError::DataFusion(DataFusionError::Plan(
                "no SQL statement given".to_string(),
            )));
        }
        let last = statements.len() - 1;
        let mut result = None;
        for (i, statement) in statements.into_iter().enumerate() {
            let frame = self.run_parsed(statement, persist).await?;
            if i == last {
                result = Some(frame);
            } else {
                frame.collect().await?;
            }
        }
        Ok(result.expect("at least one statement"))
    }

    /// Runs one parsed statement like [`Engine::run`] does (location checks, DDL recorded in
    /// the store); for front ends that parse statements themselves.
    pub async fn run_statement(&self, statement: Statement) -> Result<DataFrame> {
        self.run_parsed(statement, Persist::Yes).await
    }

    async fn run_parsed(&self, statement: Statement, persist: Persist) -> Result<DataFrame> {
        if let Statement::Statement(inner) = &statement {
            if let Some(name) = ddl::reindexed(inner) {
                return self.reindex(&name).await;
            }
            match inner.as_ref() {
                SqlStatement::CreateIndex(create) => return self.create_index(create).await,
                SqlStatement::Drop {
                    object_type: ObjectType::Index,
                    if_exists,
                    names,
                    ..
                } => return self.drop_indexes(names, *if_exists).await,
                SqlStatement::Set(set) => self.set_device(set)?,
                SqlStatement::CreateSecret {
                    or_replace,
                    if_not_exists,
                    name,
                    secret_type,
                    options,
                    ..
                } => {
                    let secret = secrets::parse_create(name.as_ref(), secret_type, options)?;
                    self.secrets.create(secret, *or_replace, *if_not_exists)?;
                    self.registry.forget_s3_clients();
                    return Ok(self.ctx.read_empty()?);
                }
                SqlStatement::DropSecret {
                    if_exists, name, ..
                } => {
                    if !self.secrets.drop_secret(&name.value)? && !if_exists {
                        return Err(EngineError::Secret(format!(
                            "secret \"{}\" does not exist",
                            name.value
                        )));
                    }
                    self.registry.forget_s3_clients();
                    return Ok(self.ctx.read_empty()?);
                }
                _ => {}
            }
        }
        let mut statement = statement;
        let definition = match &mut statement {
            Statement::CreateExternalTable(create) => {
                if persist == Persist::Yes {
                    refuse_credentials(create)?;
                }
                Some(catalog::definition(create)?)
            }
            _ => None,
        };
        let plan = self.ctx.state().statement_to_plan(statement).await?;
        self.execute(plan, definition, persist).await
    }

    /// Serves as the scheduler of a Ballista cluster on `listener` until the process ends: each
    /// job is planned over this engine's tables, functions and stores; an executor silent for
    /// `executor_timeout` (10 s to an hour) is dropped and its tasks run again elsewhere.
    #[cfg(feature = "distributed")]
    pub async fn run_scheduler(
        &self,
        listener: tokio::net::TcpListener,
        executor_timeout: Duration,
    ) -> Result<()> {
        crate::cluster::check_shared_store(&self.store_url)?;
        crate::cluster::run_scheduler(self.ctx.state(), &self.codecs, listener, executor_timeout)
            .await
    }

    /// Serves as an executor of a Ballista cluster until the process ends: its tasks read and
    /// analyse files through this engine's stores and publish into its feature store.
    #[cfg(feature = "distributed")]
    pub async fn run_executor(&self, options: crate::cluster::ExecutorOptions) -> Result<()> {
        crate::cluster::check_shared_store(&self.store_url)?;
        crate::cluster::run_executor(self.ctx.state(), &self.codecs, options).await
    }

    /// A new session over this engine: the same tables, functions, store and memory pool, with
    /// settings of its own (what one client connection gets).
    pub fn new_session(&self) -> SessionContext {
        SessionContext::new_with_state(self.ctx.state())
    }

    /// Splits `sql` into statements with the session's dialect.
    pub fn parse(&self, sql: &str) -> Result<VecDeque<Statement>> {
        // Read in place: `state()` would copy the whole session for one setting.
        let dialect_name = self
            .ctx
            .state_ref()
            .read()
            .config_options()
            .sql_parser
            .dialect;
        let dialect = dialect_from_str(dialect_name).ok_or_else(|| {
            EngineError::Setting(format!("unsupported SQL dialect {dialect_name}"))
        })?;
        // PostgreSQL's, plus pgvector's `<+>`.
        let dialect: Box<dyn Dialect> = if dialect.is::<PostgreSqlDialect>() {
            Box::new(AudiolakeDialect::default())
        } else {
            dialect
        };
        Ok(DFParser::parse_sql_with_dialect(sql, dialect.as_ref())?)
    }

    /// `SET audiolake.device = 'cuda:0'`: loads the networks on that device, for every session
    /// (the process keeps one copy of the weights); DataFusion then records the setting.
    fn set_device(&self, set: &Set) -> Result<()> {
        let Set::SingleAssignment {
            variable, values, ..
        } = set
        else {
            return Ok(());
        };
        if !variable
            .to_string()
            .eq_ignore_ascii_case("audiolake.device")
        {
            return Ok(());
        }
        let device = match values.as_slice() {
            [SqlExpr::Value(v)] => v.value.clone().into_string(),
            [SqlExpr::Identifier(i)] => Some(i.value.clone()),
            _ => None,
        }
        .ok_or_else(|| {
            EngineError::Setting("audiolake.device takes one value, e.g. 'cuda:0'".into())
        })?;
        musicnn::configure(&device, self.model_batch_size)
            .map_err(|e| EngineError::Setting(format!("audiolake.device: {e}")))
    }

    /// `CREATE INDEX ... USING hnsw`: builds the index from the table's rows and keeps it in
    /// the store.
    async fn create_index(
        &self,
        create: &datafusion::sql::sqlparser::ast::CreateIndex,
    ) -> Result<DataFrame> {
        let table = TableReference::from(ddl::object_name(&create.table_name));
        let provider = self.ctx.table_provider(table.clone()).await?;
        let template = ddl::definition(create, &provider.schema())?;
        if self.indexes.get(&template.name).is_some() {
            if create.if_not_exists {
                return Ok(self.ctx.read_empty()?);
            }
            return Err(EngineError::DataFusion(DataFusionError::Plan(format!(
                "relation \"{}\" already exists",
                template.name
            ))));
        }
        self.indexes.build(&self.ctx.state(), template).await?;
        Ok(self.ctx.read_empty()?)
    }

    /// `REINDEX INDEX name`: builds the index again from its table's rows; queries use the
    /// previous build until the new one is kept.
    async fn reindex(&self, name: &str) -> Result<DataFrame> {
        let Some(entry) = self.indexes.get(name) else {
            return Err(EngineError::DataFusion(DataFusionError::Plan(format!(
                "index \"{name}\" does not exist"
            ))));
        };
        self.indexes
            .build(&self.ctx.state(), entry.definition.clone())
            .await?;
        Ok(self.ctx.read_empty()?)
    }

    /// `DROP INDEX [IF EXISTS] name, ...`.
    async fn drop_indexes(
        &self,
        names: &[datafusion::sql::sqlparser::ast::ObjectName],
        if_exists: bool,
    ) -> Result<DataFrame> {
        for name in names {
            let name = ddl::object_name(name);
            if !self.indexes.drop_index(&name).await? && !if_exists {
                return Err(EngineError::DataFusion(DataFusionError::Plan(format!(
                    "index \"{name}\" does not exist"
                ))));
            }
        }
        Ok(self.ctx.read_empty()?)
    }

    async fn execute(
        &self,
        plan: LogicalPlan,
        definition: Option<String>,
        persist: Persist,
    ) -> Result<DataFrame> {
        self.check_locations(&plan)?;
        let record = match (&plan, definition) {
            (LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)), Some(definition)) => {
                let skipped = cmd.if_not_exists && self.ctx.table_exist(cmd.name.clone())?;
                (!skipped).then(|| TableRecord {
                    name: cmd.name.to_string(),
                    definition,
                })
            }
            _ => None,
        };
        let dropped = match &plan {
            LogicalPlan::Ddl(DdlStatement::DropTable(drop)) => Some(drop.name.to_string()),
            _ => None,
        };
        // A table made again under its name may list another store's same path.
        let ddl = matches!(plan, LogicalPlan::Ddl(_));
        let frame = self.ctx.execute_logical_plan(plan).await?;
        if ddl {
            self.listings.forget();
        }
        if persist == Persist::Yes {
            if let Some(record) = record {
                self.catalog.save(&record).await?;
            }
            if let Some(name) = dropped {
                self.catalog.remove(&name).await?;
                for index in self.indexes.on_table(&TableReference::from(name.as_str())) {
                    self.indexes.drop_index(&index).await?;
                }
            }
        }
        Ok(frame)
    }

    /// Refuses statements that name a location outside the allowed roots. (The object stores
    /// refuse such paths too; this gives the error before anything is planned or created.)
    /// The store's own folders are refused here too, wherever the statement sits (also under
    /// `EXPLAIN ANALYZE`).
    fn check_locations(&self, plan: &LogicalPlan) -> Result<()> {
        let mut refused = None;
        plan.apply_with_subqueries(|node| {
            let checked = match node {
                LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => cmd
                    .locations
                    .iter()
                    .try_for_each(|l| self.roots.check_sql(l, Access::Read).map(|_| ())),
                LogicalPlan::Copy(copy) => self
                    .roots
                    .check_sql(&copy.output_url, Access::Write)
                    .map(|_| ()),
                _ => Ok(()),
            };
            Ok(match checked {
                Ok(()) => TreeNodeRecursion::Continue,
                Err(e) => {
                    refused = Some(e);
                    TreeNodeRecursion::Stop
                }
            })
        })?;
        refused.map_or(Ok(()), Err)
    }

    /// A record written before credentials were refused: moves them into the secrets file
    /// (scoped to the table's bucket) and rewrites the record without them. The table is
    /// restored from the old definition either way.
    async fn move_credentials_out(&mut self, record: &TableRecord) {
        let Ok(mut statements) = self.parse(&record.definition) else {
            return;
        };
        let Some(Statement::CreateExternalTable(mut create)) = statements.pop_front() else {
            return;
        };
        let (moved, kept): (Vec<_>, Vec<_>) = create
            .options
            .drain(..)
            .partition(|(k, _)| is_credential(k));
        create.options = kept;
        let bucket = create
            .locations
            .first()
            .and_then(|l| Url::parse(l).ok())
            .and_then(|u| u.host_str().map(str::to_owned));
        let (Some(bucket), false) = (bucket, moved.is_empty()) else {
            return;
        };
        let secret = secrets::S3Secret {
            name: format!("table_{}", record.name),
            scope: Some(format!("s3://{bucket}/")),
            options: moved
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), option_text(&v)))
                .collect(),
        };
        let outcome = async {
            self.secrets.create(secret, true, false)?;
            self.registry.forget_s3_clients();
            let definition = catalog::definition(&create)?;
            self.catalog
                .save(&TableRecord {
                    name: record.name.clone(),
                    definition,
                })
                .await
        }
        .await;
        let file = self
            .secrets
            .file()
            .map_or("the secrets file".to_string(), |f| f.display().to_string());
        self.warnings.push(match outcome {
            Ok(()) => format!(
                "the credentials of table {} were moved out of the store into {file}",
                record.name
            ),
            Err(e) => format!(
                "the credentials of table {} are still in the store: {e}",
                record.name
            ),
        });
    }

    /// The DataFusion session, for registering functions or tables directly.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn allowed_roots(&self) -> &AllowedRoots {
        &self.roots
    }

    pub fn store_url(&self) -> &Url {
        &self.store_url
    }

    /// Files probed so far and files announced by running scans.
    pub fn progress(&self) -> Arc<ScanProgress> {
        Arc::clone(&self.progress)
    }

    /// The feature store, for its counters.
    pub fn feature_store(&self) -> &FeatureStore {
        &self.features
    }

    /// Publishes analysis results still buffered (scans publish theirs as they end; a query
    /// stopped early, e.g. by `LIMIT`, may leave some).
    pub async fn flush(&self) -> Result<()> {
        Ok(self.features.flush().await?)
    }

    /// Analyses every file of the AUDIO table `table` with every feature group, keeping the
    /// results in the feature store; files already analysed are not decoded again. Progress is
    /// in [`Engine::progress`] and in the `audiolake_progress` table.
    pub async fn analyze_table(&self, table: &str) -> Result<AnalyzeReport> {
        self.analyze_table_groups(table, features::GROUPS).await
    }

    /// [`Engine::analyze_table`] with the feature groups named in `groups` only (any case,
    /// repeats ignored). An unknown name or an empty list fails before any file is read.
    pub async fn analyze_table_groups<S: AsRef<str>>(
        &self,
        table: &str,
        groups: &[S],
    ) -> Result<AnalyzeReport> {
        let groups = groups::choose(groups)?;
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let count = format!("SELECT count(*) FROM {quoted}");
        let files = self.run_with(&count, Persist::No).await?.collect().await?;
        let files = files
            .first()
            .and_then(|b| b.column(0).as_primitive_opt::<Int64Type>())
            .map_or(0, |c| c.value(0));
        // One column of each group is enough: a group is computed whole, and only the groups
        // whose columns a query names are computed. `format` stores each file's header too, so
        // that header columns are then answered without opening the file.
        let per_group: Vec<String> = features::group_schemas()
            .iter()
            .filter(|g| groups.contains(&g.name))
            .map(|g| format!("count(\"{}\")", g.fields[0].name()))
            .collect();
        let query = format!(
            "SELECT count(format), count(decoded_duration_s), {} FROM {quoted}",
            per_group.join(", ")
        );
        let stats = self.features.stats();
        let before = (stats.analyzed(), stats.from_store());
        // On a cluster the executors analyse: what they published tells how many files were new.
        let first = groups.first().copied().unwrap_or(features::DECODE_GROUP);
        let stored = async {
            self.features.refresh(&[first], Buckets::ALL).await?;
            Ok::<_, EngineError>(self.features.stored_files(first) as u64)
        };
        let stored_before = match self.clustered {
            true => stored.await?,
            false => 0,
        };
        let job = self.jobs.start(
            table,
            &groups,
            u64::try_from(files).unwrap_or(0),
            &self.progress,
        );
        let started = std::time::Instant::now();
        let outcome = async {
            let counts = self.run_with(&query, Persist::No).await?.collect().await?;
            self.flush().await?;
            Ok::<_, EngineError>(counts)
        }
        .await;
        job.finish(outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        let readable = outcome?
            .first()
            .and_then(|b| b.column(0).as_primitive_opt::<Int64Type>())
            .map_or(0, |c| c.value(0));
        let files = u64::try_from(files).unwrap_or(0);
        let unreadable = files.saturating_sub(u64::try_from(readable).unwrap_or(0));
        let (analyzed, from_store) = match self.clustered {
            true => {
                self.features.refresh(&[first], Buckets::ALL).await?;
                let new = (self.features.stored_files(first) as u64).saturating_sub(stored_before);
                (new, files.saturating_sub(unreadable).saturating_sub(new))
            }
            false => (stats.analyzed() - before.0, stats.from_store() - before.1),
        };
        Ok(AnalyzeReport {
            table: table.to_owned(),
            groups,
            files,
            analyzed,
            from_store,
            unreadable,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The AUDIO tables of the default schema, by name.
    pub async fn audio_tables(&self) -> Result<Vec<String>> {
        Ok(self
            .audio_tables_with(|_| Some(()))
            .await?
            .into_iter()
            .map(|(name, ())| name)
            .collect())
    }

    /// The AUDIO tables of the default schema whose location is a local folder, by name, with
    /// that folder.
    pub async fn local_audio_folders(&self) -> Result<Vec<(String, LocalFolder)>> {
        self.audio_tables_with(AudioTable::local_folder).await
    }

    /// The AUDIO tables of the default schema for which `pick` gives something, sorted by name.
    async fn audio_tables_with<T>(
        &self,
        pick: impl Fn(&AudioTable) -> Option<T>,
    ) -> Result<Vec<(String, T)>> {
        let state = self.ctx.state();
        let defaults = &state.config_options().catalog;
        let Some(schema) = self
            .ctx
            .catalog(&defaults.default_catalog)
            .and_then(|c| c.schema(&defaults.default_schema))
        else {
            return Ok(Vec::new());
        };
        let mut tables = Vec::new();
        for name in schema.table_names() {
            let table = schema.table(&name).await?;
            if let Some(picked) = table
                .as_ref()
                .and_then(|t| t.downcast_ref::<AudioTable>())
                .and_then(&pick)
            {
                tables.push((name, picked));
            }
        }
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(tables)
    }

    /// Merges the feature store's small parts and removes results of versions no longer in
    /// use; safe while queries run.
    pub async fn compact_store(&self) -> Result<CompactReport> {
        Ok(self.features.compact().await?)
    }

    /// Problems met while opening (tables that could not be restored).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Objects of the store set aside as unusable so far (catalog records, feature parts,
    /// compaction records, index definitions; also the `audiolake_store_problems` table).
    pub fn store_problems(&self) -> Vec<StoreProblem> {
        self.problems.list()
    }
}

fn is_credential(key: &str) -> bool {
    CREDENTIAL_OPTIONS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(key))
}

/// Refuses a table whose options hold credentials: its definition goes into the store.
fn refuse_credentials(create: &CreateExternalTable) -> Result<()> {
    let keys: Vec<String> = create
        .options
        .iter()
        .filter(|(k, _)| is_credential(k))
        .map(|(k, _)| format!("'{k}'"))
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    Err(EngineError::CredentialsInOptions {
        table: create.name.to_string(),
        keys: keys.join(", "),
    })
}

/// The text of an option value as written (`'x'` gives `x`).
fn option_text(value: &SqlValue) -> String {
    value
        .clone()
        .into_string()
        .unwrap_or_else(|| value.to_string())
}

/// Resolves the store location; a local store directory is created so that it can be used.
fn open_store_url(store: &str) -> Result<Url> {
    let url = resolve_location(store)?;
    if url.scheme() == "file" {
        let path = url
            .to_file_path()
            .map_err(|_| EngineError::InvalidLocation {
                location: store.to_string(),
                reason: "not a local directory".to_string(),
            })?;
        std::fs::create_dir_all(&path).map_err(|e| EngineError::InvalidLocation {
            location: store.to_string(),
            reason: format!("cannot create the store directory: {e}"),
        })?;
        return resolve_location(path.to_str().unwrap_or(store));
    }
    Ok(url)
}
