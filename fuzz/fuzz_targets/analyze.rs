//! Decoding and analysing arbitrary bytes: the first byte picks the extension hint, the second
//! which DSP groups run (a bit each: rhythm, tonal, loudness, spectral, timbre; none set means
//! all), the rest is the file. The analysis must return results or an error, and every group's
//! values must fit its declared Arrow fields (as the audio table's columns need).

#![no_main]

use std::io::Cursor;

use audiolake_fuzz::{extension_and_file, tolerating};
use audiolake_udf::features::{analyze, to_arrays};
use libfuzzer_sys::fuzz_target;

/// Longer files only take longer: their bytes go through the same code.
const MAX_FILE: usize = 1 << 16;

/// The groups that need no model weights.
const GROUPS: [&str; 5] = ["rhythm", "tonal", "loudness", "spectral", "timbre"];

fuzz_target!(|data: &[u8]| {
    let Some((extension, rest)) = extension_and_file(data) else {
        return;
    };
    let Some((&mask, file)) = rest.split_first() else {
        return;
    };
    if file.len() > MAX_FILE {
        return;
    }
    let mut groups: Vec<&str> = GROUPS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, g)| *g)
        .collect();
    if groups.is_empty() {
        groups = GROUPS.to_vec();
    }
    let source = Box::new(Cursor::new(file.to_vec()));
    let Some(Ok(output)) = tolerating(|| analyze(source, extension, &groups)) else {
        return;
    };
    for name in &groups {
        let group = output.group(name).expect("every asked group has a result");
        if let Err(e) = to_arrays(&group.fields, &[Some(group)]) {
            panic!("group {name} produced values its fields cannot hold: {e}");
        }
    }
});
