//! What audiolake's SQL functions and analysis columns compute: probing audio headers and tags,
//! decoding, and feature extraction. Nothing here knows about DataFusion.

pub mod decode;
pub mod features;
pub mod probe;
pub mod resample;
pub mod samples;
