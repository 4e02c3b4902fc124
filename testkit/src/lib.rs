//! Helpers shared by the tests of the workspace, one module per job. A library, so that every
//! test binary takes the subset it needs and nothing is copied between test files.
//!
//! Test audio (crafted files, tones, the shared corpus) is in `audiolake-testkit-audio`
//! (`audio/`), which needs no engine, so that `audiolake-udf`'s tests can use it too: the engine
//! depends on `audiolake-udf`.

pub mod layout;
pub mod moto;
pub mod paths;
pub mod pgserver;
pub mod query;
pub mod store;
