//! Loudness: ITU BS.1770 integrated loudness and EBU Tech 3342 loudness range, true peak (4x
//! oversampled, BS.1770 Annex 2) and the plain RMS level over all channels.
//!
//! Each channel is K-weighted into 100 ms mean squares ([`ChannelMeter`]); the `bs1770` crate
//! gates them into the integrated loudness and the range is computed here. The 100 ms windows
//! (4 bytes per channel each, 144 kB per channel-hour) are kept until the end, so gating is
//! exact rather than read off a histogram as the `ebur128` crate, used before, did.
//!
//! True peak is computed here rather than by the crate: its oversampler runs on every sample
//! and cost more than decoding. Ours skips every stretch whose samples cannot reach the peak
//! found so far (the interpolated value is bounded by the local maximum times the filter's
//! absolute gain), which is exact and leaves only the loud stretches to interpolate.

use arrow_schema::Field;
use bs1770::{Power, Windows100ms};

use super::k_weighting::{push_together, ChannelMeter};
use super::{f64_field, Chunk, Extractor, Input, Value};
use crate::lanes::{self, abs_max, sum_of_squares_f64};

/// Oversampling factor and one-sided length (input samples) of the interpolation filter.
const OVERSAMPLE: usize = 4;
const HALF_TAPS: usize = 12;
/// Stretch of input samples whose maximum decides whether to interpolate it.
const STRETCH: usize = 64;

/// Streaming inter-sample peak detector for one channel.
struct TruePeak {
    /// Per fractional phase `p / OVERSAMPLE` (p = 1..OVERSAMPLE), taps for samples
    /// `n - HALF_TAPS + 1 ..= n + HALF_TAPS` giving the value at `n + p / OVERSAMPLE`.
    phases: Vec<Vec<f32>>,
    /// Largest sum of absolute taps over the phases.
    gain: f32,
    /// The last `2 * HALF_TAPS - 1` samples, then the chunk being processed.
    buffer: Vec<f32>,
    peak: f32,
}

impl TruePeak {
    fn new() -> Self {
        let phases: Vec<Vec<f32>> = (1..OVERSAMPLE)
            .map(|p| {
                let frac = p as f64 / OVERSAMPLE as f64;
                (-(HALF_TAPS as i64) + 1..=HALF_TAPS as i64)
                    .map(|m| {
                        // Windowed sinc at distance t from the interpolated point (Hann window).
                        let t = m as f64 - frac;
                        let x = std::f64::consts::PI * t;
                        let sinc = if t == 0.0 { 1.0 } else { x.sin() / x };
                        let w = 0.5 * (1.0 + (std::f64::consts::PI * t / HALF_TAPS as f64).cos());
                        (sinc * w) as f32
                    })
                    .collect()
            })
            .collect();
        let gain = phases
            .iter()
            .map(|taps| taps.iter().map(|t| t.abs()).sum::<f32>())
            .fold(0.0, f32::max);
        Self {
            phases,
            gain,
            buffer: vec![0.0; 2 * HALF_TAPS - 1],
            peak: 0.0,
        }
    }

    fn push(&mut self, samples: &[f32]) {
        let keep = 2 * HALF_TAPS - 1;
        self.buffer.extend_from_slice(samples);
        // Sample peaks first: they also raise the bar the interpolation has to beat.
        self.peak = self.peak.max(abs_max(samples));
        // Interpolate between samples n and n + 1 for every n whose taps are all buffered.
        let last = self.buffer.len() - HALF_TAPS;
        let mut n = HALF_TAPS - 1;
        while n < last {
            let end = (n + STRETCH).min(last);
            let window = &self.buffer[n + 1 - HALF_TAPS..end + HALF_TAPS];
            let local = abs_max(window);
            if local * self.gain > self.peak {
                for i in n..end {
                    let taps_in = &self.buffer[i + 1 - HALF_TAPS..=i + HALF_TAPS];
                    for taps in &self.phases {
                        let v = lanes::fold2(taps, taps_in, |a, b| a * b);
                        self.peak = self.peak.max(v.abs());
                    }
                }
            }
            n = end;
        }
        let drop = self.buffer.len() - keep;
        self.buffer.drain(..drop);
    }
}

/// Most channels measured, as libebur128; a file with more has no loudness values.
const MAX_CHANNELS: usize = 64;

/// Channel weights of BS.1770 by position, in libebur128's default order for the channel
/// count: surrounds weigh 1.41, the LFE and channels past the sixth nothing.
fn channel_weight(index: usize, channels: usize) -> f32 {
    const SURROUND: f32 = 1.41;
    match (channels, index) {
        (4, 2 | 3) | (5, 3 | 4) => SURROUND,
        (4 | 5, _) => 1.0,
        (_, 0..=2) => 1.0,
        (_, 4 | 5) => SURROUND,
        _ => 0.0,
    }
}

pub struct Loudness {
    meters: Vec<ChannelMeter>,
    true_peaks: Vec<TruePeak>,
    /// Set when there are too many channels or the channel layout changed mid-stream.
    broken: bool,
    sum_squares: f64,
    samples: u64,
}

impl Loudness {
    pub fn new() -> Self {
        Self {
            meters: Vec::new(),
            true_peaks: Vec::new(),
            broken: false,
            sum_squares: 0.0,
            samples: 0,
        }
    }

    /// The channel-weighted 100 ms powers.
    fn windows(&self) -> Vec<Power> {
        let channels = self.meters.len();
        let len = self
            .meters
            .iter()
            .map(|m| m.windows().len())
            .min()
            .unwrap_or(0);
        let mut sum = vec![Power(0.0); len];
        for (c, meter) in self.meters.iter().enumerate() {
            let weight = channel_weight(c, channels);
            for (s, w) in sum.iter_mut().zip(meter.windows()) {
                s.0 += weight * w.0;
            }
        }
        sum
    }
}

/// Loudness range (EBU Tech 3342): the spread between the 10th and 95th percentiles of the
/// 3 s short-term loudness, taken every second, of blocks above -70 LUFS and within 20 LU of
/// their mean power. NaN when no block passes.
fn loudness_range(windows: &[Power]) -> f64 {
    const BLOCK: usize = 30;
    const HOP: usize = 10;
    let blocks: Vec<f64> = windows
        .windows(BLOCK)
        .step_by(HOP)
        .map(|w| w.iter().map(|p| f64::from(p.0)).sum::<f64>() / BLOCK as f64)
        .filter(|&power| lkfs(power) > -70.0)
        .collect();
    if blocks.is_empty() {
        return f64::NAN;
    }
    let mean = blocks.iter().sum::<f64>() / blocks.len() as f64;
    let gate = lkfs(mean) - 20.0;
    let mut kept: Vec<f64> = blocks.into_iter().map(lkfs).filter(|&l| l > gate).collect();
    kept.sort_by(f64::total_cmp);
    let at = |q: f64| kept[((kept.len() - 1) as f64 * q).round() as usize];
    at(0.95) - at(0.10)
}

/// BS.1770's loudness of a mean square.
fn lkfs(power: f64) -> f64 {
    -0.691 + 10.0 * power.log10()
}

impl Extractor for Loudness {
    fn name(&self) -> &'static str {
        "loudness"
    }

    /// 2: gating on exact 100 ms powers instead of libebur128's histogram.
    fn version(&self) -> u32 {
        2
    }

    fn input(&self) -> Input {
        Input::AllChannels
    }

    fn fields(&self) -> Vec<Field> {
        vec![
            f64_field("loudness_lufs"),
            f64_field("loudness_range_lu"),
            f64_field("true_peak_dbtp"),
            f64_field("rms_dbfs"),
        ]
    }

    fn push(&mut self, chunk: &Chunk<'_>) {
        for plane in chunk.planes {
            self.sum_squares += sum_of_squares_f64(plane);
            self.samples += plane.len() as u64;
        }
        if self.broken {
            return;
        }
        if self.meters.is_empty() {
            if chunk.planes.len() > MAX_CHANNELS || chunk.sample_rate < 10 {
                self.broken = true;
                return;
            }
            self.meters = chunk
                .planes
                .iter()
                .map(|_| ChannelMeter::new(chunk.sample_rate))
                .collect();
            self.true_peaks = chunk.planes.iter().map(|_| TruePeak::new()).collect();
        } else if self.meters.len() != chunk.planes.len() {
            self.broken = true;
            return;
        }
        for (meters, planes) in self.meters.chunks_mut(2).zip(chunk.planes.chunks(2)) {
            if let ([l, r], [a, b]) = (&mut *meters, planes) {
                push_together([l, r], [a, b]);
            } else {
                for (meter, plane) in meters.iter_mut().zip(planes) {
                    meter.push(plane);
                }
            }
        }
        for (tp, plane) in self.true_peaks.iter_mut().zip(chunk.planes) {
            tp.push(plane);
        }
    }

    fn finish(self: Box<Self>) -> Vec<Value> {
        let rms = if self.samples > 0 {
            Value::finite(10.0 * (self.sum_squares / self.samples as f64).log10())
        } else {
            Value::Null
        };
        if self.broken || self.meters.is_empty() {
            return vec![Value::Null, Value::Null, Value::Null, rms];
        }
        let windows = self.windows();
        let integrated = bs1770::gated_mean(Windows100ms { inner: &windows });
        let lufs = Value::finite(f64::from(integrated.loudness_lkfs()));
        let lra = Value::finite(loudness_range(&windows));
        let peak = self
            .true_peaks
            .iter()
            .map(|t| t.peak)
            .fold(0.0f32, f32::max);
        let peak_db = Value::finite(20.0 * f64::from(peak).log10());
        vec![lufs, lra, peak_db, rms]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(planes: &[Vec<f32>], rate: u32) -> Vec<Value> {
        let mut ex = Box::new(Loudness::new());
        for start in (0..planes[0].len()).step_by(4096) {
            let end = (start + 4096).min(planes[0].len());
            let refs: Vec<&[f32]> = planes.iter().map(|p| &p[start..end]).collect();
            ex.push(&Chunk {
                planes: &refs,
                sample_rate: rate,
            });
        }
        ex.finish()
    }

    fn sine(rate: u32, seconds: u32) -> Vec<f32> {
        (0..rate * seconds)
            .map(|n| (std::f64::consts::TAU * 997.0 * f64::from(n) / f64::from(rate)).sin() as f32)
            .collect()
    }

    /// BS.1770 sums channel powers: a full-scale 997 Hz sine reads -3.01 LUFS in one channel
    /// and 0.00 LUFS in both (ffmpeg's ebur128 agrees).
    #[test]
    fn full_scale_997_hz_sine_reads_minus_3_01_lufs_per_channel() {
        let rate = 48_000;
        let tone = sine(rate, 10);
        let silent = vec![0.0; tone.len()];

        let one = measure(&[tone.clone(), silent], rate);
        let lufs = one[0].as_f64().unwrap();
        assert!((lufs + 3.01).abs() < 0.1, "one channel: {lufs} LUFS");

        let both = measure(&[tone.clone(), tone], rate);
        let lufs = both[0].as_f64().unwrap();
        assert!(lufs.abs() < 0.1, "both channels: {lufs} LUFS");
        let lra = both[1].as_f64().unwrap();
        assert!(
            lra.abs() < 0.1,
            "steady tone has no loudness range, got {lra}"
        );
        let tp = both[2].as_f64().unwrap();
        assert!((-0.1..0.3).contains(&tp), "true peak {tp} dBTP");
        let rms = both[3].as_f64().unwrap();
        assert!((rms + 3.01).abs() < 0.01, "RMS {rms} dBFS");
    }

    #[test]
    fn samples_above_full_scale_are_measured_not_clipped() {
        let rate = 44_100;
        let loud: Vec<f32> = (0..rate * 5)
            .map(|n| 2.0 * (std::f32::consts::TAU * 1000.0 * n as f32 / rate as f32).sin())
            .collect();
        let v = measure(&[loud.clone(), loud], rate);
        let tp = v[2].as_f64().unwrap();
        assert!((tp - 6.02).abs() < 0.3, "true peak {tp} dBTP");
    }

    #[test]
    fn inter_sample_peaks_are_found() {
        // A quarter-rate sine sampled 45 degrees off its crests: samples reach only 0.707.
        let rate = 48_000;
        let tone: Vec<f32> = (0..rate)
            .map(|n| (std::f32::consts::FRAC_PI_2 * n as f32 + std::f32::consts::FRAC_PI_4).sin())
            .collect();
        let v = measure(&[tone], rate);
        let tp = v[2].as_f64().unwrap();
        assert!(
            tp.abs() < 0.2,
            "true peak {tp} dBTP (sample peak is -3 dBFS)"
        );
    }

    #[test]
    fn silence_has_no_loudness() {
        let v = measure(&[vec![0.0; 48_000]], 48_000);
        assert_eq!(v[0], Value::Null);
        assert_eq!(v[3], Value::Null);
    }
}
