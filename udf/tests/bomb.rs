//! A decompression bomb: an hour of silent FLAC in 250 KB analyses in bounded memory. Its own
//! test binary, so that the process's peak memory is this test's alone.

use std::io::Cursor;

use audiolake_testkit_audio::crafted::{silent_flac, FLAC_BLOCK};
use audiolake_udf::features::{analyze, Value};

/// The process's peak resident memory (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

#[test]
fn an_hour_of_silent_flac_analyzes_in_bounded_memory() {
    let rate = 22_050u64;
    let blocks = (3600 * rate).div_ceil(FLAC_BLOCK);
    let bytes = silent_flac(rate as u32, blocks * FLAC_BLOCK, blocks);
    assert!(bytes.len() < 260_000, "{} bytes", bytes.len());

    let groups = ["rhythm", "tonal", "loudness", "spectral", "timbre"];
    let out = analyze(Box::new(Cursor::new(bytes)), Some("flac"), &groups).unwrap();
    let seconds = (blocks * FLAC_BLOCK) as f64 / rate as f64;
    assert_eq!(out.decoded_duration_s, seconds);
    assert_eq!(out.decode_errors, 0);
    // Silence has no tempo, no loudness and no onsets.
    assert_eq!(out.get("bpm"), Some(Value::Null));
    assert_eq!(out.get("loudness_lufs"), Some(Value::Null));
    assert_eq!(out.get("onset_rate"), Some(Value::Float64(0.0)));
    // Holding the decoded hour would take 318 MB (f32 at 22.05 kHz).
    let peak = peak_rss_mb();
    assert!(peak < 150.0, "peak resident memory {peak:.0} MB");
}
