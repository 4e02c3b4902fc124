//! Analysis through the store: stored results first, then stored results of the same content
//! under another name, then one decode for whatever is still missing, written back. Headers
//! likewise: the stored header first, else one probe, written back.
//!
//! The one place that joins the audio readers and the feature store: it imports both, and
//! neither imports it back (the AUDIO scan and the path functions call it).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use audiolake_udf::features::{AnalysisOptions, AnalysisOutput, GroupResult, DECODE_GROUP};
use audiolake_udf::probe::AudioHeader;
use audiolake_udf::stored_header::{from_values, to_values, HEADER_GROUP};
use datafusion::error::Result;
use datafusion::physical_plan::metrics::Count;
use object_store::{ObjectMeta, ObjectStore};

use super::read::{analyze_object, probe_object};
use super::source::ReadRecord;
use crate::clock::now_micros;
use crate::store::{
    group_schema, stored_for, Buckets, Decoded, FeatureStore, Fingerprint, StoredRow,
};

/// What to analyse: the groups (none: the decode columns only) and the options they run with.
#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    pub groups: &'a [&'static str],
    pub options: AnalysisOptions,
}

impl Request<'_> {
    /// Whether a stored row of `group` is what this request would compute.
    fn reuses(&self, group: &str, row: &StoredRow) -> bool {
        match &row.outcome {
            Ok((Some(_), values)) => self.options.reuses(group, values),
            // An analysis always says what decoding measured: this row is not one.
            Ok((None, _)) => false,
            // The file failed whatever the options.
            Err(_) => true,
        }
    }
}

/// What the store knows of the scan a file is read for.
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// Every path of the scan's listing, when there is one: a stored file of the same size
    /// that is no longer listed may have been renamed.
    pub listed: Option<&'a HashSet<String>>,
    /// The buckets of the scan's files: rows are published with the rows of the same buckets.
    pub buckets: Buckets,
}

impl Scope<'_> {
    /// A file read on its own, by a path function.
    pub const ALONE: Scope<'static> = Scope {
        listed: None,
        buckets: Buckets::ALL,
    };
}

/// The analysis of `meta` for `request`, from the store where it can be, for a scan of
/// `scope`. The inner result is the file's: an error there is
/// a row's error. The outer one is the store's: failing to publish results fails the query
/// rather than losing them.
pub(crate) async fn analyze_cached(
    features: &FeatureStore,
    store: Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    url: &str,
    request: Request<'_>,
    scope: Scope<'_>,
    bytes_read: Count,
) -> Result<std::result::Result<AnalysisOutput, String>> {
    let groups = request.groups;
    let wanted = stored_for(groups);
    let file = Fingerprint::of(meta, url);
    let mut found: Vec<(&'static str, Arc<StoredRow>)> = Vec::new();
    let mut missing: Vec<&'static str> = Vec::new();
    // Groups stored for this very file, but made with other options: no copy has them either.
    let mut other_options = false;
    for &group in &wanted {
        match features.lookup(group, &file) {
            Some(row) if request.reuses(group, &row) => found.push((group, row)),
            Some(_) => {
                other_options = true;
                missing.push(group);
            }
            None => missing.push(group),
        }
    }
    let mut to_store: Vec<(&'static str, StoredRow)> = Vec::new();

    // A renamed, copied or touched file: same content, results known under another key.
    if !other_options
        && missing
            .iter()
            .any(|g| features.may_be_copy(g, &file, scope.listed))
    {
        let hash = ReadRecord::default()
            .content_hash(store.as_ref(), &meta.location, meta.size, &bytes_read)
            .await;
        if let Ok(hash) = hash {
            missing.retain(|&group| match features.by_hash(group, &hash) {
                Some(row) if request.reuses(group, &row) => {
                    let row = row.for_file(file.clone(), now_micros());
                    to_store.push((group, row.clone()));
                    found.push((group, Arc::new(row)));
                    false
                }
                _ => true,
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
            request.options,
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
                    Some(decoded(out)),
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
    if !to_store.is_empty() && features.add(to_store, scope.buckets) {
        features.flush().await?;
    }
    Ok(assemble(groups, found, analyzed))
}

/// The header and tags of `meta`, from the store where they are (the scan refreshed the
/// `header` group), published with the rows of the scan's `buckets`. As for analyses, a read that failed is reported and not stored, and the
/// outer error is the store's.
pub(crate) async fn probe_cached(
    features: &FeatureStore,
    store: Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    url: &str,
    buckets: Buckets,
    bytes_read: Count,
) -> Result<std::result::Result<AudioHeader, String>> {
    let file = Fingerprint::of(meta, url);
    if let Some(row) = features.lookup(HEADER_GROUP, &file) {
        match &row.outcome {
            Err(e) => return Ok(Err(e.clone())),
            Ok((_, values)) => {
                // A stored row that is not a header (a crafted part) is probed again.
                if let Some(header) = from_values(values) {
                    return Ok(Ok(header));
                }
            }
        }
    }
    let record = ReadRecord::default();
    let header = probe_object(store, meta.clone(), bytes_read, Some(record.clone())).await;
    if record.failed() {
        return Ok(header);
    }
    let row = StoredRow {
        fingerprint: file,
        content_hash: None,
        analyzed_at: now_micros(),
        outcome: match &header {
            Ok(h) => Ok((None, to_values(h))),
            Err(e) => Err(e.clone()),
        },
    };
    if features.add(vec![(HEADER_GROUP, row)], buckets) {
        features.flush().await?;
    }
    Ok(header)
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
    let decoded = match &fresh {
        Some(out) => decoded(out),
        None => stored
            .iter()
            .find_map(|(_, d, _)| d.clone())
            .ok_or_else(|| "no stored result says what decoding measured".to_string())?,
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
