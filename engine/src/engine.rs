//! The engine: one DataFusion session over guarded object stores, the AUDIO table format, and
//! the persisted catalog. Every statement passes [`Engine::run`], which checks locations before
//! anything runs and records DDL in the store.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use url::Url;

use crate::audio::AudioTableFactory;
use crate::catalog::{self, Catalog, TableRecord};
use crate::error::{EngineError, Result};
use crate::functions::path_functions;
use crate::location::{object_path, resolve_location, AllowedRoots};
use crate::object_stores::GuardedRegistry;
use crate::progress::ScanProgress;

/// How to open an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where results and the catalog live: a local directory or an `s3://` prefix.
    pub store: String,
    /// Roots that may be read and written besides the store.
    pub allowed: Vec<String>,
    /// Partitions per scan; defaults to the number of cores.
    pub target_partitions: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            store: "./audiolake-data".to_string(),
            allowed: Vec::new(),
            target_partitions: None,
        }
    }
}

/// Whether a statement's effect on the catalog is recorded in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    Yes,
    No,
}

pub struct Engine {
    ctx: SessionContext,
    roots: Arc<AllowedRoots>,
    catalog: Catalog,
    progress: Arc<ScanProgress>,
    store_url: Url,
    warnings: Vec<String>,
}

impl Engine {
    /// Opens the store (creating a local one if needed), then restores the recorded tables.
    /// A table that can no longer be restored is reported in [`Engine::warnings`].
    pub async fn open(config: EngineConfig) -> Result<Self> {
        let store_url = open_store_url(&config.store)?;
        let mut roots = AllowedRoots::new();
        roots.add(store_url.as_str())?;
        for location in &config.allowed {
            roots.add(location)?;
        }
        let roots = Arc::new(roots);

        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(GuardedRegistry::new(Arc::clone(&roots))))
            .build_arc()?;
        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
        if let Some(n) = config.target_partitions {
            session = session.with_target_partitions(n.max(1));
        }
        let progress = Arc::new(ScanProgress::default());
        let mut state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .build();
        state.table_factories_mut().insert(
            "AUDIO".to_string(),
            Arc::new(AudioTableFactory::new(Arc::clone(&progress))),
        );
        let ctx = SessionContext::new_with_state(state);
        for function in path_functions(Arc::clone(&runtime.object_store_registry)) {
            ctx.register_udf(function);
        }

        let catalog = Catalog::new(
            runtime.object_store_registry.get_store(&store_url)?,
            &object_path(&store_url)?,
        );
        let mut engine = Self {
            ctx,
            roots,
            catalog,
            progress,
            store_url,
            warnings: Vec::new(),
        };
        for record in engine.catalog.load().await? {
            if let Err(e) = engine.run_with(&record.definition, Persist::No).await {
                engine
                    .warnings
                    .push(format!("table {} was not restored: {e}", record.name));
            }
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
            return Err(EngineError::DataFusion(
                datafusion::error::DataFusionError::Plan("no SQL statement given".to_string()),
            ));
        }
        let last = statements.len() - 1;
        let mut result = None;
        for (i, statement) in statements.into_iter().enumerate() {
            let definition = match &statement {
                Statement::CreateExternalTable(create) => Some(catalog::definition(create)?),
                _ => None,
            };
            let plan = self.ctx.state().statement_to_plan(statement).await?;
            let frame = self.execute(plan, definition, persist).await?;
            if i == last {
                result = Some(frame);
            } else {
                frame.collect().await?;
            }
        }
        Ok(result.expect("at least one statement"))
    }

    /// Splits `sql` into statements with the session's dialect.
    fn parse(&self, sql: &str) -> Result<VecDeque<Statement>> {
        let state = self.ctx.state();
        let dialect_name = state.config_options().sql_parser.dialect;
        let dialect = dialect_from_str(dialect_name).ok_or_else(|| {
            EngineError::InvalidOption(format!("unsupported SQL dialect {dialect_name}"))
        })?;
        Ok(DFParser::parse_sql_with_dialect(sql, dialect.as_ref())?)
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
        let frame = self.ctx.execute_logical_plan(plan).await?;
        if persist == Persist::Yes {
            if let Some(record) = record {
                self.catalog.save(&record).await?;
            }
            if let Some(name) = dropped {
                self.catalog.remove(&name).await?;
            }
        }
        Ok(frame)
    }

    /// Refuses statements that name a location outside the allowed roots. (The object stores
    /// refuse such paths too; this gives the error before anything is planned or created.)
    fn check_locations(&self, plan: &LogicalPlan) -> Result<()> {
        match plan {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
                for location in &cmd.locations {
                    self.roots.check_location(location)?;
                }
            }
            LogicalPlan::Copy(copy) => {
                self.roots.check_location(&copy.output_url)?;
            }
            _ => {}
        }
        Ok(())
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

    /// Problems met while opening (tables that could not be restored).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
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
