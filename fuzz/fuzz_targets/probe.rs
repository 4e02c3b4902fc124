//! Header probing of arbitrary bytes: the first byte picks the extension hint (mp3, wav, flac,
//! ogg, m4a, aiff or none), the rest is the file. Probing must return a header or an error, and
//! a header's duration and bitrate must be finite and not negative.

#![no_main]

use std::io::Cursor;

use audiolake_fuzz::{extension_and_file, tolerating};
use audiolake_udf::probe::probe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((extension, file)) = extension_and_file(data) else {
        return;
    };
    let source = Box::new(Cursor::new(file.to_vec()));
    let Some(Ok(header)) = tolerating(|| probe(source, extension)) else {
        return;
    };
    for (name, value) in [
        ("duration_s", header.duration_s),
        ("bitrate_kbps", header.bitrate_kbps),
    ] {
        if let Some(v) = value {
            assert!(v.is_finite() && v >= 0.0, "{name} is {v} for {header:?}");
        }
    }
});
