//! Speed and memory of a complete DSP analysis (every feature group but the networks, which
//! `audiolake-models`' musicnn bench measures) of a 4-minute 44.1 kHz stereo MP3, beside
//! ffmpeg's decoder and the peers in `benches/peers/`.
//!
//! `cargo bench -p audiolake-udf --bench speed [-- --no-peers] [-- --no-memory]` (release build)
//! prints, each with its goal:
//! - one core: CPU seconds for the complete analysis (best of 3), and where they went (decode,
//!   down-mix, each resampler, each STFT, each group);
//! - all cores: tracks per hour over 8 copies of the file, one thread per core;
//! - decoding alone against `ffmpeg -threads 1 -i FILE -f f32le -ac 1 -` (best of 3 each);
//! - essentia's MusicExtractor and librosa doing our work (load and resample to 22050 Hz, MFCC,
//!   chroma, centroid, zero-crossing rate, beat_track, RMS), each on one core, as multiples of
//!   our one-core time;
//! - peak RSS of a child process analysing the file, and analysing a one-hour file made by
//!   looping it, to show that memory does not grow with length.
//!
//! The file is the corpus's 4-minute benchmark render (`h2_georgy_porgy.mp3`, 4:05); without it,
//! 4 minutes of the first corpus file looped and encoded to a 192 kbit/s MP3 by ffmpeg.
//! `AUDIOLAKE_PYTHON` picks the Python that has the peers installed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use audiolake_testkit_audio::{corpus, peers};
use audiolake_udf::features::{analyze_path, StageTimes, GROUPS};

const BENCHMARK_FILE: &str = "h2_georgy_porgy.mp3";
const COPIES: usize = 8;
const RUNS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The child that measures peak memory: analyse one file and report VmHWM.
    if let Some(i) = args.iter().position(|a| a == "--peak-rss") {
        peak_rss_child(Path::new(&args[i + 1]));
        return;
    }
    let with_peers = !args.iter().any(|a| a == "--no-peers");
    let with_memory = !args.iter().any(|a| a == "--no-memory");

    let temp = tempfile::tempdir().expect("a temporary directory");
    let Some(file) = four_minute_mp3(temp.path()) else {
        return;
    };

    let groups = dsp_groups();
    let (ours, out) = best_of(RUNS, || {
        analyze_path(&file, &groups).unwrap_or_else(|e| panic!("{e}"))
    });
    let audio = out.decoded_duration_s;
    println!(
        "{:<44} {:>8.3} s  CPU ({:.0}x real time; goal < 0.5 s)",
        format!("DSP analysis ({} groups), one core", groups.len()),
        ours,
        audio / ours
    );
    print_stages(&out.stages);

    let per_hour = tracks_per_hour(&file, temp.path());
    println!(
        "{:<44} {:>8.0}    ({COPIES} copies, {} threads)",
        "tracks per hour, all cores",
        per_hour,
        threads()
    );

    let (decode, _) = best_of(RUNS, || {
        analyze_path(&file, &[]).unwrap_or_else(|e| panic!("{e}"))
    });
    match ffmpeg_decode_seconds(&file) {
        Some(ffmpeg) => println!(
            "{:<44} {:>8.3} s  (ffmpeg {ffmpeg:.3} s: {:.0} % of ffmpeg's speed; goal >= 80 %)",
            "decoding alone, one core",
            decode,
            100.0 * ffmpeg / decode
        ),
        None => println!(
            "{:<44} {:>8.3} s  (ffmpeg not found)",
            "decoding alone, one core", decode
        ),
    }

    if with_peers {
        for (peer, what, goal) in [
            (
                "essentia",
                "essentia MusicExtractor, one core",
                "; goal >= 10x",
            ),
            ("librosa", "librosa, the same features, one core", ""),
        ] {
            let Some(lines) = peers::run(peer, "speed", std::slice::from_ref(&file)) else {
                continue;
            };
            let Some(seconds) = lines.first().and_then(|l| l["seconds"].as_f64()) else {
                println!("{peer}: no timing in its output");
                continue;
            };
            println!(
                "{what:<44} {seconds:>8.3} s  (ours is {:.1}x faster{goal})",
                seconds / ours
            );
        }
    }

    if with_memory {
        peak_memory(&file, audio, temp.path());
    }
}

/// Every group but the networks.
fn dsp_groups() -> Vec<&'static str> {
    GROUPS.iter().copied().filter(|g| *g != "musicnn").collect()
}

/// The breakdown of one analysis, indented under its total.
fn print_stages(stages: &StageTimes) {
    for (label, spent) in stages.rows() {
        println!("  {label:<42} {:>8.3} s", spent.as_secs_f64());
    }
}

/// Runs `work` `runs` times on this thread and returns the least CPU time it took and the last
/// result.
fn best_of<T>(runs: usize, mut work: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut result = None;
    for _ in 0..runs {
        let start = thread_cpu_seconds();
        result = Some(work());
        best = best.min(thread_cpu_seconds() - start);
    }
    (best, result.expect("at least one run"))
}

/// CPU time of the calling thread so far (Linux's scheduler statistics, in nanoseconds).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (Linux) for the thread's CPU time");
    let ns: u64 = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat starts with nanoseconds on the CPU");
    ns as f64 * 1e-9
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The benchmark file from the corpus, or one made from corpus audio; `None` (after saying
/// why) when there is neither.
fn four_minute_mp3(temp: &Path) -> Option<PathBuf> {
    if let Ok(corpus_file) = corpus::dir().join(BENCHMARK_FILE).canonicalize() {
        println!(
            "file: {} (corpus, 44.1 kHz stereo MP3)",
            corpus_file.display()
        );
        return Some(corpus_file);
    }
    let source = std::fs::read_dir(corpus::dir())
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x != "csv" && x != "md"))
        .min();
    let Some(source) = source else {
        println!("SKIP: no corpus audio at {}", corpus::dir().display());
        return None;
    };
    let made = temp.join("four_minutes.mp3");
    let ok = ffmpeg(&[
        &"-stream_loop",
        &"-1",
        &"-i",
        &source,
        &"-t",
        &"240",
        &"-ar",
        &"44100",
        &"-ac",
        &"2",
        &"-b:a",
        &"192k",
        &made,
    ]);
    if !ok {
        println!(
            "SKIP: ffmpeg could not make a 4-minute MP3 from {}",
            source.display()
        );
        return None;
    }
    println!(
        "file: 4 minutes of {} looped, as a 44.1 kHz stereo 192 kbit/s MP3",
        source.display()
    );
    Some(made)
}

/// Runs ffmpeg quietly with `args`; false when it is missing or fails.
fn ffmpeg(args: &[&dyn AsRef<OsStr>]) -> bool {
    Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Complete analyses of `COPIES` copies of `file`, a thread per core taking the next file.
fn tracks_per_hour(file: &Path, temp: &Path) -> f64 {
    let copies: Vec<PathBuf> = (0..COPIES)
        .map(|i| {
            let copy = temp.join(format!("copy{i}.mp3"));
            std::fs::copy(file, &copy).expect("copying the benchmark file");
            copy
        })
        .collect();
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads() {
            s.spawn(|| {
                while let Some(path) = copies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    analyze_path(path, &dsp_groups()).unwrap_or_else(|e| panic!("{e}"));
                }
            });
        }
    });
    COPIES as f64 * 3600.0 / start.elapsed().as_secs_f64()
}

/// ffmpeg's best time of `RUNS` to decode `file` to mono f32 on one thread.
fn ffmpeg_decode_seconds(file: &Path) -> Option<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        let start = Instant::now();
        let args: [&dyn AsRef<OsStr>; 9] = [
            &"-threads",
            &"1",
            &"-i",
            &file,
            &"-f",
            &"f32le",
            &"-ac",
            &"1",
            &"-",
        ];
        if !ffmpeg(&args) {
            return None;
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    Some(best)
}

/// Peak RSS of a child analysing the 4-minute file and a one-hour file looped from it.
fn peak_memory(file: &Path, four_minutes: f64, temp: &Path) {
    let hour = temp.join("one_hour.mp3");
    // Copying the MP3 frames makes a valid hour-long file in a second, without re-encoding.
    let looped = ffmpeg(&[
        &"-stream_loop",
        &"-1",
        &"-i",
        &file,
        &"-t",
        &"3600",
        &"-c",
        &"copy",
        &hour,
    ]);
    let mut runs = vec![(file.to_owned(), four_minutes)];
    if looped {
        runs.push((hour, 3600.0));
    } else {
        println!("peak RSS: ffmpeg could not make the one-hour file; measuring the 4-minute one");
    }
    for (path, seconds) in runs {
        let exe = std::env::current_exe().expect("the bench's own path");
        let output = Command::new(exe)
            .arg("--peak-rss")
            .arg(&path)
            .stderr(Stdio::inherit())
            .output()
            .expect("running the peak-RSS child");
        let text = String::from_utf8_lossy(&output.stdout);
        let label = format!("peak RSS, {:.0} min of audio", seconds / 60.0);
        println!("{label:<44} {}", text.trim_end());
    }
}

fn peak_rss_child(path: &Path) {
    let before = status_kb("VmRSS");
    let start = Instant::now();
    let out = analyze_path(path, &dsp_groups()).unwrap_or_else(|e| panic!("{e}"));
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{:>8.1} MiB  (RSS before analysis {:.1} MiB; {:.0} s of audio analysed in {elapsed:.1} s)",
        status_kb("VmHWM") as f64 / 1024.0,
        before as f64 / 1024.0,
        out.decoded_duration_s
    );
}

/// A `kB` line of /proc/self/status (Linux), 0 where there is none.
fn status_kb(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
