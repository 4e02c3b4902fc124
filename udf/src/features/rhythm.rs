//! Rhythm: tempo (`bpm`, `bpm_confidence`) and `onset_rate`.
//!
//! Two onset strength envelopes: the half-wave rectified flux of log-compressed mel bands,
//! compared with the band-wise maximum of the previous frame (SuperFlux) so vibrato and slow
//! glides do not read as onsets; and the plain flux of log magnitudes on the linear frequency
//! axis, which also sees a new note that stays inside the mel band of the last one. Each
//! envelope's periodicity is its autocorrelation, computed window by window against the
//! envelope's recent past and normalised per window, so loud passages do not outvote quiet
//! ones; the two are averaged.
//!
//! A tempo's salience is the geometric mean of two combs: the autocorrelation at multiples of
//! its lag (which also rewards slower levels) and the envelope's power spectrum, the cosine
//! transform of the autocorrelation, at multiples of its frequency (which also rewards faster
//! levels); only the true metrical family scores in both. The tempo is the salience peak under
//! a log-normal prior, then moved an octave when the chosen level is not a pulse of its own:
//! up when its spectral line is more than 20 dB under the faster level's, down when its lag
//! holds less than a quarter of the slower level's correlation. A comb over lag multiples
//! refines it to sub-frame precision. Memory is bounded by the window plus the longest lag.

use arrow_schema::Field;
use realfft::RealFftPlanner;

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
/// Centre and width (octaves) of the tempo prior. Even streams of quavers give the level twice
/// as fast as the beat as much salience as the beat, so the prior decides; centred under
/// 120 BPM it keeps slow airs and chorales at their beat rather than their quavers.
const PRIOR_BPM: f64 = 100.0;
const PRIOR_OCTAVES: f64 = 0.7;
/// Lag multiples and spectral harmonics in the salience combs.
const COMB_TEETH: usize = 4;
/// A level whose spectral line is this far (dB) under the next faster level's is not a pulse.
const OCTAVE_UP_DB: f64 = 20.0;
/// A level whose lag correlates less than this fraction of the slower level's is not a pulse.
const OCTAVE_DOWN_RATIO: f64 = 0.25;
/// Comb harmonics used to refine the tempo to sub-frame precision.
const REFINE_HARMONICS: usize = 8;
/// Longest lag kept, in beats of the slowest tempo.
const MAX_LAG_BEATS: f64 = 4.0;
/// Autocorrelation window, in seconds of envelope.
const WINDOW_S: f64 = 8.0;
/// FFT size for the envelope spectrum (zero-padded lags): about 0.6 BPM per bin.
const SPECTRUM_FFT: usize = 8192;
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
    linear: LinearFlux,
    periodicity: [Periodicity; 2],
    peaks: PeakPicker,
}

impl Rhythm {
    pub fn new() -> Self {
        Self {
            onset: OnsetEnvelope::new(),
            linear: LinearFlux::new(),
            periodicity: [Periodicity::new(), Periodicity::new()],
            peaks: PeakPicker::new(),
        }
    }
}

/// Spectral flux on log-compressed mel bands, one value per STFT frame.
struct OnsetEnvelope {
    bands: Vec<Filter>,
    /// Each band's inverse weight sum, so a band reads the magnitude of a sine inside it.
    norms: Vec<f32>,
    previous: Vec<f32>,
    current: Vec<f32>,
    first: bool,
}

impl OnsetEnvelope {
    fn new() -> Self {
        let bands = mel_filterbank(RATE, N_FFT, N_BANDS, 30.0, 11_000.0);
        let norms = bands
            .iter()
            .map(|b| 1.0 / b.weights.iter().sum::<f32>().max(f32::EPSILON))
            .collect();
        Self {
            bands,
            norms,
            previous: vec![0.0; N_BANDS],
            current: vec![0.0; N_BANDS],
            first: true,
        }
    }

    fn next(&mut self, frame: &Frame<'_>) -> f32 {
        // Normalise so a full-scale sine has magnitude 1 whatever the FFT size.
        let scale = 2.0 / (N_FFT as f32 / 2.0);
        for ((c, band), norm) in self.current.iter_mut().zip(&self.bands).zip(&self.norms) {
            *c = ln_fast(1.0 + GAMMA * band.apply(frame.magnitude) * scale * norm);
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

/// Spectral flux of log-compressed magnitudes, bin by bin on the linear frequency axis.
struct LinearFlux {
    previous: Vec<f32>,
    current: Vec<f32>,
    first: bool,
}

impl LinearFlux {
    fn new() -> Self {
        Self {
            previous: vec![0.0; N_FFT / 2 + 1],
            current: vec![0.0; N_FFT / 2 + 1],
            first: true,
        }
    }

    fn next(&mut self, frame: &Frame<'_>) -> f32 {
        let scale = GAMMA * 2.0 / (N_FFT as f32 / 2.0);
        for (c, &m) in self.current.iter_mut().zip(frame.magnitude) {
            *c = ln_fast(1.0 + scale * m);
        }
        let flux = if self.first {
            0.0
        } else {
            self.current
                .iter()
                .zip(&self.previous)
                .map(|(c, p)| (c - p).max(0.0))
                .sum()
        };
        self.first = false;
        std::mem::swap(&mut self.previous, &mut self.current);
        flux
    }
}

/// Natural logarithm of `x >= 1` within 1e-4: libm's logarithm on every bin of every frame
/// cost more than the rest of the group; this one is branch-free and vectorises.
fn ln_fast(x: f32) -> f32 {
    // log2(1 + t) = t + t (t - 1) p(t) on [0, 1), p fitted by least squares.
    const P: [f32; 3] = [-0.438_073_25, 0.236_693_42, -0.080_307_3];
    let bits = x.to_bits();
    let exponent = (bits >> 23) as i32 - 127;
    let t = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000) - 1.0;
    let log2 = exponent as f32 + t + t * (t - 1.0) * (P[0] + t * (P[1] + t * P[2]));
    log2 * std::f32::consts::LN_2
}

/// Windowed autocorrelation of an onset envelope, summed over the file.
struct Periodicity {
    max_lag: usize,
    window: usize,
    /// At least the last `window + max_lag` envelope values (oldest first), at most twice that.
    history: Vec<f32>,
    /// Envelope values not yet correlated (the tail of `history`).
    fresh: usize,
    acf: Vec<f64>,
    windows: u32,
    total_frames: usize,
}

impl Periodicity {
    fn new() -> Self {
        let max_lag = max_lag();
        let window = (WINDOW_S * frame_rate()).round() as usize;
        Self {
            max_lag,
            window,
            history: Vec::with_capacity(2 * (window + max_lag)),
            fresh: 0,
            acf: vec![0.0; max_lag + 1],
            windows: 0,
            total_frames: 0,
        }
    }

    fn push(&mut self, value: f32) {
        // Drop old values in batches: shifting the buffer every frame was a visible cost.
        let keep = self.window + self.max_lag;
        if self.history.len() == 2 * keep {
            self.history.drain(..keep);
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
        let recent = &self.history[self
            .history
            .len()
            .saturating_sub(self.window + self.max_lag)..];
        let n = recent.len();
        let start = n - self.fresh;
        self.fresh = 0;
        let mean = recent.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let x: Vec<f64> = recent.iter().map(|&v| f64::from(v) - mean).collect();
        let mut r = vec![0.0; self.max_lag + 1];
        // Lags beyond a short history correlate nothing and stay 0.
        for (lag, r) in r.iter_mut().enumerate().take(n) {
            let first = start.max(lag);
            *r = dot(&x[first..], &x[first - lag..n - lag]);
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
}

/// Dot product with four running sums, which the compiler can vectorise.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut sums = [0.0; 4];
    for (p, q) in a4.zip(b4) {
        for ((s, x), y) in sums.iter_mut().zip(p).zip(q) {
            *s += x * y;
        }
    }
    sums.iter().sum::<f64>() + tail
}

fn max_lag() -> usize {
    (lag_of(MIN_BPM) * MAX_LAG_BEATS).ceil() as usize + 2
}

/// The envelopes' mean autocorrelation and its power spectrum, and the tempo read from them.
struct Tempogram {
    /// Mean normalised autocorrelation by lag (1 at lag 0).
    acf: Vec<f64>,
    /// Power spectrum of the envelopes, bin `k` at `k * frame_rate / SPECTRUM_FFT` Hz.
    spectrum: Vec<f64>,
}

impl Tempogram {
    fn new(parts: &[Periodicity]) -> Option<Self> {
        let max_lag = max_lag();
        let mut acf = vec![0.0; max_lag + 1];
        let mut used = 0;
        for p in parts.iter().filter(|p| p.windows > 0) {
            for (a, v) in acf.iter_mut().zip(&p.acf) {
                *a += v / f64::from(p.windows);
            }
            used += 1;
        }
        if used == 0 {
            return None;
        }
        acf.iter_mut().for_each(|a| *a /= f64::from(used));
        // Wiener-Khinchin: the spectrum is the transform of the (tapered, even) autocorrelation.
        let mut even = vec![0.0; SPECTRUM_FFT];
        for (lag, &a) in acf.iter().enumerate() {
            let taper =
                0.5 + 0.5 * (std::f64::consts::PI * lag as f64 / (max_lag + 1) as f64).cos();
            even[lag] = a * taper;
            if lag > 0 {
                even[SPECTRUM_FFT - lag] = a * taper;
            }
        }
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(SPECTRUM_FFT);
        let mut out = fft.make_output_vec();
        fft.process(&mut even, &mut out).ok()?;
        let spectrum = out.iter().map(|c| c.re.max(0.0)).collect();
        Some(Self { acf, spectrum })
    }

    /// Linear interpolation of the autocorrelation at a fractional lag.
    fn at(&self, lag: f64) -> Option<f64> {
        let i = lag.floor() as usize;
        if i + 1 >= self.acf.len() {
            return None;
        }
        let frac = lag - i as f64;
        Some(self.acf[i] * (1.0 - frac) + self.acf[i + 1] * frac)
    }

    /// Spectral power at the frequency of `bpm`, interpolated between bins.
    fn power(&self, bpm: f64) -> f64 {
        let bin = bpm / 60.0 / frame_rate() * SPECTRUM_FFT as f64;
        let i = bin.floor() as usize;
        if i + 1 >= self.spectrum.len() {
            return 0.0;
        }
        let frac = bin - i as f64;
        self.spectrum[i] * (1.0 - frac) + self.spectrum[i + 1] * frac
    }

    /// The strongest spectral power within 2 % of `bpm`.
    fn line(&self, bpm: f64) -> f64 {
        (-10..=10)
            .map(|i| self.power(bpm * (1.0 + f64::from(i) * 0.002)))
            .fold(0.0, f64::max)
    }

    fn comb(&self, bpm: f64, harmonics: usize) -> f64 {
        let lag = lag_of(bpm);
        (1..=harmonics).map_while(|k| self.at(lag * k as f64)).sum()
    }

    /// Geometric mean of the lag comb and the harmonic comb.
    fn salience(&self, bpm: f64) -> f64 {
        let lag = lag_of(bpm);
        let (sum, teeth) = (1..=COMB_TEETH)
            .map_while(|k| self.at(lag * k as f64))
            .fold((0.0, 0), |(sum, n), r| (sum + r.max(0.0), n + 1));
        if teeth == 0 {
            return 0.0;
        }
        let lags = sum / f64::from(teeth);
        let harmonics = (1..=COMB_TEETH)
            .map(|h| self.power(bpm * h as f64))
            .sum::<f64>()
            / COMB_TEETH as f64;
        (lags * harmonics).sqrt()
    }

    /// The tempo and how strongly periodic the envelopes are at it (0..1).
    fn tempo(&self) -> Option<(f64, f64)> {
        let prior = |bpm: f64| {
            let octaves = (bpm / PRIOR_BPM).log2() / PRIOR_OCTAVES;
            (-0.5 * octaves * octaves).exp()
        };
        let mut best = (0.0, 0.0);
        let mut bpm = MIN_BPM;
        while bpm <= MAX_BPM {
            let score = self.salience(bpm) * prior(bpm);
            if score > best.1 {
                best = (bpm, score);
            }
            bpm *= 1.002;
        }
        if best.1 <= 0.0 {
            return None;
        }
        // Lags and harmonics reward other octaves of an isochronous pulse as well; the beat
        // is a level that shows in both its own spectral line and its own lag.
        let mut tempo = best.0;
        let up = 10f64.powf(-OCTAVE_UP_DB / 10.0);
        while tempo * 2.0 <= MAX_BPM && self.line(tempo) < up * self.line(tempo * 2.0) {
            tempo *= 2.0;
        }
        let own = |t: f64| self.at(lag_of(t)).unwrap_or(0.0);
        while tempo / 2.0 >= MIN_BPM && own(tempo) < OCTAVE_DOWN_RATIO * own(tempo / 2.0) {
            tempo /= 2.0;
        }
        // The same number of harmonics for every candidate, all within the kept lags.
        let harmonics = ((self.acf.len() - 2) as f64 / lag_of(tempo * 0.98))
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
        let strength = self.at(lag_of(refined.0)).unwrap_or(0.0);
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

    /// 3: mel bands summed in lanes (values differ from v2's in the last bits).
    fn version(&self) -> u32 {
        3
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
        self.periodicity[0].push(value);
        self.periodicity[1].push(self.linear.next(frame));
        self.peaks.push(value);
    }

    fn finish(mut self: Box<Self>) -> Vec<Value> {
        let Self {
            periodicity, peaks, ..
        } = &mut *self;
        periodicity.iter_mut().for_each(Periodicity::finish);
        let seconds = periodicity[0].total_frames as f64 / frame_rate();
        let onset_rate = if seconds > 0.0 {
            Value::Float64(peaks.onsets as f64 / seconds)
        } else {
            Value::Null
        };
        match Tempogram::new(periodicity).and_then(|t| t.tempo()) {
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

    fn analyze(signal: &[f32]) -> Vec<Value> {
        run_frames(Box::new(Rhythm::new()), signal, 4096)
    }

    #[test]
    fn click_tracks_read_their_tempo_within_one_percent() {
        for bpm in [60.0, 80.0, 100.0, 120.0, 140.0, 160.0, 180.0, 200.0] {
            let v = analyze(&click_track(bpm, 30.0));
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
    fn a_clip_shorter_than_a_window_still_reads_its_tempo() {
        for bpm in [70.0, 120.0, 180.0] {
            let v = analyze(&click_track(bpm, 4.0));
            let got = v[0].as_f64().expect("a tempo");
            assert!((got / bpm - 1.0).abs() < 0.04, "{bpm} BPM read as {got}");
        }
    }

    #[test]
    fn fast_logarithm_is_close() {
        for i in 0..10_000 {
            let x = 1.0 + i as f32 * 0.37;
            assert!((ln_fast(x) - x.ln()).abs() < 2e-4, "{x}");
        }
    }

    #[test]
    fn silence_has_no_tempo() {
        let v = analyze(&vec![0.0; RATE as usize * 5]);
        assert_eq!(v[0], Value::Null);
        assert_eq!(v[2], Value::Float64(0.0));
    }
}
