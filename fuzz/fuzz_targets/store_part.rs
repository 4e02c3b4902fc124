//! Files read back from the store: the first byte picks the reader, the rest is the file.
//! 0: a feature-store Parquet part, read against the group named by the second byte;
//! 1: a catalog table record; 2: an index definition (its parameters then validated);
//! 3: an index build (the HNSW index file). Each must be read or refused with an
//! error; a definition the reader accepts must survive a write and a read unchanged.

#![no_main]

use audiolake_engine::index::{parse_definition, HnswIndex};
use audiolake_engine::{parse_part, parse_record};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// The stored groups: the feature groups and the decode columns.
const GROUPS: [&str; 7] = [
    "rhythm", "tonal", "loudness", "spectral", "timbre", "musicnn", "decode",
];

fuzz_target!(|data: &[u8]| {
    let Some((&kind, file)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let Some((&group, part)) = file.split_first() else {
                return;
            };
            let group = GROUPS[usize::from(group) % GROUPS.len()];
            let _ = parse_part(group, Bytes::copy_from_slice(part));
        }
        1 => {
            if let Ok(record) = parse_record(file) {
                let json = serde_json::to_vec(&record).expect("a record serialises");
                assert_eq!(parse_record(&json).ok(), Some(record));
            }
        }
        2 => {
            if let Ok(definition) = parse_definition(file) {
                let _ = definition.params.validate();
                let json = serde_json::to_vec(&definition).expect("a definition serialises");
                let back = parse_definition(&json).expect("a written definition reads back");
                assert_eq!(
                    serde_json::to_vec(&back).expect("a definition serialises"),
                    json
                );
            }
        }
        _ => {
            // The loader checks every length, count and link itself: any panic is a finding.
            let _ = HnswIndex::from_bytes(file);
        }
    }
});
