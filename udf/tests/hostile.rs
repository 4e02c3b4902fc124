//! Crafted headers: absurd sample rates, channel counts, bit depths and lengths are errors that
//! say what is wrong, from the header probe, the analysis and the plain decode alike, and
//! nothing is allocated from them first.

use std::io::Cursor;
use std::path::PathBuf;

use audiolake_testkit_audio::crafted::{pcm_wav, silent_flac, wav, FLAC_BLOCK};
use audiolake_udf::features::{analyze, Value};
use audiolake_udf::probe::{probe, AudioHeader, ProbeError};
use audiolake_udf::samples::decode_mono;

const DSP_GROUPS: &[&str] = &["rhythm", "tonal", "loudness", "spectral", "timbre"];

fn probe_bytes(bytes: &[u8], ext: &str) -> Result<AudioHeader, ProbeError> {
    probe(Box::new(Cursor::new(bytes.to_vec())), Some(ext))
}

fn analysis_error(bytes: &[u8], ext: &str) -> String {
    match analyze(Box::new(Cursor::new(bytes.to_vec())), Some(ext), DSP_GROUPS) {
        Ok(out) => panic!("{ext} analysed: {} s", out.decoded_duration_s),
        Err(e) => e.to_string(),
    }
}

fn decode_error(bytes: &[u8], ext: &str) -> String {
    match decode_mono(
        Box::new(Cursor::new(bytes.to_vec())),
        Some(ext),
        Some(16_000),
        600.0,
    ) {
        Ok((samples, _)) => panic!("{ext} decoded to {} samples", samples.len()),
        Err(e) => e.to_string(),
    }
}

/// The same message from the probe, the analysis and the decode.
fn assert_refused(bytes: &[u8], ext: &str, message: &str) {
    let probed = probe_bytes(bytes, ext).map(|h| h.duration_s);
    assert_eq!(probed.map_err(|e| e.to_string()), Err(message.to_string()));
    assert_eq!(analysis_error(bytes, ext), message);
    assert_eq!(decode_error(bytes, ext), message);
}

#[test]
fn absurd_sample_rates_are_refused_with_the_value_and_the_range() {
    for rate in [4_294_967_291u32, 999_983, 1, 999, 768_001] {
        assert_refused(
            &pcm_wav(rate, 1, 1000),
            "wav",
            &format!("unsupported sample rate {rate} Hz (audiolake reads 1000 to 768000 Hz)"),
        );
    }
    // The edges of the range are read.
    for rate in [1000, 768_000] {
        let header = probe_bytes(&pcm_wav(rate, 1, 4000), "wav").unwrap();
        assert_eq!(header.sample_rate, Some(rate));
    }
}

#[test]
fn a_flac_streaminfo_with_an_absurd_rate_is_refused() {
    assert_refused(
        &silent_flac(1, 4 * FLAC_BLOCK, 4),
        "flac",
        "unsupported sample rate 1 Hz (audiolake reads 1000 to 768000 Hz)",
    );
    // Above FLAC's own limit (655,350 Hz), symphonia refuses the STREAMINFO itself.
    let bytes = silent_flac(999_983, 4 * FLAC_BLOCK, 4);
    let why = "flac: stream sample rate out of bounds";
    assert_eq!(
        probe_bytes(&bytes, "flac"),
        Err(ProbeError::InvalidHeader(why.into()))
    );
    assert_eq!(
        analysis_error(&bytes, "flac"),
        format!(
            "unrecognised or unsupported container (file extension flac): malformed stream: {why}"
        )
    );
}

#[test]
fn absurd_channel_counts_and_bit_depths_are_header_errors() {
    // symphonia's RIFF reader refuses these before audiolake sees them; the row says so.
    let channels = pcm_wav(44_100, 1024, 4096);
    assert_eq!(
        probe_bytes(&channels, "wav"),
        Err(ProbeError::InvalidHeader(
            "riff: invalid channel count".into()
        ))
    );
    let open_failed = "unrecognised or unsupported container (file extension wav): \
                       malformed stream: riff: invalid channel count";
    assert_eq!(analysis_error(&channels, "wav"), open_failed);
    assert_eq!(decode_error(&channels, "wav"), open_failed);
    for bits in [0u16, 7, 64] {
        let bytes = wav(1, 1, 44_100, bits, 1000, 1000);
        let why = "wav: bits per sample for fmt_pcm must be 8, 16, 24 or 32 bits";
        assert_eq!(
            probe_bytes(&bytes, "wav"),
            Err(ProbeError::InvalidHeader(why.into())),
            "{bits} bits"
        );
        assert_eq!(
            analysis_error(&bytes, "wav"),
            format!(
                "unrecognised or unsupported container (file extension wav): \
                 malformed stream: {why}"
            )
        );
    }
}

#[test]
fn a_header_claiming_far_more_audio_than_present_reads_what_is_there() {
    // 4 GB of 16-bit mono declared, 8000 bytes (a quarter second at 16 kHz) present.
    let bytes = wav(1, 1, 16_000, 16, u32::MAX - 64, 8000);
    let err = probe_bytes(&bytes, "wav").unwrap_err().to_string();
    assert!(
        err.starts_with("invalid audio header: file is truncated or damaged: header says "),
        "{err}"
    );
    let out = analyze(Box::new(Cursor::new(bytes)), Some("wav"), DSP_GROUPS).unwrap();
    assert_eq!(out.decoded_duration_s, 0.25);
}

#[test]
fn a_flac_declaring_a_hundred_hours_with_a_second_present_analyzes_that_second() {
    let declared = 100 * 3600 * 16_000;
    let bytes = silent_flac(16_000, declared, 4);
    assert!(matches!(
        probe_bytes(&bytes, "flac"),
        Err(ProbeError::InvalidHeader(e)) if e.starts_with("file is truncated or damaged: header says 360000.000 s")
    ));
    let out = analyze(Box::new(Cursor::new(bytes)), Some("flac"), DSP_GROUPS).unwrap();
    assert_eq!(out.decoded_duration_s, 4.0 * 4096.0 / 16_000.0);
    assert_eq!(out.get("loudness_lufs"), Some(Value::Null));
}

/// `tests/data/cbr.mp3` (2.0 s, with a Xing/LAME header) cut to its first half: the duration
/// must be what is present, not what the header claims.
#[test]
fn a_truncated_mp3_with_a_xing_header_reads_as_the_length_present() {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/cbr.mp3"
    ));
    let full = std::fs::read(&path).unwrap();
    let half = full[..full.len() / 2].to_vec();
    match probe_bytes(&half, "mp3") {
        Ok(header) => {
            let d = header.duration_s.unwrap();
            assert!((0.9..1.1).contains(&d), "header of a cut MP3 reads {d} s");
        }
        Err(e) => panic!("{e}"),
    }
    let out = analyze(Box::new(Cursor::new(half)), Some("mp3"), DSP_GROUPS).unwrap();
    assert!(out.decoded_duration_s < 1.1, "{}", out.decoded_duration_s);
}
