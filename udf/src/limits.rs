//! The stream parameters audiolake accepts from a header, checked where a header is probed and
//! where a stream is opened. Decoders and resamplers size their buffers from these values (the
//! FFT resampler from `rate / gcd(rate, target)`), so a crafted header must be refused before
//! anything is built from it: otherwise one file can ask for tens of gigabytes.

use symphonia::core::codecs::audio::AudioCodecParameters;

/// Lowest sample rate read: below, no real recording exists.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest sample rate read: the top of what audio interfaces record (768 kHz PCM).
pub const MAX_SAMPLE_RATE: u32 = 768_000;
/// Most channels read: beyond third-order ambisonics and 22.2, with room to spare.
pub const MAX_CHANNELS: usize = 64;
/// Widest sample read (64-bit float PCM).
pub const MAX_BITS_PER_SAMPLE: u32 = 64;
/// Most frames one packet may declare (real codecs stay under 132,000: 4-bit ADPCM blocks);
/// the decoder allocates this many frames per channel up front.
pub const MAX_PACKET_FRAMES: u64 = 1 << 18;

/// A header value outside what audiolake reads. The message is shown in the `error` column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "unsupported sample rate {0} Hz (audiolake reads {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz)"
    )]
    SampleRate(u32),
    #[error("unsupported channel count {0} (audiolake reads 1 to {MAX_CHANNELS} channels)")]
    Channels(usize),
    #[error(
        "unsupported bit depth of {0} bits (audiolake reads up to {MAX_BITS_PER_SAMPLE} bits per sample)"
    )]
    BitsPerSample(u32),
    #[error(
        "unsupported packet size of {0} frames (audiolake reads up to {MAX_PACKET_FRAMES} frames per packet)"
    )]
    PacketFrames(u64),
}

/// Checks a sample rate, e.g. a header's or one a caller asks to resample to.
pub fn check_sample_rate(rate: u32) -> Result<(), LimitError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(LimitError::SampleRate(rate))
    }
}

/// Checks every value of an audio track's parameters that the header states.
pub fn check_params(params: &AudioCodecParameters) -> Result<(), LimitError> {
    if let Some(rate) = params.sample_rate {
        check_sample_rate(rate)?;
    }
    if let Some(count) = params.channels.as_ref().map(|c| c.count()) {
        if !(1..=MAX_CHANNELS).contains(&count) {
            return Err(LimitError::Channels(count));
        }
    }
    // Only the decoded width: demuxers fill the coded width (and 0 for "unknown") loosely for
    // compressed codecs, e.g. CAF with AAC.
    if let Some(bits) = params.bits_per_sample {
        if bits > MAX_BITS_PER_SAMPLE {
            return Err(LimitError::BitsPerSample(bits));
        }
    }
    if let Some(frames) = params.max_frames_per_packet {
        if frames > MAX_PACKET_FRAMES {
            return Err(LimitError::PacketFrames(frames));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use symphonia::core::audio::Channels;

    #[test]
    fn accepted_and_refused_values() {
        let mut params = AudioCodecParameters::new();
        params.with_sample_rate(44_100).with_bits_per_sample(16);
        assert_eq!(check_params(&params), Ok(()));
        params.with_sample_rate(4_294_967_291);
        assert_eq!(
            check_params(&params).map_err(|e| e.to_string()),
            Err("unsupported sample rate 4294967291 Hz (audiolake reads 1000 to 768000 Hz)".into())
        );
        params
            .with_sample_rate(768_000)
            .with_channels(Channels::Discrete(1024));
        assert_eq!(check_params(&params), Err(LimitError::Channels(1024)));
        params
            .with_channels(Channels::Discrete(64))
            .with_max_frames_per_packet(1 << 32);
        assert_eq!(
            check_params(&params),
            Err(LimitError::PacketFrames(1 << 32))
        );
        params
            .with_max_frames_per_packet(1152)
            .with_bits_per_sample(0)
            .with_bits_per_coded_sample(0);
        assert_eq!(check_params(&params), Ok(()), "0 bits means unknown");
        params.with_bits_per_sample(96);
        assert_eq!(
            check_params(&params).map_err(|e| e.to_string()),
            Err(
                "unsupported bit depth of 96 bits (audiolake reads up to 64 bits per sample)"
                    .into()
            )
        );
        assert_eq!(check_sample_rate(999), Err(LimitError::SampleRate(999)));
        assert_eq!(check_sample_rate(1000), Ok(()));
    }
}
