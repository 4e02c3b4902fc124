//! Spectral shape: centroid, 85 % roll-off, flatness, bandwidth and zero-crossing rate, each the
//! mean over the file's audible frames (librosa's definitions, 2048-point frames, hop 512).

use arrow_schema::Field;

use super::stft::{bin_hz, Frame, StftShape};
use super::{f64_field, Extractor, Input, Value};
use crate::lanes;

pub(super) const RATE: u32 = 22_050;
const N_FFT: usize = 2048;
/// Timbre uses the same frames, so the two share one transform.
pub(super) const SHAPE: StftShape = StftShape {
    n_fft: N_FFT,
    hop: 512,
};
const ROLLOFF: f32 = 0.85;
/// Frames quieter than this (mean magnitude) are silence and left out of the means, so that
/// leading or trailing silence does not drag every statistic towards zero.
pub(super) const SILENT_FRAME: f32 = 1e-6;

#[derive(Default)]
struct Sums {
    frames: u64,
    centroid: f64,
    rolloff: f64,
    flatness: f64,
    bandwidth: f64,
    zcr: f64,
}

pub struct Spectral {
    freqs: Vec<f32>,
    sums: Sums,
}

impl Spectral {
    pub fn new() -> Self {
        Self {
            freqs: (0..=N_FFT / 2).map(|k| bin_hz(k, RATE, N_FFT)).collect(),
            sums: Sums::default(),
        }
    }
}

fn accumulate(sums: &mut Sums, freqs: &[f32], frame: &Frame<'_>) {
    let mag = frame.magnitude;
    let total = lanes::sum(mag);
    if total / (mag.len() as f32) < SILENT_FRAME {
        return;
    }
    let centroid = lanes::fold2(mag, freqs, |m, f| m * f) / total;
    let spread = lanes::fold2(mag, freqs, |m, f| m * (f - centroid) * (f - centroid)) / total;
    let rolloff_bin = rolloff_bin(mag, ROLLOFF * total);
    // Flatness on power with librosa's floor. The geometric mean takes one log per 8 bins (a
    // product of 8 floored powers stays within f64's range).
    let mut log_sum = 0.0f64;
    let mut power_sum = 0.0f64;
    for group in frame.power.chunks(8) {
        let mut product = 1.0f64;
        for &p in group {
            let power = f64::from(p).max(1e-10);
            product *= power;
            power_sum += power;
        }
        log_sum += product.ln();
    }
    let n = mag.len() as f64;
    let flatness = (log_sum / n).exp() / (power_sum / n);
    let s = frame.samples;
    let crossings = s
        .windows(2)
        .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
        .count();

    sums.frames += 1;
    sums.centroid += f64::from(centroid);
    sums.bandwidth += f64::from(spread.sqrt());
    sums.rolloff += f64::from(freqs[rolloff_bin]);
    sums.flatness += flatness;
    sums.zcr += crossings as f64 / s.len() as f64;
}

/// The first bin at which the cumulative magnitude reaches `threshold` (the last bin if none
/// does): whole chunks are summed in lanes, and only the chunk that crosses is walked.
fn rolloff_bin(mag: &[f32], threshold: f32) -> usize {
    const CHUNK: usize = 64;
    let mut cumulative = 0.0;
    for (c, chunk) in mag.chunks(CHUNK).enumerate() {
        let next = cumulative + lanes::sum(chunk);
        if next >= threshold {
            for (k, m) in chunk.iter().enumerate() {
                cumulative += m;
                if cumulative >= threshold {
                    return c * CHUNK + k;
                }
            }
            return (c * CHUNK + chunk.len()).min(mag.len()) - 1;
        }
        cumulative = next;
    }
    mag.len().saturating_sub(1)
}

impl Extractor for Spectral {
    fn name(&self) -> &'static str {
        "spectral"
    }

    /// 3: sums in lanes (values differ from v2's in the last bits).
    fn version(&self) -> u32 {
        3
    }

    fn input(&self) -> Input {
        Input::Frames {
            rate: RATE,
            shape: SHAPE,
        }
    }

    fn fields(&self) -> Vec<Field> {
        vec![
            f64_field("spectral_centroid_hz"),
            f64_field("spectral_rolloff_hz"),
            f64_field("spectral_flatness"),
            f64_field("spectral_bandwidth_hz"),
            f64_field("zero_crossing_rate"),
        ]
    }

    fn frame(&mut self, frame: &Frame<'_>) {
        accumulate(&mut self.sums, &self.freqs, frame);
    }

    fn finish(self: Box<Self>) -> Vec<Value> {
        let sums = &self.sums;
        if sums.frames == 0 {
            return vec![Value::Null; 5];
        }
        let n = sums.frames as f64;
        [
            sums.centroid,
            sums.rolloff,
            sums.flatness,
            sums.bandwidth,
            sums.zcr,
        ]
        .into_iter()
        .map(|s| Value::finite(s / n))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_frames;
    use super::*;

    fn run(signal: &[f32]) -> Vec<f64> {
        run_frames(Box::new(Spectral::new()), signal, 1000)
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    }

    #[test]
    fn pure_tone_is_narrow_and_tonal() {
        let f0 = 1000.0;
        let tone: Vec<f32> = (0..RATE * 2)
            .map(|n| (std::f32::consts::TAU * f0 * n as f32 / RATE as f32).sin())
            .collect();
        let v = run(&tone);
        assert!((v[0] - 1000.0).abs() < 30.0, "centroid {}", v[0]);
        assert!((v[1] - 1000.0).abs() < 30.0, "rolloff {}", v[1]);
        assert!(v[2] < 0.01, "flatness {}", v[2]);
        // Window side lobes keep a pure tone's magnitude-weighted spread above zero.
        assert!(v[3] < 400.0, "bandwidth {}", v[3]);
        // A sine crosses zero twice per period.
        assert!(
            (v[4] - 2.0 * 1000.0 / RATE as f64).abs() < 0.005,
            "zcr {}",
            v[4]
        );
    }

    #[test]
    fn white_noise_is_flat_and_broad() {
        // A xorshift generator keeps the test deterministic without a dependency.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<f32> = (0..RATE * 2)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        let v = run(&noise);
        let nyquist = RATE as f64 / 2.0;
        assert!((v[0] / nyquist - 0.5).abs() < 0.05, "centroid {}", v[0]);
        assert!((v[1] / nyquist - 0.85).abs() < 0.05, "rolloff {}", v[1]);
        assert!(v[2] > 0.4, "flatness {}", v[2]);
        assert!(v[3] > 2500.0, "bandwidth {}", v[3]);
        assert!(v[4] > 0.4, "zcr {}", v[4]);
    }
}
