//! Pretrained audio networks for audiolake, run with candle.
//!
//! [`Musicnn`] tags music with the musicnn networks (MagnaTagATune or Million Song Dataset
//! tags) and gives a 200-d embedding per track. It works on log-mel frames, which it computes
//! either from mono 16 kHz samples ([`Musicnn::logmel`]) or from power spectra that the caller
//! already has ([`Musicnn::logmel_frame`]). [`Batcher`] shares one network between threads
//! and packs patches of many tracks into each forward pass.
//!
//! Networks run on the CPU by default; build with `--features cuda` to run them on a GPU
//! chosen with [`parse_device`].

mod batcher;
mod logmel;
mod musicnn;
mod temporal;
mod timbral;

pub use batcher::Batcher;
pub use candle_core::Device;
pub use logmel::N_MELS;
pub use musicnn::{
    sample_patches, Kind, Musicnn, Output, Patches, TrackTags, DEFAULT_BATCH_SIZE, EMBEDDING_DIM,
    N_TAGS,
};

use std::path::PathBuf;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A GPU was asked for, but this build has no CUDA support.
    #[error("audiolake was built without the cuda feature; rebuild with --features cuda")]
    CudaNotBuilt,
    /// The CUDA device could not be opened.
    #[error("CUDA device {index} is not available: {reason}")]
    CudaUnavailable {
        /// Device ordinal that was asked for.
        index: usize,
        /// What the driver said.
        reason: String,
    },
    /// A device string that is none of `cpu`, `cuda`, `cuda:N`.
    #[error("unknown device {0:?}: expected cpu, cuda or cuda:N")]
    UnknownDevice(String),
    /// A weights or metadata file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metadata JSON is malformed or does not fit the network.
    #[error("invalid musicnn metadata: {0}")]
    Metadata(String),
    /// Loading weights or running the network failed in candle.
    #[error("musicnn: {0}")]
    Candle(#[from] candle_core::Error),
    /// Input whose size does not fit the network or the preprocessing.
    #[error("invalid input: {0}")]
    Input(String),
    /// The batcher's worker failed on a pass that held this track's patches.
    #[error("musicnn batch failed: {0}")]
    Batch(String),
    /// The batcher's worker thread is gone (it panicked).
    #[error("the musicnn batcher has stopped")]
    BatcherStopped,
    /// The caller's stop flag was set before the track's last pass.
    #[error("the musicnn analysis was cancelled")]
    Cancelled,
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Parses a device name: `cpu`, `cuda` (device 0) or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let index = if name.eq_ignore_ascii_case("cuda") {
        0
    } else {
        match name.split_once(':') {
            Some((kind, n)) if kind.eq_ignore_ascii_case("cuda") => n
                .parse::<usize>()
                .map_err(|_| Error::UnknownDevice(name.to_string()))?,
            _ => return Err(Error::UnknownDevice(name.to_string())),
        }
    };
    cuda_device(index)
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<Device> {
    Device::new_cuda(index).map_err(|e| Error::CudaUnavailable {
        index,
        reason: e.to_string(),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_index: usize) -> Result<Device> {
    Err(Error::CudaNotBuilt)
}
