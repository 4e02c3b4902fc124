//! The port against outputs of the original musicnn 0.1.0 (TensorFlow 2.15.1, numpy 1.26.4,
//! librosa 0.11.0) on `data/chord_16k.wav`: an 8 s C-major chord with a kick at 16 kHz.

use std::collections::HashMap;
use std::path::PathBuf;

use audiolake_models::{parse_device, Device, Error, Kind, Musicnn, N_MELS};
use candle_core::Tensor;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn chord() -> Vec<f32> {
    let mut reader = hound::WavReader::open(data("chord_16k.wav")).unwrap();
    assert_eq!(reader.spec().sample_rate, 16000);
    assert_eq!(reader.spec().channels, 1);
    reader.samples::<f32>().map(Result::unwrap).collect()
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(data("chord_16k_reference.safetensors"), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logmel_matches_librosa() {
    let model = Musicnn::load_bundled(Kind::Mtt, &Device::Cpu).unwrap();
    let frames = model.logmel(&chord());
    let expected = values(&reference()["logmel"]);
    assert_eq!(
        frames.len() * N_MELS,
        expected.len(),
        "1 + 128000 / 256 = 501 frames"
    );
    let got: Vec<f32> = frames.iter().flatten().copied().collect();
    let diff = max_abs_diff(&got, &expected);
    let flips = got
        .iter()
        .zip(&expected)
        .filter(|(a, b)| (*a - *b).abs() > 1e-5)
        .count();
    eprintln!(
        "logmel max abs diff {diff:e}, {flips} of {} values off by more than 1e-5",
        got.len()
    );
    // Where the mel energy sits on a float16 rounding boundary, float32 noise can round it the
    // other way: one float16 step (at most 2^-10 relative) moves the log-mel by at most 4.3e-4.
    assert!(diff < 4.5e-4, "logmel max abs diff {diff}");
    assert!(flips < got.len() / 1000, "{flips} values differ");
}

#[test]
fn taggram_and_penultimate_match_tensorflow() {
    let reference = reference();
    let audio = chord();
    for (kind, name) in [(Kind::Mtt, "MTT_musicnn"), (Kind::Msd, "MSD_musicnn")] {
        let model = Musicnn::load_bundled(kind, &Device::Cpu).unwrap();
        let expected_tags = values(&reference[&format!("{name}.taggram")]);
        let expected_pen = values(&reference[&format!("{name}.penultimate")]);

        // The network alone, on the reference log-mel.
        let logmel = reference["logmel"].to_vec2::<f32>().unwrap();
        let frames: Vec<[f32; N_MELS]> = logmel
            .iter()
            .map(|r| r.as_slice().try_into().unwrap())
            .collect();
        let patches = model.patches(&frames);
        assert_eq!(
            (patches.len(), patches.padded()),
            (2, false),
            "501 frames hold 2 patches of 187"
        );
        let out = model.forward(patches.data()).unwrap();
        let tags: Vec<f32> = out.taggram.iter().flatten().copied().collect();
        let pen: Vec<f32> = out.penultimate.iter().flatten().copied().collect();
        let (dt, dp) = (
            max_abs_diff(&tags, &expected_tags),
            max_abs_diff(&pen, &expected_pen),
        );
        eprintln!("{name} on reference log-mel: taggram {dt:e}, penultimate {dp:e}");
        assert!(
            dt < 1e-5 && dp < 1e-4,
            "{name}: taggram {dt}, penultimate {dp}"
        );

        // End to end from the samples.
        let result = model.analyze(&model.logmel(&audio)).unwrap();
        let out = model
            .forward(model.patches(&model.logmel(&audio)).data())
            .unwrap();
        let tags: Vec<f32> = out.taggram.iter().flatten().copied().collect();
        let pen: Vec<f32> = out.penultimate.iter().flatten().copied().collect();
        let (dt, dp) = (
            max_abs_diff(&tags, &expected_tags),
            max_abs_diff(&pen, &expected_pen),
        );
        eprintln!("{name} end to end: taggram {dt:e}, penultimate {dp:e}");
        assert!(dt < 1e-4, "{name}: taggram max abs diff {dt}");
        assert!(dp < 1e-3, "{name}: penultimate max abs diff {dp}");

        // The track result: mean taggram and the L2-normalised mean penultimate.
        assert_eq!((result.patches, result.padded), (2, false));
        for (j, &t) in result.tags.iter().enumerate() {
            let mean = (expected_tags[j] + expected_tags[50 + j]) / 2.0;
            assert!((t - mean).abs() < 1e-4, "{name} tag {j}: {t} vs {mean}");
        }
        let mean_pen: Vec<f32> = (0..200)
            .map(|j| (expected_pen[j] + expected_pen[200 + j]) / 2.0)
            .collect();
        let norm = mean_pen.iter().map(|v| v * v).sum::<f32>().sqrt();
        let expected_emb: Vec<f32> = mean_pen.iter().map(|v| v / norm).collect();
        let de = max_abs_diff(&result.embedding, &expected_emb);
        assert!(de < 1e-4, "{name}: embedding max abs diff {de}");
    }
}

#[test]
fn power_frames_give_the_same_logmel() {
    // A caller with its own STFT frames gets the same log-mel as from samples.
    let model = Musicnn::load_bundled(Kind::Msd, &Device::Cpu).unwrap();
    let audio = chord();
    let from_samples = model.logmel(&audio);
    // Frame 100 covers samples 100*256-256 .. 100*256+256 (periodic Hann, n_fft 512).
    let n = 512;
    let start = 100 * 256 - 256;
    let power: Vec<f32> = (0..=n / 2)
        .map(|k| {
            let (mut re, mut im) = (0f64, 0f64);
            for i in 0..n {
                let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
                let x = f64::from(audio[start + i]) * w;
                let a = -2.0 * std::f64::consts::PI * (k * i) as f64 / n as f64;
                re += x * a.cos();
                im += x * a.sin();
            }
            (re * re + im * im) as f32
        })
        .collect();
    let frame = model.logmel_frame(&power).unwrap();
    let diff = max_abs_diff(&frame, &from_samples[100]);
    assert!(diff < 4.5e-4, "max abs diff {diff}");
    assert!(matches!(
        model.logmel_frame(&power[1..]),
        Err(Error::Input(_))
    ));
}

#[test]
fn short_audio_is_padded_to_one_patch() {
    let model = Musicnn::load_bundled(Kind::Mtt, &Device::Cpu).unwrap();
    let one_second = &chord()[..16000];
    let frames = model.logmel(one_second);
    assert_eq!(frames.len(), 63);
    let patches = model.patches(&frames);
    assert_eq!((patches.len(), patches.padded()), (1, true));
    assert!(patches.data()[63 * N_MELS..].iter().all(|&v| v == 0.0));
    let result = model.analyze(&frames).unwrap();
    assert_eq!((result.patches, result.padded), (1, true));
    assert!(result.tags.iter().all(|t| (0.0..=1.0).contains(t)));
    let norm = result.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "embedding norm {norm}");
    // No audio at all still gives one (silent) patch.
    assert_eq!(model.analyze(&model.logmel(&[])).unwrap().patches, 1);
}

#[test]
fn labels_are_in_output_order() {
    let mtt = Musicnn::load_bundled(Kind::Mtt, &Device::Cpu).unwrap();
    let msd = Musicnn::load_bundled(Kind::Msd, &Device::Cpu).unwrap();
    assert_eq!(mtt.labels().len(), 50);
    assert_eq!(msd.labels().len(), 50);
    assert_eq!(
        &mtt.labels()[..4],
        ["guitar", "classical", "slow", "techno"]
    );
    assert_eq!(mtt.labels()[49], "choral");
    assert_eq!(&msd.labels()[..4], ["rock", "pop", "alternative", "indie"]);
    assert_eq!(msd.labels()[49], "happy");
    assert_eq!(
        (mtt.sample_rate(), mtt.n_fft(), mtt.patch_frames()),
        (16000, 512, 187)
    );
}

#[test]
fn load_reads_converted_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights");
    let model = Musicnn::load(
        dir.join("msd_musicnn.safetensors"),
        dir.join("msd_musicnn.json"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(model.labels()[0], "rock");
    let missing = Musicnn::load(
        dir.join("nope.safetensors"),
        dir.join("msd_musicnn.json"),
        &Device::Cpu,
    );
    match missing {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("nope.safetensors"), "{e}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("loaded a missing file"),
    }
}

#[test]
fn device_names() {
    assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
    assert!(matches!(parse_device(" CPU "), Ok(Device::Cpu)));
    let e = parse_device("tpu").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown device \"tpu\": expected cpu, cuda or cuda:N"
    );
    assert!(matches!(
        parse_device("cuda:x"),
        Err(Error::UnknownDevice(_))
    ));
    if cfg!(feature = "cuda") {
        // No machine here has 100 GPUs.
        let e = parse_device("cuda:99").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("CUDA device 99 is not available: "),
            "{e}"
        );
    } else {
        for name in ["cuda", "cuda:0", "cuda:3"] {
            assert_eq!(
                parse_device(name).unwrap_err().to_string(),
                "audiolake was built without the cuda feature; rebuild with --features cuda"
            );
        }
    }
}
