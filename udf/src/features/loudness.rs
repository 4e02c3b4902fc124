//! Loudness: ITU BS.1770 integrated loudness and EBU Tech 3342 loudness range, true peak (4x
//! oversampled, BS.1770 Annex 2) and the plain RMS level over all channels.
//!
//! Each channel is K-weighted into 100 ms mean squares ([`ChannelMeter`]); as soon as every
//! channel has completed a window, the channels' mean squares are summed with their BS.1770
//! weights into one list of windows, which the `bs1770` crate gates into the integrated loudness
//! and from which the range is computed here. The list (4 bytes a window, 144 kB an hour
//! whatever the channel count) is kept until the end, so gating is exact rather than read off a
//! histogram as the `ebur128` crate, used before, did.
//!
//! The list is bounded at [`MAX_WINDOWS`], 24 hours (3.5 MB): a longer file reports the
//! integrated loudness and loudness range of its first 24 hours, while true peak and RMS cover
//! the whole file.
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

/// Most 100 ms windows kept: 24 hours, 864,000 windows of 4 bytes (3.5 MB). Past it the
/// channels are no longer K-weighted and loudness and range are those of the first 24 hours.
const MAX_WINDOWS: usize = 24 * 60 * 60 * 10;

pub struct Loudness {
    /// One per channel, all fed the same number of samples so that they stay in step; emptied
    /// of their completed windows after every chunk.
    meters: Vec<ChannelMeter>,
    true_peaks: Vec<TruePeak>,
    /// The channel-weighted 100 ms powers of the windows all channels have completed.
    windows: Vec<Power>,
    /// At most this many `windows` are kept ([`MAX_WINDOWS`] but in tests).
    max_windows: usize,
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
            windows: Vec::new(),
            max_windows: MAX_WINDOWS,
            broken: false,
            sum_squares: 0.0,
            samples: 0,
        }
    }

    /// K-weights the planes' common length and adds the windows this completes to `windows`.
    fn measure(&mut self, planes: &[&[f32]]) {
        let len = planes.iter().map(|p| p.len()).min().unwrap_or(0);
        for (meters, planes) in self.meters.chunks_mut(2).zip(planes.chunks(2)) {
            if let ([l, r], [a, b]) = (&mut *meters, planes) {
                push_together([l, r], [&a[..len], &b[..len]]);
            } else {
                for (meter, plane) in meters.iter_mut().zip(planes) {
                    meter.push(&plane[..len]);
                }
            }
        }
        // Equal lengths keep the meters in step: they have completed the same windows.
        let completed = self.meters.first().map_or(0, |m| m.windows().len());
        debug_assert!(self.meters.iter().all(|m| m.windows().len() == completed));
        let start = self.windows.len();
        let end = start + completed.min(self.max_windows - start);
        if self.windows.capacity() < end {
            // Grow by doubling as `Vec` would, but never past the bound.
            let capacity = (2 * self.windows.capacity()).max(end).min(self.max_windows);
            self.windows.reserve_exact(capacity - start);
        }
        self.windows.resize(end, Power(0.0));
        let channels = self.meters.len();
        for (c, meter) in self.meters.iter_mut().enumerate() {
            let weight = channel_weight(c, channels);
            for (s, w) in self.windows[start..].iter_mut().zip(meter.windows()) {
                s.0 += weight * w.0;
            }
            meter.clear_windows();
        }
    }

    /// A measurement that keeps at most `max_windows` windows.
    #[cfg(test)]
    fn with_max_windows(max_windows: usize) -> Self {
        Self {
            max_windows,
            ..Self::new()
        }
    }

    /// The 100 ms windows held: the weighted list and any the meters have not handed over.
    #[cfg(test)]
    fn windows_held(&self) -> usize {
        self.windows.len() + self.meters.iter().map(|m| m.windows().len()).sum::<usize>()
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
        if self.windows.len() < self.max_windows {
            self.measure(chunk.planes);
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
        let integrated = bs1770::gated_mean(Windows100ms {
            inner: &self.windows,
        });
        let lufs = Value::finite(f64::from(integrated.loudness_lkfs()));
        let lra = Value::finite(loudness_range(&self.windows));
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
        push_all(&mut ex, planes, rate);
        ex.finish()
    }

    fn push_all(ex: &mut Loudness, planes: &[Vec<f32>], rate: u32) {
        for start in (0..planes[0].len()).step_by(4096) {
            let end = (start + 4096).min(planes[0].len());
            let refs: Vec<&[f32]> = planes.iter().map(|p| &p[start..end]).collect();
            ex.push(&Chunk {
                planes: &refs,
                sample_rate: rate,
            });
        }
    }

    /// Pushes `seconds` of silence in `channels` channels at `rate`, `chunk` samples at a time.
    fn push_silence(ex: &mut Loudness, channels: usize, rate: u32, seconds: u32, chunk: usize) {
        let zeros = vec![0.0f32; chunk];
        let mut left = rate as usize * seconds as usize;
        while left > 0 {
            let n = left.min(chunk);
            let planes = vec![&zeros[..n]; channels];
            ex.push(&Chunk {
                planes: &planes,
                sample_rate: rate,
            });
            left -= n;
        }
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

    /// A 997 Hz sine at half scale (-9.03 LUFS in one channel) in channel `index` of six.
    fn in_5_1_channel(index: usize) -> Vec<Value> {
        let rate = 48_000;
        let tone: Vec<f32> = sine(rate, 10).iter().map(|x| 0.5 * x).collect();
        let mut planes = vec![vec![0.0; tone.len()]; 6];
        planes[index] = tone;
        measure(&planes, rate)
    }

    /// BS.1770's 5.1 weights, in the order L, R, C, LFE, Ls, Rs: L, R and C weigh 1, the
    /// surrounds 1.41 (+1.49 dB).
    #[test]
    fn surround_channels_of_5_1_read_1_5_db_louder() {
        let left = in_5_1_channel(0)[0].as_f64().unwrap();
        assert!((left + 9.03).abs() < 0.1, "left: {left} LUFS");
        for index in [1, 2] {
            let lufs = in_5_1_channel(index)[0].as_f64().unwrap();
            assert!(
                (lufs - left).abs() < 1e-4,
                "channel {index}: {lufs}, left {left}"
            );
        }
        let gain = 10.0 * 1.41f64.log10();
        for index in [4, 5] {
            let lufs = in_5_1_channel(index)[0].as_f64().unwrap();
            let louder = lufs - left;
            assert!(
                (louder - 1.5).abs() < 0.05,
                "channel {index}: {louder} LU louder"
            );
            assert!(
                (louder - gain).abs() < 1e-3,
                "channel {index}: {louder} LU louder"
            );
        }
    }

    /// The LFE channel (the fourth of six) is not measured: alone it reads as silence does,
    /// though true peak and RMS see it.
    #[test]
    fn lfe_of_5_1_has_no_loudness() {
        let v = in_5_1_channel(3);
        assert_eq!(v[0], Value::Null);
        assert_eq!(v[1], Value::Null);
        let tp = v[2].as_f64().unwrap();
        assert!((tp + 6.02).abs() < 0.1, "true peak {tp} dBTP");
        assert!(v[3].as_f64().is_some());
    }

    /// Memory does not grow with the channel count: an hour of 64 channels holds one list of
    /// 36,000 windows, and the meters none.
    #[test]
    fn an_hour_of_64_channels_holds_one_window_list() {
        let mut ex = Box::new(Loudness::new());
        push_silence(&mut ex, 64, 1_000, 3_600, 4_000);
        // Half a window more, which no channel has completed.
        ex.push(&Chunk {
            planes: &[&[0.0f32; 50][..]; 64],
            sample_rate: 1_000,
        });
        assert_eq!(ex.windows.len(), 36_000);
        assert_eq!(ex.windows_held(), 36_000);
        let v = ex.finish();
        assert_eq!(v[0], Value::Null);
    }

    /// A crafted day-long file stops adding windows at the bound, and its list never had room
    /// for more.
    #[test]
    fn more_than_a_day_of_64_channels_stops_at_the_bound() {
        let mut ex = Box::new(Loudness::new());
        push_silence(&mut ex, 64, 10, 25 * 3_600, 4_000);
        assert_eq!(ex.windows.len(), MAX_WINDOWS);
        assert_eq!(ex.windows_held(), MAX_WINDOWS);
        assert!(ex.windows.capacity() <= MAX_WINDOWS);
        assert_eq!(ex.finish().len(), 4);
    }

    /// Past the bound, loudness and range are those of what was kept; true peak and RMS cover
    /// the whole file.
    #[test]
    fn past_the_bound_loudness_is_that_of_the_windows_kept() {
        let rate = 48_000;
        let quiet: Vec<f32> = sine(rate, 10).iter().map(|x| 0.25 * x).collect();
        let loud = sine(rate, 5);
        let whole: Vec<f32> = quiet.iter().chain(&loud).copied().collect();

        let mut bounded = Box::new(Loudness::with_max_windows(100));
        push_all(&mut bounded, &[whole.clone(), whole.clone()], rate);
        assert_eq!(bounded.windows_held(), 100);
        let bounded = bounded.finish();

        let first = measure(&[quiet.clone(), quiet], rate);
        let all = measure(&[whole.clone(), whole], rate);
        assert_eq!(bounded[..2], first[..2]);
        assert_ne!(bounded[0], all[0]);
        assert_eq!(bounded[2..], all[2..]);
    }
}
