//! What running musicnn on fewer patches changes: for N = 4, 8, 16 and 32 patches spread evenly
//! over each track (`audiolake_models::sample_patches`), against every patch, on the shared
//! corpus:
//! - the share of the networks' work left (patches computed);
//! - top-1 genre and mood agreement, over the files that have more than N patches;
//! - cosine similarity of the embeddings (mean and worst);
//! - kNN neighbours kept: of each file's 5 nearest files by embedding (cosine), the share that
//!   stays among its 5 nearest when every file's embedding is sampled.
//!
//! `cargo bench -p audiolake-udf --bench patch_sampling` (release build; a few minutes on one
//! core). Skips with a message without the corpus.

use std::path::Path;

use audiolake_models::{sample_patches, Device, Kind, Musicnn, Output, TrackTags};
use audiolake_testkit_audio::corpus;
use audiolake_udf::features::musicnn::{best, GENRES, MOODS};
use audiolake_udf::samples::decode_mono;

const SAMPLES: [usize; 4] = [4, 8, 16, 32];
const NEIGHBOURS: usize = 5;
/// Patches per forward pass: bounds memory on long files.
const BATCH: usize = 16;

/// Every patch's outputs of both networks for one file.
struct File {
    mtt: Output,
    msd: Output,
}

/// The track's result from the patches at `indices`.
struct Summary {
    genre: Option<String>,
    mood: Option<String>,
    embedding: Vec<f32>,
}

fn main() {
    let Some(files) = corpus_files() else { return };
    let device = Device::Cpu;
    let mtt = Musicnn::load_bundled(Kind::Mtt, &device).expect("the bundled MTT network");
    let msd = Musicnn::load_bundled(Kind::Msd, &device).expect("the bundled MSD network");
    let mut outputs = Vec::new();
    for path in &files {
        let Some(file) = run(path, &mtt, &msd) else {
            continue;
        };
        outputs.push(file);
    }
    let total: usize = outputs.iter().map(|f| f.mtt.taggram.len()).sum();
    println!(
        "{} files, {total} patches of 3 s (every patch: {:.1} per file)",
        outputs.len(),
        total as f64 / outputs.len().max(1) as f64
    );
    let all: Vec<Summary> = outputs.iter().map(|f| summary(f, &msd, 0)).collect();
    println!(
        "| patches (N) | networks' work | files with more than N | genre agrees | mood agrees \
         | embedding cosine, mean (worst) | kNN neighbours kept |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for n in SAMPLES {
        let sampled: Vec<Summary> = outputs.iter().map(|f| summary(f, &msd, n)).collect();
        let work: usize = outputs.iter().map(|f| f.mtt.taggram.len().min(n)).sum();
        let longer: Vec<usize> = (0..outputs.len())
            .filter(|&i| outputs[i].mtt.taggram.len() > n)
            .collect();
        let agree = |pick: fn(&Summary) -> &Option<String>| {
            let same = longer
                .iter()
                .filter(|&&i| pick(&all[i]) == pick(&sampled[i]))
                .count();
            percent(same, longer.len())
        };
        let cosines: Vec<f32> = longer
            .iter()
            .map(|&i| dot(&all[i].embedding, &sampled[i].embedding))
            .collect();
        let mean = cosines.iter().sum::<f32>() / cosines.len().max(1) as f32;
        let worst = cosines.iter().copied().fold(1.0f32, f32::min);
        println!(
            "| {n} | {} | {} of {} | {} | {} | {mean:.4} ({worst:.4}) | {} |",
            percent(work, total),
            longer.len(),
            outputs.len(),
            agree(|s| &s.genre),
            agree(|s| &s.mood),
            percent(neighbours_kept(&all, &sampled), outputs.len() * NEIGHBOURS),
        );
    }
}

/// The corpus's audio files, or `None` after saying why there are none.
fn corpus_files() -> Option<Vec<std::path::PathBuf>> {
    let dir = corpus::dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("SKIP: no corpus at {}", dir.display());
        return None;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x != "csv" && x != "md"))
        .collect();
    files.sort();
    Some(files)
}

/// Both networks on every patch of `path`; `None` (after saying why) when it cannot be read.
fn run(path: &Path, mtt: &Musicnn, msd: &Musicnn) -> Option<File> {
    let source = std::fs::File::open(path).ok()?;
    let ext = path.extension().and_then(|e| e.to_str());
    let (samples, _) = match decode_mono(Box::new(source), ext, Some(mtt.sample_rate()), 3600.0) {
        Ok(decoded) => decoded,
        Err(e) => {
            println!("{}: {e}", path.display());
            return None;
        }
    };
    let patches = mtt.patches(&mtt.logmel(&samples));
    let per_patch = patches.data().len() / patches.len();
    let forward = |net: &Musicnn| {
        let mut out = Output {
            taggram: Vec::new(),
            penultimate: Vec::new(),
        };
        for batch in patches.data().chunks(BATCH * per_patch) {
            let part = net.forward(batch).expect("a forward pass");
            out.taggram.extend(part.taggram);
            out.penultimate.extend(part.penultimate);
        }
        out
    };
    Some(File {
        mtt: forward(mtt),
        msd: forward(msd),
    })
}

/// The track's genre, mood and embedding from `max` evenly spread patches (0: all).
fn summary(file: &File, msd: &Musicnn, max: usize) -> Summary {
    let pick = |out: &Output| {
        let indices = sample_patches(out.taggram.len(), max);
        Output {
            taggram: indices.iter().map(|&i| out.taggram[i]).collect(),
            penultimate: indices.iter().map(|&i| out.penultimate[i]).collect(),
        }
    };
    let tags = TrackTags::from_output(&pick(&file.msd), false);
    let label = |among: &[&str]| {
        best(msd.labels(), &tags.tags, among)
            .as_str()
            .map(str::to_owned)
    };
    Summary {
        genre: label(GENRES),
        mood: label(MOODS),
        embedding: tags.embedding.to_vec(),
    }
}

/// Of every file's nearest files by the full embeddings, how many stay nearest by the sampled.
fn neighbours_kept(all: &[Summary], sampled: &[Summary]) -> usize {
    let nearest = |set: &[Summary], i: usize| -> Vec<usize> {
        let mut others: Vec<(f32, usize)> = (0..set.len())
            .filter(|&j| j != i)
            .map(|j| (dot(&set[i].embedding, &set[j].embedding), j))
            .collect();
        others.sort_by(|a, b| b.0.total_cmp(&a.0));
        others.iter().take(NEIGHBOURS).map(|&(_, j)| j).collect()
    };
    (0..all.len())
        .map(|i| {
            let (full, few) = (nearest(all, i), nearest(sampled, i));
            full.iter().filter(|j| few.contains(j)).count()
        })
        .sum()
}

/// Cosine similarity of unit vectors.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{:.0} %", 100.0 * part as f64 / whole as f64)
}
