//! Accuracy of tempo, key and loudness on the shared corpus, and seconds per file.
//!
//! `cargo bench -p audiolake-udf --bench accuracy [-- FILTER]` (release build). Prints one line
//! per file, then the totals: tempo Accuracy1 (within 4 %) and Accuracy2 (also x2, x1/2, x3,
//! x1/3), key exact rate and MIREX weighted score over the files with a major/minor truth, and
//! the mean absolute LUFS difference from ffmpeg's ebur128. `AUDIOLAKE_GROUPS=a,b` runs only
//! those groups (to time them).

#[path = "../tests/common/corpus.rs"]
mod corpus;

use std::time::Instant;

use audiolake_udf::features::{analyze_path, GROUPS};

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
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
    let (mut n, mut acc1, mut acc2) = (0usize, 0usize, 0usize);
    let (mut keyed, mut exact, mut mirex) = (0usize, 0usize, 0.0f64);
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
        n += 1;
        let bpm = out.get("bpm").and_then(|v| v.as_f64()).unwrap_or(0.0);
        let (a1, a2) = (corpus::accuracy1(bpm, e.bpm), corpus::accuracy2(bpm, e.bpm));
        acc1 += usize::from(a1);
        acc2 += usize::from(a2);
        let key = out.get("key").and_then(|v| v.as_str().map(str::to_owned));
        let mode = out.get("mode").and_then(|v| v.as_str().map(str::to_owned));
        let estimate = key
            .as_deref()
            .and_then(corpus::pitch_class)
            .zip(mode.as_deref().map(|m| m == "minor"));
        let name = |k: Option<(usize, bool)>| {
            k.map_or("-".to_owned(), |(pc, minor)| {
                const NAMES: [&str; 12] = [
                    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
                ];
                format!("{} {}", NAMES[pc], if minor { "min" } else { "maj" })
            })
        };
        let score = match (e.key, estimate) {
            (Some(truth), Some(est)) => {
                let s = corpus::mirex_key_score(est, truth);
                keyed += 1;
                exact += usize::from(s == 1.0);
                mirex += s;
                format!("{s:.1}")
            }
            (Some(_), None) => {
                keyed += 1;
                "0.0".to_owned()
            }
            _ => String::new(),
        };
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
            mark(a1),
            mark(a2),
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
    if n == 0 {
        return;
    }
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!();
    println!(
        "tempo: Accuracy1 {:.1} % ({acc1}/{n}), Accuracy2 {:.1} % ({acc2}/{n})",
        pct(acc1, n),
        pct(acc2, n)
    );
    println!(
        "key: exact {:.1} % ({exact}/{keyed}), MIREX {:.3}",
        pct(exact, keyed),
        mirex / keyed.max(1) as f64
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
}
