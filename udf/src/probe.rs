//! Header probing: format, codec, stream parameters, duration and tags of an audio file, read
//! from its headers (and trailing tags) without decoding audio.
//!
//! How each value is obtained:
//! - `format`, `codec`: the symphonia demuxer and codec registry that accept the stream.
//! - `sample_rate`, `channels`, `bits_per_sample`: the default audio track's codec parameters.
//! - `duration_s`: the track's frame count (delay and padding removed) divided by the sample
//!   rate; otherwise the container's duration. MP3 files whose first frame carries no LAME/Xing
//!   frame count (VBR without Xing, VBRI, bare streams) get their frames counted: symphonia
//!   would only estimate from the first frames' bitrate, which is wrong for VBR.
//! - `bitrate_kbps`: file size in bits over the duration (as ffprobe's format bit rate).
//! - tags: merged from every metadata block found (ID3v1, APE, ID3v2, then the container's own
//!   Vorbis comments, MP4 atoms or RIFF INFO), later blocks overriding earlier ones.

use std::panic::{catch_unwind, AssertUnwindSafe};

use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo, Track, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::{MetadataOptions, MetadataRevision, StandardTag, Tag};
use symphonia::core::units::Time;

use crate::limits::{self, LimitError};

/// Stream parameters and tags of one audio file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioHeader {
    /// Container: `mp3`, `flac`, `ogg`, `mp4`, `wav`, `aiff`, `caf`, `mkv`, `aac` (ADTS), ...
    pub format: String,
    /// Codec family: `mp3`, `flac`, `vorbis`, `aac`, `alac`, `pcm`, `adpcm`, ...
    pub codec: String,
    pub sample_rate: Option<u32>,
    pub channels: Option<u32>,
    /// Bits per decoded sample for lossless codecs; `None` for lossy ones.
    pub bits_per_sample: Option<u32>,
    pub duration_s: Option<f64>,
    pub bitrate_kbps: Option<f64>,
    pub tags: Tags,
}

/// The descriptive tags audiolake exposes as columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
    pub genre: Option<String>,
    pub track_number: Option<u32>,
    pub year: Option<i32>,
}

/// Why a file could not be probed. The message is shown to users in the `error` column.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("not a supported audio format: {0}")]
    Unsupported(String),
    #[error("no audio track in the container")]
    NoAudioTrack,
    #[error("invalid audio header: {0}")]
    InvalidHeader(String),
    #[error("read failed: {0}")]
    Io(String),
    #[error("decoder panicked while reading the header: {0}")]
    Panic(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Probes one audio file. `extension` (without the dot) is a hint for the demuxer search.
///
/// Never panics: a panic inside a demuxer is caught and returned as [`ProbeError::Panic`].
pub fn probe(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
) -> Result<AudioHeader, ProbeError> {
    match catch_unwind(AssertUnwindSafe(|| probe_inner(source, extension))) {
        Ok(result) => result,
        Err(panic) => Err(ProbeError::Panic(panic_message(panic.as_ref()))),
    }
}

/// The text of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

fn probe_inner(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
) -> Result<AudioHeader, ProbeError> {
    let byte_len = source.byte_len();
    if byte_len == Some(0) {
        return Err(ProbeError::Empty);
    }
    let mss = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let mut reader = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymphoniaError::Unsupported(what) => ProbeError::Unsupported(what.to_string()),
            other => classify(other),
        })?;

    let format = match reader.format_info().short_name {
        "isomp4" => "mp4",
        "wave" => "wav",
        other => other,
    }
    .to_string();

    let track = reader
        .default_track(TrackType::Audio)
        .ok_or(ProbeError::NoAudioTrack)?
        .clone();
    let Some(CodecParameters::Audio(params)) = track.codec_params.clone() else {
        return Err(ProbeError::NoAudioTrack);
    };

    let codec = symphonia::default::get_codecs()
        .get_audio_decoder(params.codec)
        .map(|d| codec_family(d.codec.info.short_name))
        .ok_or_else(|| ProbeError::Unsupported(format!("codec {} in {format}", params.codec)))?;

    let sample_rate = params.sample_rate.filter(|&sr| sr > 0);
    let channels = params
        .channels
        .as_ref()
        .map(|c| c.count() as u32)
        .filter(|&c| c > 0);
    if sample_rate.is_none() || channels.is_none() {
        return Err(ProbeError::InvalidHeader(format!(
            "{format} header gives no usable sample rate or channel count"
        )));
    }
    limits::check_params(&params)?;
    let lossless = matches!(codec.as_str(), "flac" | "alac" | "pcm" | "adpcm");
    let bits_per_sample = if lossless {
        params.bits_per_sample
    } else {
        None
    };

    let tags = read_tags(reader.as_mut(), track.id);

    let seconds = |frames: u64| frames as f64 / f64::from(sample_rate.unwrap_or(1));
    let duration_s = if format == "mp3" && track.delay.is_none() {
        count_packet_frames(reader.as_mut(), track.id).map(seconds)
    } else {
        let duration = track_duration(&track, sample_rate);
        // An MP3 cut short still plays and its LAME/Xing frame still claims the full length:
        // look for audio in its last tenth of a second, elsewhere in the last second.
        let margin_s = if format == "mp3" { 0.1 } else { 1.0 };
        let reached =
            duration.map(|d| check_stream_reaches(reader.as_mut(), track.id, d, margin_s));
        match reached {
            // Its length is then what is present, not what the header claims.
            Some(Err(_)) if format == "mp3" => {
                rewind(reader.as_mut(), track.id)?;
                count_packet_frames(reader.as_mut(), track.id).map(seconds)
            }
            Some(Err(e)) => return Err(e),
            _ => duration,
        }
    };
    let bitrate_kbps = match (byte_len, duration_s) {
        (Some(len), Some(d)) if d > 0.0 => Some(len as f64 * 8.0 / d / 1000.0),
        _ => None,
    };

    Ok(AudioHeader {
        format,
        codec,
        sample_rate,
        channels,
        bits_per_sample,
        duration_s,
        bitrate_kbps,
        tags,
    })
}

/// Maps symphonia's codec names to families (`pcm_s16le` -> `pcm`); bit depth is its own column.
fn codec_family(short_name: &str) -> String {
    let family = short_name.split('_').next().unwrap_or(short_name);
    match family {
        "mp1" | "mp2" | "mp3" | "flac" | "vorbis" | "aac" | "alac" | "pcm" | "adpcm" => family,
        _ => short_name,
    }
    .to_string()
}

fn classify(err: SymphoniaError) -> ProbeError {
    match err {
        SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            ProbeError::InvalidHeader("file ends inside its header (truncated?)".to_string())
        }
        SymphoniaError::IoError(e) => ProbeError::Io(e.to_string()),
        SymphoniaError::DecodeError(what) => ProbeError::InvalidHeader(what.to_string()),
        SymphoniaError::Unsupported(what) => ProbeError::Unsupported(what.to_string()),
        other => ProbeError::InvalidHeader(other.to_string()),
    }
}

fn track_duration(track: &Track, sample_rate: Option<u32>) -> Option<f64> {
    if let (Some(frames), Some(sr)) = (track.num_frames, sample_rate) {
        return Some(frames as f64 / f64::from(sr));
    }
    let (tb, dur) = (track.time_base?, track.duration?);
    Some(tb.calc_duration(dur)?.as_secs_f64())
}

/// Seeks to `margin_s` before the end the header promises and reads a packet there: a file cut short
/// (or whose header lies about its length) fails here, at the cost of one read near the end.
fn check_stream_reaches(
    reader: &mut dyn FormatReader,
    track_id: u32,
    duration_s: f64,
    margin_s: f64,
) -> Result<(), ProbeError> {
    let target = (duration_s - margin_s).max(duration_s / 2.0);
    let Some(time) = Time::try_from_secs_f64(target) else {
        return Ok(());
    };
    let truncated = |why: String| {
        ProbeError::InvalidHeader(format!(
            "file is truncated or damaged: header says {duration_s:.3} s of audio, \
             but no audio could be read at {target:.3} s ({why})"
        ))
    };
    let to = SeekTo::Time {
        time,
        track_id: Some(track_id),
    };
    reader
        .seek(SeekMode::Coarse, to)
        .map_err(|e| truncated(e.to_string()))?;
    loop {
        match reader.next_packet() {
            Ok(Some(packet)) if packet.track_id == track_id => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => return Err(truncated("end of stream".to_string())),
            Err(e) => return Err(truncated(e.to_string())),
        }
    }
}

/// Seeks back to the first packet of `track_id`.
fn rewind(reader: &mut dyn FormatReader, track_id: u32) -> Result<(), ProbeError> {
    let to = SeekTo::Time {
        time: Time::ZERO,
        track_id: Some(track_id),
    };
    reader
        .seek(SeekMode::Accurate, to)
        .map(|_| ())
        .map_err(classify)
}

/// Counts the audio frames of every packet of `track_id` (reads the whole stream).
fn count_packet_frames(reader: &mut dyn FormatReader, track_id: u32) -> Option<u64> {
    let mut frames = 0u64;
    loop {
        match reader.next_packet() {
            // Untrimmed: the reader's trims derive from its bitrate estimate of the length.
            Ok(Some(packet)) if packet.track_id == track_id => frames += packet.dur.get(),
            Ok(Some(_)) => {}
            Ok(None) => break,
            // A damaged tail ends the count; what was counted is the playable part.
            Err(_) => break,
        }
    }
    (frames > 0).then_some(frames)
}

fn read_tags(reader: &mut dyn FormatReader, track_id: u32) -> Tags {
    let mut tags = Tags::default();
    let mut metadata = reader.metadata();
    loop {
        if let Some(revision) = metadata.current() {
            merge_revision(&mut tags, revision, track_id);
        }
        if metadata.pop().is_none() {
            break;
        }
    }
    tags
}

fn merge_revision(tags: &mut Tags, revision: &MetadataRevision, track_id: u32) {
    let track_tags = revision
        .per_track
        .iter()
        .filter(|t| t.track_id == u64::from(track_id))
        .flat_map(|t| t.metadata.tags.iter());
    for tag in revision.media.tags.iter().chain(track_tags) {
        merge_tag(tags, tag);
    }
}

fn merge_tag(tags: &mut Tags, tag: &Tag) {
    let text = |s: &str| {
        let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        (!s.is_empty()).then(|| s.to_string())
    };
    match &tag.std {
        Some(StandardTag::TrackTitle(s)) => tags.title = text(s).or(tags.title.take()),
        Some(StandardTag::Artist(s)) => tags.artist = text(s).or(tags.artist.take()),
        Some(StandardTag::Album(s)) => tags.album = text(s).or(tags.album.take()),
        Some(StandardTag::Genre(s)) => tags.genre = text(s).or(tags.genre.take()),
        Some(StandardTag::TrackNumber(n)) => {
            tags.track_number = u32::try_from(*n).ok().or(tags.track_number)
        }
        Some(StandardTag::ReleaseYear(y) | StandardTag::RecordingYear(y)) => {
            tags.year = Some(i32::from(*y))
        }
        Some(StandardTag::ReleaseDate(s) | StandardTag::RecordingDate(s)) => {
            tags.year = leading_year(s).or(tags.year)
        }
        _ => {}
    }
}

/// The year at the start of a date such as `2021`, `2021-05-01` or `2021-05-01T10:00:00`.
fn leading_year(date: &str) -> Option<i32> {
    let digits: String = date
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (digits.len() == 4).then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn wav_bytes(sample_rate: u32, channels: u16, frames: u32) -> Vec<u8> {
        let block_align = channels * 2;
        let data_len = frames * u32::from(block_align);
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&sample_rate.to_le_bytes());
        out.extend_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
        out.extend_from_slice(&block_align.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out.resize(out.len() + data_len as usize, 0);
        out
    }

    fn probe_bytes(bytes: Vec<u8>, ext: &str) -> Result<AudioHeader, ProbeError> {
        probe(Box::new(Cursor::new(bytes)), Some(ext))
    }

    #[test]
    fn wav_header_values() {
        let header = probe_bytes(wav_bytes(8000, 2, 12_000), "wav").unwrap();
        assert_eq!(header.format, "wav");
        assert_eq!(header.codec, "pcm");
        assert_eq!(header.sample_rate, Some(8000));
        assert_eq!(header.channels, Some(2));
        assert_eq!(header.bits_per_sample, Some(16));
        assert_eq!(header.duration_s, Some(1.5));
        let expected_kbps = (44.0 + 48_000.0) * 8.0 / 1.5 / 1000.0;
        assert!((header.bitrate_kbps.unwrap() - expected_kbps).abs() < 1e-9);
    }

    #[test]
    fn empty_and_garbage_are_errors() {
        assert_eq!(probe_bytes(Vec::new(), "mp3"), Err(ProbeError::Empty));
        let text = b"this is not audio at all\n".repeat(20);
        assert!(matches!(
            probe_bytes(text, "mp3"),
            Err(ProbeError::Unsupported(_))
        ));
    }

    #[test]
    fn zero_sample_rate_is_invalid_header() {
        let mut bytes = wav_bytes(8000, 1, 100);
        bytes[24..28].copy_from_slice(&0u32.to_le_bytes());
        let err = probe_bytes(bytes, "wav").unwrap_err();
        assert!(
            matches!(
                err,
                ProbeError::InvalidHeader(_) | ProbeError::Unsupported(_)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn years_from_dates() {
        assert_eq!(leading_year("2021-05-01"), Some(2021));
        assert_eq!(leading_year(" 1999"), Some(1999));
        assert_eq!(leading_year("May 2021"), None);
        assert_eq!(codec_family("pcm_s16le"), "pcm");
        assert_eq!(codec_family("vorbis"), "vorbis");
    }
}
