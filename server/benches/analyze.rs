//! `audiolake analyze` over a folder of real 3-5 minute tracks on all cores, beside essentia's
//! MusicExtractor and the original TensorFlow musicnn on the same files in the same run.
//!
//!     cargo bench -p audiolake-server --bench analyze
//!     AUDIOLAKE_BENCH_TRACKS=4 cargo bench -p audiolake-server --bench analyze   # quick check
//!
//! The folder holds `AUDIOLAKE_BENCH_TRACKS` (default 40) hard links or copies of the corpus's
//! 3-5 minute tracks, longest first, taken in turn. `audiolake analyze` runs three times, each
//! with a fresh store: the DSP groups only, every group with the default patch setting, and
//! every group on every patch (`--musicnn-max-patches 0`). The peers run one process per core
//! with the files dealt out between them: essentia's MusicExtractor
//! (`udf/benches/peers/essentia_peer.py`, in the Python named by `AUDIOLAKE_PYTHON`) and
//! TensorFlow musicnn (`benches/musicnn_tf.py --throughput`, in its own venv). Each row gives
//! tracks per hour (from wall time), CPU seconds per track (user + system of the processes, from
//! getrusage) and how busy the cores were, with the goal or the ratio beside it. Last comes the
//! per-stage breakdown of the longest track on one thread: every stage of an analysis with every
//! group, at the default patch setting and on every patch, then each network alone.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use audiolake::udf::features::{analyze_with, AnalysisOptions, GROUPS};
use audiolake::udf::samples::decode_mono;
use audiolake_models::{sample_patches, Device, Kind, Musicnn, N_MELS};
use audiolake_testkit_audio::{corpus, peers};

const DEFAULT_TRACKS: usize = 40;
/// What the goals call a real track: 3 to 5 minutes.
const SHORTEST_S: f64 = 180.0;
const LONGEST_S: f64 = 300.0;
/// The goals (issue 17): DSP groups only, and every group with the default patch setting.
const DSP_PER_HOUR: f64 = 10_000.0;
const DSP_CPU_S: f64 = 0.5;
const ALL_PER_HOUR: f64 = 2_000.0;

/// A goal: tracks per hour, and CPU seconds per track if any.
type Goal = (f64, Option<f64>);

/// One file of the folder.
struct Track {
    path: PathBuf,
    duration_s: f64,
}

/// Wall time and CPU time (user + system, every process) of one run over the folder.
struct Figures {
    wall_s: f64,
    cpu_s: f64,
}

fn main() {
    let count = match std::env::var("AUDIOLAKE_BENCH_TRACKS") {
        Ok(n) => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .expect("AUDIOLAKE_BENCH_TRACKS must be a positive number of tracks"),
        Err(_) => DEFAULT_TRACKS,
    };
    let temp = tempfile::tempdir().expect("a temporary directory");
    let folder = temp.path().join("tracks");
    let Some(tracks) = make_folder(&folder, count) else {
        return;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let audio_min = tracks.iter().map(|t| t.duration_s).sum::<f64>() / 60.0;
    println!(
        "{count} tracks ({audio_min:.0} min of audio) in {}, {cores} cores\n",
        folder.display()
    );
    println!("{:<46} {:>9} {:>7} {:>6}", "", "tracks/h", "CPU s", "busy");

    let dsp: Vec<&str> = GROUPS.iter().copied().filter(|&g| g != "musicnn").collect();
    let dsp_groups = format!("--groups={}", dsp.join(","));
    // Label, flags, and the goal.
    let runs: [(&str, Vec<&str>, Option<Goal>); 3] = [
        (
            "audiolake, DSP groups only",
            vec![dsp_groups.as_str()],
            Some((DSP_PER_HOUR, Some(DSP_CPU_S))),
        ),
        (
            "audiolake, every group, default patches",
            vec![],
            Some((ALL_PER_HOUR, None)),
        ),
        (
            "audiolake, every group, every patch",
            vec!["--musicnn-max-patches=0"],
            None,
        ),
    ];
    let ours: Vec<Option<Figures>> = runs
        .iter()
        .enumerate()
        .map(|(i, (label, flags, target))| {
            let store = temp.path().join(format!("store{i}"));
            let f = measure(|| audiolake(&folder, &store, flags, count))?;
            let note = target.map_or_else(
                || "no goal".to_owned(),
                |(rate, cpu)| goal(&f, count, rate, cpu),
            );
            print_row(label, &f, count, cores, &note);
            Some(f)
        })
        .collect();

    let shares = deal(&tracks, cores);
    if essentia_installed() {
        if let Some(f) = measure(|| per_core(&shares, essentia)) {
            let note = ours[0].as_ref().map_or(String::new(), |base| {
                ratio(&f, base, count, "audiolake's DSP groups")
            });
            print_row("essentia MusicExtractor", &f, count, cores, &note);
        }
    }
    if tensorflow_installed() {
        if let Some(f) = measure(|| per_core(&shares, tensorflow)) {
            let note = ours[2].as_ref().map_or(String::new(), |base| {
                ratio(&f, base, count, "audiolake's every group, every patch")
            });
            print_row(
                "TensorFlow musicnn (MTT and MSD, every patch)",
                &f,
                count,
                cores,
                &note,
            );
        }
    }

    breakdown(&tracks[0].path);
}

/// `count` hard links (or copies) in `dir` of the corpus's 3-5 minute tracks, longest first,
/// taken in turn; `None`, after saying why, when there are none.
fn make_folder(dir: &Path, count: usize) -> Option<Vec<Track>> {
    let Some(entries) = corpus::load() else {
        println!("SKIP: no corpus at {}", corpus::dir().display());
        return None;
    };
    let corpus_dir = corpus::find()?;
    let mut long: Vec<(&str, f64)> = entries
        .iter()
        .filter(|e| (SHORTEST_S..=LONGEST_S).contains(&e.duration_s))
        // A name from truth.csv that is not a plain file name (`../x`, `/x`) stays out.
        .filter(|e| Path::new(&e.file).file_name() == Some(OsStr::new(&e.file)))
        .filter(|e| corpus_dir.join(&e.file).is_file())
        .map(|e| (e.file.as_str(), e.duration_s))
        .collect();
    if long.is_empty() {
        println!(
            "SKIP: no 3-5 minute track listed in {}/truth.csv",
            corpus_dir.display()
        );
        return None;
    }
    long.sort_by(|a, b| b.1.total_cmp(&a.1));
    std::fs::create_dir(dir).expect("creating the folder of tracks");
    let tracks = (0..count)
        .map(|i| {
            let (name, duration_s) = long[i % long.len()];
            let source = corpus_dir.join(name);
            // The number keeps the names apart; the corpus's name is only ever a path argument.
            let path = dir.join(format!("{i:03}_{name}"));
            std::fs::hard_link(&source, &path)
                .or_else(|_| std::fs::copy(&source, &path).map(drop))
                .unwrap_or_else(|e| panic!("copying {} into the folder: {e}", source.display()));
            Track { path, duration_s }
        })
        .collect();
    for (name, duration_s) in &long {
        let copies = (0..count)
            .filter(|i| long[i % long.len()].0 == *name)
            .count();
        let seconds = duration_s.round() as u32;
        println!(
            "{copies:>3} x {name} ({}:{:02})",
            seconds / 60,
            seconds % 60
        );
    }
    Some(tracks)
}

/// CPU seconds (user + system) of every child process waited for so far, and their children.
fn children_cpu_s() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct it is given.
    let status = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(status, 0, "getrusage(RUSAGE_CHILDREN) failed");
    // SAFETY: getrusage succeeded, so it filled the struct.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The wall and CPU time of `work`, which runs child processes and waits for them all; `None`
/// when it failed (it says why).
fn measure(work: impl FnOnce() -> bool) -> Option<Figures> {
    let cpu = children_cpu_s();
    let start = Instant::now();
    let ok = work();
    let wall_s = start.elapsed().as_secs_f64();
    ok.then(|| Figures {
        wall_s,
        cpu_s: children_cpu_s() - cpu,
    })
}

/// `audiolake analyze` over `folder` into a fresh `store`, with `flags`; false (after saying
/// why) unless it analysed all `count` files.
fn audiolake(folder: &Path, store: &Path, flags: &[&str], count: usize) -> bool {
    let output = Command::new(env!("CARGO_BIN_EXE_audiolake"))
        .arg("analyze")
        .arg("--music")
        .arg(folder)
        .arg("--store")
        .arg(store)
        .args(["--table", "music"])
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .expect("running audiolake");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Its summary: "music: 40 files, 40 analysed, 0 from the store, in 12.3 s; groups ...".
    if output.status.success() && stdout.contains(&format!("{count} files, {count} analysed,")) {
        return true;
    }
    println!(
        "audiolake analyze {} did not analyse every file ({}):\n{stdout}{}",
        flags.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    false
}

/// The tracks dealt out to `n` processes, each next longest to the least loaded, so that they
/// finish together.
fn deal(tracks: &[Track], n: usize) -> Vec<Vec<PathBuf>> {
    let mut order: Vec<&Track> = tracks.iter().collect();
    order.sort_by(|a, b| b.duration_s.total_cmp(&a.duration_s));
    let mut shares = vec![(0.0_f64, Vec::new()); n.min(tracks.len())];
    for track in order {
        let least = shares
            .iter_mut()
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .expect("at least one share");
        least.0 += track.duration_s;
        least.1.push(track.path.clone());
    }
    shares.into_iter().map(|(_, files)| files).collect()
}

/// Runs `peer` on every share at once, one process each; true when all succeeded.
fn per_core(shares: &[Vec<PathBuf>], peer: fn(&[PathBuf]) -> bool) -> bool {
    std::thread::scope(|s| {
        let running: Vec<_> = shares
            .iter()
            .map(|share| s.spawn(move || peer(share)))
            .collect();
        let done: Vec<bool> = running
            .into_iter()
            .map(|r| r.join().unwrap_or(false))
            .collect();
        done.into_iter().all(|ok| ok)
    })
}

/// Whether essentia imports (an untimed run on no file); if not, it says how to install it.
fn essentia_installed() -> bool {
    peers::run("essentia", "throughput", &[]).is_some()
}

/// essentia's MusicExtractor on each of `files` in one process.
fn essentia(files: &[PathBuf]) -> bool {
    let Some(lines) = peers::run("essentia", "throughput", files) else {
        return false;
    };
    let timed = lines.iter().filter(|l| l["seconds"].is_f64()).count();
    if timed != files.len() {
        println!("essentia: {timed} of {} files timed", files.len());
    }
    timed == files.len()
}

fn tensorflow_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/musicnn_tf.py")
}

/// Makes TensorFlow musicnn's venv if missing, untimed; false after saying why it failed.
fn tensorflow_installed() -> bool {
    let status = Command::new("python3")
        .arg(tensorflow_script())
        .arg("--install")
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => true,
        Ok(s) => {
            println!("TensorFlow musicnn: installing its venv failed ({s})");
            false
        }
        Err(e) => {
            println!("TensorFlow musicnn: cannot run python3: {e}");
            false
        }
    }
}

/// TensorFlow musicnn on each of `files` in one process, on one thread.
fn tensorflow(files: &[PathBuf]) -> bool {
    let mut command = Command::new("python3");
    command
        .arg(tensorflow_script())
        .arg("--throughput")
        .args(files)
        .stdin(Stdio::null());
    peers::one_thread(&mut command);
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => {
            println!("TensorFlow musicnn: cannot run python3: {e}");
            return false;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let done = stdout.lines().filter(|l| l.starts_with("RESULT ")).count();
    if output.status.success() && done == files.len() {
        return true;
    }
    println!(
        "TensorFlow musicnn: {done} of {} files ({}):\n{}",
        files.len(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    false
}

fn per_hour(f: &Figures, count: usize) -> f64 {
    count as f64 * 3600.0 / f.wall_s
}

fn cpu_per_track(f: &Figures, count: usize) -> f64 {
    f.cpu_s / count as f64
}

fn print_row(label: &str, f: &Figures, count: usize, cores: usize, note: &str) {
    println!(
        "{label:<46} {:>9.0} {:>7.2} {:>5.0}%  {note}",
        per_hour(f, count),
        cpu_per_track(f, count),
        100.0 * f.cpu_s / (f.wall_s * cores as f64),
    );
}

/// The goal beside a row: met, or missed by how much.
fn goal(f: &Figures, count: usize, min_per_hour: f64, max_cpu_s: Option<f64>) -> String {
    let rate = per_hour(f, count);
    let mut note = format!("goal >= {min_per_hour:.0}/h: ");
    if rate >= min_per_hour {
        note.push_str("met");
    } else {
        note.push_str(&format!(
            "missed by {:.0} %",
            100.0 * (1.0 - rate / min_per_hour)
        ));
    }
    if let Some(max) = max_cpu_s {
        let cpu = cpu_per_track(f, count);
        note.push_str(&format!("; < {max} s CPU: "));
        if cpu < max {
            note.push_str("met");
        } else {
            note.push_str(&format!("missed by {:.2} s", cpu - max));
        }
    }
    note
}

/// A peer's figures as multiples of ours.
fn ratio(peer: &Figures, ours: &Figures, count: usize, what: &str) -> String {
    format!(
        "{:.1}x the CPU per track of {what}, {:.2}x its tracks/h",
        cpu_per_track(peer, count) / cpu_per_track(ours, count),
        per_hour(peer, count) / per_hour(ours, count),
    )
}

/// Where one analysis of `file` spends its time, on one thread (wall time, so it is CPU time
/// on an idle machine): every stage with every group at the default patch setting and on every
/// patch, then each network alone on the log-mel frames of the whole track.
fn breakdown(file: &Path) {
    // One thread for candle and rayon, set before either starts in this process.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let analyse = |max_patches| {
        let options = AnalysisOptions {
            musicnn_max_patches: max_patches,
        };
        let source = File::open(file).expect("opening the longest track");
        let ext = file.extension().and_then(|e| e.to_str());
        analyze_with(Box::new(source), ext, GROUPS, &options)
            .unwrap_or_else(|e| panic!("analysing {}: {e}", file.display()))
    };
    let default = AnalysisOptions::default().musicnn_max_patches;
    // The first analysis loads the networks: leave it out.
    analyse(default);
    let sampled = analyse(default).stages.rows();
    let every = analyse(0).stages.rows();
    println!(
        "\nstages of {}, one thread\n{:<46} {:>11} {:>11}",
        file.display(),
        "",
        format!("{default} patches"),
        "every patch"
    );
    let mut totals = (Duration::ZERO, Duration::ZERO);
    for ((label, a), (_, b)) in sampled.iter().zip(&every) {
        println!(
            "  {label:<44} {:>9.3} s {:>9.3} s",
            a.as_secs_f64(),
            b.as_secs_f64()
        );
        totals = (totals.0 + *a, totals.1 + *b);
    }
    println!(
        "  {:<44} {:>9.3} s {:>9.3} s",
        "total",
        totals.0.as_secs_f64(),
        totals.1.as_secs_f64()
    );

    let source = File::open(file).expect("opening the longest track");
    let ext = file.extension().and_then(|e| e.to_str());
    let (samples, _) = decode_mono(Box::new(source), ext, Some(16_000), 3600.0)
        .unwrap_or_else(|e| panic!("decoding {}: {e}", file.display()));
    for (name, kind) in [("MTT", Kind::Mtt), ("MSD", Kind::Msd)] {
        let model = Musicnn::load_bundled(kind, &Device::Cpu).expect("the bundled network");
        let frames = model.logmel(&samples);
        let patch = model.patch_frames();
        let some: Vec<[f32; N_MELS]> = sample_patches(frames.len() / patch, default)
            .into_iter()
            .flat_map(|p| &frames[p * patch..(p + 1) * patch])
            .copied()
            .collect();
        let timed = |frames: &[[f32; N_MELS]]| {
            let start = Instant::now();
            model.analyze(frames).expect("a forward pass");
            start.elapsed().as_secs_f64()
        };
        println!(
            "  {:<44} {:>9.3} s {:>9.3} s",
            format!("of which network {name}"),
            timed(&some),
            timed(&frames)
        );
    }
}
