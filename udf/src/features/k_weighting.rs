//! BS.1770's K-weighting of one channel into mean squares of 100 ms windows.
//!
//! Written here because both crates that do it were the slowest stage of a whole analysis: they
//! keep the filter state in memory between samples and sum with a compensated (serial) sum,
//! about 45 cycles a sample. Here the state stays in registers and the window sums are plain
//! f64, about 8 cycles a sample. The filters are BS.1770's high shelf and high pass, designed
//! for the sample rate with the analog parameters pyloudnorm publishes.

use bs1770::Power;

/// A biquad's normalised coefficients `[b0, b1, b2, a1, a2]`.
type Coefficients = [f64; 5];

/// The "pre-filter": a +4 dB shelf above about 1.7 kHz (the head's effect).
fn high_shelf(rate: f64) -> Coefficients {
    const GAIN_DB: f64 = 3.999_843_853_97;
    const Q: f64 = 0.707_175_236_955_419_3;
    const CENTRE_HZ: f64 = 1_681.974_450_955_532;
    let k = (std::f64::consts::PI * CENTRE_HZ / rate).tan();
    let vh = 10f64.powf(GAIN_DB / 20.0);
    let vb = vh.powf(0.499_666_774_154_541_6);
    let a0 = 1.0 + k / Q + k * k;
    [
        (vh + vb * k / Q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / Q + k * k) / a0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / Q + k * k) / a0,
    ]
}

/// The "RLB" high pass at about 38 Hz.
fn high_pass(rate: f64) -> Coefficients {
    const Q: f64 = 0.500_327_037_325_395_3;
    const CENTRE_HZ: f64 = 38.135_470_876_139_82;
    let k = (std::f64::consts::PI * CENTRE_HZ / rate).tan();
    let a0 = 1.0 + k / Q + k * k;
    [
        1.0,
        -2.0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / Q + k * k) / a0,
    ]
}

/// State below which the filters are reset to zero: after a long silence the state would
/// decay into subnormal numbers, which cost a hundred times more to compute with.
const SUBNORMAL_GUARD: f64 = 1e-30;

/// K-weighted mean squares of one channel, one per complete 100 ms window. The windows are kept
/// until the owner takes them with [`ChannelMeter::clear_windows`].
pub(super) struct ChannelMeter {
    shelf: Coefficients,
    high_pass: Coefficients,
    /// The last two inputs, shelf outputs and high-pass outputs.
    state: [f64; 6],
    window: usize,
    filled: usize,
    sum: f64,
    windows: Vec<Power>,
}

impl ChannelMeter {
    /// `rate` must be at least 10 Hz (a window is `rate / 10` samples).
    pub(super) fn new(rate: u32) -> Self {
        let r = f64::from(rate);
        Self {
            shelf: high_shelf(r),
            high_pass: high_pass(r),
            state: [0.0; 6],
            window: (rate / 10).max(1) as usize,
            filled: 0,
            sum: 0.0,
            windows: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, samples: &[f32]) {
        push_together([self], [samples]);
    }

    /// Mean squares of the windows completed since the last [`Self::clear_windows`].
    pub(super) fn windows(&self) -> &[Power] {
        &self.windows
    }

    /// Forgets the completed windows (the one being filled carries on).
    pub(super) fn clear_windows(&mut self) {
        self.windows.clear();
    }
}

/// Pushes `N` equally long planes of the same rate through their meters in one loop, so that
/// the channels' filter recursions overlap rather than wait for each other.
pub(super) fn push_together<const N: usize>(
    mut meters: [&mut ChannelMeter; N],
    planes: [&[f32]; N],
) {
    let Some(first) = meters.first() else { return };
    let [b0, b1, b2, a1, a2] = first.shelf;
    let [c0, c1, c2, d1, d2] = first.high_pass;
    let (window, mut filled) = (first.window, first.filled);
    let len = planes.iter().map(|p| p.len()).min().unwrap_or(0);
    // Direct form I; each recursion is written so that only one multiply and one subtract
    // depend on the previous output.
    let mut state: [[f64; 6]; N] = std::array::from_fn(|c| meters[c].state);
    let mut start = 0;
    while start < len {
        let end = start + (window - filled).min(len - start);
        let mut sums = [0.0f64; N];
        // Every channel's sample `i` in turn: an iterator per plane would not keep N in step.
        #[allow(clippy::needless_range_loop)]
        for i in start..end {
            for c in 0..N {
                let [x1, x2, y1, y2, z1, z2] = state[c];
                let x = f64::from(planes[c][i]);
                let y = (b0 * x + b1 * x1 + b2 * x2 - a2 * y2) - a1 * y1;
                let z = (c0 * y + c1 * y1 + c2 * y2 - d2 * z2) - d1 * z1;
                state[c] = [x, x1, y, y1, z, z1];
                sums[c] += z * z;
            }
        }
        filled += end - start;
        for (meter, sum) in meters.iter_mut().zip(sums) {
            meter.sum += sum;
            if filled == window {
                meter
                    .windows
                    .push(Power((meter.sum / window as f64) as f32));
                meter.sum = 0.0;
            }
        }
        if filled == window {
            filled = 0;
        }
        start = end;
    }
    for (meter, mut state) in meters.into_iter().zip(state) {
        if state.iter().all(|s| s.abs() < SUBNORMAL_GUARD) {
            state = [0.0; 6];
        }
        meter.state = state;
        meter.filled = filled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BS.1770-4's table 1 and 2 coefficients at 48 kHz.
    #[test]
    fn coefficients_at_48_khz_are_the_standards() {
        let shelf = high_shelf(48_000.0);
        let expected = [
            1.535_124_859_586_97,
            -2.691_696_189_406_38,
            1.198_392_810_852_85,
            -1.690_659_293_182_41,
            0.732_480_774_215_85,
        ];
        for (ours, theirs) in shelf.iter().zip(expected) {
            assert!((ours - theirs).abs() < 1e-6, "{shelf:?}");
        }
        let hp = high_pass(48_000.0);
        let expected = [1.0, -2.0, 1.0, -1.990_047_454_833_98, 0.990_072_250_366_21];
        for (ours, theirs) in hp.iter().zip(expected) {
            assert!((ours - theirs).abs() < 1e-6, "{hp:?}");
        }
    }

    #[test]
    fn one_window_per_100_ms_whatever_the_pieces() {
        let mut meter = ChannelMeter::new(44_100);
        let signal = vec![0.5f32; 44_100 + 100];
        for piece in signal.chunks(1000) {
            meter.push(piece);
        }
        assert_eq!(meter.windows().len(), 10);
    }

    #[test]
    fn channels_pushed_together_read_as_pushed_alone() {
        let left: Vec<f32> = (0..20_000)
            .map(|n| ((n % 97) as f32 / 97.0) - 0.5)
            .collect();
        let right: Vec<f32> = (0..20_000)
            .map(|n| ((n * 7 % 31) as f32 / 31.0) - 0.5)
            .collect();
        let (mut l, mut r) = (ChannelMeter::new(22_050), ChannelMeter::new(22_050));
        for (a, b) in left.chunks(999).zip(right.chunks(999)) {
            push_together([&mut l, &mut r], [a, b]);
        }
        let (mut l1, mut r1) = (ChannelMeter::new(22_050), ChannelMeter::new(22_050));
        l1.push(&left);
        r1.push(&right);
        assert_eq!(l.windows().len(), 9);
        let values = |m: &ChannelMeter| m.windows().iter().map(|p| p.0).collect::<Vec<f32>>();
        assert_eq!(values(&l), values(&l1));
        assert_eq!(values(&r), values(&r1));
    }

    #[test]
    fn a_long_silence_leaves_no_subnormal_state() {
        let mut meter = ChannelMeter::new(48_000);
        meter.push(&[1.0; 100]);
        for _ in 0..200 {
            meter.push(&[0.0; 4800]);
        }
        assert_eq!(meter.state, [0.0; 6]);
    }
}
