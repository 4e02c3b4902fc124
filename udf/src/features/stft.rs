//! The one short-time Fourier transform and the filterbanks every feature group shares.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::lanes;

/// The size and hop of an STFT, in samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StftShape {
    pub n_fft: usize,
    pub hop: usize,
}

/// One analysis frame handed to a group.
pub struct Frame<'a> {
    /// Magnitudes of bins `0..=n_fft/2`.
    pub magnitude: &'a [f32],
    /// Their squares (power spectrum).
    pub power: &'a [f32],
    /// The frame's samples before windowing (for time-domain features).
    pub samples: &'a [f32],
}

/// Streaming STFT with a periodic Hann window. Frames are centred like librosa's: frame `i`
/// is centred on sample `i * hop` (the signal is padded with `n_fft / 2` zeros at both ends).
pub struct Stft {
    shape: StftShape,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    pending: Vec<f32>,
    windowed: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    magnitude: Vec<f32>,
    power: Vec<f32>,
}

impl Stft {
    pub fn new(shape: StftShape) -> Self {
        let StftShape { n_fft, hop } = shape;
        assert!(
            hop > 0 && hop <= n_fft && n_fft.is_multiple_of(2),
            "bad STFT shape"
        );
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
        let window = (0..n_fft)
            .map(|i| {
                let x = std::f32::consts::TAU * i as f32 / n_fft as f32;
                0.5 - 0.5 * x.cos()
            })
            .collect();
        let mut pending = Vec::with_capacity(2 * n_fft);
        pending.resize(n_fft / 2, 0.0);
        Self {
            shape,
            window,
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            windowed: vec![0.0; n_fft],
            magnitude: vec![0.0; n_fft / 2 + 1],
            power: vec![0.0; n_fft / 2 + 1],
            fft,
            pending,
        }
    }

    pub fn shape(&self) -> StftShape {
        self.shape
    }

    pub fn push(&mut self, mut samples: &[f32], on_frame: &mut dyn FnMut(&Frame<'_>)) {
        while !samples.is_empty() {
            let take = (self.shape.n_fft - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() == self.shape.n_fft {
                self.emit(on_frame);
                self.pending.drain(..self.shape.hop);
            }
        }
    }

    /// Pads the end with zeros so the last samples are centred in a frame.
    pub fn finish(&mut self, on_frame: &mut dyn FnMut(&Frame<'_>)) {
        let mut remaining_centres = self.pending.len().saturating_sub(self.shape.n_fft / 2);
        // Frames still to come are those whose centre lies within the real signal.
        while remaining_centres > 0 {
            self.pending.resize(self.shape.n_fft, 0.0);
            self.emit(on_frame);
            self.pending.drain(..self.shape.hop);
            remaining_centres = remaining_centres.saturating_sub(self.shape.hop);
        }
    }

    fn emit(&mut self, on_frame: &mut dyn FnMut(&Frame<'_>)) {
        for ((w, s), win) in self
            .windowed
            .iter_mut()
            .zip(&self.pending)
            .zip(&self.window)
        {
            *w = s * win;
        }
        self.fft
            .process_with_scratch(&mut self.windowed, &mut self.spectrum, &mut self.scratch)
            .expect("FFT buffers are sized by the planner");
        for ((m, p), c) in self
            .magnitude
            .iter_mut()
            .zip(&mut self.power)
            .zip(&self.spectrum)
        {
            *p = c.re * c.re + c.im * c.im;
            *m = p.sqrt();
        }
        on_frame(&Frame {
            magnitude: &self.magnitude,
            power: &self.power,
            samples: &self.pending[..self.shape.n_fft],
        });
    }
}

/// Frequency of FFT bin `k`.
pub fn bin_hz(k: usize, sample_rate: u32, n_fft: usize) -> f32 {
    k as f32 * sample_rate as f32 / n_fft as f32
}

/// Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's default.
pub fn hz_to_mel(hz: f32) -> f32 {
    const F_SP: f32 = 200.0 / 3.0;
    const MIN_LOG_HZ: f32 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f32.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

pub fn mel_to_hz(mel: f32) -> f32 {
    const F_SP: f32 = 200.0 / 3.0;
    const MIN_LOG_HZ: f32 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f32.ln() / 27.0;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
    } else {
        F_SP * mel
    }
}

/// A sparse triangular filter over FFT bins.
pub struct Filter {
    pub start: usize,
    pub weights: Vec<f32>,
}

impl Filter {
    pub fn apply(&self, spectrum: &[f32]) -> f32 {
        lanes::fold2(&self.weights, &spectrum[self.start..], |w, s| w * s)
    }
}

/// Triangular mel filters with Slaney area normalisation (librosa's `mel` defaults).
pub fn mel_filterbank(
    sample_rate: u32,
    n_fft: usize,
    n_mels: usize,
    fmin: f32,
    fmax: f32,
) -> Vec<Filter> {
    let (lo, hi) = (hz_to_mel(fmin), hz_to_mel(fmax));
    let edges: Vec<f32> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f32 / (n_mels + 1) as f32))
        .collect();
    let n_bins = n_fft / 2 + 1;
    (0..n_mels)
        .map(|m| {
            let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
            let norm = 2.0 / (right - left);
            let mut start = None;
            let mut weights = Vec::new();
            for k in 0..n_bins {
                let f = bin_hz(k, sample_rate, n_fft);
                let w = ((f - left) / (centre - left))
                    .min((right - f) / (right - centre))
                    .max(0.0);
                if w > 0.0 {
                    start.get_or_insert(k);
                    weights.push(w * norm);
                } else if start.is_some() {
                    break;
                }
            }
            Filter {
                start: start.unwrap_or(0),
                weights,
            }
        })
        .collect()
}

/// Pitch in semitones above C (continuous, any octave) of a frequency, tuned to A4 = 440 Hz.
pub fn semitones_above_c(hz: f32) -> f32 {
    // A4 is MIDI 69; MIDI 60 is C4, so MIDI numbers modulo 12 count from C.
    69.0 + 12.0 * (hz / 440.0).log2()
}

/// Maps FFT bins in `fmin..fmax` onto the 12 pitch classes (C = 0): each bin splits its energy
/// between the two nearest semitones in proportion to its distance from them.
pub struct ChromaMap {
    /// `(bin, lower pitch class, weight of the lower class)`.
    bins: Vec<(usize, usize, f32)>,
}

impl ChromaMap {
    pub fn new(sample_rate: u32, n_fft: usize, fmin: f32, fmax: f32) -> Self {
        let bins = (1..=n_fft / 2)
            .filter_map(|k| {
                let f = bin_hz(k, sample_rate, n_fft);
                if f < fmin || f > fmax {
                    return None;
                }
                let p = semitones_above_c(f);
                let lower = p.floor();
                Some((k, (lower as usize) % 12, 1.0 - (p - lower)))
            })
            .collect();
        Self { bins }
    }

    /// Adds `weight(bin value)` of every bin to `chroma`.
    pub fn accumulate(
        &self,
        spectrum: &[f32],
        chroma: &mut [f32; 12],
        weight: impl Fn(f32) -> f32,
    ) {
        for &(k, pc, w) in &self.bins {
            let e = weight(spectrum[k]);
            chroma[pc] += w * e;
            chroma[(pc + 1) % 12] += (1.0 - w) * e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_peaks_in_its_bin_and_frames_are_centred() {
        let (sr, n_fft, hop) = (8000u32, 256, 64);
        let signal: Vec<f32> = (0..1000)
            .map(|n| (std::f32::consts::TAU * 1000.0 * n as f32 / sr as f32).sin())
            .collect();
        let mut stft = Stft::new(StftShape { n_fft, hop });
        let mut peaks = Vec::new();
        let mut on_frame = |f: &Frame<'_>| {
            let (k, _) = f
                .magnitude
                .iter()
                .enumerate()
                .fold((0, 0.0f32), |b, (k, &m)| if m > b.1 { (k, m) } else { b });
            peaks.push(k);
        };
        for part in signal.chunks(100) {
            stft.push(part, &mut on_frame);
        }
        stft.finish(&mut on_frame);
        // Centred frames: one per hop over the signal, rounded up.
        assert_eq!(peaks.len(), 1000usize.div_ceil(hop));
        assert!(
            peaks[2..peaks.len() - 2].iter().all(|&k| k == 32),
            "{peaks:?}"
        );
    }

    #[test]
    fn mel_scale_round_trips() {
        for hz in [50.0f32, 700.0, 1000.0, 4000.0, 11_025.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 0.01 * hz);
        }
    }
}
