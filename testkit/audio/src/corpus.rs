//! The shared evaluation corpus (`../shared/corpus` beside the workspace): where it is (tests
//! that need it skip without it), its ground truth, and the scores used by both the corpus
//! tests and the accuracy bench.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the corpus lives; `AUDIOLAKE_CORPUS` overrides the default beside the workspace.
pub fn dir() -> PathBuf {
    std::env::var_os("AUDIOLAKE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // This crate is `testkit/audio` in the workspace.
            let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
            let workspace = crate_dir.ancestors().nth(2).unwrap_or(crate_dir);
            workspace.join("../shared/corpus")
        })
}

/// The corpus folder, canonical, or `None` (after printing why the test is skipped) when it
/// is not there.
pub fn find() -> Option<PathBuf> {
    let dir = dir();
    if !dir.join("truth.csv").exists() {
        eprintln!("skipping: corpus not found at {}", dir.display());
        return None;
    }
    Some(std::fs::canonicalize(dir).unwrap())
}

/// One corpus file and what is known about it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub file: String,
    pub duration_s: f64,
    pub bpm: f64,
    /// `(tonic pitch class, minor)`, or `None` for mode `none`.
    pub key: Option<(usize, bool)>,
    pub lufs: Option<f64>,
    pub true_peak: Option<f64>,
}

/// Splits one CSV line, honouring double-quoted fields.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

fn read_table(name: &str) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(dir().join(name))
        .unwrap_or_else(|e| panic!("cannot read {name} in {}: {e}", dir().display()));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = split_csv(lines.next().expect("a header line"));
    lines
        .map(|l| header.iter().cloned().zip(split_csv(l)).collect())
        .collect()
}

/// Pitch class of a key name such as `C`, `F#` or `Bb`.
pub fn pitch_class(name: &str) -> Option<usize> {
    let mut chars = name.chars();
    let base: i32 = match chars.next()? {
        'C' => 0,
        'D' => 2,
        'E' => 4,
        'F' => 5,
        'G' => 7,
        'A' => 9,
        'B' => 11,
        _ => return None,
    };
    let shift: i32 = chars
        .map(|c| match c {
            '#' => 1,
            'b' => -1,
            _ => 0,
        })
        .sum();
    Some((base + shift).rem_euclid(12) as usize)
}

/// The corpus entries, or `None` (after saying so) when the corpus is not there.
pub fn load() -> Option<Vec<Entry>> {
    find()?;
    let extra: HashMap<String, HashMap<String, String>> = read_table("truth_extra.csv")
        .into_iter()
        .map(|r| (r["file"].clone(), r))
        .collect();
    let number = |file: &str, column: &str| extra.get(file)?.get(column)?.parse::<f64>().ok();
    let entries = read_table("truth.csv")
        .into_iter()
        .map(|r| {
            let key = match r["mode"].as_str() {
                "major" | "minor" => pitch_class(&r["key"]).map(|pc| (pc, r["mode"] == "minor")),
                _ => None,
            };
            Entry {
                duration_s: r["duration_s"].parse().expect("a numeric duration_s"),
                bpm: r["bpm"].parse().expect("a numeric bpm"),
                key,
                lufs: number(&r["file"], "lufs_integrated_ffmpeg"),
                true_peak: number(&r["file"], "true_peak_dbfs_ffmpeg"),
                file: r["file"].clone(),
            }
        })
        .collect();
    Some(entries)
}

/// Tempo within 4 % of the truth.
pub fn accuracy1(estimate: f64, truth: f64) -> bool {
    (estimate - truth).abs() <= 0.04 * truth
}

/// Tempo within 4 % of the truth or of its double, half, triple or third.
pub fn accuracy2(estimate: f64, truth: f64) -> bool {
    [1.0, 2.0, 0.5, 3.0, 1.0 / 3.0]
        .iter()
        .any(|f| accuracy1(estimate, truth * f))
}

/// MIREX key score (as mir_eval): 1 same key, 0.5 a fifth above in the same mode, 0.3 the
/// relative key, 0.2 the parallel key, else 0.
pub fn mirex_key_score(estimate: (usize, bool), truth: (usize, bool)) -> f64 {
    let (et, em) = estimate;
    let (rt, rm) = truth;
    let up = (et + 12 - rt) % 12;
    if et == rt && em == rm {
        1.0
    } else if em == rm && up == 7 {
        0.5
    } else if (!rm && em && up == 9) || (rm && !em && up == 3) {
        0.3
    } else if et == rt {
        0.2
    } else {
        0.0
    }
}
