//! Rhythm: tempo (`bpm`, `bpm_confidence`) and `onset_rate`.
//!
//! Onset strength is the half-wave rectified flux of log-compressed mel bands, compared with
//! the band-wise maximum of the previous frame (SuperFlux) so vibrato and slow glides do not
//! read as onsets. Periodicity is the autocorrelation of that envelope, computed window by
//! window against the envelope's recent past and normalised per window, so loud passages do
//! not outvote quiet ones. The tempo is the autocorrelation peak under a log-normal prior
//! centred on 120 BPM, moved up an octave when the faster level pulses more strongly, then
//! refined with a comb over lag multiples for sub-frame precision. Memory is bounded by the
//! window plus the longest lag.

use arrow_schema::Field;

use super::stft::{mel_filterbank, Filter, Frame, StftShape};
use super::{f64_field, Extractor, Input, Value};

const RATE: u32 = 22_050;
const N_FFT: usize = 1024;
const HOP: usize = 256;
const N_BANDS: usize = 40;
/// Log compression strength: `ln(1 + GAMMA * magnitude)`, magnitude of a full-scale sine = 1.
const GAMMA: f32 = 1000.0;
const MIN_BPM: f64 = 40.0;
const MAX_BPM: f64 = 250.0;
/// Centre and width (octaves) of the tempo prior.
const PRIOR_BPM: f64 = 120.0;
const PRIOR_OCTAVES: f64 = 1.0;
/// Relative pulse strength the level twice as fast needs to be chosen instead.
const OCTAVE_UP: f64 = 1.05;
/// Comb harmonics used to refine the tempo to sub-frame precision.
const REFINE_HARMONICS: usize = 8;
/// Longest lag kept, in beats of the slowest tempo.
const MAX_LAG_BEATS: f64 = 4.0;
/// Autocorrelation window, in seconds of envelope.
const WINDOW_S: f64 = 8.0;
/// Onset peak picking: frames each side a peak must dominate, and the minimum gap between
/// onsets.
const PEAK_RADIUS: usize = 3;
const MIN_ONSET_GAP_S: f64 = 0.05;

fn frame_rate() -> f64 {
    f64::from(RATE) / HOP as f64
}

fn lag_of(bpm: f64) -> f64 {
    60.0 * frame_rate() / bpm
}

pub struct Rhythm {
    onset: OnsetEnvelope,
    periodicity: Periodicity,
    peaks: PeakPicker,
}

impl Rhythm {
    pub fn new() -> Self {
        Self {
            onset: OnsetEnvelope::new(),
            periodicity: Periodicity::new(),
            peaks: PeakPicker::new(),
        }
    }
}

/// Spectral flux on log-compressed mel bands, one value per STFT frame.
struct OnsetEnvelope {
    bands: Vec<Filter>,
    previous: Vec<f32>,
    current: Vec<f32>,
    first: bool,
}

impl OnsetEnvelope {
    fn new() -> Self {
        Self {
            bands: mel_filterbank(RATE, N_FFT, N_BANDS, 30.0, 11_000.0),
            previous: vec![0.0; N_BANDS],
            current: vec![0.0; N_BANDS],
            first: true,
        }
    }

    fn next(&mut self, frame: &Frame) -> f32 {
        // Normalise so a full-scale sine has magnitude 1 whatever the FFT size.
        let scale = 2.0 / (N_FFT as f32 / 2.0);
        for (c, band) in self.current.iter_mut().zip(&self.bands) {
            let weight: f32 = band.weights.iter().sum();
            let m = band.apply(frame.magnitude) * scale / weight.max(f32::EPSILON);
            *c = (GAMMA * m).ln_1p();
        }
        let flux = if self.first {
            0.0
        } else {
            (0..N_BANDS)
                .map(|b| {
                    let lo = b.saturating_sub(1);
                    let hi = (b + 1).min(N_BANDS - 1);
                    let reference = self.previous[lo..=hi]
                        .iter()
                        .copied()
                        .fold(f32::MIN, f32::max);
                    (self.current[b] - reference).max(0.0)
                })
                .sum()
        };
        self.first = false;
        std::mem::swap(&mut self.previous, &mut self.current);
        flux
    }
}

/// Windowed autocorrelation of the onset envelope, summed over the file.
struct Periodicity {
    max_lag: usize,
    window: usize,
    /// The last `window + max_lag` envelope values (oldest first).
    history: Vec<f32>,
    /// Envelope values not yet correlated (the tail of `history`).
    fresh: usize,
    acf: Vec<f64>,
    windows: u32,
    total_frames: usize,
}

impl Periodicity {
    fn new() -> Self {
        let max_lag = (lag_of(MIN_BPM) * MAX_LAG_BEATS).ceil() as usize + 2;
        let window = (WINDOW_S * frame_rate()).round() as usize;
        Self {
            max_lag,
            window,
            history: Vec::with_capacity(window + max_lag),
            fresh: 0,
            acf: vec![0.0; max_lag + 1],
            windows: 0,
            total_frames: 0,
        }
    }

    fn push(&mut self, value: f32) {
        if self.history.len() == self.window + self.max_lag {
            self.history.remove(0);
        }
        self.history.push(value);
        self.fresh += 1;
        self.total_frames += 1;
        if self.fresh == self.window {
            self.correlate();
        }
    }

    /// Correlates the fresh values with everything before them, up to `max_lag`.
    fn correlate(&mut self) {
        let n = self.history.len();
        let start = n - self.fresh;
        self.fresh = 0;
        let mean = self.history.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let x: Vec<f64> = self.history.iter().map(|&v| f64::from(v) - mean).collect();
        let mut r = vec![0.0; self.max_lag + 1];
        for (lag, r) in r.iter_mut().enumerate() {
            let first = start.max(lag);
            *r = (first..n).map(|i| x[i] * x[i - lag]).sum();
        }
        if r[0] > 0.0 {
            let energy = r[0];
            for (acc, v) in self.acf.iter_mut().zip(&r) {
                *acc += v / energy;
            }
            self.windows += 1;
        }
    }

    fn finish(&mut self) {
        // A short tail adds little but noise; a short file has nothing else.
        if self.fresh > self.window / 4 || self.windows == 0 && self.fresh > 0 {
            self.correlate();
        }
    }

    /// Linear interpolation of the summed autocorrelation at a fractional lag.
    fn at(&self, lag: f64) -> Option<f64> {
        let i = lag.floor() as usize;
        if i + 1 > self.max_lag {
            return None;
        }
        let frac = lag - i as f64;
        Some(self.acf[i] * (1.0 - frac) + self.acf[i + 1] * frac)
    }

    fn comb(&self, bpm: f64, harmonics: usize) -> f64 {
        let lag = lag_of(bpm);
        (1..=harmonics).map_while(|k| self.at(lag * k as f64)).sum()
    }

    /// The strongest autocorrelation within 2 % of the lag of `bpm`.
    fn peak(&self, bpm: f64) -> f64 {
        let lag = lag_of(bpm);
        (-10..=10)
            .filter_map(|i| self.at(lag * (1.0 + f64::from(i) * 0.002)))
            .fold(f64::MIN, f64::max)
    }

    /// The tempo and how strongly periodic the envelope is at it (0..1).
    fn tempo(&self) -> Option<(f64, f64)> {
        if self.windows == 0 {
            return None;
        }
        let prior = |bpm: f64| {
            let octaves = (bpm / PRIOR_BPM).log2() / PRIOR_OCTAVES;
            (-0.5 * octaves * octaves).exp()
        };
        let mut best = (0.0, 0.0);
        let mut bpm = MIN_BPM;
        while bpm <= MAX_BPM {
            let score = self.at(lag_of(bpm)).unwrap_or(0.0) * prior(bpm);
            if score > best.1 {
                best = (bpm, score);
            }
            bpm *= 1.002;
        }
        if best.1 <= 0.0 {
            return None;
        }
        // The prior favours the slower of two equally strong levels; move to the faster one
        // when it pulses more strongly (an isochronous pulse is its own beat). Moving down as
        // well lost more files of the corpus than it won.
        let mut tempo = best.0;
        while tempo * 2.0 <= MAX_BPM && self.peak(tempo * 2.0) >= OCTAVE_UP * self.peak(tempo) {
            tempo *= 2.0;
        }
        // The same number of harmonics for every candidate, all within the kept lags.
        let harmonics = ((self.max_lag - 1) as f64 / lag_of(tempo * 0.98))
            .floor()
            .clamp(1.0, REFINE_HARMONICS as f64) as usize;
        let mut refined = (tempo, f64::MIN);
        let mut bpm = tempo * 0.98;
        while bpm <= tempo * 1.02 {
            let score = self.comb(bpm, harmonics);
            if score > refined.1 {
                refined = (bpm, score);
            }
            bpm += 0.01;
        }
        let strength = self.at(lag_of(refined.0)).unwrap_or(0.0) / f64::from(self.windows);
        Some((refined.0, strength.clamp(0.0, 1.0)))
    }
}

/// Counts onsets: local maxima of the envelope above an adaptive threshold.
struct PeakPicker {
    recent: Vec<f32>,
    since_last: usize,
    onsets: u64,
    sum: f64,
    count: u64,
}

impl PeakPicker {
    fn new() -> Self {
        Self {
            recent: Vec::with_capacity(4 * PEAK_RADIUS + 1),
            since_last: usize::MAX,
            onsets: 0,
            sum: 0.0,
            count: 0,
        }
    }

    fn push(&mut self, value: f32) {
        self.sum += f64::from(value);
        self.count += 1;
        let len = 4 * PEAK_RADIUS + 1;
        if self.recent.len() == len {
            self.recent.remove(0);
        }
        self.recent.push(value);
        self.since_last = self.since_last.saturating_add(1);
        if self.recent.len() < len {
            return;
        }
        // The candidate sits PEAK_RADIUS frames from the end; the threshold looks further back.
        let c = len - 1 - PEAK_RADIUS;
        let v = self.recent[c];
        let is_max = self.recent[c - PEAK_RADIUS..].iter().all(|&x| x <= v);
        let local_mean = self.recent.iter().map(|&x| f64::from(x)).sum::<f64>() / len as f64;
        let global_mean = self.sum / self.count as f64;
        let min_gap = (MIN_ONSET_GAP_S * frame_rate()).ceil() as usize;
        if is_max
            && f64::from(v) > 1.5 * local_mean + 0.5 * global_mean
            && self.since_last >= min_gap + PEAK_RADIUS
        {
            self.onsets += 1;
            self.since_last = PEAK_RADIUS;
        }
    }
}

impl Extractor for Rhythm {
    fn name(&self) -> &'static str {
        "rhythm"
    }

    fn version(&self) -> u32 {
        1
    }

    fn input(&self) -> Input {
        Input::Frames {
            rate: RATE,
            shape: StftShape {
                n_fft: N_FFT,
                hop: HOP,
            },
        }
    }

    fn fields(&self) -> Vec<Field> {
        vec![
            f64_field("bpm"),
            f64_field("bpm_confidence"),
            f64_field("onset_rate"),
        ]
    }

    fn frame(&mut self, frame: &Frame<'_>) {
        let value = self.onset.next(frame);
        self.periodicity.push(value);
        self.peaks.push(value);
    }

    fn finish(mut self: Box<Self>) -> Vec<Value> {
        let Self {
            periodicity, peaks, ..
        } = &mut *self;
        periodicity.finish();
        let seconds = periodicity.total_frames as f64 / frame_rate();
        let onset_rate = if seconds > 0.0 {
            Value::Float64(peaks.onsets as f64 / seconds)
        } else {
            Value::Null
        };
        match periodicity.tempo() {
            Some((bpm, confidence)) => {
                vec![Value::Float64(bpm), Value::Float64(confidence), onset_rate]
            }
            None => vec![Value::Null, Value::Null, onset_rate],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_frames;
    use super::*;

    /// Decaying noise bursts (a hi-hat-like click) on every beat, with a louder downbeat.
    fn click_track(bpm: f64, seconds: f64) -> Vec<f32> {
        let n = (seconds * f64::from(RATE)) as usize;
        let period = 60.0 / bpm * f64::from(RATE);
        let mut out = vec![0.0f32; n];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut beat = 0usize;
        loop {
            let start = (beat as f64 * period).round() as usize;
            if start >= n {
                break;
            }
            let gain = if beat.is_multiple_of(4) { 1.0 } else { 0.6 };
            for (i, s) in out[start..].iter_mut().take(2000).enumerate() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                *s += gain * noise * (-(i as f32) / 300.0).exp();
            }
            beat += 1;
        }
        out
    }

    fn analyse(signal: &[f32]) -> Vec<Value> {
        run_frames(Box::new(Rhythm::new()), signal, 4096)
    }

    #[test]
    fn click_tracks_read_their_tempo_within_one_percent() {
        for bpm in [60.0, 80.0, 100.0, 120.0, 140.0, 160.0, 180.0, 200.0] {
            let v = analyse(&click_track(bpm, 30.0));
            let got = v[0].as_f64().expect("a tempo");
            assert!(
                (got / bpm - 1.0).abs() < 0.01,
                "{bpm} BPM click track read as {got}"
            );
            let confidence = v[1].as_f64().unwrap();
            assert!(confidence > 0.3, "{bpm} BPM: confidence {confidence}");
            let rate = v[2].as_f64().unwrap();
            assert!(
                (rate / (bpm / 60.0) - 1.0).abs() < 0.1,
                "{bpm} BPM: {rate} onsets/s"
            );
        }
    }

    #[test]
    fn silence_has_no_tempo() {
        let v = analyse(&vec![0.0; RATE as usize * 5]);
        assert_eq!(v[0], Value::Null);
        assert_eq!(v[2], Value::Float64(0.0));
    }
}
