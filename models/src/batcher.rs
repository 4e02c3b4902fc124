//! One network shared by many threads: a worker packs the patches of all waiting tracks into
//! forward passes of up to `batch_size` patches, so short tracks share passes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::logmel::N_MELS;
use crate::musicnn::{Musicnn, Output, TrackTags};
use crate::{Error, Result};

struct Job {
    patches: Vec<f32>,
    len: usize,
    padded: bool,
    /// Set by the caller when nobody waits for the result any more.
    stop: Option<Arc<AtomicBool>>,
    reply: SyncSender<Result<TrackTags>>,
}

impl Job {
    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

/// A job with the rows computed so far.
struct Pending {
    job: Job,
    out: Output,
}

impl Pending {
    fn done(&self) -> usize {
        self.out.taggram.len()
    }
}

/// Inference service over one [`Musicnn`], callable from any number of threads.
///
/// Each [`Batcher::analyze`] call blocks until its track's result is ready. A worker thread
/// runs the passes in arrival order; a track with more patches than `batch_size` is split
/// over several passes, and the passes take no waiting time: whatever is queued while one
/// pass runs goes into the next.
pub struct Batcher {
    model: Arc<Musicnn>,
    jobs: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl Batcher {
    /// Starts the worker thread. `batch_size` is the maximum patches per pass (at least 1).
    pub fn new(model: Arc<Musicnn>, batch_size: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        let worker_model = Arc::clone(&model);
        let batch_size = batch_size.max(1);
        let worker = std::thread::Builder::new()
            .name("musicnn-batcher".into())
            .spawn(move || run(&worker_model, &rx, batch_size))
            .expect("spawning a thread");
        Self {
            model,
            jobs: Some(tx),
            worker: Some(worker),
        }
    }

    /// The shared network (for labels and preprocessing).
    pub fn model(&self) -> &Musicnn {
        &self.model
    }

    /// Tags and embedding of one track from its log-mel frames, computed in a shared pass.
    /// Equal, up to float rounding, to [`Musicnn::analyze`]. It blocks: from async code, call
    /// it on a blocking thread.
    pub fn analyze(&self, frames: &[[f32; N_MELS]]) -> Result<TrackTags> {
        self.submit(frames, None)
    }

    /// [`Self::analyze`], giving up with [`Error::Cancelled`] before the track's next pass
    /// once `stop` is set: the passes go to the other tracks.
    pub fn analyze_until(
        &self,
        frames: &[[f32; N_MELS]],
        stop: Arc<AtomicBool>,
    ) -> Result<TrackTags> {
        self.submit(frames, Some(stop))
    }

    fn submit(&self, frames: &[[f32; N_MELS]], stop: Option<Arc<AtomicBool>>) -> Result<TrackTags> {
        let patches = self.model.patches(frames);
        let (reply, result) = mpsc::sync_channel(1);
        let job = Job {
            len: patches.len(),
            padded: patches.padded(),
            patches: patches.data().to_vec(),
            stop,
            reply,
        };
        self.jobs
            .as_ref()
            .expect("present until drop")
            .send(job)
            .map_err(|_| Error::BatcherStopped)?;
        result.recv().map_err(|_| Error::BatcherStopped)?
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Closing the queue ends the worker once it has answered every job.
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn run(model: &Musicnn, jobs: &Receiver<Job>, batch_size: usize) {
    let per_patch = model.patch_frames() * N_MELS;
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut batch = Vec::with_capacity(batch_size * per_patch);
    loop {
        if queue.is_empty() {
            match jobs.recv() {
                Ok(job) => queue.push_back(pending(job)),
                Err(_) => return,
            }
        }
        queue.extend(jobs.try_iter().map(pending));
        queue.retain(|p| {
            let stopped = p.job.stopped();
            if stopped {
                let _ = p.job.reply.send(Err(Error::Cancelled));
            }
            !stopped
        });
        if queue.is_empty() {
            continue;
        }

        // (queue index, patches taken) in pass order.
        let mut parts = Vec::new();
        batch.clear();
        for (i, p) in queue.iter().enumerate() {
            let room = batch_size - batch.len() / per_patch;
            if room == 0 {
                break;
            }
            let take = (p.job.len - p.done()).min(room);
            let start = p.done() * per_patch;
            batch.extend_from_slice(&p.job.patches[start..start + take * per_patch]);
            parts.push((i, take));
        }

        match model.forward(&batch) {
            Ok(out) => {
                let mut row = 0;
                for (i, take) in parts {
                    let p = &mut queue[i];
                    p.out
                        .taggram
                        .extend_from_slice(&out.taggram[row..row + take]);
                    p.out
                        .penultimate
                        .extend_from_slice(&out.penultimate[row..row + take]);
                    row += take;
                }
                while queue.front().is_some_and(|p| p.done() == p.job.len) {
                    let p = queue.pop_front().expect("front exists");
                    // A caller that went away needs no answer.
                    let _ = p
                        .job
                        .reply
                        .send(Ok(TrackTags::from_output(&p.out, p.job.padded)));
                }
            }
            Err(e) => {
                // The tracks in this pass fail; later ones still get their own passes.
                let failed: Vec<usize> = parts.iter().map(|&(i, _)| i).collect();
                for &i in failed.iter().rev() {
                    let p = queue.remove(i).expect("index from this queue");
                    let _ = p.job.reply.send(Err(Error::Batch(e.to_string())));
                }
            }
        }
    }
}

fn pending(job: Job) -> Pending {
    Pending {
        job,
        out: Output {
            taggram: Vec::new(),
            penultimate: Vec::new(),
        },
    }
}
