//! musicnn on the CPU: patches/s and seconds per 4-minute track with one thread and with all,
//! then the top 5 MTT and MSD tags of every file of the shared corpus.
//!
//!     cargo bench -p audiolake-models --bench musicnn
//!     AUDIOLAKE_BENCH_PEER=1 cargo bench -p audiolake-models --bench musicnn
//!
//! The corpus (`../shared/corpus` beside the workspace, or `AUDIOLAKE_CORPUS`) is decoded to
//! 16 kHz mono with ffmpeg; without either, the timing uses a synthetic signal and the tag
//! listing is skipped. With `AUDIOLAKE_BENCH_PEER=1`, `benches/musicnn_tf.py` runs the original
//! musicnn (TensorFlow) on the same 4 minutes and the ratio is printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use audiolake_models::{Device, Kind, Musicnn, DEFAULT_BATCH_SIZE, N_MELS};

const RATE: usize = 16000;
const TRACK_S: usize = 240;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus_dir() -> PathBuf {
    std::env::var_os("AUDIOLAKE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/corpus"))
}

/// Mono 16 kHz samples of any file ffmpeg reads.
fn decode(path: &Path) -> Option<Vec<f32>> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-ac", "1", "-ar", "16000", "-f", "f32le", "-"])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("ffmpeg could not decode {}", path.display());
        return None;
    }
    Some(
        out.stdout
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// A synthetic 4-minute signal: a chord progression over a kick, so every layer has work.
fn synthetic() -> Vec<f32> {
    (0..TRACK_S * RATE)
        .map(|i| {
            let t = i as f32 / RATE as f32;
            let root = [220.0, 174.6, 261.6, 196.0][(t / 2.0) as usize % 4];
            let chord: f32 = [1.0, 1.26, 1.5]
                .iter()
                .map(|r| (2.0 * std::f32::consts::PI * root * r * t).sin())
                .sum();
            let beat = t % 0.5;
            let kick = (-beat * 30.0).exp() * (2.0 * std::f32::consts::PI * 60.0 * beat).sin();
            0.15 * chord + 0.5 * kick
        })
        .collect()
}

fn write_wav(path: &Path, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE as u32,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("creating the wav");
    for &s in samples {
        w.write_sample(s).expect("writing the wav");
    }
    w.finalize().expect("finishing the wav");
}

struct Timing {
    logmel_s: f64,
    forward_s: f64,
    /// CPU seconds of the forward passes, over all threads (None off Linux).
    forward_cpu_s: Option<f64>,
    patches: usize,
}

/// CPU seconds this process's live threads have run (Linux: /proc/self/task/*/schedstat), so
/// that the figure holds on a machine shared with other work.
fn cpu_seconds() -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

fn time_track(model: &Musicnn, track: &[f32]) -> Timing {
    let start = Instant::now();
    let frames = model.logmel(track);
    let logmel_s = start.elapsed().as_secs_f64();
    let patches = model.patches(&frames);
    let per_batch = DEFAULT_BATCH_SIZE * model.patch_frames() * N_MELS;
    let (start, cpu) = (Instant::now(), cpu_seconds());
    for batch in patches.data().chunks(per_batch) {
        model.forward(batch).expect("forward pass");
    }
    Timing {
        logmel_s,
        forward_s: start.elapsed().as_secs_f64(),
        forward_cpu_s: cpu.zip(cpu_seconds()).map(|(a, b)| b - a),
        patches: patches.len(),
    }
}

fn main() {
    let corpus = corpus_dir();
    let have_ffmpeg = Command::new("ffmpeg").arg("-version").output().is_ok();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&corpus) {
        Ok(dir) if have_ffmpeg => dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| ["wav", "mp3", "flac", "ogg", "m4a"].contains(&e))
            })
            .collect(),
        Ok(_) => {
            println!("ffmpeg not found: timing on a synthetic signal, no corpus tags");
            Vec::new()
        }
        Err(_) => {
            println!(
                "no corpus at {}: timing on a synthetic signal, no corpus tags",
                corpus.display()
            );
            Vec::new()
        }
    };
    files.sort();

    // Four minutes of the first corpus file that long, else of the synthetic signal.
    let (source, track) = files
        .iter()
        .find_map(|f| {
            let s = decode(f)?;
            (s.len() >= TRACK_S * RATE)
                .then(|| (f.display().to_string(), s[..TRACK_S * RATE].to_vec()))
        })
        .unwrap_or_else(|| ("synthetic chords and kick".to_string(), synthetic()));
    println!("timing on 4 minutes of {source}; batches of {DEFAULT_BATCH_SIZE} patches");

    let mtt = Musicnn::load_bundled(Kind::Mtt, &Device::Cpu).expect("bundled MTT");
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    // (threads, patches/s, seconds per track)
    let mut ours = Vec::new();
    for threads in if all > 1 { vec![1, all] } else { vec![1] } {
        // candle's matmuls split work over RAYON_NUM_THREADS tasks in the current rayon pool;
        // its other kernels use that pool directly.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool");
        let t = pool.install(|| {
            time_track(&mtt, &track[..RATE * 10]); // warm-up
            time_track(&mtt, &track)
        });
        let per_track = t.logmel_s + t.forward_s;
        let patches_per_s = t.patches as f64 / t.forward_s;
        let cpu = t.forward_cpu_s.map_or(String::new(), |c| {
            format!(
                "; {:.1} patches per CPU second, network {c:.2} CPU s",
                t.patches as f64 / c
            )
        });
        println!(
            "threads {threads}: {patches_per_s:.1} patches/s, {per_track:.2} s per 4-minute track \
             ({} patches; log-mel {:.3} s, network {:.2} s{cpu})",
            t.patches, t.logmel_s, t.forward_s
        );
        ours.push((threads, patches_per_s, per_track));
    }
    std::env::remove_var("RAYON_NUM_THREADS");

    if std::env::var("AUDIOLAKE_BENCH_PEER").is_ok_and(|v| v == "1") {
        peer(&track, &ours);
    } else {
        println!("(set AUDIOLAKE_BENCH_PEER=1 to compare with the original TensorFlow musicnn)");
    }

    if files.is_empty() {
        return;
    }
    let msd = Musicnn::load_bundled(Kind::Msd, &Device::Cpu).expect("bundled MSD");
    println!(
        "\ntop 5 tags (mean over 3 s patches) of {}",
        corpus.display()
    );
    for f in &files {
        let Some(samples) = decode(f) else { continue };
        let frames = mtt.logmel(&samples);
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!("{name} ({:.0} s)", samples.len() as f64 / RATE as f64);
        for (label, model) in [("MTT", &mtt), ("MSD", &msd)] {
            let r = model.analyze(&frames).expect("analysis");
            let mut order: Vec<usize> = (0..r.tags.len()).collect();
            order.sort_by(|&a, &b| r.tags[b].total_cmp(&r.tags[a]));
            let top: Vec<String> = order[..5]
                .iter()
                .map(|&i| format!("{} {:.2}", model.labels()[i], r.tags[i]))
                .collect();
            println!("    {label}: {}", top.join(", "));
        }
    }
}

/// Runs benches/musicnn_tf.py on the same 4 minutes and prints the ratio to our figures.
fn peer(track: &[f32], ours: &[(usize, f64, f64)]) {
    let script = workspace().join("benches/musicnn_tf.py");
    if !script.exists() {
        println!("peer: {} not found", script.display());
        return;
    }
    let wav = std::env::temp_dir().join(format!(
        "audiolake-musicnn-bench-{}.wav",
        std::process::id()
    ));
    write_wav(&wav, track);
    println!(
        "peer: running {} (first run installs TensorFlow into a venv)",
        script.display()
    );
    let out = Command::new("python3").arg(&script).arg(&wav).output();
    let _ = std::fs::remove_file(&wav);
    let out = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            println!("peer failed:\n{}", String::from_utf8_lossy(&o.stderr));
            return;
        }
        Err(e) => {
            println!("peer: cannot run python3: {e}");
            return;
        }
    };
    // The peer's lines: `RESULT threads=N batch=B patches_per_s=X seconds_per_4min=Y`.
    for line in out.lines().filter_map(|l| l.strip_prefix("RESULT ")) {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        let (Some(t), Some(b), Some(p), Some(s)) = (
            field("threads").and_then(|v| v.parse::<usize>().ok()),
            field("batch"),
            field("patches_per_s").and_then(|v| v.parse::<f64>().ok()),
            field("seconds_per_4min").and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        print!("peer TensorFlow musicnn, threads {t}, batch {b}: {p:.1} patches/s, {s:.2} s per 4-minute track");
        match ours.iter().find(|o| o.0 == t) {
            Some(&(_, our_p, our_s)) => println!(
                "; ours/peer: {:.2}x the patches/s, {:.2}x less time per track",
                our_p / p,
                s / our_s
            ),
            None => println!(),
        }
    }
}
