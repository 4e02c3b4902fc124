//! The musicnn taggers (Pons & Serra, MTG-UPF; ISC license) ported to candle.
//!
//! Tensor names and layouts are those written by `convert_musicnn.py`: NCHW with H = time
//! and W = mel, conv kernels [out, in, kh, kw], mid-end convs as conv1d [out, in, k], and the
//! back-end already reordered for `cat([max, mean])` pooling.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

use crate::logmel::{LogMel, N_MELS};
use crate::temporal::TemporalKernels;
use crate::timbral::TimbralKernels;
use crate::{Error, Result};

/// Default number of patches per forward pass, and the most [`Musicnn::analyze`] runs at once.
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// Number of tags (sigmoid outputs) of a musicnn network.
pub const N_TAGS: usize = 50;
/// Size of the penultimate layer, used as the track embedding.
pub const EMBEDDING_DIM: usize = 200;

const FRONT_IN: usize = 561;
const MID_CHANNELS: usize = 64;
const POOLED: usize = FRONT_IN + 3 * MID_CHANNELS;

/// Which bundled musicnn network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `MTT_musicnn`: trained on MagnaTagATune (tags such as guitar, classical, techno).
    Mtt,
    /// `MSD_musicnn`: trained on the Million Song Dataset (tags such as rock, pop, jazz, 80s).
    Msd,
}

impl Kind {
    fn bundled(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Kind::Mtt => (
                include_bytes!("../weights/mtt_musicnn.safetensors"),
                include_bytes!("../weights/mtt_musicnn.json"),
            ),
            Kind::Msd => (
                include_bytes!("../weights/msd_musicnn.safetensors"),
                include_bytes!("../weights/msd_musicnn.json"),
            ),
        }
    }
}

#[derive(Deserialize)]
struct Metadata {
    labels: Vec<String>,
    preprocess: Preprocess,
    batch_norm_eps: f64,
}

#[derive(Deserialize)]
struct Preprocess {
    sample_rate: u32,
    hop: usize,
    n_mels: usize,
    patch_frames: usize,
}

/// A musicnn network with its preprocessing and labels.
pub struct Musicnn {
    net: Net,
    logmel: LogMel,
    labels: Vec<String>,
    sample_rate: u32,
    patch_frames: usize,
    device: Device,
}

/// Log-mel patches ready for [`Musicnn::forward`]: `len()` patches of `patch_frames` x 96
/// values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Patches {
    data: Vec<f32>,
    len: usize,
    padded: bool,
}

impl Patches {
    /// The patch values, `[len, patch_frames, 96]` row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Number of patches (at least 1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a track gives at least one patch. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the track was shorter than one patch and was zero-padded to one.
    pub fn padded(&self) -> bool {
        self.padded
    }
}

/// Outputs of a forward pass, one row per patch.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Tag probabilities (sigmoid), in [`Musicnn::labels`] order.
    pub taggram: Vec<[f32; N_TAGS]>,
    /// The penultimate layer (after its batch norm).
    pub penultimate: Vec<[f32; EMBEDDING_DIM]>,
}

/// Per-track result.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackTags {
    /// Mean tag probabilities over the patches (musicnn's `top_tags` score).
    pub tags: [f32; N_TAGS],
    /// Penultimate layer averaged over the patches, then L2-normalised.
    pub embedding: [f32; EMBEDDING_DIM],
    /// Number of patches the track gave.
    pub patches: usize,
    /// True when the track was shorter than one patch and was zero-padded.
    pub padded: bool,
}

impl TrackTags {
    /// Averages the patches' outputs (mean tag probabilities, normalised mean embedding).
    pub fn from_output(out: &Output, padded: bool) -> Self {
        let n = out.taggram.len() as f32;
        let mut tags = [0f32; N_TAGS];
        for row in &out.taggram {
            for (t, v) in tags.iter_mut().zip(row) {
                *t += v / n;
            }
        }
        let mut sum = [0f64; EMBEDDING_DIM];
        for row in &out.penultimate {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
        let norm = sum.iter().map(|v| v * v).sum::<f64>().sqrt();
        let mut embedding = [0f32; EMBEDDING_DIM];
        if norm > 0.0 {
            for (e, s) in embedding.iter_mut().zip(sum) {
                *e = (s / norm) as f32;
            }
        }
        TrackTags {
            tags,
            embedding,
            patches: out.taggram.len(),
            padded,
        }
    }
}

impl Musicnn {
    /// Loads a network bundled in this crate (embedded in the binary).
    pub fn load_bundled(kind: Kind, device: &Device) -> Result<Self> {
        let (weights, meta) = kind.bundled();
        Self::from_bytes(weights, meta, device)
    }

    /// Loads compatible weights: a `.safetensors` file and its `.json` metadata as written by
    /// `convert_musicnn.py`.
    pub fn load(
        weights: impl AsRef<Path>,
        metadata: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| Error::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        Self::from_bytes(&read(weights.as_ref())?, &read(metadata.as_ref())?, device)
    }

    fn from_bytes(weights: &[u8], metadata: &[u8], device: &Device) -> Result<Self> {
        let meta: Metadata =
            serde_json::from_slice(metadata).map_err(|e| Error::Metadata(e.to_string()))?;
        if meta.labels.len() != N_TAGS {
            return Err(Error::Metadata(format!(
                "{} labels, the network has {N_TAGS} outputs",
                meta.labels.len()
            )));
        }
        if meta.preprocess.n_mels != N_MELS || meta.preprocess.patch_frames == 0 {
            return Err(Error::Metadata(format!(
                "n_mels {} and patch_frames {}: the network takes {N_MELS} mels and at least one frame",
                meta.preprocess.n_mels, meta.preprocess.patch_frames
            )));
        }
        let vb = VarBuilder::from_slice_safetensors(weights, DType::F32, device)?;
        let pre = vb.pp("preprocess");
        let window = pre.get_unchecked("window")?.to_vec1::<f32>()?;
        let mel_basis = pre
            .get_unchecked("mel_basis")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let logmel = LogMel::new(window, &mel_basis, meta.preprocess.hop)?;
        let net = Net::load(&vb, meta.batch_norm_eps)?;
        Ok(Self {
            net,
            logmel,
            labels: meta.labels,
            sample_rate: meta.preprocess.sample_rate,
            patch_frames: meta.preprocess.patch_frames,
            device: device.clone(),
        })
    }

    /// Tag names, in output order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Sample rate (Hz) that [`Musicnn::logmel`] expects: 16000.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// FFT size of the power spectra that [`Musicnn::logmel_frame`] takes (`n_fft / 2 + 1`
    /// bins): 512.
    pub fn n_fft(&self) -> usize {
        self.logmel.n_bins() * 2 - 2
    }

    /// Frames per patch: 187 (about 3 s).
    pub fn patch_frames(&self) -> usize {
        self.patch_frames
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Log-mel frames [T, 96] of mono samples at [`Musicnn::sample_rate`], T = 1 + len / 256:
    /// centred periodic-Hann STFT with zero padding, as librosa ≥ 0.10 computes it.
    pub fn logmel(&self, samples: &[f32]) -> Vec<[f32; N_MELS]> {
        self.logmel.frames(samples)
    }

    /// Log-mel frame from one power spectrum |X|² of 257 bins (centred periodic-Hann STFT,
    /// n_fft 512, hop 256 at 16 kHz).
    pub fn logmel_frame(&self, power: &[f32]) -> Result<[f32; N_MELS]> {
        self.logmel.frame(power)
    }

    /// Cuts log-mel frames into patches of [`Musicnn::patch_frames`] frames without overlap,
    /// dropping the tail as musicnn does. A track shorter than one patch is zero-padded to one
    /// patch and flagged `padded`.
    pub fn patches(&self, frames: &[[f32; N_MELS]]) -> Patches {
        let n = self.patch_frames;
        let padded = frames.len() < n;
        let len = (frames.len() / n).max(1);
        let mut data: Vec<f32> = frames[..frames.len().min(len * n)]
            .iter()
            .flatten()
            .copied()
            .collect();
        data.resize(len * n * N_MELS, 0.0);
        Patches { data, len, padded }
    }

    /// Runs the network on `patches.len() / (patch_frames * 96)` patches (row-major
    /// `[B, patch_frames, 96]`).
    pub fn forward(&self, patches: &[f32]) -> Result<Output> {
        let per_patch = self.patch_frames * N_MELS;
        if patches.is_empty() || !patches.len().is_multiple_of(per_patch) {
            return Err(Error::Input(format!(
                "{} values is not a whole number of {}x{N_MELS} patches",
                patches.len(),
                self.patch_frames
            )));
        }
        let b = patches.len() / per_patch;
        let x = Tensor::from_slice(patches, (b, self.patch_frames, N_MELS), &self.device)?;
        let (taggram, penultimate) = self.net.forward(&x)?;
        Ok(Output {
            taggram: rows(&taggram)?,
            penultimate: rows(&penultimate)?,
        })
    }

    /// Tags and embedding of one track from its log-mel frames, in passes of at most
    /// [`DEFAULT_BATCH_SIZE`] patches: a pass's activations grow with its patches, and a track's
    /// length is the file's to choose.
    pub fn analyze(&self, frames: &[[f32; N_MELS]]) -> Result<TrackTags> {
        self.analyze_until(frames, &AtomicBool::new(false))
    }

    /// [`Self::analyze`], giving up with [`Error::Cancelled`] before any pass once `stop` is set.
    pub fn analyze_until(&self, frames: &[[f32; N_MELS]], stop: &AtomicBool) -> Result<TrackTags> {
        let patches = self.patches(frames);
        let mut out = Output {
            taggram: Vec::with_capacity(patches.len()),
            penultimate: Vec::with_capacity(patches.len()),
        };
        let per_pass = DEFAULT_BATCH_SIZE * self.patch_frames * N_MELS;
        for pass in patches.data().chunks(per_pass) {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            let part = self.forward(pass)?;
            out.taggram.extend(part.taggram);
            out.penultimate.extend(part.penultimate);
        }
        Ok(TrackTags::from_output(&out, patches.padded()))
    }
}

/// The indices of at most `max` of `total` patches, spread evenly over the track (the centre
/// patch of each of `max` equal stretches); every patch when `max` is 0 or not below `total`.
pub fn sample_patches(total: usize, max: usize) -> Vec<usize> {
    if max == 0 || max >= total {
        return (0..total).collect();
    }
    (0..max).map(|i| (2 * i + 1) * total / (2 * max)).collect()
}

fn rows<const N: usize>(t: &Tensor) -> Result<Vec<[f32; N]>> {
    let v = t.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
    v.into_iter()
        .map(|r| {
            r.try_into().map_err(|r: Vec<f32>| {
                Error::Input(format!("row of {} values, expected {N}", r.len()))
            })
        })
        .collect()
}

/// Inference batch norm folded into a per-channel scale and shift (channels on dim 1).
struct Affine {
    scale: Tensor,
    shift: Tensor,
}

impl Affine {
    fn load(vb: &VarBuilder<'_>, channels: usize, eps: f64) -> Result<Self> {
        let gamma = vb.get(channels, "weight")?;
        let beta = vb.get(channels, "bias")?;
        let mean = vb.get(channels, "running_mean")?;
        let var = vb.get(channels, "running_var")?;
        let scale = gamma.div(&(var + eps)?.sqrt()?)?;
        let shift = beta.sub(&mean.mul(&scale)?)?;
        Ok(Self { scale, shift })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut shape = vec![1; x.rank()];
        shape[1] = self.scale.dim(0)?;
        Ok(x.broadcast_mul(&self.scale.reshape(shape.as_slice())?)?
            .broadcast_add(&self.shift.reshape(shape.as_slice())?)?)
    }
}

/// How a front-end block runs on the CPU.
enum Cpu {
    /// Kernels wider than one mel bin, by FFT along mel.
    Timbral(TimbralKernels),
    /// One mel bin per tap, by FFT along time.
    Temporal(TemporalKernels),
}

/// Front-end block: time padding, conv2d, ReLU, batch norm, max over the mel axis.
///
/// Bias, ReLU and the batch norm act per channel and are monotone, so they are applied after
/// the max, on a tensor as many times smaller as there are mel positions. For a channel with a
/// negative batch-norm scale the max of the output comes from the min of the conv, so those
/// kernels are stored negated and the max is negated back (exact in floating point).
struct FrontBlock {
    /// [C, 1, kh, kw], sign-adjusted.
    weight: Tensor,
    /// The same kernels, prepared for the CPU path.
    cpu: Cpu,
    sign: Tensor,
    bias: Tensor,
    bn: Affine,
    pad: (usize, usize),
}

impl FrontBlock {
    fn load(vb: &VarBuilder<'_>, out: usize, kh: usize, kw: usize, eps: f64) -> Result<Self> {
        let bn = Affine::load(&vb.pp("bn"), out, eps)?;
        let sign = bn.scale.ge(0f32)?.to_dtype(DType::F32)?.affine(2.0, -1.0)?;
        let weight = vb
            .get((out, 1, kh, kw), "conv.weight")?
            .broadcast_mul(&sign.reshape((out, 1, 1, 1))?)?;
        let values = weight.flatten_all()?.to_vec1::<f32>()?;
        let cpu = if kw > 1 {
            Cpu::Timbral(TimbralKernels::new(&values, out, kh, kw)?)
        } else {
            Cpu::Temporal(TemporalKernels::new(values, out, kh)?)
        };
        // Odd kernels pad evenly; TF 'same' puts the extra zero of even kernels after.
        let pad = ((kh - 1) / 2, kh / 2);
        Ok(Self {
            weight,
            cpu,
            sign: sign.reshape((1, out, 1))?,
            bias: vb.get(out, "conv.bias")?.reshape((1, out, 1))?,
            bn,
            pad,
        })
    }

    /// [B, 1, T, 96] -> [B, C, T], with candle's conv2d (any device).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let extreme = x
            .pad_with_zeros(2, self.pad.0, self.pad.1)?
            .conv2d(&self.weight, 0, 1, 1, 1)?
            .max(D::Minus1)?;
        self.finish(&extreme)
    }

    /// Same as `forward` for `b` patches of `t` frames given as host values [b, t, 96].
    fn forward_cpu(&self, x: &[f32], b: usize, t: usize) -> Result<Tensor> {
        let (maxed, channels) = match &self.cpu {
            Cpu::Timbral(k) => (k.max_over_mel(x, b, t, self.pad.0), k.channels()),
            Cpu::Temporal(k) => (k.max_over_mel(x, b, t, self.pad.0), k.channels()),
        };
        self.finish(&Tensor::from_vec(maxed, (b, channels, t), &Device::Cpu)?)
    }

    /// Sign, bias, ReLU and batch norm on the max over mel [B, C, T].
    fn finish(&self, extreme: &Tensor) -> Result<Tensor> {
        let y = extreme
            .broadcast_mul(&self.sign)?
            .broadcast_add(&self.bias)?
            .relu()?;
        self.bn.forward(&y)
    }
}

/// Mid-end block: conv1d over time (kernel 7, same padding), ReLU, batch norm.
///
/// The convolution runs as one matmul of the time-major input by the seven taps' kernels side
/// by side, then a sum of the seven products, each shifted by its tap; on the CPU that takes
/// a fraction of the time of candle's conv1d, which was a fifth of the network's time.
struct MidBlock {
    /// [inputs, TAPS * 64]: tap r's kernel in columns r * 64 .. (r + 1) * 64.
    taps: Tensor,
    bias: Tensor,
    bn: Affine,
}

impl MidBlock {
    const TAPS: usize = 7;

    fn load(vb: &VarBuilder<'_>, n: usize, inputs: usize, eps: f64) -> Result<Self> {
        let weight = vb.get(
            (MID_CHANNELS, inputs, Self::TAPS),
            &format!("conv{n}.weight"),
        )?;
        Ok(Self {
            taps: weight
                .permute((1, 2, 0))?
                .reshape((inputs, Self::TAPS * MID_CHANNELS))?
                .contiguous()?,
            bias: vb
                .get(MID_CHANNELS, &format!("conv{n}.bias"))?
                .reshape((1, MID_CHANNELS, 1))?,
            bn: Affine::load(&vb.pp(format!("bn{n}")), MID_CHANNELS, eps)?,
        })
    }

    /// [B, C, T] -> [B, 64, T]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let half = Self::TAPS / 2;
        let padded = t + Self::TAPS - 1;
        let rows = x
            .transpose(1, 2)?
            .pad_with_zeros(1, half, half)?
            .contiguous()?
            .reshape((b * padded, c))?;
        let products = rows
            .matmul(&self.taps)?
            .reshape((b, padded, Self::TAPS * MID_CHANNELS))?;
        // Output frame t, tap r reads padded row t + r.
        let mut y = products.narrow(1, 0, t)?.narrow(2, 0, MID_CHANNELS)?;
        for r in 1..Self::TAPS {
            y = (y + products
                .narrow(1, r, t)?
                .narrow(2, r * MID_CHANNELS, MID_CHANNELS)?)?;
        }
        let y = y.transpose(1, 2)?.broadcast_add(&self.bias)?.relu()?;
        self.bn.forward(&y)
    }
}

struct Net {
    bn_input: Affine,
    front: Vec<FrontBlock>,
    mid: [MidBlock; 3],
    bn_pool: Affine,
    dense: Linear,
    bn_dense: Affine,
    output: Linear,
}

impl Net {
    fn load(vb: &VarBuilder<'_>, eps: f64) -> Result<Self> {
        let fe = vb.pp("frontend");
        let me = vb.pp("midend");
        let be = vb.pp("backend");
        let front = [
            ("timbral_f74", 204, 7, 38),
            ("timbral_f77", 204, 7, 67),
            ("temporal_s1", 51, 128, 1),
            ("temporal_s2", 51, 64, 1),
            ("temporal_s3", 51, 32, 1),
        ]
        .into_iter()
        .map(|(name, out, kh, kw)| FrontBlock::load(&fe.pp(name), out, kh, kw, eps))
        .collect::<Result<Vec<_>>>()?;
        let linear = |name: &str, inputs: usize, outputs: usize| -> Result<Linear> {
            let v = be.pp(name);
            Ok(Linear::new(
                v.get((outputs, inputs), "weight")?,
                Some(v.get(outputs, "bias")?),
            ))
        };
        Ok(Self {
            bn_input: Affine::load(&fe.pp("bn_input"), 1, eps)?,
            front,
            mid: [
                MidBlock::load(&me, 1, FRONT_IN, eps)?,
                MidBlock::load(&me, 2, MID_CHANNELS, eps)?,
                MidBlock::load(&me, 3, MID_CHANNELS, eps)?,
            ],
            bn_pool: Affine::load(&be.pp("bn_pool"), 2 * POOLED, eps)?,
            dense: linear("dense", 2 * POOLED, EMBEDDING_DIM)?,
            bn_dense: Affine::load(&be.pp("bn_dense"), EMBEDDING_DIM, eps)?,
            output: linear("output", EMBEDDING_DIM, N_TAGS)?,
        })
    }

    /// [B, T, 96] log-mel -> (taggram [B, 50], penultimate [B, 200])
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.bn_input.forward(&x.unsqueeze(1)?)?;
        let fronts = if x.device().is_cpu() {
            let (b, _, t, _) = x.dims4()?;
            let host = x.flatten_all()?.to_vec1::<f32>()?;
            self.front
                .iter()
                .map(|f| f.forward_cpu(&host, b, t))
                .collect::<Result<Vec<_>>>()?
        } else {
            self.front
                .iter()
                .map(|f| f.forward(&x))
                .collect::<Result<Vec<_>>>()?
        };
        let front = Tensor::cat(&fronts, 1)?;
        let c1 = self.mid[0].forward(&front)?;
        let c2 = (self.mid[1].forward(&c1)? + &c1)?;
        let c3 = (self.mid[2].forward(&c2)? + &c2)?;
        let mid = Tensor::cat(&[&front, &c1, &c2, &c3], 1)?;
        let pooled = Tensor::cat(&[mid.max(2)?, mid.mean(2)?], 1)?;
        let pooled = self.bn_pool.forward(&pooled)?;
        let hidden = self.dense.forward(&pooled)?.relu()?;
        let penultimate = self.bn_dense.forward(&hidden)?;
        let taggram = candle_nn::ops::sigmoid(&self.output.forward(&penultimate)?)?;
        Ok((taggram, penultimate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_patches_are_spread_evenly_and_all_is_all() {
        assert_eq!(sample_patches(10, 4), vec![1, 3, 6, 8]);
        assert_eq!(sample_patches(100, 2), vec![25, 75]);
        assert_eq!(sample_patches(7, 1), vec![3]);
        assert_eq!(sample_patches(3, 8), vec![0, 1, 2]);
        assert_eq!(sample_patches(5, 0), vec![0, 1, 2, 3, 4]);
        assert_eq!(sample_patches(0, 4), Vec::<usize>::new());
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn bundled_net() -> (Net, VarBuilder<'static>) {
        let (weights, _) = Kind::Mtt.bundled();
        let vb = VarBuilder::from_slice_safetensors(weights, DType::F32, &Device::Cpu).unwrap();
        (Net::load(&vb, 1e-3).unwrap(), vb)
    }

    fn signal(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (i * 7919 % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    #[test]
    fn cpu_front_end_equals_conv2d() {
        let (net, _) = bundled_net();
        // 40 frames are fewer than the 128 taps, so every padding edge case is hit; 187 is a
        // whole patch.
        for (b, t) in [(2, 40), (1, 187)] {
            let x = signal(b * t * N_MELS);
            let input = Tensor::from_slice(&x, (b, 1, t, N_MELS), &Device::Cpu).unwrap();
            for (i, block) in net.front.iter().enumerate() {
                let conv = block.forward(&input).unwrap();
                let diff = max_abs_diff(&conv, &block.forward_cpu(&x, b, t).unwrap());
                // Relative to the largest output: the FFT's rounding grows with the values.
                let scale = max_abs_diff(&conv, &conv.zeros_like().unwrap());
                assert!(
                    diff < 1e-5 * scale,
                    "block {i}, {t} frames: max abs diff {diff}, largest output {scale}"
                );
            }
        }
    }

    #[test]
    fn mid_end_equals_conv1d() {
        let (net, vb) = bundled_net();
        for (n, inputs) in [(1, FRONT_IN), (2, MID_CHANNELS)] {
            let block = &net.mid[n - 1];
            let x =
                Tensor::from_vec(signal(2 * inputs * 50), (2, inputs, 50), &Device::Cpu).unwrap();
            let weight = vb
                .pp("midend")
                .get((MID_CHANNELS, inputs, 7), &format!("conv{n}.weight"))
                .unwrap();
            let conv = x
                .conv1d(&weight, 3, 1, 1, 1)
                .unwrap()
                .broadcast_add(&block.bias)
                .unwrap()
                .relu()
                .unwrap();
            let expected = block.bn.forward(&conv).unwrap();
            let diff = max_abs_diff(&expected, &block.forward(&x).unwrap());
            assert!(diff < 1e-4, "conv{n}: max abs diff {diff}");
        }
    }
}
