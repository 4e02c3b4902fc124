//! Streaming mono resampling on rubato's FFT resampler, in fixed input chunks.
//!
//! Memory is bounded by one chunk on each side. The resampler's startup delay is dropped and
//! the tail flushed, so output sample `n` lines up with input time `n / rate_out` and the
//! output length is `ceil(input_len * rate_out / rate_in)`.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use crate::limits::MAX_SAMPLE_RATE;

/// Input frames per resampler call: small enough to stay in cache, big enough for the FFT.
const CHUNK: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("cannot resample from {from} Hz to {to} Hz: {message}")]
    Construction { from: u32, to: u32, message: String },
    #[error("resampling failed: {0}")]
    Process(String),
}

/// Converts a stream of mono chunks from one sample rate to another.
pub struct StreamResampler {
    inner: Option<Box<Fft<f32>>>,
    ratio: f64,
    pending: Vec<f32>,
    out: Vec<f32>,
    to_skip: usize,
    consumed: u64,
    emitted: u64,
}

impl StreamResampler {
    /// Both rates must lie in 1..=[`MAX_SAMPLE_RATE`]: the FFT sizes are `rate / gcd(from, to)`,
    /// so an unchecked rate could ask for gigabytes.
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        if ![from, to].iter().all(|r| (1..=MAX_SAMPLE_RATE).contains(r)) {
            return Err(ResampleError::Construction {
                from,
                to,
                message: format!("rates must lie between 1 and {MAX_SAMPLE_RATE} Hz"),
            });
        }
        let inner = if from == to {
            None
        } else {
            let fft = Fft::<f32>::new(from as usize, to as usize, CHUNK, 1, FixedSync::Input)
                .map_err(|e| ResampleError::Construction {
                    from,
                    to,
                    message: e.to_string(),
                })?;
            Some(Box::new(fft))
        };
        let to_skip = inner.as_ref().map_or(0, |r| r.output_delay());
        let out_len = inner.as_ref().map_or(0, |r| r.output_frames_max());
        Ok(Self {
            inner,
            ratio: f64::from(to) / f64::from(from),
            pending: Vec::with_capacity(CHUNK),
            out: vec![0.0; out_len],
            to_skip,
            consumed: 0,
            emitted: 0,
        })
    }

    /// Resamples `input`, handing finished output to `sink` in pieces.
    pub fn process(
        &mut self,
        mut input: &[f32],
        sink: &mut dyn FnMut(&[f32]),
    ) -> Result<(), ResampleError> {
        if self.inner.is_none() {
            sink(input);
            return Ok(());
        }
        while !input.is_empty() {
            let take = (CHUNK - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == CHUNK {
                self.run_chunk(CHUNK, sink)?;
                self.pending.clear();
            }
        }
        Ok(())
    }

    /// Flushes the buffered input and the resampler's delay line.
    pub fn finish(&mut self, sink: &mut dyn FnMut(&[f32])) -> Result<(), ResampleError> {
        if self.inner.is_none() {
            return Ok(());
        }
        let partial = self.pending.len();
        self.pending.resize(CHUNK, 0.0);
        self.run_chunk(partial, sink)?;
        self.pending.clear();
        self.pending.resize(CHUNK, 0.0);
        let wanted = (self.consumed as f64 * self.ratio).ceil() as u64;
        while self.emitted < wanted {
            self.run_chunk(0, sink)?;
        }
        self.pending.clear();
        Ok(())
    }

    fn run_chunk(
        &mut self,
        valid: usize,
        sink: &mut dyn FnMut(&[f32]),
    ) -> Result<(), ResampleError> {
        let Some(resampler) = self.inner.as_mut() else {
            return Ok(());
        };
        let input = InterleavedSlice::new(&self.pending[..], 1, CHUNK)
            .map_err(|e| ResampleError::Process(e.to_string()))?;
        let out_frames = self.out.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out[..], 1, out_frames)
            .map_err(|e| ResampleError::Process(e.to_string()))?;
        let indexing = (valid < CHUNK).then(|| Indexing::new().partial_len(valid));
        let (_, produced) = resampler
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| ResampleError::Process(e.to_string()))?;
        self.consumed += valid as u64;
        let skip = self.to_skip.min(produced);
        self.to_skip -= skip;
        // Past the input's end only emit what the input's length calls for.
        let wanted = (self.consumed as f64 * self.ratio).ceil() as u64;
        let room = if valid < CHUNK {
            wanted.saturating_sub(self.emitted) as usize
        } else {
            usize::MAX
        };
        let end = produced.min(skip.saturating_add(room));
        if end > skip {
            sink(&self.out[skip..end]);
            self.emitted += (end - skip) as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resample_all(input: &[f32], from: u32, to: u32, piece: usize) -> Vec<f32> {
        let mut r = StreamResampler::new(from, to).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            r.process(chunk, &mut |s| out.extend_from_slice(s)).unwrap();
        }
        r.finish(&mut |s| out.extend_from_slice(s)).unwrap();
        out
    }

    #[test]
    fn length_and_alignment_are_kept() {
        let from = 44_100;
        let to = 22_050;
        // A 441 Hz sine: after resampling its phase must line up with the output clock.
        let input: Vec<f32> = (0..from * 2 + 123)
            .map(|n| (2.0 * std::f32::consts::PI * 441.0 * n as f32 / from as f32).sin())
            .collect();
        let out = resample_all(&input, from, to, 777);
        let expected_len = (input.len() as f64 * 0.5).ceil() as usize;
        assert_eq!(out.len(), expected_len);
        let max_err = (2000..20_000)
            .map(|n| {
                let want = (2.0 * std::f32::consts::PI * 441.0 * n as f32 / to as f32).sin();
                (out[n] - want).abs()
            })
            .fold(0.0f32, f32::max);
        assert!(max_err < 0.01, "max error {max_err}");
    }

    #[test]
    fn absurd_rates_are_refused_before_any_allocation() {
        let err = StreamResampler::new(4_294_967_291, 22_050).err().unwrap();
        assert_eq!(
            err.to_string(),
            "cannot resample from 4294967291 Hz to 22050 Hz: rates must lie between 1 and 768000 Hz"
        );
        assert!(StreamResampler::new(44_100, 0).is_err());
    }

    #[test]
    fn same_rate_passes_through() {
        let input: Vec<f32> = (0..5000).map(|n| n as f32).collect();
        assert_eq!(resample_all(&input, 48_000, 48_000, 999), input);
    }
}
