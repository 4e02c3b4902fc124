//! What every target shares: which panics count as findings.
//!
//! Where audiolake catches panics per file (header probing, the blocking task that analyses one
//! file), a panic raised inside a dependency (symphonia, the standard library) becomes an error row in production, so [`tolerating`] lets it unwind silently. A
//! panic located in audiolake's own code is always a finding (it breaks the rule that user
//! data never panics), and so is any panic outside [`tolerating`]: libFuzzer's own hook reports
//! it and aborts.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static TOLERATING: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Installs, once, a panic hook in front of libFuzzer's (which reports and aborts).
fn install_hook() {
    HOOK.call_once(|| {
        let report_and_abort = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let in_dependency = info.location().is_some_and(|l| is_dependency(l.file()));
            if !(TOLERATING.with(Cell::get) && in_dependency) {
                report_and_abort(info);
            }
        }));
    });
}

/// Source files of crates.io dependencies and of the standard library.
fn is_dependency(file: &str) -> bool {
    file.contains("/.cargo/registry/") || file.contains("/.cargo/git/") || file.starts_with("/rustc/")
}

/// Runs `f` as production runs it behind a per-file `catch_unwind`: `None` if a dependency
/// panicked.
pub fn tolerating<T>(f: impl FnOnce() -> T) -> Option<T> {
    install_hook();
    TOLERATING.with(|t| t.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    TOLERATING.with(|t| t.set(false));
    result.ok()
}

/// The extensions a target picks from with its first byte; `None` means no hint.
pub const EXTENSIONS: [Option<&str>; 7] = [
    Some("mp3"),
    Some("wav"),
    Some("flac"),
    Some("ogg"),
    Some("m4a"),
    Some("aiff"),
    None,
];

/// Splits off the first byte as an extension choice.
pub fn extension_and_file(data: &[u8]) -> Option<(Option<&'static str>, &[u8])> {
    let (&first, file) = data.split_first()?;
    Some((EXTENSIONS[usize::from(first) % EXTENSIONS.len()], file))
}
