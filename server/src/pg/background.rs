//! Background analysis in the server: one job per AUDIO table, started by `CALL
//! analyze_table('t')` from a read-write client or by `serve --watch`, which analyses every
//! AUDIO table again at an interval so that new and changed files are analysed without a query.
//! Jobs show in `audiolake_progress`; a stopped job is recorded there as stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use audiolake::AudioLake;
use parking_lot::Mutex;
use tokio::task::AbortHandle;

pub struct Background {
    lake: Arc<AudioLake>,
    /// The running job of each table.
    running: Mutex<HashMap<String, AbortHandle>>,
}

impl Background {
    pub fn new(lake: Arc<AudioLake>) -> Arc<Self> {
        Arc::new(Self {
            lake,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Starts analysing `table`; false when a job for it is running already.
    pub fn start(self: &Arc<Self>, table: &str) -> bool {
        let mut running = self.running.lock();
        running.retain(|_, job| !job.is_finished());
        if running.contains_key(table) {
            return false;
        }
        let lake = Arc::clone(&self.lake);
        let name = table.to_owned();
        let job = tokio::spawn(async move {
            match lake.analyze_table(&name).await {
                Ok(report) if report.analyzed > 0 => log::info!(
                    "background analysis of {name}: {} files analysed in {:.1} s",
                    report.analyzed,
                    report.seconds
                ),
                Ok(_) => {}
                Err(e) => log::warn!("background analysis of {name} failed: {e}"),
            }
        });
        running.insert(table.to_owned(), job.abort_handle());
        true
    }

    /// Stops the job of `table`; false when none was running. What it published stays.
    pub fn stop(&self, table: &str) -> bool {
        let mut running = self.running.lock();
        match running.remove(table) {
            Some(job) if !job.is_finished() => {
                job.abort();
                true
            }
            _ => false,
        }
    }

    /// `serve --watch`: every `interval`, a job for each AUDIO table that has none running.
    /// A job over an unchanged table reads the listing and the store, and no audio.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match this.lake.engine().audio_tables().await {
                    Ok(tables) => {
                        for table in tables {
                            this.start(&table);
                        }
                    }
                    Err(e) => log::warn!("cannot list the AUDIO tables to watch: {e}"),
                }
                tokio::time::sleep(interval).await;
            }
        });
    }
}
