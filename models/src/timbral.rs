//! musicnn's timbral front end on the CPU, computed with FFTs along the mel axis.
//!
//! A timbral block correlates each kernel (7 frames by 38 or 67 mel bins) with the log-mel
//! patch and keeps, per frame and channel, only the maximum over mel positions. Along mel,
//! a correlation is a product of spectra: with one 96-point FFT per input frame and the
//! kernels' spectra computed at load, an output frame costs 7 x 49 complex multiply-adds and
//! one inverse FFT per channel for all mel positions, where a direct convolution spends 266
//! or 469 multiply-adds per mel position. 96 points suffice: valid output position `f` reads
//! mel bins `f..f + kw`, all below 96, so the circular correlation never wraps onto them.

use std::sync::Arc;

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};

use crate::logmel::N_MELS;
use crate::{Error, Result};

/// Spectrum bins of a real 96-point signal.
const BINS: usize = N_MELS / 2 + 1;
/// Bins as stored: padded with zeros to whole SIMD vectors of up to 8 lanes.
const STRIDE: usize = BINS.next_multiple_of(8);

/// The kernels of one timbral block as spectra.
pub(crate) struct TimbralKernels {
    /// Per channel (padded to an even count), per kernel row: the conjugate spectrum divided
    /// by 96 (the inverse FFT does not normalise), as `[re; STRIDE]` then `[im; STRIDE]`.
    spectra: Vec<f32>,
    channels: usize,
    rows: usize,
    /// Valid mel positions: `96 - kw + 1`.
    positions: usize,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn Fft<f32>>,
}

impl TimbralKernels {
    /// `weight` is `[channels, rows, kw]` row-major.
    pub(crate) fn new(weight: &[f32], channels: usize, rows: usize, kw: usize) -> Result<Self> {
        if kw == 0 || kw > N_MELS || weight.len() != channels * rows * kw {
            return Err(Error::Input(format!(
                "timbral kernels: {} values for {channels} x {rows} x {kw}",
                weight.len()
            )));
        }
        let forward = RealFftPlanner::<f32>::new().plan_fft_forward(N_MELS);
        let inverse = FftPlanner::<f32>::new().plan_fft_inverse(N_MELS);
        // An odd channel count gets a zero kernel: channels are inverse-transformed in pairs.
        let paired = channels.next_multiple_of(2);
        let mut spectra = vec![0f32; paired * rows * 2 * STRIDE];
        let mut input = forward.make_input_vec();
        let mut spectrum = forward.make_output_vec();
        let scale = 1.0 / N_MELS as f32;
        for (kernel, out) in weight
            .chunks_exact(kw)
            .zip(spectra.chunks_exact_mut(2 * STRIDE))
        {
            input.fill(0.0);
            input[..kw].copy_from_slice(kernel);
            forward
                .process(&mut input, &mut spectrum)
                .expect("buffers come from this plan");
            let (re, im) = out.split_at_mut(STRIDE);
            for (k, c) in spectrum.iter().enumerate() {
                re[k] = c.re * scale;
                im[k] = -c.im * scale;
            }
        }
        Ok(Self {
            spectra,
            channels,
            rows,
            positions: N_MELS - kw + 1,
            forward,
            inverse,
        })
    }

    /// Number of output channels.
    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    /// For `b` patches of `t` frames (`x` is `[b, t, 96]`), the maximum over mel positions of
    /// each channel's correlation, `[b, channels, t]`; kernel row `r` of output frame `ti`
    /// reads input frame `ti + r - pad`, zero outside the patch.
    pub(crate) fn max_over_mel(&self, x: &[f32], b: usize, t: usize, pad: usize) -> Vec<f32> {
        let mut out = vec![0f32; b * self.channels * t];
        // Patches in parallel, on the rayon pool the caller runs in (as candle's kernels do).
        x.par_chunks_exact(t * N_MELS)
            .zip(out.par_chunks_exact_mut(self.channels * t))
            .for_each_init(
                || Buffers::new(self, t, pad),
                |buffers, (patch, out)| self.patch(patch, t, pad, buffers, out),
            );
        out
    }

    /// One patch `[t, 96]` into `out` `[channels, t]`.
    fn patch(&self, patch: &[f32], t: usize, pad: usize, buf: &mut Buffers, out: &mut [f32]) {
        for (frame, spec) in patch
            .chunks_exact(N_MELS)
            .zip(buf.frames[pad * 2 * STRIDE..].chunks_exact_mut(2 * STRIDE))
        {
            buf.input.copy_from_slice(frame);
            self.forward
                .process(&mut buf.input, &mut buf.spectrum)
                .expect("buffers come from this plan");
            let (re, im) = spec.split_at_mut(STRIDE);
            for (k, c) in buf.spectrum.iter().enumerate() {
                re[k] = c.re;
                im[k] = c.im;
            }
        }
        let per_channel = self.rows * 2 * STRIDE;
        for (pair, kernels) in self.spectra.chunks_exact(2 * per_channel).enumerate() {
            let (a, b) = kernels.split_at(per_channel);
            Arch::new().dispatch(Products {
                a,
                b,
                frames: &buf.frames,
                out: &mut buf.products,
            });
            for (p, z) in buf
                .products
                .chunks_exact(4 * STRIDE)
                .zip(buf.signals.chunks_exact_mut(N_MELS))
            {
                pack_pair(p, z);
            }
            self.inverse
                .process_with_scratch(&mut buf.signals, &mut buf.scratch);
            // Channel 2 * pair is the real part of the signals, 2 * pair + 1 the imaginary.
            for (half, channel) in [2 * pair, 2 * pair + 1].into_iter().enumerate() {
                if channel >= self.channels {
                    continue;
                }
                let part = |c: &Complex<f32>| if half == 0 { c.re } else { c.im };
                let row = &mut out[channel * t..(channel + 1) * t];
                for (m, z) in row.iter_mut().zip(buf.signals.chunks_exact(N_MELS)) {
                    *m = z[..self.positions]
                        .iter()
                        .map(part)
                        .fold(f32::NEG_INFINITY, f32::max);
                }
            }
        }
    }
}

/// Work buffers of one thread, for patches of `t` frames.
struct Buffers {
    /// Input frame spectra `[pad + t + rows][re; STRIDE, im; STRIDE]`, the patch's frames
    /// after `pad` zero frames and before zeros, for the kernel rows that reach past its ends.
    frames: Vec<f32>,
    products: Vec<f32>,
    signals: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
}

impl Buffers {
    fn new(kernels: &TimbralKernels, t: usize, pad: usize) -> Self {
        Self {
            frames: vec![0f32; (pad + t + kernels.rows) * 2 * STRIDE],
            products: vec![0f32; t * 4 * STRIDE],
            signals: vec![Complex::default(); t * N_MELS],
            scratch: vec![Complex::default(); kernels.inverse.get_inplace_scratch_len()],
            input: kernels.forward.make_input_vec(),
            spectrum: kernels.forward.make_output_vec(),
        }
    }
}

/// The spectra of two real signals `a` and `b` (given as `[a re, a im, b re, b im]`, each
/// `STRIDE` long) as the full 96-bin spectrum of `a + i b`, whose inverse FFT holds `a` in
/// its real parts and `b` in its imaginary parts.
fn pack_pair(p: &[f32], z: &mut [Complex<f32>]) {
    let (ar, rest) = p.split_at(STRIDE);
    let (ai, rest) = rest.split_at(STRIDE);
    let (br, bi) = rest.split_at(STRIDE);
    let (low, high) = z.split_at_mut(BINS);
    for (k, z) in low.iter_mut().enumerate() {
        *z = Complex::new(ar[k] - bi[k], ai[k] + br[k]);
    }
    // Bins above Nyquist mirror their conjugates: A[96 - k] = conj(A[k]).
    for (k, z) in (BINS..N_MELS).zip(high) {
        let m = N_MELS - k;
        *z = Complex::new(ar[m] + bi[m], br[m] - ai[m]);
    }
}

/// For every output frame `ti`, the sums over kernel rows `r` of kernel spectrum times the
/// spectrum of frame `ti + r` (frames padded at the start) for two channels `a` and `b`: `out`
/// is `[t][a re, a im, b re, b im]`.
struct Products<'a> {
    a: &'a [f32],
    b: &'a [f32],
    frames: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for Products<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // Whole vectors: STRIDE is a multiple of the lane count.
        let x = S::as_simd_f32s(self.frames).0;
        let wa = S::as_simd_f32s(self.a).0;
        let wb = S::as_simd_f32s(self.b).0;
        let (out, _) = S::as_mut_simd_f32s(self.out);
        let k = Kernel {
            x,
            wa,
            wb,
            // Vectors per STRIDE values.
            lanes: x.len() * STRIDE / self.frames.len(),
        };
        let t = out.len() / (4 * k.lanes);
        // Two frames at a time share each kernel load.
        let mut pairs = out.chunks_exact_mut(8 * k.lanes);
        for (i, out) in (&mut pairs).enumerate() {
            k.frames::<S, 2>(simd, 2 * i, out);
        }
        let rest = pairs.into_remainder();
        if !rest.is_empty() {
            k.frames::<S, 1>(simd, t - 1, rest);
        }
    }
}

struct Kernel<'a, V> {
    x: &'a [V],
    wa: &'a [V],
    wb: &'a [V],
    lanes: usize,
}

impl<V: Copy> Kernel<'_, V> {
    /// Output frames `first..first + N` into `out` (`N` frames of 4 x `lanes` vectors).
    #[inline(always)]
    fn frames<S: Simd<f32s = V>, const N: usize>(&self, simd: S, first: usize, out: &mut [V]) {
        let lanes = self.lanes;
        let rows = self.wa.len() / (2 * lanes);
        let zero = simd.splat_f32s(0.0);
        for v in 0..lanes {
            // Real parts as two sums (re x re and im x im), subtracted once at the end.
            let mut acc = [[zero; 6]; N];
            for r in 0..rows {
                let w = r * 2 * lanes + v;
                let (war, wai) = (self.wa[w], self.wa[w + lanes]);
                let (wbr, wbi) = (self.wb[w], self.wb[w + lanes]);
                for (n, [ar, an, ai, br, bn, bi]) in acc.iter_mut().enumerate() {
                    let at = (first + n + r) * 2 * lanes + v;
                    let (xr, xi) = (self.x[at], self.x[at + lanes]);
                    *ar = simd.mul_add_e_f32s(war, xr, *ar);
                    *an = simd.mul_add_e_f32s(wai, xi, *an);
                    *ai = simd.mul_add_e_f32s(war, xi, *ai);
                    *ai = simd.mul_add_e_f32s(wai, xr, *ai);
                    *br = simd.mul_add_e_f32s(wbr, xr, *br);
                    *bn = simd.mul_add_e_f32s(wbi, xi, *bn);
                    *bi = simd.mul_add_e_f32s(wbr, xi, *bi);
                    *bi = simd.mul_add_e_f32s(wbi, xr, *bi);
                }
            }
            for (n, [ar, an, ai, br, bn, bi]) in acc.into_iter().enumerate() {
                let o = &mut out[n * 4 * lanes..];
                o[v] = simd.sub_f32s(ar, an);
                o[lanes + v] = ai;
                o[2 * lanes + v] = simd.sub_f32s(br, bn);
                o[3 * lanes + v] = bi;
            }
        }
    }
}
