//! musicnn's input: a log-compressed mel spectrogram, computed as musicnn (librosa) does.

use std::sync::Arc;

use half::f16;
use realfft::{RealFftPlanner, RealToComplex};

use crate::{Error, Result};

/// Number of mel bands of a log-mel frame.
pub const N_MELS: usize = 96;

/// One mel filter: its non-zero weights, starting at FFT bin `start`.
struct Filter {
    start: usize,
    weights: Vec<f32>,
}

/// Centred STFT (periodic Hann, zero padding), mel filter bank and musicnn's log compression.
pub(crate) struct LogMel {
    n_fft: usize,
    hop: usize,
    window: Vec<f32>,
    filters: Vec<Filter>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl LogMel {
    /// `mel_basis` is row-major [N_MELS, n_fft / 2 + 1]; `window` has n_fft values.
    pub(crate) fn new(window: Vec<f32>, mel_basis: &[f32], hop: usize) -> Result<Self> {
        let n_fft = window.len();
        let n_bins = n_fft / 2 + 1;
        if n_fft < 2 || hop == 0 || mel_basis.len() != N_MELS * n_bins {
            return Err(Error::Metadata(format!(
                "mel basis has {} values, window {n_fft}, hop {hop}: expected {N_MELS} x {n_bins} \
                 values and a non-zero hop",
                mel_basis.len()
            )));
        }
        let filters = mel_basis
            .chunks(n_bins)
            .map(|row| {
                let start = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = row.iter().rposition(|&w| w != 0.0).map_or(start, |e| e + 1);
                Filter {
                    start,
                    weights: row[start..end].to_vec(),
                }
            })
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n_fft);
        Ok(Self {
            n_fft,
            hop,
            window,
            filters,
            fft,
        })
    }

    pub(crate) fn n_bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Log-mel of one power spectrum (`n_fft / 2 + 1` bins of |X|²).
    pub(crate) fn frame(&self, power: &[f32]) -> Result<[f32; N_MELS]> {
        if power.len() != self.n_bins() {
            return Err(Error::Input(format!(
                "power spectrum has {} bins, expected {} (n_fft {})",
                power.len(),
                self.n_bins(),
                self.n_fft
            )));
        }
        let mut out = [0f32; N_MELS];
        for (o, f) in out.iter_mut().zip(&self.filters) {
            let bins = &power[f.start..f.start + f.weights.len()];
            let mel: f64 = f
                .weights
                .iter()
                .zip(bins)
                .map(|(&w, &p)| f64::from(w) * f64::from(p))
                .sum();
            *o = compress(mel as f32);
        }
        Ok(out)
    }

    /// Log-mel frames of mono samples at the model's rate: 1 + len / hop frames, frame `t`
    /// centred on sample `t * hop` (librosa `center=True` with zero padding).
    pub(crate) fn frames(&self, samples: &[f32]) -> Vec<[f32; N_MELS]> {
        let half = self.n_fft / 2;
        let n_frames = 1 + samples.len() / self.hop;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; self.n_bins()];
        (0..n_frames)
            .map(|t| {
                let first = (t * self.hop) as isize - half as isize;
                for (i, (x, &w)) in input.iter_mut().zip(&self.window).enumerate() {
                    let s = usize::try_from(first + i as isize)
                        .ok()
                        .and_then(|j| samples.get(j))
                        .copied()
                        .unwrap_or(0.0);
                    *x = f64::from(s) * f64::from(w);
                }
                self.fft
                    .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                    .expect("buffers come from this plan");
                for (p, c) in power.iter_mut().zip(&spectrum) {
                    // librosa keeps the STFT as complex64 and squares its float32 magnitude.
                    let mag = (c.re as f32).hypot(c.im as f32);
                    *p = mag * mag;
                }
                self.frame(&power).expect("power has n_bins values")
            })
            .collect()
    }
}

/// musicnn's compression: the mel energy is stored as float16 (as in training), then
/// log10(10000 x + 1) in float32. Energies beyond float16's range saturate instead of
/// becoming infinite.
fn compress(mel: f32) -> f32 {
    let x = f16::from_f32(mel.min(f16::MAX.to_f32())).to_f32();
    (10000.0 * x + 1.0).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_rounds_through_float16() {
        // 0.1 is not a float16 value: its nearest is 0.0999755859375.
        let expected = (10000.0f32 * 0.099_975_586 + 1.0).log10();
        assert_eq!(compress(0.1), expected);
        assert_eq!(compress(0.0), 0.0);
        assert!(compress(1e9).is_finite());
    }
}
