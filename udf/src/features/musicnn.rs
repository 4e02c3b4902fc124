//! The `musicnn` group: tags, genre, mood, instruments and an embedding from the pretrained
//! musicnn networks (MagnaTagATune and Million Song Dataset models), fed by the shared 16 kHz
//! STFT. One network of each kind is shared by every thread through a batcher, so the patches of
//! files analysed at once share forward passes while other files decode.

use std::sync::{Arc, RwLock};

use arrow_schema::{DataType, Field, Fields};
use audiolake_models::{
    parse_device, Batcher, Kind, Musicnn, TrackTags, DEFAULT_BATCH_SIZE, N_MELS,
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

#[derive(Default)]
pub struct MusicnnGroup {
    frames: Vec<[f32; N_MELS]>,
    error: Option<String>,
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

fn best(labels: &[String], scores: &[f32], among: &[&str]) -> Value {
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
        1
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
        match networks.mtt.model().logmel_frame(frame.power) {
            Ok(mel) => self.frames.push(mel),
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    fn finish(self: Box<Self>) -> Vec<Value> {
        let nulls = || vec![Value::Null; 7];
        if self.error.is_some() {
            return nulls();
        }
        let Ok(networks) = networks() else {
            return nulls();
        };
        let run = |b: &Batcher| -> Option<TrackTags> { b.analyze(&self.frames).ok() };
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
        ]
    }
}
