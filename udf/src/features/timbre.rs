//! Timbre and harmony summaries: mean MFCC (13, librosa's recipe: 128 Slaney mel bands of the
//! power spectrum, dB, orthonormal DCT-II) and mean chroma (12, each frame scaled to max 1).

use arrow_schema::Field;

use super::spectral::{RATE, SHAPE, SILENT_FRAME};
use super::stft::{mel_filterbank, ChromaMap, Filter, Frame};
use super::{f32_list_field, Extractor, Input, Value};
use crate::lanes;

const N_FFT: usize = SHAPE.n_fft;
const N_MELS: usize = 128;
const N_MFCC: usize = 13;

pub struct Timbre {
    mel: Vec<Filter>,
    dct: Vec<[f32; N_MELS]>,
    chroma_map: ChromaMap,
    mel_db: Vec<f32>,
    mfcc_sum: [f64; N_MFCC],
    chroma_sum: [f64; 12],
    frames: u64,
}

impl Timbre {
    pub fn new() -> Self {
        let n = N_MELS as f32;
        let dct = (0..N_MFCC)
            .map(|k| {
                let scale = if k == 0 {
                    (1.0 / n).sqrt()
                } else {
                    (2.0 / n).sqrt()
                };
                let mut row = [0.0; N_MELS];
                for (i, r) in row.iter_mut().enumerate() {
                    let angle = std::f32::consts::PI * k as f32 * (2 * i + 1) as f32 / (2.0 * n);
                    *r = scale * angle.cos();
                }
                row
            })
            .collect();
        Self {
            mel: mel_filterbank(RATE, N_FFT, N_MELS, 0.0, RATE as f32 / 2.0),
            dct,
            chroma_map: ChromaMap::new(RATE, N_FFT, 65.0, 5000.0),
            mel_db: vec![0.0; N_MELS],
            mfcc_sum: [0.0; N_MFCC],
            chroma_sum: [0.0; 12],
            frames: 0,
        }
    }
}

impl Extractor for Timbre {
    fn name(&self) -> &'static str {
        "timbre"
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
        vec![f32_list_field("mfcc"), f32_list_field("chroma")]
    }

    fn frame(&mut self, frame: &Frame<'_>) {
        let mag = frame.magnitude;
        if mag.iter().sum::<f32>() / (mag.len() as f32) < SILENT_FRAME {
            return;
        }
        for (db, filter) in self.mel_db.iter_mut().zip(&self.mel) {
            *db = 10.0 * filter.apply(frame.power).max(1e-10).log10();
        }
        for (sum, row) in self.mfcc_sum.iter_mut().zip(&self.dct) {
            let c = lanes::fold2(row, &self.mel_db, |w, x| w * x);
            *sum += f64::from(c);
        }
        let mut chroma = [0.0f32; 12];
        self.chroma_map.accumulate(frame.power, &mut chroma, |p| p);
        let max = chroma.iter().copied().fold(0.0f32, f32::max);
        if max > 0.0 {
            for (sum, c) in self.chroma_sum.iter_mut().zip(chroma) {
                *sum += f64::from(c / max);
            }
        }
        self.frames += 1;
    }

    fn finish(self: Box<Self>) -> Vec<Value> {
        if self.frames == 0 {
            return vec![Value::Null, Value::Null];
        }
        let n = self.frames as f64;
        let mean = |sums: &[f64]| Value::Float32List(sums.iter().map(|s| (s / n) as f32).collect());
        vec![mean(&self.mfcc_sum), mean(&self.chroma_sum)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_frames;
    use super::*;

    fn run(signal: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let v = run_frames(Box::new(Timbre::new()), signal, 3000);
        (
            v[0].as_f32_list().unwrap().to_vec(),
            v[1].as_f32_list().unwrap().to_vec(),
        )
    }

    #[test]
    fn a_major_triad_lights_a_c_sharp_e() {
        let notes = [440.0f32, 554.37, 659.26];
        let signal: Vec<f32> = (0..RATE * 2)
            .map(|n| {
                let t = n as f32 / RATE as f32;
                notes
                    .iter()
                    .map(|f| (std::f32::consts::TAU * f * t).sin())
                    .sum::<f32>()
                    / 3.0
            })
            .collect();
        let (mfcc, chroma) = run(&signal);
        assert_eq!(mfcc.len(), 13);
        assert_eq!(chroma.len(), 12);
        for (pc, c) in chroma.iter().enumerate() {
            if [9, 1, 4].contains(&pc) {
                assert!(*c > 0.5, "pitch class {pc}: {c} in {chroma:?}");
            } else {
                assert!(*c < 0.2, "pitch class {pc}: {c} in {chroma:?}");
            }
        }
    }

    #[test]
    fn brighter_sound_has_lower_second_coefficient() {
        let tone = |f: f32| -> Vec<f32> {
            (0..RATE)
                .map(|n| (std::f32::consts::TAU * f * n as f32 / RATE as f32).sin())
                .collect()
        };
        let (low, _) = run(&tone(200.0));
        let (high, _) = run(&tone(5000.0));
        // The first cosine weighs low bands positively, so energy moving up lowers c1.
        assert!(high[1] < low[1], "c1 low {} high {}", low[1], high[1]);
    }
}
