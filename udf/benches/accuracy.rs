//! Accuracy of tempo, key and loudness on the shared corpus, and seconds per file.
//!
//! `cargo bench -p audiolake-udf --bench accuracy [-- FILTER]` (release build). Prints one line
//! per file, then the totals: tempo Accuracy1 (within 4 %) and Accuracy2 (also x2, x1/2, x3,
//! x1/3), key exact rate and MIREX weighted score over the files with a major/minor truth, and
//! the mean absolute LUFS difference from ffmpeg's ebur128. `AUDIOLAKE_GROUPS=a,b` runs only
//! those groups (to time them).
//!
//! Then the same tempo and key figures for the peers in `benches/peers/`, run on the same files:
//! essentia (RhythmExtractor2013 multifeature; KeyExtractor under each of its key profiles, the
//! best one named) and librosa (beat_track; librosa has no key function, so the key is the mean
//! CQT chroma against the Krumhansl-Schmuckler profiles). `--no-peers` leaves them out;
//! `AUDIOLAKE_PYTHON` picks the Python that has them installed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use audiolake_testkit_audio::corpus::{self, Entry};
use audiolake_testkit_audio::peers;
use audiolake_udf::features::{analyze_path, GROUPS};

/// Tempo and key figures over a set of files.
#[derive(Default)]
struct Score {
    n: usize,
    acc1: usize,
    acc2: usize,
    keyed: usize,
    exact: usize,
    mirex: f64,
}

impl Score {
    /// Adds one file's estimates; returns the file's MIREX key score when it has a key.
    fn add(&mut self, truth: &Entry, bpm: f64, key: Option<(usize, bool)>) -> Option<f64> {
        self.n += 1;
        self.acc1 += usize::from(corpus::accuracy1(bpm, truth.bpm));
        self.acc2 += usize::from(corpus::accuracy2(bpm, truth.bpm));
        let truth_key = truth.key?;
        let s = key.map_or(0.0, |k| corpus::mirex_key_score(k, truth_key));
        self.keyed += 1;
        self.exact += usize::from(s == 1.0);
        self.mirex += s;
        Some(s)
    }

    fn tempo(&self) -> String {
        format!(
            "{:>5.1} % {:>5.1} %",
            pct(self.acc1, self.n),
            pct(self.acc2, self.n)
        )
    }

    fn key(&self) -> String {
        format!(
            "{:>5.1} % {:>6.3}",
            pct(self.exact, self.keyed),
            self.mirex / self.keyed.max(1) as f64
        )
    }
}

fn pct(a: usize, b: usize) -> f64 {
    100.0 * a as f64 / b.max(1) as f64
}

/// `(tonic pitch class, minor)` from a key name and a mode name.
fn parse_key(key: &str, mode: &str) -> Option<(usize, bool)> {
    Some((corpus::pitch_class(key)?, mode == "minor"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_default();
    let with_peers = !args.iter().any(|a| a == "--no-peers");
    // AUDIOLAKE_GROUPS=rhythm,tonal times a subset of the groups ("none": decoding alone).
    let chosen = std::env::var("AUDIOLAKE_GROUPS").unwrap_or_default();
    let groups: Vec<&str> = match chosen.as_str() {
        "" => GROUPS.to_vec(),
        "none" => Vec::new(),
        list => list.split(',').collect(),
    };
    let Some(entries) = corpus::load() else {
        return;
    };
    let mut ours = Score::default();
    let mut evaluated: Vec<&Entry> = Vec::new();
    let (mut lufs_n, mut lufs_err) = (0usize, 0.0f64);
    let (mut tp_n, mut tp_err) = (0usize, 0.0f64);
    let mut seconds = 0.0f64;
    let mut audio_seconds = 0.0f64;
    println!(
        "{:<42} {:>6} {:>7} {:>2} {:>2} | {:>9} {:>9} {:>4} | {:>6} {:>6} | {:>5}",
        "file", "bpm", "est", "A1", "A2", "key", "est", "mrx", "lufs", "est", "s"
    );
    for e in entries.iter().filter(|e| e.file.contains(&filter)) {
        let start = Instant::now();
        let out = match analyze_path(&corpus::dir().join(&e.file), &groups) {
            Ok(out) => out,
            Err(err) => {
                println!("{:<42} FAILED: {err}", e.file);
                continue;
            }
        };
        let elapsed = start.elapsed().as_secs_f64();
        seconds += elapsed;
        audio_seconds += out.decoded_duration_s;
        evaluated.push(e);
        let bpm = out.get("bpm").and_then(|v| v.as_f64()).unwrap_or(0.0);
        let key = out.get("key").and_then(|v| v.as_str().map(str::to_owned));
        let mode = out.get("mode").and_then(|v| v.as_str().map(str::to_owned));
        let estimate = key
            .as_deref()
            .zip(mode.as_deref())
            .and_then(|(k, m)| parse_key(k, m));
        let name = |k: Option<(usize, bool)>| {
            k.map_or("-".to_owned(), |(pc, minor)| {
                const NAMES: [&str; 12] = [
                    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
                ];
                format!("{} {}", NAMES[pc], if minor { "min" } else { "maj" })
            })
        };
        let score = ours
            .add(e, bpm, estimate)
            .map_or(String::new(), |s| format!("{s:.1}"));
        let lufs = out.get("loudness_lufs").and_then(|v| v.as_f64());
        if let (Some(truth), Some(est)) = (e.lufs, lufs) {
            lufs_n += 1;
            lufs_err += (truth - est).abs();
        }
        let tp = out.get("true_peak_dbtp").and_then(|v| v.as_f64());
        if let (Some(truth), Some(est)) = (e.true_peak, tp) {
            tp_n += 1;
            tp_err += (truth - est).abs();
        }
        let mark = |b: bool| if b { "ok" } else { "--" };
        println!(
            "{:<42} {:>6.1} {:>7.2} {:>2} {:>2} | {:>9} {:>9} {:>4} | {:>6.1} {:>6.2} | {:>5.2}{}",
            e.file,
            e.bpm,
            bpm,
            mark(corpus::accuracy1(bpm, e.bpm)),
            mark(corpus::accuracy2(bpm, e.bpm)),
            name(e.key),
            name(estimate),
            score,
            e.lufs.unwrap_or(f64::NAN),
            lufs.unwrap_or(f64::NAN),
            elapsed,
            if out.decode_errors > 0 {
                format!("  ({} decode errors)", out.decode_errors)
            } else {
                String::new()
            }
        );
    }
    let n = evaluated.len();
    if n == 0 {
        return;
    }
    println!();
    println!(
        "tempo: Accuracy1 {:.1} % ({}/{n}), Accuracy2 {:.1} % ({}/{n})",
        pct(ours.acc1, n),
        ours.acc1,
        pct(ours.acc2, n),
        ours.acc2
    );
    println!(
        "key: exact {:.1} % ({}/{}), MIREX {:.3}",
        pct(ours.exact, ours.keyed),
        ours.exact,
        ours.keyed,
        ours.mirex / ours.keyed.max(1) as f64
    );
    println!(
        "loudness: mean |LUFS - ffmpeg| {:.3} LU over {lufs_n} files",
        lufs_err / lufs_n.max(1) as f64
    );
    println!(
        "true peak: mean |dBTP - ffmpeg| {:.3} dB over {tp_n} files",
        tp_err / tp_n.max(1) as f64
    );
    println!(
        "time: {:.3} s per file, {:.1} s per hour of audio ({:.0}x real time)",
        seconds / n as f64,
        seconds / audio_seconds * 3600.0,
        audio_seconds / seconds
    );
    if with_peers {
        compare_with_peers(&evaluated, &ours);
    }
}

/// Runs each peer on the files we evaluated and prints its figures beside ours.
fn compare_with_peers(evaluated: &[&Entry], ours: &Score) {
    let paths: Vec<PathBuf> = evaluated
        .iter()
        .map(|e| corpus::dir().join(&e.file))
        .collect();
    let mut rows = vec![("audiolake".to_owned(), ours.tempo(), ours.key())];
    for (peer, label) in [
        ("essentia", "RhythmExtractor2013 multifeature, KeyExtractor"),
        (
            "librosa",
            "beat_track; no key function: KS profiles on chroma_cqt",
        ),
    ] {
        println!();
        println!("running {peer} on {} files...", paths.len());
        let Some(lines) = peers::run(peer, "accuracy", &paths) else {
            continue;
        };
        let by_file: BTreeMap<&str, &serde_json::Value> = lines
            .iter()
            .filter_map(|l| Some((l["file"].as_str()?, l)))
            .collect();
        // One score per key profile; tempo is the same in each.
        let mut scores: BTreeMap<String, Score> = BTreeMap::new();
        for e in evaluated {
            let line = by_file.get(e.file.as_str());
            if let Some(err) = line.and_then(|l| l["error"].as_str()) {
                println!("{peer}: {}: {err}", e.file);
            }
            let bpm = line.and_then(|l| l["bpm"].as_f64()).unwrap_or(0.0);
            let keys = line
                .and_then(|l| l["keys"].as_object())
                .cloned()
                .unwrap_or_default();
            for (profile, key) in keys {
                let estimate = key[0].as_str().zip(key[1].as_str());
                let estimate = estimate.and_then(|(k, m)| parse_key(k, m));
                scores.entry(profile).or_default().add(e, bpm, estimate);
            }
        }
        if scores.len() > 1 {
            let list: Vec<String> = scores
                .iter()
                .map(|(p, s)| {
                    format!(
                        "{p} {}",
                        s.key().split_whitespace().collect::<Vec<_>>().join(" ")
                    )
                })
                .collect();
            println!("{peer} key profiles (exact, MIREX): {}", list.join("; "));
        }
        // The best profile by MIREX score, then by exact matches.
        let Some((profile, best)) = scores.iter().max_by(|a, b| {
            (a.1.mirex, a.1.exact)
                .partial_cmp(&(b.1.mirex, b.1.exact))
                .expect("scores are finite")
        }) else {
            println!("{peer}: no results");
            continue;
        };
        let name = if scores.len() > 1 {
            format!("{peer} ({label}, best profile {profile})")
        } else {
            format!("{peer} ({label})")
        };
        rows.push((name, best.tempo(), best.key()));
    }
    println!();
    println!(
        "{:<84} {:>7} {:>7} | {:>7} {:>6}",
        "same files: tempo Accuracy1, Accuracy2 | key exact, MIREX", "A1", "A2", "exact", "MIREX"
    );
    for (name, tempo, key) in rows {
        println!("{name:<84} {tempo} | {key}");
    }
}
