//! Accuracy floors on the shared corpus (skipped when `../shared/corpus` is absent). The floors
//! sit just under what the extractors reach; `cargo bench --bench accuracy` prints the detail.

use audiolake_testkit_audio::corpus;
use audiolake_udf::features::{analyze_path, AnalysisOutput};

fn analyze_all(entries: &[corpus::Entry]) -> Vec<AnalysisOutput> {
    // Two threads: the files are independent and the test machine has two cores.
    let half = entries.len().div_ceil(2);
    std::thread::scope(|s| {
        let parts: Vec<_> = entries
            .chunks(half)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|e| {
                            analyze_path(
                                &corpus::dir().join(&e.file),
                                &["rhythm", "tonal", "loudness"],
                            )
                            .unwrap_or_else(|err| panic!("{err}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
    })
}

#[test]
fn corpus_accuracy_floors() {
    let Some(entries) = corpus::load() else {
        return;
    };
    let outputs = analyze_all(&entries);
    let (mut acc1, mut acc2, mut keyed, mut exact, mut mirex) = (0, 0, 0, 0, 0.0);
    for (e, out) in entries.iter().zip(&outputs) {
        assert_eq!(out.decode_errors, 0, "{}", e.file);
        let bpm = out.get("bpm").and_then(|v| v.as_f64()).unwrap_or(0.0);
        acc1 += usize::from(corpus::accuracy1(bpm, e.bpm));
        acc2 += usize::from(corpus::accuracy2(bpm, e.bpm));
        if let Some(truth) = e.key {
            keyed += 1;
            let key = out
                .get("key")
                .and_then(|v| v.as_str().and_then(corpus::pitch_class));
            let minor = out.get("mode").map(|v| v.as_str() == Some("minor"));
            if let (Some(k), Some(m)) = (key, minor) {
                let s = corpus::mirex_key_score((k, m), truth);
                exact += usize::from(s == 1.0);
                mirex += s;
            }
        }
        if let Some(truth) = e.lufs {
            let lufs = out.get("loudness_lufs").and_then(|v| v.as_f64()).unwrap();
            assert!(
                (lufs - truth).abs() <= 0.5,
                "{}: {lufs} LUFS, ffmpeg {truth}",
                e.file
            );
        }
        if let Some(truth) = e.true_peak {
            let tp = out.get("true_peak_dbtp").and_then(|v| v.as_f64()).unwrap();
            assert!(
                (tp - truth).abs() <= 0.5,
                "{}: {tp} dBTP, ffmpeg {truth}",
                e.file
            );
        }
    }
    let n = entries.len() as f64;
    let (acc1, acc2) = (acc1 as f64 / n, acc2 as f64 / n);
    let exact = exact as f64 / keyed as f64;
    let mirex = mirex / keyed as f64;
    println!("tempo Acc1 {acc1:.3} Acc2 {acc2:.3}; key exact {exact:.3} MIREX {mirex:.3}");
    assert!(acc1 >= 0.88, "tempo Accuracy1 {acc1:.3}");
    assert!(acc2 >= 0.98, "tempo Accuracy2 {acc2:.3}");
    assert!(exact >= 0.80, "key exact {exact:.3}");
    assert!(mirex >= 0.85, "key MIREX {mirex:.3}");
}
