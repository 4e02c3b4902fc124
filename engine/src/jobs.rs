//! Whole-table analysis jobs and index builds, and `audiolake_progress`, the system table that
//! shows them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Instant;

use datafusion::arrow::array::{
    BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::Result;

use crate::clock::now_micros;
use crate::progress::ScanProgress;
use crate::snapshot::Snapshot;

/// What one finished job did.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzeReport {
    pub table: String,
    /// The feature groups analysed, in the order of `GROUPS`.
    pub groups: Vec<&'static str>,
    pub files: u64,
    /// Files decoded and analysed by this job.
    pub analyzed: u64,
    /// Files answered by stored results (including copies found by content hash).
    pub from_store: u64,
    /// Files whose header could not be read: not decoded, the reason in their `error`.
    pub unreadable: u64,
    pub seconds: f64,
}

/// Finished jobs `audiolake_progress` keeps; older ones are forgotten, since a server that
/// watches its folders starts a job per change.
const FINISHED_KEPT: usize = 1000;

struct Job {
    id: u64,
    /// `analyze`, or `build index <name>`.
    kind: String,
    table: String,
    groups: Vec<&'static str>,
    started: Instant,
    started_at: i64,
    /// Files to analyse, or rows to insert into an index.
    files: u64,
    counter: Counter,
    done: Option<u64>,
    finished: Option<f64>,
    /// When it finished, in the order of `Jobs::next_id`: the first finished are forgotten first.
    finished_order: Option<u64>,
    error: Option<String>,
}

/// The jobs an engine has run or is running.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<Vec<Job>>,
    next_id: AtomicU64,
}

/// Where a running job's count of things done comes from.
enum Counter {
    /// The engine's file counter, which stood at this when the job started: the job's files
    /// are those counted since.
    Files(u64),
    /// The job's own.
    Own(Arc<AtomicU64>),
}

/// A job of [`Jobs`] while it runs. Dropped before [`RunningJob::finish`] (its task was
/// stopped or its client went away), the job is recorded as stopped.
pub struct RunningJob {
    jobs: Arc<Jobs>,
    id: u64,
    finished: bool,
}

impl RunningJob {
    pub fn finish(mut self, outcome: std::result::Result<(), String>) {
        self.finished = true;
        self.jobs.finish(self.id, outcome);
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        if !self.finished {
            self.jobs
                .finish(self.id, Err("stopped before the end".to_string()));
        }
    }
}

impl Jobs {
    /// An analysis of `files` files of `table`, counted by `progress`.
    pub fn start(
        self: &Arc<Self>,
        table: &str,
        groups: &[&'static str],
        files: u64,
        progress: &ScanProgress,
    ) -> RunningJob {
        let counter = Counter::Files(progress.snapshot().0);
        self.push("analyze".to_string(), table, groups, files, counter)
    }

    /// The build of index `name` over `rows` rows of `table`; the builder adds the rows it
    /// has inserted to the counter returned.
    pub fn start_index_build(
        self: &Arc<Self>,
        name: &str,
        table: &str,
        rows: u64,
    ) -> (RunningJob, Arc<AtomicU64>) {
        let inserted = Arc::new(AtomicU64::new(0));
        let counter = Counter::Own(Arc::clone(&inserted));
        let job = self.push(format!("build index {name}"), table, &[], rows, counter);
        (job, inserted)
    }

    fn push(
        self: &Arc<Self>,
        kind: String,
        table: &str,
        groups: &[&'static str],
        files: u64,
        counter: Counter,
    ) -> RunningJob {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.jobs.lock().push(Job {
            id,
            kind,
            table: table.to_owned(),
            groups: groups.to_vec(),
            started: Instant::now(),
            started_at: now_micros(),
            files,
            counter,
            done: None,
            finished: None,
            finished_order: None,
            error: None,
        });
        RunningJob {
            jobs: Arc::clone(self),
            id,
            finished: false,
        }
    }

    fn finish(&self, id: u64, outcome: std::result::Result<(), String>) {
        let mut jobs = self.jobs.lock();
        let order = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(job) = jobs.iter_mut().find(|job| job.id == id) {
            job.finished = Some(job.started.elapsed().as_secs_f64());
            job.finished_order = Some(order);
            match outcome {
                Ok(()) => job.done = Some(job.files),
                Err(e) => job.error = Some(e),
            }
        }
        let mut finished: Vec<u64> = jobs.iter().filter_map(|job| job.finished_order).collect();
        if finished.len() > FINISHED_KEPT {
            let forget = finished.len() - FINISHED_KEPT;
            let (_, &mut first_kept, _) = finished.select_nth_unstable(forget);
            jobs.retain(|job| job.finished_order.is_none_or(|order| order >= first_kept));
        }
    }

    /// Files (or rows) done by a job so far (every file once its scan has passed it).
    fn done(job: &Job, progress: &ScanProgress) -> u64 {
        job.done.unwrap_or_else(|| {
            match &job.counter {
                Counter::Files(start) => progress.snapshot().0.saturating_sub(*start),
                Counter::Own(done) => done.load(Ordering::Relaxed),
            }
            .min(job.files)
        })
    }
}

/// `audiolake_progress`: one row per analysis job and index build of this engine.
pub struct ProgressTable {
    jobs: Arc<Jobs>,
    progress: Arc<ScanProgress>,
}

impl ProgressTable {
    pub fn new(jobs: Arc<Jobs>, progress: Arc<ScanProgress>) -> Self {
        Self { jobs, progress }
    }
}

impl Snapshot for ProgressTable {
    fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("groups", DataType::Utf8, false),
            Field::new("started_at", ts, false),
            Field::new("files_total", DataType::Int64, false),
            Field::new("files_done", DataType::Int64, false),
            Field::new("files_to_go", DataType::Int64, false),
            Field::new("files_per_s", DataType::Float64, true),
            Field::new("eta_s", DataType::Float64, true),
            Field::new("finished", DataType::Boolean, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("job", DataType::Utf8, false),
        ]))
    }

    fn snapshot(&self) -> Result<RecordBatch> {
        let jobs = self.jobs.jobs.lock();
        let (mut groups, mut kinds) = (Vec::new(), Vec::new());
        let mut rows = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for job in jobs.iter() {
            let done = Jobs::done(job, &self.progress);
            let seconds = job
                .finished
                .unwrap_or_else(|| job.started.elapsed().as_secs_f64());
            let rate = (seconds > 0.0 && done > 0).then(|| done as f64 / seconds);
            let to_go = job.files - done;
            rows.0.push(job.table.clone());
            groups.push(job.groups.join(", "));
            kinds.push(job.kind.clone());
            rows.1.push(job.started_at);
            rows.2.push(job.files as i64);
            rows.3.push(done as i64);
            rows.4.push(to_go as i64);
            rows.5.push(rate);
            rows.6.push(match (job.finished, rate) {
                (Some(_), _) => Some(0.0),
                (None, Some(r)) => Some(to_go as f64 / r),
                (None, None) => None,
            });
            rows.7.push(job.finished.is_some());
            rows.8.push(job.error.clone());
        }
        Ok(RecordBatch::try_new(
            Self::schema(),
            vec![
                Arc::new(StringArray::from(rows.0)),
                Arc::new(StringArray::from(groups)),
                Arc::new(TimestampMicrosecondArray::from(rows.1).with_timezone("UTC")),
                Arc::new(Int64Array::from(rows.2)),
                Arc::new(Int64Array::from(rows.3)),
                Arc::new(Int64Array::from(rows.4)),
                Arc::new(Float64Array::from(rows.5)),
                Arc::new(Float64Array::from(rows.6)),
                Arc::new(BooleanArray::from(rows.7)),
                Arc::new(StringArray::from(rows.8)),
                Arc::new(StringArray::from(kinds)),
            ],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};

    use super::*;

    #[test]
    fn a_job_dropped_unfinished_is_recorded_as_stopped() {
        let jobs = Arc::new(Jobs::default());
        let progress = Arc::new(ScanProgress::default());
        jobs.start("done", &["rhythm"], 3, &progress).finish(Ok(()));
        drop(jobs.start("dropped", &["rhythm", "tonal"], 3, &progress));
        let running = jobs.start("running", &["tonal"], 3, &progress);

        let batch = ProgressTable::new(Arc::clone(&jobs), progress)
            .snapshot()
            .unwrap();
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let finished = batch
            .column_by_name("finished")
            .unwrap()
            .as_boolean()
            .clone();
        let (groups, error) = (text("groups"), text("error"));
        assert_eq!(
            (0..3).map(|i| finished.value(i)).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert!(error.is_null(0));
        assert_eq!(error.value(1), "stopped before the end");
        assert!(error.is_null(2));
        assert_eq!(groups.value(1), "rhythm, tonal");
        drop(running);
    }

    #[test]
    fn an_index_build_counts_its_own_rows() {
        let jobs = Arc::new(Jobs::default());
        let progress = Arc::new(ScanProgress::default());
        let (build, inserted) = jobs.start_index_build("music_sound", "music", 100);
        inserted.fetch_add(40, Ordering::Relaxed);
        // Files counted by scans meanwhile are not the build's.
        progress.add_total(7);
        progress.file_done();
        let table = ProgressTable::new(Arc::clone(&jobs), Arc::clone(&progress));
        let row = |name: &str| {
            let batch = table.snapshot().unwrap();
            let column = batch.column_by_name(name).unwrap().clone();
            column
        };
        assert_eq!(
            row("job").as_string::<i32>().value(0),
            "build index music_sound"
        );
        assert_eq!(row("table_name").as_string::<i32>().value(0), "music");
        assert_eq!(row("groups").as_string::<i32>().value(0), "");
        assert_eq!(
            row("files_done")
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0),
            40
        );
        build.finish(Err("index build cancelled".to_string()));
        assert_eq!(
            row("error").as_string::<i32>().value(0),
            "index build cancelled"
        );
        assert!(row("finished").as_boolean().value(0));
        assert_eq!(
            row("files_done")
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0),
            40,
            "a stopped build keeps the rows it had inserted"
        );
    }

    #[test]
    fn old_finished_jobs_are_forgotten_running_ones_never() {
        let jobs = Arc::new(Jobs::default());
        let progress = Arc::new(ScanProgress::default());
        let running = jobs.start("running", &["rhythm"], 3, &progress);
        for i in 0..FINISHED_KEPT + 5 {
            jobs.start(&format!("job{i}"), &["rhythm"], 3, &progress)
                .finish(Ok(()));
        }
        let batch = ProgressTable::new(Arc::clone(&jobs), Arc::clone(&progress))
            .snapshot()
            .unwrap();
        assert_eq!(batch.num_rows(), FINISHED_KEPT + 1);
        let tables = batch.column(0).as_string::<i32>();
        assert_eq!(tables.value(0), "running");
        assert_eq!(tables.value(1), "job5");
        assert_eq!(
            tables.value(FINISHED_KEPT),
            format!("job{}", FINISHED_KEPT + 4)
        );
        running.finish(Ok(()));
        let batch = ProgressTable::new(jobs, progress).snapshot().unwrap();
        assert_eq!(batch.num_rows(), FINISHED_KEPT);
        let tables = batch.column(0).as_string::<i32>();
        assert_eq!(tables.value(0), "running");
        assert_eq!(tables.value(1), "job6");
    }
}
