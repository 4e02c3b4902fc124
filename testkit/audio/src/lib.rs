//! Audio for the tests and benches, with the standard library only: files crafted byte by byte,
//! tones, and the shared evaluation corpus. No engine: `audiolake-udf`'s tests use it too.

pub mod corpus;
pub mod crafted;
pub mod tone;
