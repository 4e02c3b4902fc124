//! musicnn's temporal front end on the CPU, computed with FFTs along time.
//!
//! A temporal block correlates each kernel (32, 64 or 128 frames of one mel bin) with every
//! mel bin's series of frames and keeps, per frame and channel, the maximum over mel bins. A
//! direct convolution spends one multiply-add per tap and output; here each mel bin's series
//! is transformed once, and each channel costs one product of spectra and one inverse FFT per
//! series. Two mel bins share each transform as the real and imaginary parts of one complex
//! series: the kernel is real, so their correlations come back in the same two parts.

use pulp::Arch;
use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::logmel::N_MELS;
use crate::{Error, Result};

/// The kernels of one temporal block.
pub(crate) struct TemporalKernels {
    /// `[channels, taps]` row-major.
    weight: Vec<f32>,
    channels: usize,
    taps: usize,
}

impl TemporalKernels {
    /// `weight` is `[channels, taps]` row-major.
    pub(crate) fn new(weight: Vec<f32>, channels: usize, taps: usize) -> Result<Self> {
        if taps == 0 || weight.len() != channels * taps {
            return Err(Error::Input(format!(
                "temporal kernels: {} values for {channels} x {taps}",
                weight.len()
            )));
        }
        Ok(Self {
            weight,
            channels,
            taps,
        })
    }

    /// Number of output channels.
    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    /// For `b` patches of `t` frames (`x` is `[b, t, 96]`), the maximum over mel bins of each
    /// channel's correlation, `[b, channels, t]`; tap `r` of output frame `ti` reads frame
    /// `ti + r - pad`, zero outside the patch.
    pub(crate) fn max_over_mel(&self, x: &[f32], b: usize, t: usize, pad: usize) -> Vec<f32> {
        // Long enough that no needed output reads a wrapped-around frame: frames before the
        // patch wrap to the end, which must be zeros, and the last frame read must fit.
        let n = (t + pad.max(self.taps.saturating_sub(pad + 1))).next_power_of_two();
        let mut planner = FftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(n);
        let inverse = planner.plan_fft_inverse(n);
        let kernels = self.spectra(&*forward, n, pad);
        let scratch_len = forward
            .get_inplace_scratch_len()
            .max(inverse.get_inplace_scratch_len());
        let mut out = vec![f32::NEG_INFINITY; b * self.channels * t];
        // Patches in parallel, on the rayon pool the caller runs in (as candle's kernels do).
        x.par_chunks_exact(t * N_MELS)
            .zip(out.par_chunks_exact_mut(self.channels * t))
            .for_each_init(
                || Buffers::new(n, scratch_len),
                |buf, (patch, out)| {
                    // Mel bins 2p and 2p + 1 as one complex series, zero-padded to n frames.
                    buf.series.fill(Complex::default());
                    for (ti, frame) in patch.chunks_exact(N_MELS).enumerate() {
                        for (p, bins) in frame.chunks_exact(2).enumerate() {
                            buf.series[p * n + ti] = Complex::new(bins[0], bins[1]);
                        }
                    }
                    forward.process_with_scratch(&mut buf.series, &mut buf.scratch);
                    for (kernel, row) in kernels.chunks_exact(n).zip(out.chunks_exact_mut(t)) {
                        let (series, products) = (&buf.series, &mut buf.products);
                        Arch::new().dispatch(|| {
                            for (p, s) in products.chunks_exact_mut(n).zip(series.chunks_exact(n)) {
                                for ((z, &k), &s) in p.iter_mut().zip(kernel).zip(s) {
                                    *z = k * s;
                                }
                            }
                        });
                        inverse.process_with_scratch(&mut buf.products, &mut buf.scratch);
                        for p in buf.products.chunks_exact(n) {
                            for (m, z) in row.iter_mut().zip(p) {
                                *m = m.max(z.re).max(z.im);
                            }
                        }
                    }
                },
            );
        out
    }

    /// Per channel, the conjugate spectrum (over `n` points, divided by `n`) of the kernel
    /// placed so that tap `pad` sits at time 0, as the correlation needs.
    fn spectra(&self, forward: &dyn Fft<f32>, n: usize, pad: usize) -> Vec<Complex<f32>> {
        let mut spectra = vec![Complex::<f32>::default(); self.channels * n];
        for (kernel, spectrum) in self
            .weight
            .chunks_exact(self.taps)
            .zip(spectra.chunks_exact_mut(n))
        {
            for (r, &w) in kernel.iter().enumerate() {
                spectrum[(r + n - pad) % n] = Complex::new(w, 0.0);
            }
        }
        forward.process(&mut spectra);
        let scale = 1.0 / n as f32;
        for z in &mut spectra {
            *z = z.conj() * scale;
        }
        spectra
    }
}

/// Work buffers of one thread: the 48 paired series of a patch and their products.
struct Buffers {
    series: Vec<Complex<f32>>,
    products: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl Buffers {
    fn new(n: usize, scratch: usize) -> Self {
        Self {
            series: vec![Complex::default(); N_MELS / 2 * n],
            products: vec![Complex::default(); N_MELS / 2 * n],
            scratch: vec![Complex::default(); scratch],
        }
    }
}
