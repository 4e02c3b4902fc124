//! Streaming decode of any format symphonia knows into f32 planes, one packet at a time.
//!
//! Memory is bounded by one decoded packet: nothing is buffered across packets. Samples are
//! kept as decoded, above full scale included (AAC overshoots), because clipping would bias
//! loudness and true peak. Corrupt packets are skipped and counted, as ffmpeg does: those the
//! demuxer or decoder reports, those betrayed by a jump in timestamps, and, where the header
//! states the frame count (FLAC, MP3 with a Xing/LAME frame, MP4), those missing at the end,
//! because some demuxers (MP3) resynchronise past junk leaving no other trace.

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use crate::limits::{self, LimitError};

/// After this many corrupt packets in a row the stream is taken as ended: a file of garbage
/// must not keep the decoder busy for ever.
const MAX_CONSECUTIVE_ERRORS: u32 = 1000;

/// Why a stream could not be opened or decoded at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unrecognised or unsupported container (file extension {extension}): {source}")]
    Probe {
        extension: String,
        #[source]
        source: SymphoniaError,
    },
    #[error("no audio track in the container")]
    NoAudioTrack,
    #[error("the audio track has no sample rate or channel layout in its header")]
    MissingParameters,
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("no decoder for the audio codec: {0}")]
    UnsupportedCodec(#[source] SymphoniaError),
    #[error("decoding stopped: {0}")]
    Fatal(#[source] SymphoniaError),
}

/// A decoded packet: one plane of f32 samples per channel, all of equal length.
pub struct Block<'a> {
    planes: &'a [Vec<f32>],
}

impl<'a> Block<'a> {
    pub fn frames(&self) -> usize {
        self.planes.first().map_or(0, Vec::len)
    }

    pub fn channels(&self) -> usize {
        self.planes.len()
    }

    pub fn planes(&self) -> &'a [Vec<f32>] {
        self.planes
    }

    /// Averages the channels into `out` (cleared first); mono is copied as is.
    pub fn downmix_into(&self, out: &mut Vec<f32>) {
        out.clear();
        match self.planes {
            [] => {}
            [mono] => out.extend_from_slice(mono),
            [first, rest @ ..] => {
                out.extend_from_slice(first);
                for plane in rest {
                    for (o, s) in out.iter_mut().zip(plane) {
                        *o += s;
                    }
                }
                let scale = 1.0 / self.planes.len() as f32;
                out.iter_mut().for_each(|o| *o *= scale);
            }
        }
    }
}

/// An open audio stream that yields decoded packets until the end of the file.
pub struct DecodeStream {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    sample_rate: u32,
    channels: usize,
    planes: Vec<Vec<f32>>,
    frames: u64,
    errors: u64,
    /// Frames the header says the track has, if it says.
    declared_frames: Option<u64>,
    /// Most frames seen in one packet: the unit in which a shortfall is counted.
    packet_frames: u64,
    /// The latest the next packet may start if nothing was skipped (track time base units).
    expected_ts: Option<i64>,
    finished: bool,
}

impl DecodeStream {
    /// Probes the container (helped by the file extension, if any) and opens its default audio
    /// track.
    pub fn open(
        source: Box<dyn MediaSource>,
        extension: Option<&str>,
    ) -> Result<Self, DecodeError> {
        let mss = MediaSourceStream::new(source, Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = extension {
            hint.with_extension(ext);
        }
        let format = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|source| DecodeError::Probe {
                extension: extension.unwrap_or("none").to_owned(),
                source,
            })?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or(DecodeError::NoAudioTrack)?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or(DecodeError::NoAudioTrack)?;
        let sample_rate = params.sample_rate.ok_or(DecodeError::MissingParameters)?;
        // Before the decoder is built: it sizes its buffers from these values.
        limits::check_params(params)?;
        let channels = params.channels.as_ref().map_or(0, |c| c.count());
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(DecodeError::UnsupportedCodec)?;
        let track_id = track.id;
        let declared_frames = track.num_frames;
        Ok(Self {
            format,
            decoder,
            track_id,
            sample_rate,
            channels,
            planes: Vec::new(),
            frames: 0,
            errors: 0,
            declared_frames,
            packet_frames: 0,
            expected_ts: None,
            finished: false,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Channel count from the header; 0 when the container does not say (the first block will).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Packets that failed to demux or decode and were skipped.
    pub fn decode_errors(&self) -> u64 {
        self.errors
    }

    pub fn decoded_frames(&self) -> u64 {
        self.frames
    }

    pub fn decoded_duration_s(&self) -> f64 {
        self.frames as f64 / f64::from(self.sample_rate)
    }

    /// The next decoded packet, or `None` at the end of the stream. Corrupt packets are counted
    /// and skipped; a truncated file ends the stream and counts as one error.
    pub fn next_block(&mut self) -> Result<Option<Block<'_>>, DecodeError> {
        if self.decode_next()? {
            Ok(Some(Block {
                planes: &self.planes,
            }))
        } else {
            Ok(None)
        }
    }

    /// Decodes packets into `self.planes` until one yields audio; false at the end.
    fn decode_next(&mut self) -> Result<bool, DecodeError> {
        let mut consecutive = 0u32;
        while !self.finished {
            if consecutive >= MAX_CONSECUTIVE_ERRORS {
                self.finished = true;
                break;
            }
            let packet = match self.format.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) | Err(SymphoniaError::ResetRequired) => {
                    self.finished = true;
                    break;
                }
                Err(SymphoniaError::IoError(_)) => {
                    self.errors += 1;
                    self.finished = true;
                    break;
                }
                Err(SymphoniaError::DecodeError(_)) => {
                    self.errors += 1;
                    consecutive += 1;
                    continue;
                }
                Err(e) => return Err(DecodeError::Fatal(e)),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            // Demuxers resynchronise past junk silently; a jump in timestamps is the trace
            // that frames were lost, and counts as one corrupt stretch.
            let pts = packet.pts.get();
            if self.expected_ts.is_some_and(|expected| pts > expected) {
                self.errors += 1;
            }
            // Trimmed frames may or may not be counted in timestamps; allow for both.
            let span = packet.dur.get() + packet.trim_start.get() + packet.trim_end.get();
            self.expected_ts = Some(pts.saturating_add(span as i64));
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    if buf.frames() == 0 {
                        continue;
                    }
                    buf.copy_to_vecs_planar::<f32>(&mut self.planes);
                    self.channels = self.planes.len();
                    self.frames += buf.frames() as u64;
                    self.packet_frames = self.packet_frames.max(buf.frames() as u64);
                    return Ok(true);
                }
                Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => {
                    self.errors += 1;
                    consecutive += 1;
                }
                // Corrupt data can look like a feature the decoder lacks (e.g. AAC coupling
                // channels); once the stream has decoded, treat it as one more bad packet.
                Err(SymphoniaError::Unsupported(_)) if self.frames > 0 => {
                    self.errors += 1;
                    consecutive += 1;
                }
                Err(e) => return Err(DecodeError::Fatal(e)),
            }
        }
        self.count_shortfall();
        Ok(false)
    }

    /// At the end: packets the header promised but the stream did not deliver were lost, even
    /// when nothing reported them. Each lost packet is usually also one reported error, so the
    /// larger of the two counts stands rather than their sum.
    fn count_shortfall(&mut self) {
        let (Some(declared), Some(unit)) = (
            self.declared_frames,
            std::num::NonZeroU64::new(self.packet_frames),
        ) else {
            return;
        };
        let missing = declared.saturating_sub(self.frames);
        // A few samples short is rounding of encoder delay and padding; from a quarter of a
        // packet on, a packet was lost (a damaged MP3 frame can cost its neighbour part of
        // its bit reservoir, so the loss need not be whole packets).
        let lost = (missing + unit.get() * 3 / 4) / unit.get();
        self.errors = self.errors.max(lost);
        self.declared_frames = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmix_averages_channels() {
        let planes = vec![vec![1.0, 0.5], vec![0.0, 1.5]];
        let mut out = Vec::new();
        Block { planes: &planes }.downmix_into(&mut out);
        assert_eq!(out, vec![0.5, 1.0]);
    }

    #[test]
    fn garbage_is_a_probe_error() {
        let bytes = vec![7u8; 4096];
        let err = DecodeStream::open(Box::new(std::io::Cursor::new(bytes)), Some("xyz"))
            .err()
            .expect("garbage must not open");
        assert!(matches!(err, DecodeError::Probe { .. }), "{err}");
    }
}
