//! Parity with pyloudnorm and librosa on small committed fixtures, and BS.1770's reference
//! reading of a 997 Hz sine through the whole decode-and-analyse path.
//!
//! `tests/data/parity/reference.json` is written by `make_reference.py` beside it; each
//! tolerance below says why it is what it is.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use audiolake_udf::features::{analyze, analyze_path, AnalysisOutput};
use serde_json::Value as Json;

/// The music fixture at our analysis rate (a pure tone is the other).
const MUSIC: &str = "bach_bwv402_excerpt.flac";

fn data_dir() -> PathBuf {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data").into()
}

fn reference() -> Json {
    let path = data_dir().join("parity/reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference.json is JSON")
}

/// Every fixture in reference.json with its reference values.
fn fixtures() -> Vec<(String, Json)> {
    let reference = reference();
    let files = reference["files"].as_object().expect("a files object");
    files.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn fixture_path(name: &str) -> PathBuf {
    let in_parity = data_dir().join("parity").join(name);
    if in_parity.exists() {
        in_parity
    } else {
        data_dir().join(name)
    }
}

fn analyze_fixture(path: &Path) -> AnalysisOutput {
    analyze_path(path, &["loudness", "spectral", "timbre"])
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn number(v: &Json) -> f64 {
    v.as_f64().expect("a number")
}

fn numbers(v: &Json) -> Vec<f64> {
    v.as_array().expect("an array").iter().map(number).collect()
}

fn ours(out: &AnalysisOutput, field: &str) -> f64 {
    out.get(field)
        .and_then(|v| v.as_f64())
        .unwrap_or_else(|| panic!("no {field}"))
}

fn ours_list(out: &AnalysisOutput, field: &str) -> Vec<f64> {
    out.get(field)
        .and_then(|v| {
            v.as_f32_list()
                .map(|l| l.iter().map(|&x| f64::from(x)).collect())
        })
        .unwrap_or_else(|| panic!("no {field}"))
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

#[test]
fn integrated_loudness_matches_pyloudnorm() {
    for (name, r) in fixtures() {
        let out = analyze_fixture(&fixture_path(&name));
        let (lufs, expected) = (ours(&out, "loudness_lufs"), number(&r["loudness_lufs"]));
        // At 44.1/48 kHz we read within 0.02 LU of pyloudnorm; at 22.05 kHz 0.09 LU above it
        // (the K-filter of the bs1770 crate, designed in f32, parts from pyloudnorm's there).
        let mut tolerance = 0.05;
        if number(&r["sample_rate"]) < 44_100.0 {
            tolerance = 0.15;
        }
        assert!(
            (lufs - expected).abs() <= tolerance,
            "{name}: {lufs:.3} LUFS, pyloudnorm {expected:.3} (tolerance {tolerance})"
        );
    }
}

/// The fixtures at 22050 Hz, our analysis rate, where librosa features were computed.
fn feature_fixtures() -> Vec<(String, Json, AnalysisOutput)> {
    let list: Vec<_> = fixtures()
        .into_iter()
        .filter(|(_, r)| r.get("mfcc").is_some())
        .map(|(name, r)| {
            let out = analyze_fixture(&fixture_path(&name));
            (name, r, out)
        })
        .collect();
    assert!(
        list.len() >= 2,
        "reference.json has too few feature fixtures"
    );
    list
}

#[test]
fn mfcc_matches_librosa() {
    for (name, r, out) in feature_fixtures() {
        let mfcc = ours_list(&out, "mfcc");
        // Same recipe computed in f32 by both; what is left is rounding over 128 bands.
        let tolerance = 0.05;
        let exact = numbers(&r["mfcc_no_top_db"]);
        let diff = max_abs_diff(&mfcc, &exact);
        assert!(
            diff <= tolerance,
            "{name}: ours {mfcc:.3?}\nlibrosa (top_db=None) {exact:.3?}"
        );
        // librosa's default also floors every mel band at 80 dB below the file's loudest band.
        // Music stays within that range, so the floor changes nothing that matters; a pure
        // tone's empty bands lie far below it (see the tone check below).
        if name == MUSIC {
            let default = numbers(&r["mfcc"]);
            let diff = max_abs_diff(&mfcc, &default);
            assert!(
                diff <= tolerance,
                "{name}: ours {mfcc:.3?}\nlibrosa {default:.3?}"
            );
        }
    }
}

#[test]
fn mfcc_of_a_pure_tone_differs_from_librosa_only_by_its_80_db_floor() {
    let r = reference();
    let tone = &r["files"]["tone.wav"];
    let out = analyze_fixture(&data_dir().join("tone.wav"));
    let c0 = f64::from(out.get("mfcc").unwrap().as_f32_list().unwrap()[0]);
    // Without the floor the empty bands sit near -100 dB and pull c0 down by some 230 dB.
    assert!(
        (c0 - number(&tone["mfcc_no_top_db"][0])).abs() < 0.05,
        "{c0}"
    );
    assert!(number(&tone["mfcc"][0]) - c0 > 200.0, "{c0}");
}

#[test]
fn spectral_centroid_and_zero_crossing_rate_match_librosa() {
    for (name, r, out) in feature_fixtures() {
        let centroid = ours(&out, "spectral_centroid_hz");
        let expected = number(&r["spectral_centroid_hz"]);
        // Same STFT and definition; f32 sums differ in the last digits only.
        assert!(
            (centroid / expected - 1.0).abs() < 1e-3,
            "{name}: centroid {centroid} Hz, librosa {expected} Hz"
        );
        let zcr = ours(&out, "zero_crossing_rate");
        let expected = number(&r["zero_crossing_rate"]);
        // librosa pads the ends by repeating the edge samples where we pad zeros, which can
        // add one crossing to the first or last frame only.
        assert!(
            (zcr - expected).abs() < 1e-3,
            "{name}: zero-crossing rate {zcr}, librosa {expected}"
        );
    }
}

#[test]
fn chroma_follows_librosa_chroma_stft() {
    for (name, r, out) in feature_fixtures() {
        let chroma = ours_list(&out, "chroma");
        // librosa tuned to A4 = 440 Hz like ours; its default estimates the tuning first.
        let expected = numbers(&r["chroma_tuning_0"]);
        assert_eq!(
            argmax(&chroma),
            argmax(&expected),
            "{name}: ours {chroma:.3?}\nlibrosa {expected:.3?}"
        );
        if name == MUSIC {
            // Our filterbank splits each FFT bin between its two nearest semitones; librosa's
            // spreads it over a Gaussian a semitone or so wide, so the weak pitch classes of
            // music read up to 0.06 lower here.
            let diff = max_abs_diff(&chroma, &expected);
            assert!(
                diff <= 0.07,
                "{name}: ours {chroma:.3?}\nlibrosa {expected:.3?}"
            );
        }
    }
}

/// A 10 s, full-scale 997 Hz sine as a 32-bit float WAV with `channels` identical channels.
fn sine_wav(rate: u32, channels: u16) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut bytes = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut bytes, spec).expect("a WAV writer");
    for n in 0..rate * 10 {
        let s = (std::f64::consts::TAU * 997.0 * f64::from(n) / f64::from(rate)).sin() as f32;
        for _ in 0..channels {
            writer.write_sample(s).expect("writing to memory");
        }
    }
    writer.finalize().expect("finishing the WAV");
    bytes.into_inner()
}

/// BS.1770: a full-scale 997 Hz sine in one channel reads -3.01 LUFS. Channel powers add, so
/// the same sine in both channels of a stereo file reads 3.01 LU more, 0.00 LUFS.
#[test]
fn full_scale_997_hz_sine_reads_bs1770_reference_values() {
    for rate in [44_100, 48_000] {
        for (channels, expected) in [(1u16, -3.01), (2, 0.0)] {
            let wav = sine_wav(rate, channels);
            let out = analyze(Box::new(Cursor::new(wav)), Some("wav"), &["loudness"])
                .expect("the WAV decodes");
            assert_eq!(out.channels, usize::from(channels));
            let lufs = ours(&out, "loudness_lufs");
            // The standard's own tolerance for its test signals is 0.1 LU.
            assert!(
                (lufs - expected).abs() < 0.1,
                "{rate} Hz, {channels} channel(s): {lufs} LUFS, expected {expected}"
            );
        }
    }
}
