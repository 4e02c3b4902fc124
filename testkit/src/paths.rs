//! Where the workspace and its test data are: the fixtures (`tests/data`) and the music
//! (`tests/music`).

use std::path::{Path, PathBuf};

/// The workspace root, canonical.
pub fn workspace() -> PathBuf {
    // This crate is `testkit` in the workspace.
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
}

/// The fixtures folder, `tests/data`, canonical.
pub fn fixtures() -> PathBuf {
    std::fs::canonicalize(workspace().join("tests/data")).unwrap()
}

/// The music folder, `tests/music` (four songs and a broken MP3), canonical.
pub fn music() -> PathBuf {
    std::fs::canonicalize(workspace().join("tests/music")).unwrap()
}
