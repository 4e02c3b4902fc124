//! The `musicnn` group: tags, genre, mood, instruments and an embedding from the pretrained
//! musicnn networks (MagnaTagATune and Million Song Dataset models), fed by the shared 16 kHz
//! STFT. One network of each kind is shared by every thread through a batcher, so the patches of
//! files analysed at once share forward passes while other files decode. Threads of background
//! work may run the networks on a pool of their own instead ([`run_networks_on`]). A thread's
//! tracks stop between passes once the flag given to [`stop_networks_when`] is set.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use arrow_schema::{DataType, Field, Fields};
use audiolake_models::{
    parse_device, sample_patches, Batcher, Kind, Musicnn, TrackTags, DEFAULT_BATCH_SIZE, N_MELS,
};

use super::{f32_list_field, utf8_field, Extractor, Frame, Input, StftShape, Value};

/// Tags of the MSD model that name a genre (the rest are decades, moods and descriptions).
pub const GENRES: &[&str] = &[
    "rock",
    "pop",
    "alternative",
    "indie",
    "electronic",
    "dance",
    "alternative rock",
    "jazz",
    "metal",
    "chillout",
    "classic rock",
    "soul",
    "indie rock",
    "electronica",
    "folk",
    "punk",
    "blues",
    "hard rock",
    "ambient",
    "experimental",
    "Hip-Hop",
    "country",
    "easy listening",
    "funk",
    "electro",
    "heavy metal",
    "Progressive rock",
    "rnb",
    "indie pop",
    "House",
];

/// Tags of the MSD model that name a mood.
pub const MOODS: &[&str] = &[
    "beautiful",
    "Mellow",
    "chill",
    "sad",
    "happy",
    "sexy",
    "catchy",
    "party",
];

/// Tags of the MTT model that name an instrument.
pub const INSTRUMENTS: &[&str] = &[
    "guitar",
    "strings",
    "drums",
    "piano",
    "violin",
    "synth",
    "harpsichord",
    "flute",
    "sitar",
    "harp",
    "cello",
];

/// Score above which an instrument tag is reported in `instruments`.
pub const INSTRUMENT_THRESHOLD: f32 = 0.2;

/// How many tags the `tags` column keeps (`tags(path, k)` reads `tag_scores` for others).
pub const TOP_TAGS: usize = 10;

/// The two networks on the configured device, shared by every extractor.
struct Networks {
    mtt: Batcher,
    msd: Batcher,
}

static NETWORKS: RwLock<Option<Arc<Networks>>> = RwLock::new(None);

thread_local! {
    /// The pool this thread's tracks run the networks on, outside the shared batchers.
    static OWN_POOL: RefCell<Option<Arc<rayon::ThreadPool>>> = const { RefCell::new(None) };
    /// The flag that stops this thread's current track (its query went away).
    static STOP: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Until the returned guard is dropped, the networks stop the calling thread's tracks before
/// their next pass once `flag` is set; the track's columns are then NULL, for a caller that no
/// longer reads them.
pub fn stop_networks_when(flag: Arc<AtomicBool>) -> StopGuard {
    STOP.with(|stop| *stop.borrow_mut() = Some(flag));
    StopGuard(())
}

/// Clears the flag of [`stop_networks_when`] when dropped (the thread goes back to a pool).
pub struct StopGuard(());

impl Drop for StopGuard {
    fn drop(&mut self) {
        STOP.with(|stop| *stop.borrow_mut() = None);
    }
}

/// From now on, tracks analysed on the calling thread run the networks on `pool`, each track
/// in passes of its own, instead of through the shared batchers: their worker threads run at
/// the priority of whoever started them, so background work at a lower priority gives its
/// thread a pool whose threads have that priority too.
pub fn run_networks_on(pool: Arc<rayon::ThreadPool>) {
    OWN_POOL.with(|own| *own.borrow_mut() = Some(pool));
}

/// Loads the bundled networks on `device` (`cpu`, `cuda`, `cuda:N`) with `batch_size` patches per
/// forward pass, for every analysis from now on.
pub fn configure(device: &str, batch_size: usize) -> Result<(), audiolake_models::Error> {
    let networks = load(device, batch_size)?;
    *NETWORKS.write().unwrap_or_else(|e| e.into_inner()) = Some(networks);
    Ok(())
}

fn load(device: &str, batch_size: usize) -> Result<Arc<Networks>, audiolake_models::Error> {
    let device = parse_device(device)?;
    let network = |kind| -> Result<Batcher, audiolake_models::Error> {
        let model = Arc::new(Musicnn::load_bundled(kind, &device)?);
        Ok(Batcher::new(model, batch_size))
    };
    Ok(Arc::new(Networks {
        mtt: network(Kind::Mtt)?,
        msd: network(Kind::Msd)?,
    }))
}

/// The configured networks, or the CPU ones at first use.
fn networks() -> Result<Arc<Networks>, String> {
    if let Some(n) = NETWORKS.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(Arc::clone(n));
    }
    let mut slot = NETWORKS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = slot.as_ref() {
        return Ok(Arc::clone(n));
    }
    let n = load("cpu", DEFAULT_BATCH_SIZE).map_err(|e| e.to_string())?;
    *slot = Some(Arc::clone(&n));
    Ok(n)
}

/// The labels of both models in `tag_scores` order: MTT's 50, then MSD's 50.
pub fn labels() -> Result<Vec<(&'static str, String)>, String> {
    let n = networks()?;
    let mut labels: Vec<(&'static str, String)> = n
        .mtt
        .model()
        .labels()
        .iter()
        .map(|l| ("mtt", l.clone()))
        .collect();
    labels.extend(n.msd.model().labels().iter().map(|l| ("msd", l.clone())));
    Ok(labels)
}

/// Patches (3 s each) kept per file: about an hour. A longer file keeps an evenly spread
/// sample of its patches (every 2nd, 4th, ...) so that memory stays bounded however many
/// hours a header or a decompression bomb declares.
pub const MAX_PATCHES: usize = 1200;

/// Patches the networks run on by default: on the shared corpus, 16 evenly spread patches
/// agree with every patch on genre and mood for every file, at about half the work (see
/// `docs/analysis.md`, "Fewer patches").
pub const DEFAULT_MAX_PATCHES: usize = 16;

pub struct MusicnnGroup {
    frames: Vec<[f32; N_MELS]>,
    /// Frames seen, kept or not.
    seen: usize,
    /// Only every `stride`-th patch is kept (1 until the file passes [`MAX_PATCHES`]).
    stride: usize,
    /// The networks run on at most this many of the kept patches; 0: all of them.
    max_patches: usize,
    error: Option<String>,
}

/// Positions of `tags_patches` and `tags_max_patches` among the group's values.
const PATCHES: usize = 7;
const MAX_PATCHES_USED: usize = 8;

/// Whether a stored result (`values`, in field order) is what `max_patches` would compute: it
/// was made with the same setting, or it ran on every patch of a track that has no more
/// patches than `max_patches` allows. A result without patch counts (a failed network) is kept.
pub fn reusable(values: &[Value], max_patches: usize) -> bool {
    let count = |i: usize| match values.get(i) {
        Some(Value::Int64(n)) => usize::try_from(*n).ok(),
        _ => None,
    };
    let (Some(used), Some(setting)) = (count(PATCHES), count(MAX_PATCHES_USED)) else {
        return true;
    };
    let every_patch = setting == 0 || used < setting;
    setting == max_patches || (every_patch && (max_patches == 0 || used <= max_patches))
}

impl MusicnnGroup {
    /// A group whose networks run on at most `max_patches` patches (0: all).
    pub fn new(max_patches: usize) -> Self {
        Self {
            frames: Vec::new(),
            seen: 0,
            stride: 1,
            max_patches,
            error: None,
        }
    }

    /// The frames of the patches the networks run on: all the kept patches, or
    /// `max_patches` of them spread evenly over the track.
    fn sampled(&self, patch_frames: usize) -> Vec<[f32; N_MELS]> {
        let total = self.frames.len() / patch_frames;
        sample_patches(total, self.max_patches)
            .into_iter()
            .flat_map(|p| &self.frames[p * patch_frames..(p + 1) * patch_frames])
            .copied()
            .collect()
    }

    /// Keeps `mel` if its patch is one of the sampled ones; halves the sample when full.
    fn keep(&mut self, mel: [f32; N_MELS], patch_frames: usize) {
        let patch = self.seen / patch_frames;
        self.seen += 1;
        if !patch.is_multiple_of(self.stride) {
            return;
        }
        self.frames.push(mel);
        if self.frames.len() == MAX_PATCHES * patch_frames {
            let mut index = 0;
            self.frames.retain(|_| {
                index += 1;
                ((index - 1) / patch_frames).is_multiple_of(2)
            });
            self.stride *= 2;
        }
    }
}

/// The struct of one `tags` entry.
pub fn tag_fields() -> Fields {
    Fields::from(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("tag", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ])
}

/// The type of `tags` and `tags(...)`: a list of [`tag_fields`] structs.
pub fn tags_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(tag_fields()),
        true,
    )))
}

/// The best `k` of `scores` (in `labels` order), highest first.
pub fn top_tags(labels: &[(&'static str, String)], scores: &[f32], k: usize) -> Value {
    let mut order: Vec<usize> = (0..scores.len().min(labels.len())).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    Value::Tags(
        order
            .into_iter()
            .take(k)
            .map(|i| (labels[i].0.to_string(), labels[i].1.clone(), scores[i]))
            .collect(),
    )
}

/// The label with the highest score among the labels named in `among` (`genre`, `mood`).
pub fn best(labels: &[String], scores: &[f32], among: &[&str]) -> Value {
    labels
        .iter()
        .zip(scores)
        .filter(|(l, _)| among.contains(&l.as_str()))
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(Value::Null, |(l, _)| Value::Utf8(l.clone()))
}

impl Extractor for MusicnnGroup {
    fn name(&self) -> &'static str {
        "musicnn"
    }

    fn version(&self) -> u32 {
        2
    }

    fn input(&self) -> Input {
        Input::Frames {
            rate: 16_000,
            shape: StftShape {
                n_fft: 512,
                hop: 256,
            },
        }
    }

    fn fields(&self) -> Vec<Field> {
        vec![
            Field::new("tags", tags_type(), true),
            utf8_field("genre"),
            utf8_field("mood"),
            Field::new(
                "instruments",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                true,
            ),
            f32_list_field("embedding"),
            f32_list_field("tag_scores"),
            Field::new("tags_padded", DataType::Boolean, true),
            Field::new("tags_patches", DataType::Int64, true),
            Field::new("tags_max_patches", DataType::Int64, true),
        ]
    }

    fn frame(&mut self, frame: &Frame<'_>) {
        if self.error.is_some() {
            return;
        }
        let networks = match networks() {
            Ok(n) => n,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        let patch_frames = networks.mtt.model().patch_frames().max(1);
        match networks.mtt.model().logmel_frame(frame.power) {
            Ok(mel) => self.keep(mel, patch_frames),
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    fn finish(self: Box<Self>) -> Vec<Value> {
        let nulls = || vec![Value::Null; 9];
        if self.error.is_some() {
            return nulls();
        }
        let Ok(networks) = networks() else {
            return nulls();
        };
        let patch_frames = networks.mtt.model().patch_frames().max(1);
        // Every kept patch (or a track shorter than one, padded to one): no copy to make.
        let total = self.frames.len() / patch_frames;
        let frames = match self.max_patches == 0 || total <= self.max_patches {
            true => Cow::Borrowed(self.frames.as_slice()),
            false => Cow::Owned(self.sampled(patch_frames)),
        };
        let patches = (frames.len() / patch_frames).max(1);
        let own_pool = OWN_POOL.with(|own| own.borrow().clone());
        let stop = STOP.with(|stop| stop.borrow().clone()).unwrap_or_default();
        let run = |b: &Batcher| -> Option<TrackTags> {
            match &own_pool {
                Some(pool) => pool
                    .install(|| b.model().analyze_until(&frames, &stop))
                    .ok(),
                None => b.analyze_until(&frames, Arc::clone(&stop)).ok(),
            }
        };
        let (Some(mtt), Some(msd)) = (run(&networks.mtt), run(&networks.msd)) else {
            return nulls();
        };
        let Ok(labels) = labels() else {
            return nulls();
        };
        let scores: Vec<f32> = mtt.tags.iter().chain(msd.tags.iter()).copied().collect();
        let mtt_labels = networks.mtt.model().labels();
        let instruments = mtt_labels
            .iter()
            .zip(mtt.tags.iter())
            .filter(|(l, s)| INSTRUMENTS.contains(&l.as_str()) && **s > INSTRUMENT_THRESHOLD)
            .map(|(l, _)| l.clone())
            .collect();
        vec![
            top_tags(&labels, &scores, TOP_TAGS),
            best(networks.msd.model().labels(), &msd.tags, GENRES),
            best(networks.msd.model().labels(), &msd.tags, MOODS),
            Value::Utf8List(instruments),
            Value::Float32List(msd.embedding.to_vec()),
            Value::Float32List(scores),
            Value::Bool(mtt.padded),
            Value::Int64(i64::try_from(patches).unwrap_or(i64::MAX)),
            Value::Int64(i64::try_from(self.max_patches).unwrap_or(i64::MAX)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_thread_runs_no_pass_and_gets_nulls() {
        let patch_frames = networks().unwrap().mtt.model().patch_frames();
        let group = || {
            let mut group = MusicnnGroup::new(0);
            for t in 0..patch_frames * 2 {
                let mel = std::array::from_fn(|m| ((t * 7 + m * 3) % 23) as f32 * 0.1);
                group.keep(mel, patch_frames);
            }
            Box::new(group)
        };
        let stopping = stop_networks_when(Arc::new(AtomicBool::new(true)));
        assert!(group().finish().iter().all(|v| matches!(v, Value::Null)));
        drop(stopping);
        let values = group().finish();
        assert!(matches!(values[4], Value::Float32List(ref e) if e.len() == 200));
    }

    #[test]
    fn a_long_file_keeps_an_evenly_spread_bounded_sample_of_patches() {
        let patch_frames = 2;
        let mut group = MusicnnGroup::new(0);
        // 5000 patches, each frame tagged with its patch number.
        for frame in 0..10_000 {
            group.keep([(frame / patch_frames) as f32; N_MELS], patch_frames);
        }
        assert_eq!(group.stride, 8);
        let kept: Vec<f32> = group.frames.iter().map(|mel| mel[0]).collect();
        let expected: Vec<f32> = (0..625)
            .flat_map(|p| [(p * 8) as f32; 2])
            .collect::<Vec<f32>>();
        assert_eq!(kept, expected);
    }

    fn patch_numbers(frames: &[[f32; N_MELS]], patch_frames: usize) -> Vec<f32> {
        frames
            .iter()
            .step_by(patch_frames)
            .map(|mel| mel[0])
            .collect()
    }

    #[test]
    fn the_networks_see_max_patches_spread_evenly_or_every_patch() {
        let patch_frames = 3;
        let mut group = MusicnnGroup::new(4);
        // Ten whole patches and one frame of an eleventh, which no patch uses.
        for frame in 0..31 {
            group.keep([(frame / patch_frames) as f32; N_MELS], patch_frames);
        }
        let sampled = group.sampled(patch_frames);
        assert_eq!(sampled.len(), 4 * patch_frames);
        assert_eq!(patch_numbers(&sampled, patch_frames), [1.0, 3.0, 6.0, 8.0]);
        group.max_patches = 0;
        let every: Vec<f32> = (0..10).map(|p| p as f32).collect();
        assert_eq!(
            patch_numbers(&group.sampled(patch_frames), patch_frames),
            every
        );
        group.max_patches = 10;
        assert_eq!(
            patch_numbers(&group.sampled(patch_frames), patch_frames),
            every
        );
    }

    fn stored(used: i64, setting: i64) -> Vec<Value> {
        let mut values = vec![Value::Null; 7];
        values.extend([Value::Int64(used), Value::Int64(setting)]);
        values
    }

    #[test]
    fn a_stored_result_is_reused_only_where_the_setting_gives_the_same_patches() {
        // 16 of a longer track's patches: only a setting of 16 picks the same ones.
        assert!(reusable(&stored(16, 16), 16));
        assert!(!reusable(&stored(16, 16), 0));
        assert!(!reusable(&stored(16, 16), 32));
        // A 5-patch track analysed whole under a setting of 16: every setting of 5 or more,
        // or 0, uses the same 5 patches; 4 does not.
        assert!(reusable(&stored(5, 16), 0));
        assert!(reusable(&stored(5, 16), 5));
        assert!(reusable(&stored(5, 16), 8));
        assert!(!reusable(&stored(5, 16), 4));
        // Every one of 80 patches: the same as 0 or 80 and more, not as 16.
        assert!(reusable(&stored(80, 0), 0));
        assert!(reusable(&stored(80, 0), 100));
        assert!(!reusable(&stored(80, 0), 16));
        // No counts: the networks failed, and would fail again.
        assert!(reusable(&vec![Value::Null; 9], 16));
    }
}
