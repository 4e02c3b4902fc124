//! The `audiolake` command.

#[cfg(feature = "distributed")]
mod cluster;
mod output;
mod pg;
mod progress;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use std::time::Duration;

use audiolake::{udf, AudioLake, AudioLakeBuilder, FlushPolicy};
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

    /// Analyse every file of an AUDIO table with every feature group (or those of --groups),
    /// into the feature store.
    ///
    /// Files already analysed (same path, size and ETag or modification time, or the same
    /// content under another name) are not decoded again, nor are groups already stored for
    /// them, so an interrupted run resumes where it stopped. Example: audiolake analyze --music
    /// ~/Music --table music --groups rhythm,tonal
    Analyze(AnalyzeArgs),

    /// Maintain the feature store.
    #[command(subcommand)]
    Store(StoreCommand),

    /// Serve the tables over the PostgreSQL protocol (psql, JDBC, psycopg, BI tools).
    ///
    /// Passwords are checked with SCRAM-SHA-256 against --users FILE (see `audiolake user
    /// add`); without one the server refuses to start, unless --dev-no-auth is given, which
    /// listens on loopback only. Example: audiolake serve --music ~/Music --users users.txt
    Serve(ServeArgs),

    /// Manage the users of `audiolake serve`.
    #[command(subcommand)]
    User(UserCommand),

    /// Run the scheduler of a Ballista cluster (see docs/cluster.md).
    ///
    /// Clients (`--cluster df://HOST:PORT`) submit queries to it; it plans them over the shared
    /// store and hands their tasks to executors. Ballista has no authentication: bind it to a
    /// private network. Example: audiolake scheduler --store s3://lake/store --allow s3://music/
    #[cfg(feature = "distributed")]
    Scheduler(cluster::SchedulerArgs),

    /// Run an executor of a Ballista cluster (see docs/cluster.md).
    ///
    /// It runs the tasks the scheduler hands it: each analyses one group of files through the
    /// shared store. Example: audiolake executor --scheduler 10.0.0.1:50050 --store
    /// s3://lake/store --allow s3://music/
    #[cfg(feature = "distributed")]
    Executor(cluster::ExecutorArgs),
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user to the users file, or change its password and role. The password is read
    /// from standard input (a prompt on a terminal); the file keeps only SCRAM's stored and
    /// server keys, and lines written by older versions are converted.
    Add {
        /// The user name.
        name: String,

        /// The users file (created with mode 0600 if missing).
        #[arg(long, value_name = "FILE", env = "AUDIOLAKE_USERS")]
        users: PathBuf,

        /// The user may query but not create, drop or write anything.
        #[arg(long)]
        read_only: bool,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:5433")]
    listen: SocketAddr,

    /// Users and their SCRAM verifiers (written by `audiolake user add`). The server keeps the
    /// secret of unknown users' salts beside it, in FILE.mock-key (made at the first start).
    #[arg(long, value_name = "FILE", env = "AUDIOLAKE_USERS")]
    users: Option<PathBuf>,

    /// Let anyone in without a password; only on a loopback address. For trials, not for data
    /// that matters.
    #[arg(long)]
    dev_no_auth: bool,

    /// TLS certificate chain (PEM); with --tls-key. The server does not start if it cannot
    /// load them.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Connections served at once; one more gets "sorry, too many clients already".
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Close connections that ran nothing for this long (0: never).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    idle_timeout: u64,

    /// Close connections that have not logged in this long after connecting, so that silent
    /// clients cannot hold the --max-connections slots.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    authentication_timeout: u64,

    /// Memory that query execution may use at once, across all connections, e.g. 4GiB or
    /// 512MiB; a query that needs more fails, the others go on.
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size)]
    memory_limit: usize,

    /// Serve Prometheus metrics on http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,

    /// Analyse new and changed files of every AUDIO table in the background, at a lower
    /// priority than queries: each table is listed again every --watch-interval, and tables
    /// over local folders are also analysed about a second after their files change.
    #[arg(long)]
    watch: bool,

    /// Seconds between two listings of each table under --watch.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    watch_interval: u64,
}

/// `4GiB`, `512MiB`, `100MB`, `1024` (bytes).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 4GiB or 512MiB"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit '{other}' (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Merge each feature group's parts into one and remove results of versions no longer in
    /// use. Safe while other processes query or analyse.
    Compact(CompactArgs),
}

#[derive(Args, Debug)]
struct CompactArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// Keep replaced parts this long before deleting them, for readers that listed them
    /// (e.g. 1h, 30min, or seconds); 0 deletes them at once.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    retention: Duration,
}

/// `1h`, `30min`, `90s` (humantime), or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration such as 1h, 30min or 3600: {e}"))
}

#[derive(Args, Debug)]
struct AnalyzeArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// The AUDIO table to analyse.
    #[arg(long)]
    table: String,

    #[arg(
        long,
        value_name = "GROUP,...",
        value_delimiter = ',',
        help = format!(
            "Feature groups to compute, separated by commas (default: all): {}",
            udf::features::GROUPS.join(", ")
        )
    )]
    groups: Option<Vec<String>>,
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

    /// Where the tagging networks run: cpu, cuda or cuda:N (cuda needs a build with --features cuda).
    #[arg(long, env = "AUDIOLAKE_DEVICE", default_value = "cpu")]
    device: String,

    /// Patches per forward pass of the networks, shared by the files analysed at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    batch_size: usize,

    /// The tagging networks run on at most N 3 s patches per track, spread evenly over it
    /// (0: every patch); a session may change it with SET audiolake.musicnn_max_patches.
    #[arg(long, value_name = "N", default_value_t = udf::features::musicnn::DEFAULT_MAX_PATCHES)]
    musicnn_max_patches: usize,

    /// File where CREATE SECRET keeps S3 credentials, outside the store (mode 0600; default
    /// ~/.config/audiolake/secrets.json).
    #[arg(long, value_name = "FILE", env = "AUDIOLAKE_SECRETS")]
    secrets: Option<PathBuf>,

    /// Run queries on the Ballista cluster whose scheduler is at this URL (df://HOST:PORT);
    /// the store must then be an s3:// prefix that every executor reaches.
    #[cfg(feature = "distributed")]
    #[arg(long, value_name = "URL", env = "AUDIOLAKE_CLUSTER")]
    cluster: Option<String>,

    /// How long CSV, JSON and Parquet tables reuse the listing of their location: files other
    /// processes add or remove are seen after it, our own writes at once (0: list at every
    /// query).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    listing_ttl: Duration,
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
        self.open_with(AudioLake::builder()).await
    }

    async fn open_with(&self, builder: AudioLakeBuilder) -> Result<AudioLake> {
        let mut builder = builder
            .store(&self.store)
            .device(&self.device)
            .model_batch_size(self.batch_size)
            .musicnn_max_patches(self.musicnn_max_patches)
            .listing_ttl(self.listing_ttl);
        for location in self.allow.iter().chain(&self.music) {
            builder = builder.allow_location(location);
        }
        if let Some(n) = self.partitions {
            builder = builder.target_partitions(n);
        }
        if let Some(file) = &self.secrets {
            builder = builder.secrets_file(file);
        }
        #[cfg(feature = "distributed")]
        if let Some(url) = &self.cluster {
            builder = builder.cluster(url);
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
    let result = match &args.groups {
        Some(groups) => {
            lake.analyze_table_groups(&args.table, groups.as_slice())
                .await
        }
        None => lake.analyze_table(&args.table).await,
    };
    bar.finish().await;
    let report = result.with_context(|| format!("cannot analyse table {}", args.table))?;
    let unreadable = match report.unreadable {
        0 => String::new(),
        n => format!(", {n} unreadable"),
    };
    println!(
        "{}: {} files, {} analysed, {} from the store{unreadable}, in {:.1} s; groups {}",
        report.table,
        report.files,
        report.analyzed,
        report.from_store,
        report.seconds,
        report.groups.join(", ")
    );
    if report.analyzed > 0 && report.seconds > 0.0 {
        let per_second = report.analyzed as f64 / report.seconds;
        println!(
            "{per_second:.2} files/s analysed, {:.0} tracks per hour",
            per_second * 3600.0
        );
    }
    Ok(())
}

async fn run_compact(args: CompactArgs) -> Result<()> {
    let lake = args
        .engine
        .open_with(AudioLake::builder().compact_retention(args.retention))
        .await?;
    let report = lake
        .engine()
        .compact_store()
        .await
        .context("cannot compact the store")?;
    println!(
        "merged {} parts into one per group ({} rows kept, {} superseded); removed {} replaced parts past their retention and {} objects of old versions",
        report.parts_merged,
        report.rows_kept,
        report.rows_superseded,
        report.replaced_parts_removed,
        report.stale_objects_removed
    );
    Ok(())
}

async fn run_serve(args: ServeArgs) -> Result<()> {
    let lake = args
        .engine
        .open_with(AudioLake::builder().memory_limit(args.memory_limit))
        .await?;
    let tls = args.tls_cert.zip(args.tls_key);
    pg::serve(
        lake,
        pg::ServeOptions {
            listen: args.listen,
            users: args.users,
            dev_no_auth: args.dev_no_auth,
            tls,
            max_connections: args.max_connections as usize,
            idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
            authentication_timeout: Duration::from_secs(args.authentication_timeout),
            metrics_listen: args.metrics_listen,
            watch: args.watch.then(|| Duration::from_secs(args.watch_interval)),
        },
    )
    .await
}

fn run_user_add(name: &str, users: &std::path::Path, read_only: bool) -> Result<()> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            anyhow::bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    let role = if read_only {
        pg::Role::ReadOnly
    } else {
        pg::Role::ReadWrite
    };
    pg::add_user(users, name, &password, role)?;
    println!(
        "user {name} ({}) written to {}",
        if read_only { "read-only" } else { "read-write" },
        users.display()
    );
    Ok(())
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // symphonia logs what it skips while probing files that then read fine, and corrupt files
    // already say why in their `error` column: silent unless RUST_LOG asks.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,symphonia=off"),
    )
    .init();
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    let result = match cli.command {
        Command::Sql(args) => run_sql(args).await,
        Command::Analyze(args) => run_analyze(args).await,
        Command::Store(StoreCommand::Compact(args)) => run_compact(args).await,
        Command::Serve(args) => run_serve(args).await,
        Command::User(UserCommand::Add {
            name,
            users,
            read_only,
        }) => run_user_add(&name, &users, read_only),
        #[cfg(feature = "distributed")]
        Command::Scheduler(args) => cluster::run_scheduler(args).await,
        #[cfg(feature = "distributed")]
        Command::Executor(args) => cluster::run_executor(args).await,
    };
    let code: u8 = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    if serving {
        // Statements still running when the server stops hold blocking work (decoding,
        // inference) that the runtime would wait for on its way down; nothing they produce is
        // published any more, so the process leaves now.
        std::process::exit(code.into());
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_a_duration_or_seconds() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30min"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("soon"),
            Err("'soon' is not a duration such as 1h, 30min or 3600: expected number at 0".into())
        );
    }
}
