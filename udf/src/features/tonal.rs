//! Tonal: global `key`, `mode` and `key_strength`.
//!
//! A harmonic pitch-class profile (HPCP, after Gómez 2006): spectral peaks between 40 Hz and
//! 5 kHz, located by parabolic interpolation, each adding to the pitch class of its frequency
//! and of its possible fundamentals (f/2, f/3, f/4, with decaying weight) under a cos² window
//! one semitone wide, tuned to A4 = 440 Hz. Frames are scaled to unit maximum and summed; the
//! sum is correlated (Pearson) with the 24 rotations of Aarden's major and minor key profiles.

use arrow_schema::Field;

use super::stft::{semitones_above_c, Frame, StftShape};
use super::{f64_field, utf8_field, Extractor, Input, Value};

const RATE: u32 = 11_025;
const N_FFT: usize = 4096;
const HOP: usize = 2048;
const MIN_HZ: f32 = 40.0;
const MAX_HZ: f32 = 5000.0;
/// Peaks weaker than this, relative to the frame's strongest bin, are ignored (-60 dB).
const PEAK_FLOOR: f32 = 1e-3;
const HARMONICS: usize = 4;
/// `12 log2(h)` for h = 1..=HARMONICS.
const SUBHARMONIC_SEMITONES: [f32; HARMONICS] = [0.0, 12.0, 19.019_55, 24.0];
const HARMONIC_DECAY: f32 = 0.6;
/// Frames whose strongest bin is below this are silence (a full-scale sine peaks near 1000).
const SILENT_PEAK: f32 = 1e-4;

pub const KEY_NAMES: [&str; 12] = [
    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];

/// Key profiles (tonic first): Aarden's major and minor profiles from the Essen folk song
/// collection. On the corpus they beat Temperley's, Temperley–Kostka–Payne's and
/// Krumhansl–Kessler's (exact 83 % vs 72-78 % and 61 %), mostly by confusing fewer relative keys.
const MAJOR: [f64; 12] = [
    17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062, 0.145624, 8.15494,
    0.232998, 4.95122,
];
const MINOR: [f64; 12] = [
    18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161, 4.56621, 1.93186,
    7.37619, 1.75623,
];

pub struct Tonal {
    hpcp: Hpcp,
}

impl Tonal {
    pub fn new() -> Self {
        Self {
            hpcp: Hpcp {
                sum: [0.0; 12],
                frames: 0,
            },
        }
    }
}

struct Hpcp {
    sum: [f64; 12],
    frames: u64,
}

impl Hpcp {
    fn frame(&mut self, frame: &Frame<'_>) {
        let mag = frame.magnitude;
        let bin_hz = RATE as f32 / N_FFT as f32;
        let lo = (MIN_HZ / bin_hz).floor().max(1.0) as usize;
        let hi = ((MAX_HZ / bin_hz).ceil() as usize).min(mag.len() - 2);
        let max = mag[lo..=hi].iter().copied().fold(0.0f32, f32::max);
        if max < SILENT_PEAK {
            return;
        }
        let floor = max * PEAK_FLOOR;
        let mut pcp = [0.0f32; 12];
        for k in lo..=hi {
            let b = mag[k];
            if b < floor || b <= mag[k - 1] || b < mag[k + 1] {
                continue;
            }
            // Parabolic interpolation on log magnitude: true frequency and amplitude.
            let (a, bl, c) = (
                mag[k - 1].max(1e-12).ln(),
                b.ln(),
                mag[k + 1].max(1e-12).ln(),
            );
            let denom = a - 2.0 * bl + c;
            let p = if denom.abs() > 1e-12 {
                (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
            } else {
                0.0
            };
            let freq = (k as f32 + p) * bin_hz;
            let amp = (bl - 0.25 * (a - c) * p).exp();
            let mut weight = 1.0;
            // The h-th subharmonic lies 12 log2(h) semitones below: one logarithm per peak.
            let peak_pitch = semitones_above_c(freq);
            for (h, below) in SUBHARMONIC_SEMITONES.iter().enumerate() {
                if freq / ((h + 1) as f32) < MIN_HZ {
                    break;
                }
                let pitch = peak_pitch - below;
                let nearest = pitch.round();
                let d = pitch - nearest;
                let w = (std::f32::consts::PI * d).cos();
                pcp[(nearest as i64).rem_euclid(12) as usize] += weight * w * w * amp;
                weight *= HARMONIC_DECAY;
            }
        }
        let top = pcp.iter().copied().fold(0.0f32, f32::max);
        if top > 0.0 {
            for (s, v) in self.sum.iter_mut().zip(pcp) {
                *s += f64::from(v / top);
            }
            self.frames += 1;
        }
    }
}

fn pearson(x: &[f64; 12], y: &[f64; 12]) -> f64 {
    let mx = x.iter().sum::<f64>() / 12.0;
    let my = y.iter().sum::<f64>() / 12.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return 0.0;
    }
    sxy / (sxx * syy).sqrt()
}

/// The best (tonic pitch class, is_minor, correlation) for a pitch-class profile.
fn estimate_key(chroma: &[f64; 12]) -> (usize, bool, f64) {
    let mut best = (0, false, f64::MIN);
    for tonic in 0..12 {
        let mut rotated = [0.0; 12];
        for (i, r) in rotated.iter_mut().enumerate() {
            *r = chroma[(i + tonic) % 12];
        }
        for (minor, profile) in [(false, &MAJOR), (true, &MINOR)] {
            let r = pearson(&rotated, profile);
            if r > best.2 {
                best = (tonic, minor, r);
            }
        }
    }
    best
}

impl Extractor for Tonal {
    fn name(&self) -> &'static str {
        "tonal"
    }

    /// 2: one logarithm per spectral peak (values differ from v1's in the last bits).
    fn version(&self) -> u32 {
        2
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
            utf8_field("key"),
            utf8_field("mode"),
            f64_field("key_strength"),
        ]
    }

    fn frame(&mut self, frame: &Frame<'_>) {
        self.hpcp.frame(frame);
    }

    fn finish(self: Box<Self>) -> Vec<Value> {
        let hpcp = &self.hpcp;
        if hpcp.frames == 0 {
            return vec![Value::Null; 3];
        }
        let (tonic, minor, r) = estimate_key(&hpcp.sum);
        vec![
            Value::Utf8(KEY_NAMES[tonic].to_owned()),
            Value::Utf8(if minor { "minor" } else { "major" }.to_owned()),
            Value::Float64(r.clamp(0.0, 1.0)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_frames;
    use super::*;

    /// Renders MIDI notes (each a list sounding together) as harmonic tones with a decay, one
    /// event every `seconds`.
    fn render(events: &[&[u8]], seconds: f32) -> Vec<f32> {
        let per = (seconds * RATE as f32) as usize;
        let mut out = vec![0.0f32; per * events.len()];
        for (e, notes) in events.iter().enumerate() {
            for &note in *notes {
                let f = 440.0 * 2f32.powf((f32::from(note) - 69.0) / 12.0);
                for (i, s) in out[e * per..(e + 1) * per].iter_mut().enumerate() {
                    let t = i as f32 / RATE as f32;
                    let env = (-2.0 * t).exp() * 0.2;
                    for h in 1..=5 {
                        let fh = f * h as f32;
                        if fh < RATE as f32 / 2.0 {
                            *s += env / h as f32 * (std::f32::consts::TAU * fh * t).sin();
                        }
                    }
                }
            }
        }
        out
    }

    fn key_of(events: &[&[u8]]) -> (String, String) {
        let signal = render(events, 0.5);
        let v = run_frames(Box::new(Tonal::new()), &signal, 2000);
        assert!(v[2].as_f64().unwrap() > 0.5, "strength {:?}", v[2]);
        (
            v[0].as_str().unwrap().to_owned(),
            v[1].as_str().unwrap().to_owned(),
        )
    }

    /// A scale up and down from `tonic`, then the cadence I-IV-V-I (minor: i-iv-V-i).
    fn scale_and_cadence(tonic: u8, minor: bool) -> Vec<Vec<u8>> {
        let steps: &[u8] = if minor {
            &[0, 2, 3, 5, 7, 8, 11, 12]
        } else {
            &[0, 2, 4, 5, 7, 9, 11, 12]
        };
        let third = if minor { 3 } else { 4 };
        let sixth = if minor { 8 } else { 9 };
        let mut events: Vec<Vec<u8>> = steps.iter().map(|s| vec![tonic + s]).collect();
        events.extend(steps.iter().rev().map(|s| vec![tonic + s]));
        let chords = [
            vec![tonic - 12, tonic, tonic + third, tonic + 7],
            vec![tonic - 7, tonic + 5, tonic + sixth, tonic + 12],
            vec![tonic - 5, tonic + 7, tonic + 11, tonic + 14],
            vec![tonic - 12, tonic, tonic + third, tonic + 7],
        ];
        for _ in 0..2 {
            events.extend(chords.iter().cloned());
        }
        events
    }

    #[test]
    fn scales_and_cadences_give_their_key() {
        for (tonic, minor, key, mode) in [
            (60, false, "C", "major"),
            (57, true, "A", "minor"),
            (67, false, "G", "major"),
            (62, true, "D", "minor"),
            (63, false, "Eb", "major"),
            (66, true, "F#", "minor"),
        ] {
            let events = scale_and_cadence(tonic, minor);
            let refs: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
            assert_eq!(
                key_of(&refs),
                (key.to_owned(), mode.to_owned()),
                "{key} {mode}"
            );
        }
    }
}
