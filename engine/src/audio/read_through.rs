//! Analysis through the store: stored results first, then stored results of the same content
//! under another name, then one decode for whatever is still missing, written back.
//!
//! The one place that joins the audio readers and the feature store: it imports both, and
//! neither imports it back (the AUDIO scan and the path functions call it).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use audiolake_udf::features::{AnalysisOutput, GroupResult, DECODE_GROUP};
use datafusion::error::Result;
use datafusion::physical_plan::metrics::Count;
use object_store::{ObjectMeta, ObjectStore};

use super::read::analyze_object;
use super::source::ReadRecord;
use crate::clock::now_micros;
use crate::store::{group_schema, stored_for, Decoded, FeatureStore, Fingerprint, StoredRow};

/// The analysis of `meta` for `groups` (none: the decode columns only), from the store where
/// it can be. `listed`: every path of the scan's listing, when there is one. The inner result is the file's: an error there is a row's error. The outer one
/// is the store's: failing to publish results fails the query rather than losing them.
pub(crate) async fn analyze_cached(
    features: &FeatureStore,
    store: Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    url: &str,
    groups: &[&'static str],
    listed: Option<&HashSet<String>>,
    bytes_read: Count,
) -> Result<std::result::Result<AnalysisOutput, String>> {
    let wanted = stored_for(groups);
    let file = Fingerprint::of(meta, url);
    let mut found: Vec<(&'static str, Arc<StoredRow>)> = Vec::new();
    let mut missing: Vec<&'static str> = Vec::new();
    for &group in &wanted {
        match features.lookup(group, &file) {
            Some(row) => found.push((group, row)),
            None => missing.push(group),
        }
    }
    let mut to_store: Vec<(&'static str, StoredRow)> = Vec::new();

    // A renamed, copied or touched file: same content, results known under another key.
    if missing
        .iter()
        .any(|g| features.may_be_copy(g, &file, listed))
    {
        let hash = ReadRecord::default()
            .content_hash(store.as_ref(), &meta.location, meta.size, &bytes_read)
            .await;
        if let Ok(hash) = hash {
            missing.retain(|&group| match features.by_hash(group, &hash) {
                Some(row) => {
                    let row = row.for_file(file.clone(), now_micros());
                    to_store.push((group, row.clone()));
                    found.push((group, Arc::new(row)));
                    false
                }
                None => true,
            });
        }
    }

    let mut analyzed = None;
    if !missing.is_empty() {
        let record = ReadRecord::default();
        let decode: Vec<&'static str> = missing
            .iter()
            .copied()
            .filter(|&g| g != DECODE_GROUP)
            .collect();
        let result = analyze_object(
            Arc::clone(&store),
            meta.clone(),
            decode,
            bytes_read.clone(),
            Some(record.clone()),
        )
        .await;
        // A failed read says nothing about the file: report it, keep nothing.
        if record.failed() {
            features.stats().analyzed.fetch_add(1, Ordering::Relaxed);
            return Ok(result);
        }
        let hash = record
            .content_hash(store.as_ref(), &meta.location, meta.size, &bytes_read)
            .await
            .ok();
        let at = now_micros();
        for &group in &missing {
            let outcome = match &result {
                Ok(out) => Ok((
                    decoded(out),
                    out.group(group)
                        .map(|g| g.values.clone())
                        .unwrap_or_default(),
                )),
                Err(e) => Err(e.clone()),
            };
            to_store.push((
                group,
                StoredRow {
                    fingerprint: file.clone(),
                    content_hash: hash.clone(),
                    analyzed_at: at,
                    outcome,
                },
            ));
        }
        analyzed = Some(result);
    }

    let counter = match (&analyzed, to_store.is_empty()) {
        (Some(_), _) => &features.stats().analyzed,
        (None, false) => &features.stats().reused,
        (None, true) => &features.stats().hits,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if !to_store.is_empty() && features.add(to_store) {
        features.flush().await?;
    }
    Ok(assemble(groups, found, analyzed))
}

fn decoded(out: &AnalysisOutput) -> Decoded {
    Decoded {
        duration_s: out.decoded_duration_s,
        errors: i64::try_from(out.decode_errors).unwrap_or(i64::MAX),
        sample_rate: i32::try_from(out.sample_rate).unwrap_or(0),
        channels: i32::try_from(out.channels).unwrap_or(0),
    }
}

/// One analysis from stored rows and a fresh decode, groups in the order asked for.
fn assemble(
    groups: &[&'static str],
    found: Vec<(&'static str, Arc<StoredRow>)>,
    analyzed: Option<std::result::Result<AnalysisOutput, String>>,
) -> std::result::Result<AnalysisOutput, String> {
    let fresh = analyzed.transpose()?;
    let mut stored = Vec::with_capacity(found.len());
    for (group, row) in found {
        match &row.outcome {
            Ok((decoded, values)) => stored.push((group, decoded.clone(), values.clone())),
            Err(e) => return Err(e.clone()),
        }
    }
    let decoded = match (&fresh, stored.first()) {
        (Some(out), _) => decoded(out),
        (None, Some((_, d, _))) => d.clone(),
        (None, None) => unreachable!("every wanted group is found or analysed"),
    };
    let results = groups
        .iter()
        .filter_map(|&name| {
            if let Some(g) = fresh.as_ref().and_then(|out| out.group(name)) {
                return Some(g.clone());
            }
            let (_, _, values) = stored.iter().find(|(g, _, _)| *g == name)?;
            let schema = group_schema(name)?;
            Some(GroupResult {
                name: schema.name,
                version: schema.version,
                fields: schema.fields,
                values: values.clone(),
            })
        })
        .collect();
    Ok(AnalysisOutput {
        groups: results,
        decoded_duration_s: decoded.duration_s,
        decode_errors: u64::try_from(decoded.errors).unwrap_or(0),
        sample_rate: u32::try_from(decoded.sample_rate).unwrap_or(0),
        channels: usize::try_from(decoded.channels).unwrap_or(0),
        stages: Default::default(),
    })
}
