//! What audiolake's SQL functions and analysis columns compute: probing audio headers and tags,
//! decoding, feature extraction, vector distances and trigram similarity. Nothing here knows about DataFusion.

pub mod decode;
pub mod features;
mod lanes;
pub mod limits;
pub mod probe;
pub mod resample;
pub mod samples;
pub mod stored_header;
pub mod trgm;
pub mod vector;
