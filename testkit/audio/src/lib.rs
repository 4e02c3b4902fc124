//! Audio for the tests and benches: files crafted byte by byte, tones, the shared evaluation
//! corpus, and the Python peers the benches compare with. No engine: `audiolake-udf`'s tests
//! use it too.

pub mod corpus;
pub mod crafted;
pub mod peers;
pub mod tone;
