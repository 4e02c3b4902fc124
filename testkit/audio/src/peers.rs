//! Running the Python peers in `udf/benches/peers/` (essentia, librosa) and reading their JSON
//! lines. A peer that is not installed is reported with how to install it, never fatal.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The exit status the peer scripts use when their package cannot be imported.
const MISSING: i32 = 3;

/// The Python to run the peers with: `AUDIOLAKE_PYTHON`, else `python3`.
fn python() -> PathBuf {
    std::env::var_os("AUDIOLAKE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into())
}

fn script(peer: &str) -> PathBuf {
    // This crate is `testkit/audio` in the workspace.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    workspace.join(format!("udf/benches/peers/{peer}_peer.py"))
}

fn install_hint(peer: &str) {
    println!(
        "{peer}: not installed for {}. Install the peers with\n  \
         pip install -r udf/benches/peers/requirements.txt\n\
         or point AUDIOLAKE_PYTHON at a Python that has them.",
        python().display()
    );
}

/// Gives the numeric libraries of a Python peer one thread each, so that one process uses one
/// core.
pub fn one_thread(command: &mut Command) {
    for var in [
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
    ] {
        command.env(var, "1");
    }
}

/// Runs `peer` (`essentia` or `librosa`) in `mode` on `files` and returns its JSON lines, or
/// `None` after printing why there are none.
pub fn run(peer: &str, mode: &str, files: &[PathBuf]) -> Option<Vec<Value>> {
    let mut command = Command::new(python());
    command
        .arg(script(peer))
        .arg(mode)
        .args(files)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    one_thread(&mut command);
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => {
            println!("{peer}: cannot run {}: {e}", python().display());
            install_hint(peer);
            return None;
        }
    };
    if output.status.code() == Some(MISSING) {
        install_hint(peer);
        return None;
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        println!("{peer}: failed ({}):", output.status);
        for line in tail.iter().rev() {
            println!("  {line}");
        }
        return None;
    }
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Some(lines)
}
