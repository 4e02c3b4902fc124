//! The `audiolake` command.

mod output;
mod progress;

use std::process::ExitCode;

use anyhow::{Context, Result};
use std::time::Duration;

use audiolake::{AudioLake, FlushPolicy};
use clap::{Args, Parser, Subcommand};

use output::Format;

/// audiolake: SQL over audio collections.
///
/// Folders and buckets of audio files become tables (CREATE EXTERNAL TABLE t STORED AS AUDIO
/// LOCATION '...'); tables are recorded in the store and come back on the next run. Only the
/// store and the allowed locations can be read or written.
#[derive(Parser, Debug)]
#[command(name = "audiolake", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run SQL statements (separated by `;`) in order and print the last result.
    ///
    /// Example: audiolake sql --music ~/Music "SELECT file_name, duration_s FROM music LIMIT 5"
    Sql(SqlArgs),

    /// Analyse every file of an AUDIO table with every feature group, into the feature store.
    ///
    /// Files already analysed (same path, size and ETag or modification time, or the same
    /// content under another name) are not decoded again, so an interrupted run resumes where
    /// it stopped. Example: audiolake analyze --music ~/Music --table music
    Analyze(AnalyzeArgs),

    /// Maintain the feature store.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Merge each feature group's parts into one and remove results of versions no longer in
    /// use. Safe while other processes query or analyse.
    Compact(EngineArgs),
}

#[derive(Args, Debug)]
struct AnalyzeArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// The AUDIO table to analyse.
    #[arg(long)]
    table: String,
}

/// Where data lives and what may be read; shared by every command that opens the engine.
#[derive(Args, Debug)]
struct EngineArgs {
    /// Store for the catalog and results: a local directory or s3://bucket/prefix.
    #[arg(long, env = "AUDIOLAKE_STORE", default_value = "./audiolake-data")]
    store: String,

    /// Allow reading (and writing) under this directory or s3:// prefix; repeatable.
    #[arg(long = "allow", value_name = "URL")]
    allow: Vec<String>,

    /// Register table `music` over this directory (or s3:// prefix) for this run; implies --allow.
    #[arg(long, value_name = "DIR")]
    music: Option<String>,

    /// Partitions per scan (default: number of cores).
    #[arg(long, value_name = "N")]
    partitions: Option<usize>,

    /// Publish analysis results to the store after this many files.
    #[arg(long, value_name = "N", default_value_t = FlushPolicy::default().files)]
    flush_files: usize,

    /// Publish analysis results to the store at least this often.
    #[arg(long, value_name = "SECONDS", default_value_t = FlushPolicy::default().interval.as_secs_f64())]
    flush_seconds: f64,
}

#[derive(Args, Debug)]
struct SqlArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// Output format of the result.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// The statements to run, e.g. "CREATE EXTERNAL TABLE ...; SELECT ...".
    sql: String,
}

impl EngineArgs {
    async fn open(&self) -> Result<AudioLake> {
        let mut builder = AudioLake::builder().store(&self.store);
        for location in self.allow.iter().chain(&self.music) {
            builder = builder.allow_location(location);
        }
        if let Some(n) = self.partitions {
            builder = builder.target_partitions(n);
        }
        let interval = Duration::try_from_secs_f64(self.flush_seconds)
            .context("--flush-seconds must be a non-negative number")?;
        builder = builder.flush_policy(FlushPolicy {
            files: self.flush_files.max(1),
            interval,
        });
        let lake = builder.build().await.context("cannot open audiolake")?;
        for warning in lake.engine().warnings() {
            eprintln!("warning: {warning}");
        }
        if let Some(music) = &self.music {
            lake.register_audio_table("music", music)
                .await
                .with_context(|| format!("cannot register table music over {music}"))?;
        }
        Ok(lake)
    }
}

async fn run_sql(args: SqlArgs) -> Result<()> {
    let lake = args.engine.open().await?;
    let bar = progress::spawn(lake.engine().progress());
    let result = async {
        let frame = lake.sql(&args.sql).await?;
        let batches = frame.clone().collect().await?;
        lake.flush().await?;
        Ok::<_, anyhow::Error>((frame.schema().as_arrow().clone(), batches))
    }
    .await;
    bar.finish().await;
    let (schema, batches) = result?;
    output::print(&schema, &batches, args.format)
}

async fn run_analyze(args: AnalyzeArgs) -> Result<()> {
    let lake = args.engine.open().await?;
    let bar = progress::spawn(lake.engine().progress());
    let result = lake.analyze_table(&args.table).await;
    bar.finish().await;
    let report = result.with_context(|| format!("cannot analyse table {}", args.table))?;
    println!(
        "{}: {} files, {} analysed, {} from the store, in {:.1} s",
        report.table, report.files, report.analysed, report.from_store, report.seconds
    );
    Ok(())
}

async fn run_compact(args: EngineArgs) -> Result<()> {
    let lake = args.open().await?;
    let report = lake
        .engine()
        .compact_store()
        .await
        .context("cannot compact the store")?;
    println!(
        "merged {} parts into one per group ({} rows kept, {} superseded); removed {} objects of old versions",
        report.parts_merged, report.rows_kept, report.rows_superseded, report.stale_objects_removed
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sql(args) => run_sql(args).await,
        Command::Analyze(args) => run_analyze(args).await,
        Command::Store(StoreCommand::Compact(args)) => run_compact(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
