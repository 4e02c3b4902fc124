//! The batcher gives each track what a pass over that track alone gives, and a long track
//! analysed alone, in bounded passes, what one pass over all its patches gives; a track whose
//! caller stopped it gets no more passes.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use audiolake_models::{
    Batcher, Device, Error, Kind, Musicnn, TrackTags, DEFAULT_BATCH_SIZE, N_MELS,
};

/// A deterministic test signal: a few partials whose pitch depends on `seed`, plus clicks.
fn signal(seed: usize, seconds: f32) -> Vec<f32> {
    let f0 = 110.0 * (1.0 + seed as f32 * 0.37);
    (0..(seconds * 16000.0) as usize)
        .map(|i| {
            let t = i as f32 / 16000.0;
            let tone: f32 = (1..5)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                .sum();
            let click = if i % (4000 + 500 * seed) < 40 {
                0.8
            } else {
                0.0
            };
            0.2 * tone + click
        })
        .collect()
}

fn assert_close(a: &TrackTags, b: &TrackTags) {
    assert_eq!((a.patches, a.padded), (b.patches, b.padded));
    for (x, y) in a.tags.iter().zip(&b.tags) {
        assert!((x - y).abs() < 1e-5, "tags {x} vs {y}");
    }
    for (x, y) in a.embedding.iter().zip(&b.embedding) {
        assert!((x - y).abs() < 1e-5, "embedding {x} vs {y}");
    }
}

#[test]
fn batched_results_equal_single_track_results() {
    let model = Arc::new(Musicnn::load_bundled(Kind::Msd, &Device::Cpu).unwrap());
    // Lengths from under one patch to several; a batch of 4 forces tracks to share and split passes.
    let lengths = [1.0, 3.5, 7.0, 12.5, 2.0, 6.1];
    let tracks: Vec<Vec<[f32; N_MELS]>> = lengths
        .iter()
        .enumerate()
        .map(|(i, &s)| model.logmel(&signal(i, s)))
        .collect();
    let single: Vec<TrackTags> = tracks.iter().map(|f| model.analyze(f).unwrap()).collect();
    assert_eq!(
        single.iter().map(|r| r.patches).collect::<Vec<_>>(),
        [1, 1, 2, 4, 1, 2]
    );
    // Different signals get different tags (the comparison below is not trivially true).
    assert!(single[0]
        .tags
        .iter()
        .zip(&single[3].tags)
        .any(|(a, b)| (a - b).abs() > 1e-3));

    let batcher = Batcher::new(Arc::clone(&model), 4);
    let batched: Vec<TrackTags> = std::thread::scope(|s| {
        let handles: Vec<_> = tracks
            .iter()
            .map(|frames| s.spawn(|| batcher.analyze(frames).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (b, one) in batched.iter().zip(&single) {
        assert_close(b, one);
    }
    // Sequential calls through the same batcher too.
    assert_close(&batcher.analyze(&tracks[3]).unwrap(), &single[3]);
    assert_eq!(batcher.model().labels()[0], "rock");
}

#[test]
fn a_stopped_track_gives_up_and_the_others_are_answered() {
    let model = Arc::new(Musicnn::load_bundled(Kind::Mtt, &Device::Cpu).unwrap());
    let frames = model.logmel(&signal(1, 7.0));
    let stopped = Arc::new(AtomicBool::new(true));
    assert!(matches!(
        model.analyze_until(&frames, &stopped),
        Err(Error::Cancelled)
    ));
    let batcher = Batcher::new(Arc::clone(&model), 1);
    assert!(matches!(
        batcher.analyze_until(&frames, Arc::clone(&stopped)),
        Err(Error::Cancelled)
    ));
    let running = Arc::new(AtomicBool::new(false));
    let tags = batcher.analyze_until(&frames, running).unwrap();
    assert_close(&tags, &model.analyze(&frames).unwrap());
}

#[test]
fn a_track_longer_than_one_pass_is_analysed_in_bounded_passes_with_the_same_result() {
    let model = Musicnn::load_bundled(Kind::Mtt, &Device::Cpu).unwrap();
    let patches = DEFAULT_BATCH_SIZE + 3;
    // Log-mel-like values that differ from patch to patch.
    let frames: Vec<[f32; N_MELS]> = (0..patches * model.patch_frames())
        .map(|t| std::array::from_fn(|m| ((t * 7 + m * 3) % 23) as f32 * 0.1))
        .collect();
    let passes = model.analyze(&frames).unwrap();
    assert_eq!((passes.patches, passes.padded), (patches, false));
    let whole = model.patches(&frames);
    let one_pass = TrackTags::from_output(&model.forward(whole.data()).unwrap(), false);
    assert_close(&passes, &one_pass);
}
