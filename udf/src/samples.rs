//! A whole file as mono samples at a chosen rate, for `decode(path [, sample_rate])`.

use symphonia::core::io::MediaSource;

use crate::decode::DecodeStream;
use crate::features::AnalysisError;
use crate::resample::StreamResampler;

/// Highest rate `decode` resamples to; anything above is a typo, not a use.
pub const MAX_RATE: u32 = 384_000;

/// Decodes `source`, averages its channels and resamples to `rate` (`None`: the file's own).
/// Returns the samples and their rate. The whole signal is held in memory.
pub fn decode_mono(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
    rate: Option<u32>,
) -> Result<(Vec<f32>, u32), AnalysisError> {
    let mut stream = DecodeStream::open(source, extension)?;
    let native = stream.sample_rate();
    let rate = rate.unwrap_or(native);
    let mut resampler = StreamResampler::new(native, rate)?;
    let mut samples = Vec::new();
    let mut mono = Vec::new();
    while let Some(block) = stream.next_block()? {
        block.downmix_into(&mut mono);
        resampler.process(&mono, &mut |out| samples.extend_from_slice(out))?;
    }
    resampler.finish(&mut |out| samples.extend_from_slice(out))?;
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
        let (native, rate) = decode_mono(tone(), Some("wav"), None).unwrap();
        assert_eq!(rate, 22_050);
        let (half, rate) = decode_mono(tone(), Some("wav"), Some(11_025)).unwrap();
        assert_eq!(rate, 11_025);
        assert_eq!(half.len(), native.len().div_ceil(2));
    }
}
