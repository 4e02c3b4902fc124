//! `serve --watch`: when background jobs run. Every `--watch-interval`, a job for each AUDIO
//! table that has none running (object storage sends no notifications, and the listing also
//! catches what notifications missed); a table created while the server runs gets its first
//! job within seconds; and the local folders of AUDIO tables are watched through file-system
//! notifications (inotify on Linux), so that a new or changed audio file starts its table's
//! job about a second after its last write.
//!
//! Bounds: an event costs a few comparisons and no memory that stays (a flag per table), so
//! an event storm grows nothing here; the kernel's queue is bounded, and when it overflows
//! every watched table is analysed again. Reads (a job's or a query's own) are not events
//! that count, files the table does not list (hidden, other extensions) are ignored, and the
//! store cannot lie inside a table's folder (the engine refuses such a table), so a job never
//! starts another. Symbolic links are not followed: files under a linked folder are found
//! by the interval's listing only.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audiolake::audio::LocalFolder;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Config, Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;

use super::background::Background;

/// How often the list of AUDIO tables is read for tables created or dropped meanwhile.
const TABLES_EVERY: Duration = Duration::from_secs(2);
/// Time without events before jobs start: copying one file gives many events.
const QUIET: Duration = Duration::from_secs(1);
/// The longest wait for quiet, for folders written to without pause.
const QUIET_AT_MOST: Duration = Duration::from_secs(10);

/// Starts watching on the background runtime.
pub fn watch(background: &Arc<Background>, interval: Duration) {
    let watch = Watch::new(Arc::clone(background), interval);
    background.runtime().spawn(watch.run());
}

struct Watch {
    background: Arc<Background>,
    changes: Arc<Changes>,
    /// `None` when the system gave no watcher: local folders are then listed at the interval.
    watcher: Option<RecommendedWatcher>,
    /// Folders watched, and folders that could not be (not tried again).
    watched: HashSet<PathBuf>,
    failed: HashSet<PathBuf>,
    /// The AUDIO tables seen at the last look.
    seen: HashSet<String>,
    interval: Duration,
}

/// What file-system events tell the loop; shared with the watcher's thread.
#[derive(Default)]
struct Changes {
    tables: RwLock<Vec<Watched>>,
    /// Wakes the loop at the first change since it last looked.
    wake: Notify,
    /// Set by every change: the loop clears it, then waits for quiet.
    fresh: AtomicBool,
}

/// A table over a watched local folder.
struct Watched {
    table: String,
    folder: LocalFolder,
    changed: AtomicBool,
}

impl Watch {
    fn new(background: Arc<Background>, interval: Duration) -> Self {
        let changes = Arc::new(Changes::default());
        let handler = {
            let changes = Arc::clone(&changes);
            move |event: notify::Result<Event>| changes.on_event(event)
        };
        let config = Config::default().with_follow_symlinks(false);
        let watcher = match RecommendedWatcher::new(handler, config) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                log::warn!(
                    "cannot watch local folders for changes ({e}); their files are listed every \
                     {interval:?}, like those of other tables"
                );
                None
            }
        };
        Self {
            background,
            changes,
            watcher,
            watched: HashSet::new(),
            failed: HashSet::new(),
            seen: HashSet::new(),
            interval,
        }
    }

    async fn run(mut self) {
        let mut listing = tokio::time::interval(self.interval);
        let mut tables = tokio::time::interval(TABLES_EVERY);
        listing.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tables.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let changes = Arc::clone(&self.changes);
        loop {
            tokio::select! {
                _ = listing.tick() => self.look(true).await,
                _ = tables.tick() => self.look(false).await,
                () = changes.wake.notified() => self.changed().await,
            }
        }
    }

    /// Reads the AUDIO tables: starts a job for every one (`all`), or for those created since
    /// the last look; watches the folders of the local ones.
    async fn look(&mut self, all: bool) {
        let background = Arc::clone(&self.background);
        let engine = background.lake().engine();
        let tables = match engine.audio_tables().await {
            Ok(tables) => tables,
            Err(e) => {
                log::warn!("cannot list the AUDIO tables to watch: {e}");
                return;
            }
        };
        for table in &tables {
            if all || !self.seen.contains(table) {
                background.start(table);
            }
        }
        self.seen = tables.into_iter().collect();
        if self.watcher.is_none() {
            return;
        }
        match engine.local_audio_folders().await {
            Ok(folders) => self.watch_folders(folders),
            Err(e) => log::warn!("cannot list the folders of the AUDIO tables to watch: {e}"),
        }
    }

    /// Watches exactly the folders of `folders`, and routes their events to their tables.
    fn watch_folders(&mut self, folders: Vec<(String, LocalFolder)>) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted: HashSet<PathBuf> = folders
            .iter()
            .map(|(_, f)| f.path().to_path_buf())
            .collect();
        for gone in self
            .watched
            .difference(&wanted)
            .cloned()
            .collect::<Vec<_>>()
        {
            // The folder may be gone too, and its watch with it.
            let _ = watcher.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for folder in &wanted {
            if self.watched.contains(folder) || self.failed.contains(folder) {
                continue;
            }
            // Walks the folder's subfolders, one watch each: a blocking call.
            match tokio::task::block_in_place(|| watcher.watch(folder, RecursiveMode::Recursive)) {
                Ok(()) => {
                    self.watched.insert(folder.clone());
                }
                Err(e) => {
                    // Drops the watches of the subfolders walked before the failure.
                    let _ = watcher.unwatch(folder);
                    log::warn!(
                        "cannot watch {} for changes ({e}); its files are listed every {:?}",
                        folder.display(),
                        self.interval
                    );
                    self.failed.insert(folder.clone());
                }
            }
        }
        let mut tables = self.changes.tables.write();
        let changed: HashMap<String, bool> = tables
            .drain(..)
            .map(|t| (t.table, t.changed.into_inner()))
            .collect();
        *tables = folders
            .into_iter()
            .filter(|(_, folder)| self.watched.contains(folder.path()))
            .map(|(table, folder)| Watched {
                changed: AtomicBool::new(changed.get(&table).copied().unwrap_or(false)),
                table,
                folder,
            })
            .collect();
    }

    /// Waits until no event came for [`QUIET`], then asks for a job for each table whose files
    /// changed.
    async fn changed(&self) {
        let started = Instant::now();
        loop {
            self.changes.fresh.store(false, Ordering::SeqCst);
            tokio::time::sleep(QUIET).await;
            if !self.changes.fresh.load(Ordering::SeqCst) || started.elapsed() >= QUIET_AT_MOST {
                break;
            }
        }
        for watched in self.changes.tables.read().iter() {
            if watched.changed.swap(false, Ordering::SeqCst) {
                self.background.request(&watched.table);
            }
        }
    }
}

impl Changes {
    /// On the watcher's thread: marks the tables whose files an event wrote.
    fn on_event(&self, event: notify::Result<Event>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                log::warn!("file-system notifications: {e}");
                return;
            }
        };
        let tables = self.tables.read();
        let mut marked = false;
        if event.need_rescan() {
            // The kernel's queue overflowed: events were lost.
            for watched in tables.iter() {
                watched.changed.store(true, Ordering::SeqCst);
            }
            marked = !tables.is_empty();
        } else if writes(&event.kind) {
            for path in &event.paths {
                for watched in tables.iter() {
                    // A folder created or moved in brings files that gave no event of their own.
                    if watched.folder.lists(path)
                        || (watched.folder.contains(path) && path.is_dir())
                    {
                        watched.changed.store(true, Ordering::SeqCst);
                        marked = true;
                    }
                }
            }
        }
        if marked {
            self.fresh.store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }
}

/// Whether an event can make a file new or changed. Opening and reading a file (as jobs and
/// queries do), changes of its permissions or times alone, and removals are not.
fn writes(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}
