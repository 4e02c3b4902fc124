//! A whole file as mono samples at a chosen rate, for `decode(path [, sample_rate])`.

use symphonia::core::io::MediaSource;

use crate::decode::DecodeStream;
use crate::features::AnalysisError;
use crate::resample::StreamResampler;

/// Highest rate `decode` resamples to; anything above is a typo, not a use.
pub const MAX_RATE: u32 = 384_000;

/// Decodes `source`, averages its channels and resamples to `rate` (`None`: the file's own).
/// Returns the samples and their rate. The whole signal is held in memory, so at most
/// `max_seconds` of it: a longer file stops decoding there with [`AnalysisError::TooLong`].
pub fn decode_mono(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
    rate: Option<u32>,
    max_seconds: f64,
) -> Result<(Vec<f32>, u32), AnalysisError> {
    let mut stream = DecodeStream::open(source, extension)?;
    let native = stream.sample_rate();
    let rate = rate.unwrap_or(native);
    let max_samples = (max_seconds * f64::from(rate)).floor() as usize;
    let mut resampler = StreamResampler::new(native, rate)?;
    let mut samples = Vec::new();
    let mut mono = Vec::new();
    let too_long = std::cell::Cell::new(false);
    let mut keep = |out: &[f32]| {
        if samples.len() + out.len() > max_samples {
            too_long.set(true);
        } else {
            samples.extend_from_slice(out);
        }
    };
    while let Some(block) = stream.next_block()? {
        block.downmix_into(&mut mono);
        resampler.process(&mono, &mut keep)?;
        if too_long.get() {
            return Err(AnalysisError::TooLong { max_seconds, rate });
        }
    }
    resampler.finish(&mut keep)?;
    if too_long.get() {
        return Err(AnalysisError::TooLong { max_seconds, rate });
    }
    if stream.decoded_frames() == 0 {
        return Err(AnalysisError::NoAudio {
            errors: stream.decode_errors(),
        });
    }
    Ok((samples, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone() -> Box<dyn MediaSource> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tone.wav");
        Box::new(std::fs::File::open(path).unwrap())
    }

    #[test]
    fn keeps_the_native_rate_or_resamples() {
        let (native, rate) = decode_mono(tone(), Some("wav"), None, 600.0).unwrap();
        assert_eq!(rate, 22_050);
        let (half, rate) = decode_mono(tone(), Some("wav"), Some(11_025), 600.0).unwrap();
        assert_eq!(rate, 11_025);
        assert_eq!(half.len(), native.len().div_ceil(2));
    }

    #[test]
    fn stops_at_the_cap() {
        let (native, _) = decode_mono(tone(), Some("wav"), None, 600.0).unwrap();
        let seconds = native.len() as f64 / 22_050.0;
        let err = decode_mono(tone(), Some("wav"), None, seconds / 2.0).unwrap_err();
        assert!(
            matches!(err, AnalysisError::TooLong { rate: 22_050, .. }),
            "{err}"
        );
        let exact = decode_mono(tone(), Some("wav"), None, seconds).unwrap();
        assert_eq!(exact.0.len(), native.len());
    }
}
