use super::*;

/// Deterministic clustered data: `clusters` centres in [-1, 1]^dims, points spread around
/// them with a standard deviation of 0.1.
fn clustered(n: usize, dims: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let centres: Vec<Vec<f64>> = (0..clusters)
        .map(|_| (0..dims).map(|_| next() * 2.0 - 1.0).collect())
        .collect();
    (0..n)
        .map(|i| {
            centres[i % clusters]
                .iter()
                .map(|c| {
                    // Sum of uniforms: roughly normal, mean 0, sd 0.1.
                    let noise: f64 = (0..12).map(|_| next()).sum::<f64>() - 6.0;
                    (c + 0.1 * noise) as f32
                })
                .collect()
        })
        .collect()
}

fn build(metric: Metric, data: &[Vec<f32>], params: IndexParams) -> HnswIndex {
    HnswIndex::build(
        metric,
        params,
        data.iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice())),
    )
    .unwrap()
}

fn brute_force(
    metric: Metric,
    data: &[Vec<f32>],
    q: &[f32],
    k: usize,
    keep: impl Fn(u64) -> bool,
) -> Vec<Neighbor> {
    let mut all: Vec<Neighbor> = data
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i as u64))
        .map(|(i, v)| Neighbor {
            id: i as u64,
            distance: metric.distance(q, v).unwrap(),
        })
        .collect();
    all.sort_by(cmp_neighbors);
    all.truncate(k);
    all
}

const ALL_METRICS: [Metric; 4] = [Metric::L2, Metric::Cosine, Metric::InnerProduct, Metric::L1];

fn ids(n: &[Neighbor]) -> Vec<u64> {
    n.iter().map(|x| x.id).collect()
}

const N: usize = 3000;
const DIMS: usize = 24;

#[test]
fn high_ef_equals_brute_force_for_every_metric() {
    let data = clustered(N, DIMS, 30, 7);
    let queries = clustered(20, DIMS, 30, 99);
    for metric in ALL_METRICS {
        let index = build(metric, &data, IndexParams::default());
        let (mut hits, mut total) = (0, 0);
        for q in &queries {
            let got = index.search(q, 10, &SearchOptions::new(400), None).unwrap();
            assert!(matches!(got.plan, SearchPlan::Graph { .. }));
            let want = brute_force(metric, &data, q, 10, |_| true);
            assert_eq!(got.neighbors.len(), 10);
            // Distances are the metric's, in order.
            for nb in &got.neighbors {
                let d = metric.distance(q, &data[nb.id as usize]).unwrap();
                assert!((nb.distance - d).abs() < 1e-5, "{metric:?}: {nb:?} vs {d}");
            }
            assert!(got
                .neighbors
                .windows(2)
                .all(|w| w[0].distance <= w[1].distance));
            let want_ids: HashSet<u64> = ids(&want).into_iter().collect();
            hits += got
                .neighbors
                .iter()
                .filter(|n| want_ids.contains(&n.id))
                .count();
            total += 10;
        }
        // At ef 400 over 3000 clustered rows the graph finds the true neighbours; allow
        // one miss in 200 for ties at float rounding.
        let recall = hits as f64 / total as f64;
        assert!(recall >= 0.995, "{metric:?}: recall {recall}");
        // And the exact helper is exactly brute force.
        let q = &queries[0];
        assert_eq!(
            ids(&index.exact_search(q, 10, None).unwrap()),
            ids(&brute_force(metric, &data, q, 10, |_| true))
        );
    }
}

#[test]
fn filtered_search_returns_k_whenever_k_qualify() {
    let data = clustered(N, DIMS, 30, 11);
    let index = build(Metric::L2, &data, IndexParams::default());
    let q = &clustered(1, DIMS, 30, 5)[0];

    // Most rows pass: a graph search.
    let most = |id: u64| !id.is_multiple_of(5);
    let got = index
        .search(q, 10, &SearchOptions::new(40), Some(Filter::new(&most)))
        .unwrap();
    assert!(
        matches!(got.plan, SearchPlan::Filtered { .. }),
        "{:?}",
        got.plan
    );
    assert_eq!(got.neighbors.len(), 10);
    assert!(got.neighbors.iter().all(|n| most(n.id)));

    // Five rows pass, far from the query's cluster or not: all five come back, exactly.
    let five = |id: u64| [3, 700, 1501, 2222, 2999].contains(&id);
    let got = index
        .search(q, 10, &SearchOptions::new(40), Some(Filter::new(&five)))
        .unwrap();
    assert_eq!(got.plan, SearchPlan::Exact);
    assert_eq!(
        ids(&got.neighbors),
        ids(&brute_force(Metric::L2, &data, q, 10, five))
    );
    assert_eq!(got.neighbors.len(), 5);

    // k of them when k < 5.
    let got = index
        .search(q, 3, &SearchOptions::new(40), Some(Filter::new(&five)))
        .unwrap();
    assert_eq!(
        ids(&got.neighbors),
        ids(&brute_force(Metric::L2, &data, q, 3, five))
    );

    // Nothing passes: nothing comes back.
    let none = |_: u64| false;
    assert!(index
        .search(q, 10, &SearchOptions::new(40), Some(Filter::new(&none)))
        .unwrap()
        .neighbors
        .is_empty());

    // k larger than the table: every row.
    let small = build(Metric::L2, &data[..7], IndexParams::default());
    assert_eq!(
        small
            .search(q, 10, &SearchOptions::new(40), None)
            .unwrap()
            .neighbors
            .len(),
        7
    );
    // A crafted k (similar(..., 10000000000), LIMIT) allocates for the rows, not for k.
    let huge = 10_000_000_000;
    assert_eq!(
        small
            .search(q, huge, &SearchOptions::new(40), None)
            .unwrap()
            .neighbors
            .len(),
        7
    );
    let even = |id: u64| id.is_multiple_of(2);
    assert_eq!(
        small
            .search(q, huge, &SearchOptions::new(40), Some(Filter::new(&even)))
            .unwrap()
            .neighbors
            .len(),
        4
    );
    assert_eq!(small.exact_search(q, usize::MAX, None).unwrap().len(), 7);
}

/// A filter that passes `percent` % of ids, unrelated to the clusters (which follow `id % 30`).
fn hashed_filter(percent: u64) -> impl Fn(u64) -> bool {
    move |id: u64| {
        let mut z = id.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (z ^ (z >> 29)) % 100 < percent
    }
}

#[test]
fn iterative_scans_return_k_rows_at_1_10_and_50_percent() {
    let n = 10_000;
    // Queries from the rows' clusters (same centres), not rows themselves.
    let mut data = clustered(n + 20, 16, 30, 61);
    let queries = data.split_off(n);
    let params = IndexParams {
        m: 8,
        ef_construction: 32,
    };
    let index = build(Metric::L2, &data, params);
    let options = |mode| SearchOptions {
        iterative_scan: mode,
        ..SearchOptions::new(10)
    };
    for percent in [1, 10, 50] {
        let keep = hashed_filter(percent);
        let passing = (0..n as u64).filter(|id| keep(*id)).count();
        let counted = Filter {
            accepts: &keep,
            passing: Some(passing),
        };
        for mode in [IterativeScan::RelaxedOrder, IterativeScan::StrictOrder] {
            let (mut hits, mut returned) = (0, 0);
            for q in &queries {
                let got = index.search(q, 10, &options(mode), Some(counted)).unwrap();
                let estimate = got.estimate.expect("a filtered search says why");
                assert!(estimate.counted);
                assert_eq!(estimate.passing_fraction, passing as f64 / n as f64);
                // ef·m = 80 distances for the graph: 1% (f²·n = 1) is scanned exactly, 10%
                // (100) and 50% (2,500) through the graph.
                match percent {
                    1 => assert_eq!(got.plan, SearchPlan::Exact, "{estimate}"),
                    _ => assert!(
                        matches!(got.plan, SearchPlan::Filtered { mode: m, bound_reached: false, .. } if m == mode),
                        "{percent}%: {:?}",
                        got.plan
                    ),
                }
                assert!(got.neighbors.iter().all(|nb| keep(nb.id)));
                let want: HashSet<u64> = ids(&brute_force(Metric::L2, &data, q, 10, &keep))
                    .into_iter()
                    .collect();
                returned += got.neighbors.len();
                hits += got
                    .neighbors
                    .iter()
                    .filter(|nb| want.contains(&nb.id))
                    .count();
            }
            assert_eq!(
                returned,
                10 * queries.len(),
                "{percent}% {mode}: k rows each"
            );
            let recall = hits as f64 / returned as f64;
            let floor = if percent == 1 { 1.0 } else { 0.9 };
            assert!(recall >= floor, "{percent}% {mode}: recall {recall}");
        }
    }

    // Without iterative scans the first ef = 10 candidates hold about one row in ten that
    // passes at 10%: short of k, as pgvector's `off`.
    let keep = hashed_filter(10);
    let off = queries
        .iter()
        .map(|q| {
            let got = index
                .search(
                    q,
                    10,
                    &options(IterativeScan::Off),
                    Some(Filter::new(&keep)),
                )
                .unwrap();
            assert!(matches!(got.plan, SearchPlan::Filtered { rounds: 1, .. }));
            got.neighbors.len()
        })
        .sum::<usize>();
    assert!(off < 5 * queries.len(), "off returned {off} rows");
}

#[test]
fn max_scan_tuples_stops_an_iterative_scan() {
    let mut data = clustered(10_001, 16, 30, 71);
    let q = &data.split_off(10_000)[0];
    let index = build(
        Metric::L2,
        &data,
        IndexParams {
            m: 8,
            ef_construction: 32,
        },
    );
    // Counted: at 10% of 10,000 rows the graph (ef·m / f = 800) just beats the exact scan.
    let keep = hashed_filter(10);
    let filter = Filter {
        accepts: &keep,
        passing: Some((0..10_000).filter(|id| keep(*id)).count()),
    };
    let search = |max_scan_tuples| {
        let options = SearchOptions {
            max_scan_tuples,
            ..SearchOptions::new(10)
        };
        index.search(q, 10, &options, Some(filter)).unwrap()
    };
    let free = search(20_000);
    let SearchPlan::Filtered {
        rounds, visited, ..
    } = free.plan
    else {
        panic!("{:?}", free.plan)
    };
    assert_eq!(free.neighbors.len(), 10);
    assert!(rounds > 1, "{rounds} rounds");
    // Bounded at one row: the first round runs whole, then only the rows it saw are handed
    // on, fewer than k of which pass.
    let bounded = search(1);
    let SearchPlan::Filtered {
        rounds: 1,
        visited: first_round,
        bound_reached: true,
        ..
    } = bounded.plan
    else {
        panic!("{:?}", bounded.plan)
    };
    assert!(first_round < visited);
    assert!(bounded.neighbors.len() < 10, "{}", bounded.neighbors.len());
    assert!(bounded.neighbors.iter().all(|nb| keep(nb.id)));

    // Crafted settings are refused before anything is allocated.
    let zero = SearchOptions {
        max_scan_tuples: 0,
        ..SearchOptions::new(10)
    };
    assert_eq!(
        index.search(q, 10, &zero, None).unwrap_err().to_string(),
        "invalid index parameter: max_scan_tuples must be between 1 and 2147483647, not 0"
    );
    assert_eq!(
        "Strict_Order".parse::<IterativeScan>().unwrap(),
        IterativeScan::StrictOrder
    );
    assert_eq!(
        "sideways".parse::<IterativeScan>().unwrap_err().to_string(),
        "invalid index parameter: hnsw.iterative_scan must be off, relaxed_order or strict_order, not \"sideways\""
    );
}

#[test]
fn dead_rows_are_skipped_and_counted() {
    let data = clustered(N, DIMS, 30, 13);
    let mut index = build(Metric::Cosine, &data, IndexParams::default());
    let q = &data[42];
    let before = index.search(q, 5, &SearchOptions::new(100), None).unwrap();
    assert_eq!(before.neighbors[0].id, 42);
    index.mark_dead([42, 1_000_000]);
    assert_eq!(index.dead_fraction(), 1.0 / N as f64);
    let after = index.search(q, 5, &SearchOptions::new(100), None).unwrap();
    assert_eq!(after.neighbors.len(), 5);
    assert!(after.neighbors.iter().all(|n| n.id != 42));
    // Dead rows hide from the exact path too.
    let want = brute_force(Metric::Cosine, &data, q, 5, |id| id != 42);
    assert_eq!(ids(&index.exact_search(q, 5, None).unwrap()), ids(&want));
}

#[test]
fn zero_vectors_under_cosine_come_last_with_nan() {
    let mut data = clustered(50, 4, 5, 17);
    data[10] = vec![0.0; 4];
    let index = build(Metric::Cosine, &data, IndexParams::default());
    let all = index
        .search(&data[0], 60, &SearchOptions::new(40), None)
        .unwrap()
        .neighbors;
    assert_eq!(all.len(), 50);
    assert_eq!(all[49].id, 10);
    assert!(all[49].distance.is_nan());
    // A zero query: every distance is NaN, rows still come back.
    let zero = index
        .search(&[0.0; 4], 3, &SearchOptions::new(40), None)
        .unwrap();
    assert_eq!(ids(&zero.neighbors), [0, 1, 2]);
    assert!(zero.neighbors.iter().all(|n| n.distance.is_nan()));
}

#[test]
fn save_and_load_give_the_same_answers() {
    let data = clustered(N, DIMS, 30, 19);
    let queries = clustered(10, DIMS, 30, 23);
    for metric in ALL_METRICS {
        let mut index = build(
            metric,
            &data,
            IndexParams {
                m: 8,
                ef_construction: 32,
            },
        );
        index.mark_dead([5, 6]);
        let dir = tempfile::tempdir().unwrap();
        let size = index.save(&dir.path().join("idx")).unwrap();
        assert!(size > (N * DIMS * 4) as u64, "size {size}");
        let loaded = HnswIndex::load(&dir.path().join("idx")).unwrap();
        let from_bytes = HnswIndex::from_bytes(&index.to_bytes().unwrap()).unwrap();
        assert_eq!(loaded.info().rows, N);
        assert_eq!(loaded.info().size_bytes, Some(size));
        assert_eq!(loaded.dead_fraction(), 2.0 / N as f64);
        // The bytes are the layout: loading and saving again changes nothing.
        assert_eq!(loaded.to_bytes().unwrap(), index.to_bytes().unwrap());
        let odd = |id: u64| id % 2 == 1;
        for q in &queries {
            let want = index.search(q, 10, &SearchOptions::new(40), None).unwrap();
            assert_eq!(
                loaded.search(q, 10, &SearchOptions::new(40), None).unwrap(),
                want
            );
            assert_eq!(
                from_bytes
                    .search(q, 10, &SearchOptions::new(40), None)
                    .unwrap(),
                want
            );
            assert_eq!(
                loaded
                    .search(q, 10, &SearchOptions::new(40), Some(Filter::new(&odd)))
                    .unwrap(),
                index
                    .search(q, 10, &SearchOptions::new(40), Some(Filter::new(&odd)))
                    .unwrap()
            );
        }
    }
}

#[test]
fn vectors_are_read_back_as_indexed() {
    let data = clustered(200, 16, 5, 29);
    let params = IndexParams {
        m: 8,
        ef_construction: 32,
    };
    for metric in [Metric::L2, Metric::InnerProduct, Metric::L1] {
        let index = build(metric, &data, params);
        let loaded = HnswIndex::from_bytes(&index.to_bytes().unwrap()).unwrap();
        for id in [0u64, 17, 199] {
            assert_eq!(index.vector(id).as_ref(), Some(&data[id as usize]));
            assert_eq!(loaded.vector(id).as_ref(), Some(&data[id as usize]));
        }
        assert_eq!(index.vector(200), None);
    }
    assert_eq!(build(Metric::Cosine, &data, params).vector(0), None);
}

#[test]
fn unfinished_or_damaged_saves_are_errors() {
    let data = clustered(200, 8, 4, 29);
    let index = build(Metric::L2, &data, IndexParams::default());
    let dir = tempfile::tempdir().unwrap();
    index.save(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join(INDEX_FILE)).unwrap();
    let err = HnswIndex::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("did not finish"), "{err}");
    assert!(HnswIndex::from_bytes(b"nonsense").is_err());
    let mut bytes = index.to_bytes().unwrap();
    bytes.truncate(bytes.len() / 2);
    assert!(HnswIndex::from_bytes(&bytes).is_err());
}

#[test]
fn parameters_and_rows_are_checked() {
    let data = clustered(10, 4, 2, 31);
    let rows = || {
        data.iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice()))
    };
    let err = |p: IndexParams| {
        HnswIndex::build(Metric::L2, p, rows())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(IndexParams {
            m: 300,
            ef_construction: 1000
        }),
        "invalid index parameter: m must be between 2 and 100, not 300"
    );
    assert!(err(IndexParams {
        m: 1,
        ef_construction: 64
    })
    .contains("m must be"));
    assert!(err(IndexParams {
        m: 16,
        ef_construction: 2000
    })
    .contains("ef_construction"));
    assert!(err(IndexParams {
        m: 16,
        ef_construction: 20
    })
    .contains("2 * m (32)"));

    let bad_dims = [(0u64, &[1.0f32, 2.0][..]), (1, &[1.0][..])];
    assert!(matches!(
        HnswIndex::build(Metric::L2, IndexParams::default(), bad_dims),
        Err(IndexError::Dimensions {
            id: 1,
            expected: 2,
            got: 1
        })
    ));
    let nan = [(4u64, &[f32::NAN][..])];
    assert!(matches!(
        HnswIndex::build(Metric::L2, IndexParams::default(), nan),
        Err(IndexError::NotFinite { id: 4 })
    ));
    let dup = [(4u64, &[1.0f32][..]), (4, &[2.0][..])];
    assert!(matches!(
        HnswIndex::build(Metric::L2, IndexParams::default(), dup),
        Err(IndexError::DuplicateId(4))
    ));
    let index = HnswIndex::build(Metric::L2, IndexParams::default(), rows()).unwrap();
    assert!(matches!(
        index.search(&[1.0], 3, &SearchOptions::new(40), None),
        Err(IndexError::QueryDimensions {
            expected: 4,
            got: 1
        })
    ));
    assert!(index
        .search(&data[0], 3, &SearchOptions::new(0), None)
        .is_err());
    assert!(index
        .search(&data[0], 3, &SearchOptions::new(1001), None)
        .is_err());
}

#[test]
fn empty_index_answers_nothing_and_round_trips() {
    let index = HnswIndex::build(Metric::L2, IndexParams::default(), std::iter::empty()).unwrap();
    assert!(index
        .search(&[1.0, 2.0], 5, &SearchOptions::new(40), None)
        .unwrap()
        .neighbors
        .is_empty());
    let loaded = HnswIndex::from_bytes(&index.to_bytes().unwrap()).unwrap();
    assert_eq!(loaded.info().rows, 0);
}

#[test]
fn opclass_names_round_trip() {
    for m in ALL_METRICS {
        assert_eq!(Metric::from_opclass(m.opclass()), Some(m));
    }
    assert_eq!(
        Metric::from_opclass("VECTOR_IP_OPS"),
        Some(Metric::InnerProduct)
    );
    assert_eq!(Metric::from_opclass("gin_trgm_ops"), None);
}

#[test]
fn index_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<HnswIndex>();
}

/// Recall@10 of `index` at `ef` over `queries`, against brute force on `data` (minus `dead`).
fn recall(
    index: &HnswIndex,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    ef: usize,
    live: impl Fn(u64) -> bool + Copy,
) -> f64 {
    let mut hits = 0;
    for q in queries {
        let want: HashSet<u64> = ids(&brute_force(index.info().metric, data, q, 10, live))
            .into_iter()
            .collect();
        let got = index
            .search(q, 10, &SearchOptions::new(ef), None)
            .unwrap()
            .neighbors;
        assert_eq!(got.len(), 10);
        hits += got.iter().filter(|n| want.contains(&n.id)).count();
    }
    hits as f64 / (10 * queries.len()) as f64
}

#[test]
fn recall_at_ef_64_for_every_metric() {
    // Queries from the rows' clusters (same centres), not rows themselves.
    let mut data = clustered(N + 50, DIMS, 30, 37);
    let queries = data.split_off(N);
    for metric in ALL_METRICS {
        let index = build(metric, &data, IndexParams::default());
        let r = recall(&index, &data, &queries, 64, |_| true);
        assert!(r >= 0.95, "{metric:?}: recall@10 {r} at ef 64");
    }
}

#[test]
fn rows_inserted_after_a_build_are_found_as_well_as_built_ones() {
    let mut data = clustered(N + 50, DIMS, 30, 41);
    let queries = data.split_off(N);
    for metric in ALL_METRICS {
        // A third built, the rest inserted in two batches, as a growing table is.
        let mut index = build(metric, &data[..N / 3], IndexParams::default());
        for range in [N / 3..N / 2, N / 2..N] {
            index
                .insert(range.map(|i| (i as u64, data[i].as_slice())))
                .unwrap();
        }
        assert_eq!(index.info().rows, N);
        let r = recall(&index, &data, &queries, 64, |_| true);
        assert!(r >= 0.95, "{metric:?}: recall@10 {r} at ef 64");
        // Saved and loaded, the inserted rows are there.
        let loaded = HnswIndex::from_bytes(&index.to_bytes().unwrap()).unwrap();
        assert_eq!(loaded.info().rows, N);
        assert_eq!(recall(&loaded, &data, &queries, 64, |_| true), r);
    }
}

#[test]
fn inserts_are_checked_and_a_refused_batch_changes_nothing() {
    let data = clustered(200, 8, 4, 3);
    let mut index = build(Metric::L2, &data[..100], IndexParams::default());
    let bytes = index.to_bytes().unwrap();
    let err = |index: &mut HnswIndex, rows: Vec<(u64, &[f32])>| {
        index.insert(rows).unwrap_err().to_string()
    };
    assert_eq!(
        err(&mut index, vec![(150, &data[150]), (99, &data[99])]),
        "invalid index parameter: row id 99 is not above the ids in the index (the next is 100)"
    );
    assert_eq!(
        err(&mut index, vec![(150, &data[150]), (151, &data[151][..7])]),
        "row 151 has 7 dimensions, the index has 8"
    );
    let nan = [f32::NAN; 8];
    assert_eq!(
        err(&mut index, vec![(150, &nan)]),
        "row 150 has a NaN or infinite element: vectors in an index must be finite"
    );
    assert_eq!(
        err(&mut index, vec![(150, &data[150]), (150, &data[151])]),
        "row id 150 appears twice: each row of an index needs its own id"
    );
    assert_eq!(index.to_bytes().unwrap(), bytes);
    let mut empty = HnswIndex::build(Metric::L2, IndexParams::default(), []).unwrap();
    assert_eq!(
        err(&mut empty, vec![(0, &data[0])]),
        "invalid index parameter: an index built over no rows takes no inserts; build it again"
    );
    // Cosine: a zero vector is kept apart, as in a build.
    let mut cosine = build(Metric::Cosine, &data[..100], IndexParams::default());
    let zero = [0.0f32; 8];
    cosine
        .insert([(100, &zero[..]), (101, &data[101][..])])
        .unwrap();
    let got = cosine
        .search(&data[101], 200, &SearchOptions::new(200), None)
        .unwrap()
        .neighbors;
    assert_eq!(got.len(), 102);
    assert_eq!(got[0].id, 101);
    assert_eq!(got[101].id, 100);
    assert!(got[101].distance.is_nan());
}

#[test]
fn link_lists_stay_within_m_and_2m() {
    let data = clustered(N, DIMS, 30, 43);
    let m = 6;
    for metric in ALL_METRICS {
        let index = build(
            metric,
            &data,
            IndexParams {
                m,
                ef_construction: 24,
            },
        );
        let g = &index.graph;
        let mut full = [0usize; 2];
        for node in 0..g.len() as u32 {
            for level in 0..=usize::from(g.levels[node as usize]) {
                let links = g.links(node, level);
                let cap = if level == 0 { 2 * m } else { m };
                assert!(links.len() <= cap, "{metric:?}: {} links", links.len());
                assert!(!links.contains(&node));
                let mut unique = links.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), links.len());
                assert!(links
                    .iter()
                    .all(|l| usize::from(g.levels[*l as usize]) >= level));
                if links.len() == cap {
                    full[level.min(1)] += 1;
                }
            }
            assert!(!g.links(node, 0).is_empty(), "node {node} has no links");
        }
        // Lists do fill up (and overflow into the re-selection) at both kinds of level.
        assert!(full[0] > 0 && full[1] > 0, "{metric:?}: {full:?}");
    }
}

#[test]
fn l1_distances_are_the_taxicab_sums() {
    let rows: [&[f32]; 4] = [
        &[0.0, 0.0, 0.0],
        &[1.0, -2.0, 3.0],
        &[4.0, 4.0, 4.0],
        &[-1.0, 0.5, 0.0],
    ];
    let index = HnswIndex::build(
        Metric::L1,
        IndexParams::default(),
        rows.iter().enumerate().map(|(i, v)| (i as u64, *v)),
    )
    .unwrap();
    let q = [1.0, 1.0, 1.0];
    // |1|+|1|+|1|, |0|+|3|+|2|, |3|+|3|+|3|, |2|+|0.5|+|1|
    let want = [(0, 3.0), (3, 3.5), (1, 5.0), (2, 9.0)];
    let got = index
        .search(&q, 4, &SearchOptions::new(40), None)
        .unwrap()
        .neighbors;
    let exact = index.exact_search(&q, 4, None).unwrap();
    for found in [got, exact] {
        let pairs: Vec<(u64, f64)> = found.iter().map(|n| (n.id, n.distance)).collect();
        assert_eq!(pairs, want);
    }
    assert_eq!(Metric::L1.distance(&q, rows[3]).unwrap(), 3.5);
    assert_eq!(Metric::from_opclass("vector_l1_ops"), Some(Metric::L1));
}

#[test]
fn dead_rows_never_come_back() {
    let mut data = clustered(N + 30, DIMS, 30, 59);
    let queries = data.split_off(N);
    let mut index = build(Metric::L2, &data, IndexParams::default());
    let dead = |id: u64| id.is_multiple_of(3);
    index.mark_dead((0..N as u64).filter(|id| dead(*id)));
    for q in &queries {
        let got = index.search(q, 10, &SearchOptions::new(40), None).unwrap();
        assert!(matches!(got.plan, SearchPlan::Filtered { .. }));
        assert_eq!(got.neighbors.len(), 10);
        assert!(got.neighbors.iter().all(|n| !dead(n.id)));
    }
    let r = recall(&index, &data, &queries, 64, |id| !dead(id));
    assert!(r >= 0.9, "recall@10 {r} with a third of the rows dead");
}

#[test]
fn a_cancelled_build_stops_with_an_error() {
    let data = clustered(N, DIMS, 30, 61);
    let asked = atomic::AtomicUsize::new(0);
    let inserted = AtomicU64::new(0);
    let cancelled = || asked.fetch_add(1, atomic::Ordering::Relaxed) >= 3;
    let err = HnswIndex::build_cancellable(
        Metric::L2,
        IndexParams::default(),
        data.iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice())),
        &cancelled,
        &inserted,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "index build cancelled");
    // It stopped after a few claims of inserts, not at the end, and counted them.
    let asked = asked.into_inner();
    assert!(asked < N / 64, "asked {asked} times");
    let inserted = inserted.into_inner() as usize;
    assert!(inserted > 1 && inserted < N, "{inserted} rows inserted");
}

#[test]
fn a_build_runs_on_the_threads_of_its_pool_and_counts_its_rows() {
    let data = clustered(1000, 8, 10, 67);
    let threads = parking_lot::Mutex::new(HashSet::new());
    let note_thread = || {
        threads.lock().insert(std::thread::current().id());
        false
    };
    let inserted = AtomicU64::new(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let index = pool
        .install(|| {
            HnswIndex::build_cancellable(
                Metric::Cosine,
                IndexParams::default(),
                data.iter()
                    .enumerate()
                    .map(|(i, v)| (i as u64, v.as_slice())),
                &note_thread,
                &inserted,
            )
        })
        .unwrap();
    assert_eq!(threads.lock().len(), 1);
    assert_eq!(inserted.into_inner(), 1000);
    assert_eq!(index.info().rows, 1000);
}

/// `bytes` with its checksum recomputed, as a crafted file would have.
/// `bytes` with both checksums made right again; the vectors end at `vectors_end`.
fn resealed(mut bytes: Vec<u8>, vectors_end: usize) -> Vec<u8> {
    let body = bytes.len() - 64;
    let mut structure = blake3::Hasher::new();
    structure.update(&bytes[..file::HEADER]);
    structure.update(&bytes[vectors_end..body]);
    let vectors = blake3::hash(&bytes[file::HEADER..vectors_end]);
    bytes[body..body + 32].copy_from_slice(structure.finalize().as_bytes());
    bytes[body + 32..].copy_from_slice(vectors.as_bytes());
    bytes
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn damaged_or_crafted_files_are_errors() {
    let dims = 8;
    let data = clustered(300, dims, 4, 47);
    let index = build(
        Metric::L2,
        &data,
        IndexParams {
            m: 8,
            ef_construction: 32,
        },
    );
    let bytes = index.to_bytes().unwrap();
    let err = |b: &[u8]| match HnswIndex::from_bytes(b) {
        Err(IndexError::Corrupt { reason, .. }) => reason,
        other => panic!("{other:?}"),
    };
    let header = file::HEADER;
    let level0 = header + 300 * dims * 4;

    // Truncated, anywhere.
    assert_eq!(err(&bytes[..0]), "truncated: 0 bytes");
    assert_eq!(err(&bytes[..header]), format!("truncated: {header} bytes"));
    for cut in [level0 + 3, bytes.len() - 1] {
        assert_eq!(
            err(&bytes[..cut]),
            format!(
                "the header describes {} bytes, there are {cut}",
                bytes.len()
            )
        );
    }
    // One flipped bit in a vector, a link or either checksum.
    for at in [header + 5, level0 + 9, bytes.len() - 33, bytes.len() - 1] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        assert_eq!(err(&flipped), "checksum mismatch: the file is damaged");
    }
    // Counts that would allocate far more than the file holds.
    let mut huge = bytes.clone();
    huge[40..48].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err(&huge).starts_with("the header describes "));
    huge[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(err(&huge), "the header's counts overflow");
    let mut many_dead = bytes.clone();
    many_dead[64..72].copy_from_slice(&(u64::MAX / 16).to_le_bytes());
    assert!(err(&many_dead).starts_with("the header describes "));

    // Crafted files with a valid checksum: every link and count is checked.
    let mut far_link = bytes.clone();
    put_u32(&mut far_link, level0, 1);
    put_u32(&mut far_link, level0 + 4, 300);
    assert_eq!(
        err(&resealed(far_link, level0)),
        "a link to node 300 at level 0"
    );
    let mut long_list = bytes.clone();
    put_u32(&mut long_list, level0, 17);
    assert_eq!(
        err(&resealed(long_list, level0)),
        "a list of 17 links at level 0"
    );
    let mut entry = bytes.clone();
    put_u32(&mut entry, 32, 9999);
    assert!(err(&resealed(entry, level0)).starts_with("entry point 9999"));
    let mut version = bytes.clone();
    put_u32(&mut version, 8, 4);
    assert_eq!(
        err(&resealed(version, level0)),
        "format version 4 (this build reads 3)"
    );
    let mut m = bytes.clone();
    put_u32(&mut m, 20, 500);
    assert_eq!(
        err(&resealed(m, level0)),
        "invalid index parameter: m must be between 2 and 100, not 500"
    );
    let mut nan = bytes.clone();
    nan[header..header + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(
        err(&resealed(nan, level0)),
        "a vector has a NaN or infinite element"
    );

    // Not an index at all, and an index of the hnsw_rs days.
    assert_eq!(err(&[7u8; 200]), "not an audiolake HNSW index");
    let mut old = b"ALHNSW1\0".to_vec();
    old.extend_from_slice(&[0u8; 300]);
    assert_eq!(err(&old), file::OLD_FORMAT);
    assert_eq!(err(b"ALHNSW1\0"), file::OLD_FORMAT);
}

#[test]
fn mapped_files_check_their_structure_but_not_their_vectors() {
    let dims = 8;
    let data = clustered(300, dims, 4, 53);
    let index = build(Metric::L2, &data, IndexParams::default());
    let bytes = index.to_bytes().unwrap();
    let level0 = file::HEADER + 300 * dims * 4;
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str, b: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, b).unwrap();
        HnswIndex::open(&path)
    };
    let err = |name: &str, b: &[u8]| match open(name, b) {
        Err(IndexError::Corrupt { reason, .. }) => reason,
        other => panic!("{other:?}"),
    };

    let mapped = open("whole", &bytes).unwrap();
    assert!(mapped.graph.vectors.is_mapped() && mapped.graph.level0.is_mapped());
    let q = &data[7];
    assert_eq!(
        mapped.search(q, 10, &SearchOptions::new(40), None).unwrap(),
        index.search(q, 10, &SearchOptions::new(40), None).unwrap()
    );

    assert_eq!(
        err("cut", &bytes[..bytes.len() - 1]),
        format!(
            "the header describes {} bytes, there are {}",
            bytes.len(),
            bytes.len() - 1
        )
    );
    let mut link = bytes.clone();
    link[level0 + 9] ^= 0x10;
    assert_eq!(err("link", &link), "checksum mismatch: the file is damaged");
    let mut far_link = bytes.clone();
    put_u32(&mut far_link, level0, 1);
    put_u32(&mut far_link, level0 + 4, 300);
    assert_eq!(
        err("far", &resealed(far_link, level0)),
        "a link to node 300 at level 0"
    );
    // A damaged vector is not read at open: its row's distances are wrong, nothing else.
    let mut vector = bytes.clone();
    vector[file::HEADER + 5] ^= 0x10;
    let damaged = open("vector", &vector).unwrap();
    assert_eq!(
        damaged
            .search(q, 10, &SearchOptions::new(40), None)
            .unwrap()
            .neighbors
            .len(),
        10
    );
    assert!(HnswIndex::from_bytes(&vector).is_err());
    // ... but found by the check made after opening.
    HnswIndex::verify_file(&dir.path().join("whole")).unwrap();
    match HnswIndex::verify_file(&dir.path().join("vector")) {
        Err(IndexError::Corrupt { reason, .. }) => {
            assert_eq!(reason, "checksum mismatch: the vectors are damaged")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        HnswIndex::open(&dir.path().join("missing")),
        Err(IndexError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound
    ));
}

#[test]
fn a_mapped_index_takes_inserts_and_leaves_its_file_as_it_was() {
    let mut data = clustered(N + 50, DIMS, 30, 59);
    let queries = data.split_off(N);
    let half = build(Metric::L2, &data[..N / 2], IndexParams::default());
    let dir = tempfile::tempdir().unwrap();
    half.save(dir.path()).unwrap();
    let on_disk = std::fs::read(dir.path().join(INDEX_FILE)).unwrap();
    let mut mapped = HnswIndex::load(dir.path()).unwrap();
    mapped
        .insert((N / 2..N).map(|i| (i as u64, data[i].as_slice())))
        .unwrap();
    // The copy holds the built rows and the new ones; the file is untouched.
    assert!(!mapped.graph.vectors.is_mapped());
    assert_eq!(mapped.info().rows, N);
    assert_eq!(mapped.vector(3).as_ref(), Some(&data[3]));
    assert_eq!(std::fs::read(dir.path().join(INDEX_FILE)).unwrap(), on_disk);
    let r = recall(&mapped, &data, &queries, 64, |_| true);
    assert!(r >= 0.95, "recall@10 {r} at ef 64");
}
