//! HNSW benchmark: build time, memory, recall@10 against brute force and queries/s at several
//! `ef_search`, for audiolake's index (its own graph) and, in the same run on the same data, for
//! hnswlib (PyPI) through `benches/hnswlib_peer.py`, printed side by side with ratios.
//!
//! Data: N vectors of 200 dimensions around 1000 cluster centres drawn uniformly in [-1, 1]^200,
//! each vector a centre plus noise of standard deviation 0.1 per element (a sum of 12 uniforms);
//! 1000 queries drawn the same way. Metric L2, m = 16, ef_construction = 200.
//!
//! `cargo bench --workspace --bench hnsw`; N = `AUDIOLAKE_BENCH_N` (default 100000, or
//! 1000000 with `AUDIOLAKE_BENCH_FULL=1`). Inserts use every core (rayon; hnswlib's
//! `num_threads=-1`); queries run one at a time on one thread in both. "open + first query" is
//! the time from a saved index to one answer at ef 40: ours memory-maps the file, hnswlib reads
//! it whole (both from the page cache, the file having just been written).

use audiolake_engine::index::{HnswIndex, IndexParams, Metric, SearchOptions};
use audiolake_udf::vector::l2_squared_f32;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const DIMS: usize = 200;
const CLUSTERS: usize = 1000;
const QUERIES: usize = 1000;
const K: usize = 10;
const EF_SEARCH: [usize; 4] = [10, 40, 100, 200];
const PARAMS: IndexParams = IndexParams {
    m: 16,
    ef_construction: 200,
};

/// Rows of `DIMS` floats, flat, from a xorshift generator (deterministic across runs).
fn clustered(n: usize, seed: u64, centres: &[f32]) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut out = Vec::with_capacity(n * DIMS);
    for i in 0..n {
        let c = (i * 7919) % CLUSTERS;
        for d in 0..DIMS {
            let noise: f32 = (0..12).map(|_| uniform()).sum::<f32>() - 6.0;
            out.push(centres[c * DIMS + d] + 0.1 * noise);
        }
    }
    out
}

fn centres() -> Vec<f32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..CLUSTERS * DIMS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The true `K` nearest rows of each query, on every core.
fn brute_force(base: &[f32], queries: &[f32]) -> Vec<Vec<u64>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = QUERIES.div_ceil(threads);
    let mut truth = vec![Vec::new(); QUERIES];
    std::thread::scope(|s| {
        for (chunk_i, chunk) in truth.chunks_mut(per).enumerate() {
            s.spawn(move || {
                for (j, out) in chunk.iter_mut().enumerate() {
                    let qi = chunk_i * per + j;
                    let q = &queries[qi * DIMS..(qi + 1) * DIMS];
                    let mut d: Vec<(f32, u64)> = base
                        .chunks_exact(DIMS)
                        .enumerate()
                        .map(|(i, v)| (l2_squared_f32(q, v), i as u64))
                        .collect();
                    d.select_nth_unstable_by(K, |a, b| a.0.total_cmp(&b.0));
                    // Not `into_iter().collect()`: that would keep d's allocation, n rows per
                    // query, for the rest of the run.
                    *out = d[..K].iter().map(|x| x.1).collect();
                }
            });
        }
    });
    truth
}

/// A field of /proc/self/status in MiB (VmRSS, VmHWM).
fn proc_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `.npy` version 1.0, little-endian, C order.
fn write_npy(path: &Path, descr: &str, shape: (usize, usize), data: &[u8]) {
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape.0, shape.1
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(b"\x93NUMPY\x01\x00").unwrap();
    f.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    f.write_all(data).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

struct Run {
    ef: usize,
    recall: f64,
    qps: f64,
}

struct Report {
    build_s: f64,
    /// Opening the saved index and answering one query at ef 40.
    open_s: f64,
    index_mib: f64,
    peak_mib: f64,
    runs: Vec<Run>,
}

fn measure_ours(dir: &Path, base: &[f32], queries: &[f32], truth: &[Vec<u64>]) -> Report {
    let rss_before = proc_mib("VmRSS");
    let started = Instant::now();
    let index = HnswIndex::build(
        Metric::L2,
        PARAMS,
        base.chunks_exact(DIMS)
            .enumerate()
            .map(|(i, v)| (i as u64, v)),
    )
    .expect("build");
    let build_s = started.elapsed().as_secs_f64();
    let peak_mib = proc_mib("VmHWM");
    let runs = EF_SEARCH
        .iter()
        .map(|&ef| {
            let search = |q: &[f32]| {
                index
                    .search(q, K, &SearchOptions::new(ef), None)
                    .expect("search")
                    .neighbors
            };
            let mut hits = 0;
            for (qi, q) in queries.chunks_exact(DIMS).enumerate() {
                hits += search(q)
                    .iter()
                    .filter(|n| truth[qi].contains(&n.id))
                    .count();
            }
            let (mut done, started) = (0usize, Instant::now());
            while started.elapsed() < Duration::from_secs(1) {
                for q in queries.chunks_exact(DIMS) {
                    std::hint::black_box(search(q));
                }
                done += QUERIES;
            }
            Run {
                ef,
                recall: hits as f64 / (QUERIES * K) as f64,
                qps: done as f64 / started.elapsed().as_secs_f64(),
            }
        })
        .collect();
    let saved = dir.join("audiolake");
    index.save(&saved).expect("save");
    drop(index);
    let started = Instant::now();
    let opened = HnswIndex::load(&saved).expect("load");
    let first = opened.search(&queries[..DIMS], K, &SearchOptions::new(40), None);
    std::hint::black_box(first.expect("search"));
    let open_s = started.elapsed().as_secs_f64();
    Report {
        build_s,
        open_s,
        index_mib: peak_mib - rss_before,
        peak_mib,
        runs,
    }
}

/// Runs the hnswlib peer script on files written here; `None` (with the reason printed) when
/// Python or hnswlib cannot be had.
fn measure_hnswlib(
    dir: &Path,
    base: &[f32],
    queries: &[f32],
    truth: &[Vec<u64>],
) -> Option<Report> {
    let n = base.len() / DIMS;
    write_npy(&dir.join("base.npy"), "<f4", (n, DIMS), &f32_bytes(base));
    write_npy(
        &dir.join("queries.npy"),
        "<f4",
        (QUERIES, DIMS),
        &f32_bytes(queries),
    );
    let ids: Vec<u8> = truth
        .iter()
        .flatten()
        .flat_map(|id| (*id as i64).to_le_bytes())
        .collect();
    write_npy(&dir.join("truth.npy"), "<i8", (QUERIES, K), &ids);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/hnswlib_peer.py");
    let ef_list: Vec<String> = EF_SEARCH.iter().map(|e| e.to_string()).collect();
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .args(["--m", &PARAMS.m.to_string()])
        .args(["--ef-construction", &PARAMS.ef_construction.to_string()])
        .args(["--ef-search", &ef_list.join(",")])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            println!(
                "hnswlib peer skipped: {} failed:\n{}",
                script.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            println!("hnswlib peer skipped: python3 not runnable ({e})");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("hnswlib_peer.py prints a JSON line");
    let num = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Some(Report {
        build_s: num(&json, "build_s"),
        open_s: num(&json, "open_s"),
        index_mib: num(&json, "index_mib"),
        peak_mib: num(&json, "peak_mib"),
        runs: json["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Run {
                ef: num(r, "ef") as usize,
                recall: num(r, "recall"),
                qps: num(r, "qps"),
            })
            .collect(),
    })
}

fn main() {
    let n: usize = match std::env::var("AUDIOLAKE_BENCH_N") {
        Ok(v) => v.parse().expect("AUDIOLAKE_BENCH_N is a row count"),
        Err(_) if std::env::var("AUDIOLAKE_BENCH_FULL").as_deref() == Ok("1") => 1_000_000,
        Err(_) => 100_000,
    };
    let centres = centres();
    let base = clustered(n, 0x9E37_79B9_7F4A_7C15, &centres);
    let queries = clustered(QUERIES, 0xD1B5_4A32_D192_ED03, &centres);
    drop(centres);
    println!(
        "HNSW, L2: {n} vectors of {DIMS} dims around {CLUSTERS} clusters (noise sd 0.1), \
         {QUERIES} queries, k = {K}, m = {}, ef_construction = {}, {} cores",
        PARAMS.m,
        PARAMS.ef_construction,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let started = Instant::now();
    let truth = brute_force(&base, &queries);
    println!(
        "brute force truth: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("temporary folder");
    let ours = measure_ours(dir.path(), &base, &queries, &truth);
    let peer = measure_hnswlib(dir.path(), &base, &queries, &truth);

    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "\n{:<28}{:>14}{:>14}{:>10}",
        "", "audiolake", "hnswlib", "ratio"
    );
    // Recall differs in the third decimal between the two graphs: it gets three.
    let row = |name: &str, ours: f64, peer: Option<f64>| {
        let digits = if name.contains("recall") { 3 } else { 2 };
        match peer {
            Some(p) => println!(
                "{name:<28}{ours:>14.digits$}{p:>14.digits$}{:>10.2}",
                ratio(ours, p)
            ),
            None => println!("{name:<28}{ours:>14.digits$}{:>14}{:>10}", "-", "-"),
        }
    };
    row("build (s)", ours.build_s, peer.as_ref().map(|p| p.build_s));
    row(
        "open + first query (s)",
        ours.open_s,
        peer.as_ref().map(|p| p.open_s),
    );
    row(
        "index memory (MiB)",
        ours.index_mib,
        peer.as_ref().map(|p| p.index_mib),
    );
    row(
        "peak RSS (MiB)",
        ours.peak_mib,
        peer.as_ref().map(|p| p.peak_mib),
    );
    for run in &ours.runs {
        let theirs = peer
            .as_ref()
            .and_then(|p| p.runs.iter().find(|r| r.ef == run.ef));
        row(
            &format!("ef {:>3}: recall@{K}", run.ef),
            run.recall,
            theirs.map(|r| r.recall),
        );
        row(
            &format!("ef {:>3}: queries/s", run.ef),
            run.qps,
            theirs.map(|r| r.qps),
        );
    }
}
