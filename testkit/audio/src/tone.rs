//! Tones written on the spot: plain 16-bit PCM WAV files that every reader decodes.

use std::path::Path;

/// A 16-bit stereo WAV of `seconds` of a quiet tone of `hz`.
pub fn write_wav(path: &Path, seconds: u32, hz: f64) {
    let rate = 44_100u32;
    let frames = rate * seconds;
    let mut out = Vec::with_capacity(44 + frames as usize * 4);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + frames * 4).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    {
        let v = 16u32;
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [1u16, 2] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 4).to_le_bytes());
    for v in [4u16, 16] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(frames * 4).to_le_bytes());
    for n in 0..frames {
        let s = ((n as f64 * hz * std::f64::consts::TAU / rate as f64).sin() * 3000.0) as i16;
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}
