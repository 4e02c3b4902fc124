//! The stored form of an [`HnswIndex`]: a header, then the graph's arrays as they are in
//! memory (little-endian, each section padded to 8 bytes, so that a mapped file is the graph),
//! then two BLAKE3 checksums: of everything but the vectors, and of the vectors.
//!
//! | section   | contents                                                   |
//! |-----------|------------------------------------------------------------|
//! | header    | magic, version, metric, dims, m, ef_construction, max level, entry, counts, build time |
//! | vectors   | `nodes × dims` f32                                         |
//! | level 0   | `nodes × (2m + 1)` u32: count, then links                  |
//! | levels    | `nodes` u8                                                 |
//! | upper     | `upper_slots` u32: `m + 1` per level above 0 of each node  |
//! | ids       | `nodes` u64, ascending: row id of each node                |
//! | unindexed | u64, ascending: rows not in the graph (zero vectors, cosine) |
//! | dead      | u64: rows marked dead                                      |
//!
//! Reading checks the length the header implies before allocating anything, then the
//! checksums, then every count, link and level, so that a damaged or crafted file is an error
//! and never a panic or a huge allocation. A mapped file skips what would read its vectors
//! (see [`map`]).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions};

use super::graph::{self, Graph, Links, Top, MAX_LEVEL};
use super::section::{Section, View};
use super::{BuildInfo, HnswIndex, IndexParams, Metric};

const MAGIC: &[u8; 8] = b"ALHNSW2\0";
/// What hnsw_rs-based builds wrote (files of hnsw_rs behind this magic).
const OLD_MAGIC: &[u8; 8] = b"ALHNSW1\0";
const VERSION: u32 = 3;
pub(super) const HEADER: usize = 80;
/// Two BLAKE3 hashes: of everything but the vectors, then of the vectors.
const CHECKSUMS: usize = 64;

/// Message of the error for an index written before this format; the registry rebuilds it.
pub(super) const OLD_FORMAT: &str =
    "an index in the old hnsw_rs format, which this build no longer reads";

fn metric_code(metric: Metric) -> u32 {
    match metric {
        Metric::L2 => 0,
        Metric::Cosine => 1,
        Metric::InnerProduct => 2,
        Metric::L1 => 3,
    }
}

fn metric_of(code: u32) -> Option<Metric> {
    [Metric::L2, Metric::Cosine, Metric::InnerProduct, Metric::L1]
        .into_iter()
        .find(|m| metric_code(*m) == code)
}

/// Bytes written through a buffer, each buffered run hashed into the checksum of the section
/// it belongs to, so that an index of any size is written with one buffer of memory.
struct Writer<W: Write> {
    out: W,
    buf: Vec<u8>,
    written: u64,
    structure: blake3::Hasher,
    vectors: blake3::Hasher,
    /// Whether the bytes now written are the vectors' section.
    in_vectors: bool,
}

/// Bytes buffered before they are hashed and written.
const CHUNK: usize = 1 << 20;

impl<W: Write> Writer<W> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }
    fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn pad(&mut self) -> std::io::Result<()> {
        let at = self.written + self.buf.len() as u64;
        let zeros = [0u8; 8];
        self.bytes(&zeros[..(at.next_multiple_of(8) - at) as usize])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.in_vectors {
            true => self.vectors.update(&self.buf),
            false => self.structure.update(&self.buf),
        };
        self.out.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
    /// The bytes after this are (or are no longer) the vectors.
    fn vectors_section(&mut self, vectors: bool) -> std::io::Result<()> {
        self.flush()?;
        self.in_vectors = vectors;
        Ok(())
    }
}

fn padded(bytes: u64) -> Option<u64> {
    Some(bytes.checked_add(7)? & !7)
}

/// Writes the bytes of `index` to `out`; returns how many.
pub(super) fn write(index: &HnswIndex, out: impl Write) -> std::io::Result<u64> {
    let g = &index.graph;
    let top = g.top();
    let mut dead: Vec<u64> = index.dead.iter().copied().collect();
    dead.sort_unstable();
    let mut w = Writer {
        out,
        buf: Vec::with_capacity(CHUNK + 64),
        written: 0,
        structure: blake3::Hasher::new(),
        vectors: blake3::Hasher::new(),
        in_vectors: false,
    };
    w.bytes(MAGIC)?;
    w.u32(VERSION)?;
    w.u32(metric_code(index.info.metric))?;
    w.u32(index.info.dims as u32)?;
    w.u32(index.info.params.m as u32)?;
    w.u32(index.info.params.ef_construction as u32)?;
    w.u32(top.max_level as u32)?;
    w.u32(top.entry)?;
    w.u32(0)?;
    w.u64(g.len() as u64)?;
    w.u64(g.upper.len() as u64)?;
    w.u64(index.unindexed.len() as u64)?;
    w.u64(dead.len() as u64)?;
    w.bytes(&index.info.build_seconds.to_le_bytes())?;
    debug_assert_eq!(w.buf.len(), HEADER);
    w.vectors_section(true)?;
    for x in g.vectors.iter() {
        w.bytes(&x.to_le_bytes())?;
    }
    w.pad()?;
    w.vectors_section(false)?;
    for s in g.level0.iter() {
        w.u32(s.load(Ordering::Relaxed))?;
    }
    w.pad()?;
    w.bytes(&g.levels)?;
    w.pad()?;
    for s in g.upper.iter() {
        w.u32(s.load(Ordering::Relaxed))?;
    }
    w.pad()?;
    for list in [&index.ids, &index.unindexed, &dead] {
        for id in list {
            w.u64(*id)?;
        }
    }
    w.flush()?;
    w.out.write_all(w.structure.finalize().as_bytes())?;
    w.out.write_all(w.vectors.finalize().as_bytes())?;
    w.out.flush()?;
    Ok(w.written + CHECKSUMS as u64)
}

/// Reads sections whose lengths were checked against the file's.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    fn skip_pad(&mut self) {
        self.at = self.at.next_multiple_of(8);
    }
    fn u64s(&mut self, n: usize) -> Vec<u64> {
        self.take(n * 8)
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    }
}

struct Header {
    metric: Metric,
    params: IndexParams,
    dims: usize,
    top: Top,
    nodes: usize,
    upper_slots: usize,
    unindexed: usize,
    dead: usize,
    build_seconds: f64,
}

fn header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < HEADER + CHECKSUMS {
        if bytes.starts_with(OLD_MAGIC) {
            return Err(OLD_FORMAT.into());
        }
        return Err(format!("truncated: {} bytes", bytes.len()));
    }
    let mut r = Reader { bytes, at: 0 };
    match r.take(8) {
        m if m == MAGIC => {}
        m if m == OLD_MAGIC => return Err(OLD_FORMAT.into()),
        _ => return Err("not an audiolake HNSW index".into()),
    }
    let version = r.u32();
    if version != VERSION {
        return Err(format!(
            "format version {version} (this build reads {VERSION})"
        ));
    }
    let code = r.u32();
    let metric = metric_of(code).ok_or_else(|| format!("unknown metric {code}"))?;
    let dims = r.u32() as usize;
    let params = IndexParams {
        m: r.u32() as usize,
        ef_construction: r.u32() as usize,
    };
    params.validate().map_err(|e| e.to_string())?;
    let max_level = r.u32() as usize;
    let entry = r.u32();
    r.u32();
    // Counts past the address space cannot match the file's length: checked below.
    let count = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let nodes = count(r.u64());
    let upper_slots = count(r.u64());
    let unindexed = count(r.u64());
    let dead = count(r.u64());
    let build_seconds = f64::from_le_bytes(r.take(8).try_into().expect("8 bytes"));
    Ok(Header {
        metric,
        params,
        dims,
        top: Top { entry, max_level },
        nodes,
        upper_slots,
        unindexed,
        dead,
        build_seconds,
    })
}

/// The file length `h` describes, `None` when it overflows.
fn described_length(h: &Header) -> Option<u64> {
    let (nodes, m) = (h.nodes as u64, h.params.m as u64);
    let sections = [
        nodes.checked_mul(h.dims as u64)?.checked_mul(4)?,
        nodes.checked_mul(2 * m + 1)?.checked_mul(4)?,
        nodes,
        (h.upper_slots as u64).checked_mul(4)?,
        nodes.checked_mul(8)?,
        (h.unindexed as u64).checked_mul(8)?,
        (h.dead as u64).checked_mul(8)?,
    ];
    let mut total = (HEADER + CHECKSUMS) as u64;
    for s in sections {
        total = total.checked_add(padded(s)?)?;
    }
    Some(total)
}

/// Where the vectors of a file whose length matches `h` end (padding included).
fn vectors_end(h: &Header) -> usize {
    HEADER + (h.nodes * h.dims * 4).next_multiple_of(8)
}

fn strictly_ascending(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

/// Where an index's bytes are: read whole into memory, or a file mapped.
enum Source<'a> {
    Read(&'a [u8]),
    Mapped(&'a Arc<MmapMut>),
}

impl Source<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Source::Read(bytes) => bytes,
            Source::Mapped(map) => map,
        }
    }

    fn f32s(&self, at: usize, n: usize) -> Section<f32> {
        match self {
            Source::Read(bytes) => Section::Owned(
                bytes[at..at + n * 4]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            ),
            Source::Mapped(map) => Section::Mapped(View::new(map, at, n)),
        }
    }

    fn u32s(&self, at: usize, n: usize) -> Section<AtomicU32> {
        match self {
            Source::Read(bytes) => Section::Owned(
                bytes[at..at + n * 4]
                    .chunks_exact(4)
                    .map(|c| AtomicU32::new(u32::from_le_bytes(c.try_into().expect("4 bytes"))))
                    .collect(),
            ),
            Source::Mapped(map) => Section::Mapped(View::new(map, at, n)),
        }
    }
}

/// An index from `bytes`, with every part checked; the error says what is wrong.
pub(super) fn decode(bytes: &[u8]) -> Result<HnswIndex, String> {
    parse(Source::Read(bytes))
}

/// An index over the memory-mapped `file`: its structure (header, links, levels, row ids) is
/// read and checked as [`decode`] checks it, its vectors are left on disk until searches touch
/// them, so neither their checksum nor their finiteness is checked (a damaged vector gives
/// wrong distances for its row, never a crash; `REINDEX` writes it again).
pub(super) fn map(file: &File) -> Result<HnswIndex, String> {
    if cfg!(target_endian = "big") {
        let (mut reader, mut bytes) = (file, Vec::new());
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot be read: {e}"))?;
        return decode(&bytes);
    }
    // SAFETY: a private mapping; index files are written once under a temporary name and
    // renamed into place, never rewritten or truncated (see `Section`).
    let map = unsafe { MmapOptions::new().map_copy(file) }
        .map_err(|e| format!("cannot be mapped: {e}"))?;
    parse(Source::Mapped(&Arc::new(map)))
}

/// Checks what [`map`] leaves unchecked, the vectors' checksum, reading the vectors of `file`
/// once (through a mapping, so that memory holds no copy).
pub(super) fn verify_vectors(file: &File) -> Result<(), String> {
    // SAFETY: as in `map`: index files are never rewritten or truncated.
    let map =
        unsafe { MmapOptions::new().map(file) }.map_err(|e| format!("cannot be mapped: {e}"))?;
    let h = header(&map)?;
    if described_length(&h) != Some(map.len() as u64) {
        return Err("the header does not describe the file's length".into());
    }
    let vectors_end = vectors_end(&h);
    let body = map.len() - CHECKSUMS;
    if blake3::hash(&map[HEADER..vectors_end]).as_bytes() != &map[body + 32..] {
        return Err("checksum mismatch: the vectors are damaged".into());
    }
    Ok(())
}

fn parse(source: Source<'_>) -> Result<HnswIndex, String> {
    let bytes = source.bytes();
    let h = header(bytes)?;
    match described_length(&h) {
        Some(len) if len == bytes.len() as u64 => {}
        Some(len) => {
            return Err(format!(
                "the header describes {len} bytes, there are {}",
                bytes.len()
            ))
        }
        None => return Err("the header's counts overflow".into()),
    }
    let body = bytes.len() - CHECKSUMS;
    let vectors_end = vectors_end(&h);
    let mut structure = blake3::Hasher::new();
    structure.update(&bytes[..HEADER]);
    structure.update(&bytes[vectors_end..body]);
    let whole = matches!(source, Source::Read(_));
    if structure.finalize().as_bytes() != &bytes[body..body + 32]
        || (whole && blake3::hash(&bytes[HEADER..vectors_end]).as_bytes() != &bytes[body + 32..])
    {
        return Err("checksum mismatch: the file is damaged".into());
    }
    if h.nodes > u32::MAX as usize {
        return Err(format!("{} nodes (at most {})", h.nodes, u32::MAX));
    }
    if h.nodes + h.unindexed > 0 && h.dims == 0 {
        return Err("rows of 0 dimensions".into());
    }

    let vectors = source.f32s(HEADER, h.nodes * h.dims);
    let mut r = Reader {
        bytes: &bytes[..body],
        at: vectors_end,
    };
    let level0_len = h.nodes * (2 * h.params.m + 1);
    let level0 = source.u32s(r.at, level0_len);
    r.at += level0_len * 4;
    r.skip_pad();
    let levels = r.take(h.nodes).to_vec();
    r.skip_pad();
    let upper = source.u32s(r.at, h.upper_slots);
    r.at += h.upper_slots * 4;
    r.skip_pad();
    let ids = r.u64s(h.nodes);
    let unindexed = r.u64s(h.unindexed);
    let dead = r.u64s(h.dead);

    if whole && !vectors.iter().all(|x| x.is_finite()) {
        return Err("a vector has a NaN or infinite element".into());
    }
    check_links(&h, &levels, &level0, &upper)?;
    if !strictly_ascending(&ids) || !strictly_ascending(&unindexed) {
        return Err("row ids out of order or repeated".into());
    }
    if unindexed.iter().any(|id| ids.binary_search(id).is_ok()) {
        return Err("a row both in and out of the graph".into());
    }
    let known = |id: &u64| ids.binary_search(id).is_ok() || unindexed.binary_search(id).is_ok();
    if !dead.iter().all(known) {
        return Err("a dead row that is not indexed".into());
    }
    let dead: HashSet<u64> = dead.into_iter().collect();

    let graph = Graph::from_parts(
        h.metric.kernel(),
        h.dims,
        h.params.m,
        vectors,
        Links {
            levels,
            level0,
            upper,
        },
        h.top,
    );
    Ok(HnswIndex {
        graph,
        info: BuildInfo {
            metric: h.metric,
            params: h.params,
            rows: h.nodes + h.unindexed,
            dims: h.dims,
            build_seconds: h.build_seconds,
            size_bytes: Some(bytes.len() as u64),
        },
        ids,
        unindexed,
        dead,
    })
}

/// Levels, entry point and every list: counts within capacity, links to existing nodes that
/// reach the list's level (a search reads a linked node's list at that level).
fn check_links(
    h: &Header,
    levels: &[u8],
    level0: &[AtomicU32],
    upper: &[AtomicU32],
) -> Result<(), String> {
    let m = h.params.m;
    if let Some(bad) = levels.iter().find(|l| usize::from(**l) > MAX_LEVEL) {
        return Err(format!("a node of level {bad} (at most {MAX_LEVEL})"));
    }
    let (offsets, slots) = graph::upper_offsets(levels, m);
    if slots != h.upper_slots {
        return Err(format!(
            "{} upper-level slots where the levels need {slots}",
            h.upper_slots
        ));
    }
    let top = h.top;
    let highest = levels.iter().max().map_or(0, |l| usize::from(*l));
    let entry_ok = match levels.get(top.entry as usize) {
        Some(level) => usize::from(*level) == top.max_level && top.max_level == highest,
        None => h.nodes == 0 && top.entry == 0 && top.max_level == 0,
    };
    if !entry_ok {
        return Err(format!(
            "entry point {} at level {} is not a node of the highest level",
            top.entry, top.max_level
        ));
    }
    let check_list = |list: &[AtomicU32], level: usize| -> Result<(), String> {
        let count = list[0].load(Ordering::Relaxed) as usize;
        if count > list.len() - 1 {
            return Err(format!("a list of {count} links at level {level}"));
        }
        for link in list[1..=count].iter().map(|l| l.load(Ordering::Relaxed)) {
            match levels.get(link as usize) {
                Some(l) if usize::from(*l) >= level => {}
                _ => return Err(format!("a link to node {link} at level {level}")),
            }
        }
        Ok(())
    };
    for list in level0.chunks_exact(2 * m + 1) {
        check_list(list, 0)?;
    }
    for (node, level) in levels.iter().enumerate() {
        for lc in 1..=usize::from(*level) {
            let at = offsets[node] + (lc - 1) * (m + 1);
            check_list(&upper[at..at + m + 1], lc)?;
        }
    }
    Ok(())
}
