//! Background analysis in the server: one job per AUDIO table, started by `CALL
//! analyze_table('t')` from a read-write client or by `serve --watch` ([`super::watch`]).
//! Jobs run on a tokio runtime of their own whose threads, the blocking ones that decode and
//! analyse included, have the lowest scheduling priority: queries, on the server's runtime,
//! come first. So do the threads on which jobs run the musicnn networks, a pool of their own
//! beside the shared batchers that queries use. Jobs show in `audiolake_progress`; a stopped
//! job is recorded there as stopped.

use std::collections::HashMap;
use std::sync::{Arc, Once};

use anyhow::{Context, Result};
use audiolake::AudioLake;
use parking_lot::Mutex;
use thread_priority::{set_current_thread_priority, ThreadPriority};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;

/// The name of the background runtime's threads (in `top -H`, `ps -L` and `/proc`).
const THREAD_NAME: &str = "audiolake-bg";
/// The name of the threads on which jobs run the networks.
const NETWORK_THREAD_NAME: &str = "audiolake-bg-nn";

pub struct Background {
    lake: Arc<AudioLake>,
    /// Runs the jobs; `None` once dropped.
    runtime: Option<Runtime>,
    jobs: Handle,
    /// The server's runtime, at normal priority.
    queries: Handle,
    networks: Arc<OnceCell<()>>,
    running: Arc<Mutex<HashMap<String, Job>>>,
}

/// The running job of a table.
struct Job {
    task: AbortHandle,
    /// Asked for while running: the job runs once more when it ends.
    again: bool,
}

impl Background {
    /// Starts the background runtime; called from the server's runtime.
    pub fn new(lake: Arc<AudioLake>) -> Result<Arc<Self>> {
        let networks_pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|_| NETWORK_THREAD_NAME.to_owned())
            .start_handler(|_| lower_priority())
            .build()
            .context("cannot start the threads of background analysis")?;
        let networks_pool = Arc::new(networks_pool);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // The jobs' async part (listing, store reads and writes) is light: decoding and
            // analysis run on the runtime's blocking threads, one per partition in flight.
            .worker_threads(2)
            .thread_name(THREAD_NAME)
            .on_thread_start(move || {
                lower_priority();
                audiolake::udf::features::musicnn::run_networks_on(Arc::clone(&networks_pool));
            })
            .enable_all()
            .build()
            .context("cannot start the threads of background analysis")?;
        Ok(Arc::new(Self {
            lake,
            jobs: runtime.handle().clone(),
            runtime: Some(runtime),
            queries: Handle::current(),
            networks: Arc::new(OnceCell::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
        }))
    }

    pub fn lake(&self) -> &AudioLake {
        &self.lake
    }

    /// The runtime the jobs run on, for the tasks that decide when they run.
    pub fn runtime(&self) -> &Handle {
        &self.jobs
    }

    /// Starts analysing `table`; false when a job for it is running already.
    pub fn start(&self, table: &str) -> bool {
        let mut running = self.running.lock();
        running.retain(|_, job| !job.task.is_finished());
        if running.contains_key(table) {
            return false;
        }
        let task = self.spawn(table);
        running.insert(table.to_owned(), Job { task, again: false });
        true
    }

    /// Starts analysing `table`, or, when a job for it is running, runs that job once more
    /// when it ends: files changed while it listed or read them are analysed too, and any
    /// number of requests meanwhile make one more run.
    pub fn request(&self, table: &str) {
        let mut running = self.running.lock();
        running.retain(|_, job| !job.task.is_finished());
        match running.get_mut(table) {
            Some(job) => job.again = true,
            None => {
                let task = self.spawn(table);
                running.insert(table.to_owned(), Job { task, again: false });
            }
        }
    }

    /// Stops the job of `table`; false when none was running. What it published stays.
    pub fn stop(&self, table: &str) -> bool {
        let mut running = self.running.lock();
        match running.remove(table) {
            Some(job) if !job.task.is_finished() => {
                job.task.abort();
                true
            }
            _ => false,
        }
    }

    /// The task of a job: runs until no run was asked for while it ran. The caller records
    /// it in `running` before releasing the lock, so the task finds itself there.
    fn spawn(&self, table: &str) -> AbortHandle {
        let lake = Arc::clone(&self.lake);
        let running = Arc::clone(&self.running);
        let (queries, networks) = (self.queries.clone(), Arc::clone(&self.networks));
        let name = table.to_owned();
        let task = self.jobs.spawn(async move {
            load_networks(&queries, &networks).await;
            loop {
                analyze(&lake, &name).await;
                if !run_again(&running, &name) {
                    break;
                }
            }
        });
        task.abort_handle()
    }
}

/// At the end of a run of `table`'s job, on its task: whether a run was asked for meanwhile;
/// if not, the job is over.
fn run_again(running: &Mutex<HashMap<String, Job>>, table: &str) -> bool {
    let mut running = running.lock();
    let me = tokio::task::id();
    // Not there: stopped, and maybe started anew, while this run ended.
    let Some(job) = running.get_mut(table).filter(|job| job.task.id() == me) else {
        return false;
    };
    if job.again {
        job.again = false;
        return true;
    }
    running.remove(table);
    false
}

impl Drop for Background {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which async code may not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn analyze(lake: &AudioLake, table: &str) {
    match lake.analyze_table(table).await {
        Ok(report) if report.analyzed > 0 => log::info!(
            "background analysis of {table}: {} files analysed in {:.1} s",
            report.analyzed,
            report.seconds
        ),
        Ok(_) => {}
        Err(e) => log::warn!("background analysis of {table} failed: {e}"),
    }
}

/// Loads the shared musicnn networks from a thread of the server's runtime, unless a query did
/// already. Their batchers' worker threads, which run queries' passes, start then, and a thread
/// starts with the priority of the thread that starts it: started by a job, they would run
/// every query's networks at the job's low priority.
async fn load_networks(queries: &Handle, networks: &OnceCell<()>) {
    networks
        .get_or_init(|| async {
            let loaded = queries
                .spawn_blocking(audiolake::udf::features::musicnn::labels)
                .await
                .map_err(|e| e.to_string())
                .and_then(|labels| labels.map(drop));
            // The jobs then give each file's error in its row, as queries do.
            if let Err(e) = loaded {
                log::warn!("cannot load the musicnn networks: {e}");
            }
        })
        .await;
}

/// Gives the calling thread the lowest priority of its scheduling policy (nice 19 on Linux,
/// where the nice value is per thread): queries' threads keep theirs.
fn lower_priority() {
    static WARNED: Once = Once::new();
    if let Err(e) = set_current_thread_priority(ThreadPriority::Min) {
        WARNED.call_once(|| {
            log::warn!(
                "background analysis runs at the priority of queries: cannot lower the \
                 priority of its threads: {e}"
            );
        });
    }
}
