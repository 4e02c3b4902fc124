//! A file's header and tags ([`AudioHeader`]) as values of a stored group, so that a store can
//! keep what probing found beside the analysis groups and answer header columns without
//! opening the file again.

use arrow_schema::{DataType, Field};

use crate::features::Value;
use crate::probe::{AudioHeader, Tags};

/// The stored pseudo-group of the header columns.
pub const HEADER_GROUP: &str = "header";
/// The version of the stored header; headers stored under another are probed again.
pub const HEADER_VERSION: u32 = 1;

/// The stored fields, in the order of [`to_values`]. The stream's rate and channel count are
/// `header_sample_rate` and `header_channels`: a stored part's own `sample_rate` and `channels`
/// say what decoding measured.
pub fn header_fields() -> Vec<Field> {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let int = |name: &str| Field::new(name, DataType::Int64, true);
    let float = |name: &str| Field::new(name, DataType::Float64, true);
    vec![
        text("format"),
        text("codec"),
        int("header_sample_rate"),
        int("header_channels"),
        int("bits_per_sample"),
        float("duration_s"),
        float("bitrate_kbps"),
        text("title"),
        text("artist"),
        text("album"),
        text("tag_genre"),
        int("track_number"),
        int("year"),
    ]
}

/// The header as stored values, in the order of [`header_fields`].
pub fn to_values(header: &AudioHeader) -> Vec<Value> {
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Utf8);
    let int = |v: Option<u32>| v.map_or(Value::Null, |v| Value::Int64(i64::from(v)));
    let float = |v: Option<f64>| v.map_or(Value::Null, Value::Float64);
    let tags = &header.tags;
    vec![
        Value::Utf8(header.format.clone()),
        Value::Utf8(header.codec.clone()),
        int(header.sample_rate),
        int(header.channels),
        int(header.bits_per_sample),
        float(header.duration_s),
        float(header.bitrate_kbps),
        text(&tags.title),
        text(&tags.artist),
        text(&tags.album),
        text(&tags.genre),
        int(tags.track_number),
        tags.year
            .map_or(Value::Null, |y| Value::Int64(i64::from(y))),
    ]
}

/// The header back from stored values; `None` when they are not what [`to_values`] writes.
pub fn from_values(values: &[Value]) -> Option<AudioHeader> {
    let [format, codec, rate, channels, bits, duration, bitrate, title, artist, album, genre, track, year] =
        values
    else {
        return None;
    };
    let text = |v: &Value| match v {
        Value::Utf8(s) => Some(Some(s.clone())),
        Value::Null => Some(None),
        _ => None,
    };
    let int = |v: &Value| match v {
        Value::Int64(n) => u32::try_from(*n).ok().map(Some),
        Value::Null => Some(None),
        _ => None,
    };
    let float = |v: &Value| match v {
        Value::Float64(x) => Some(Some(*x)),
        Value::Null => Some(None),
        _ => None,
    };
    let year = match year {
        Value::Int64(n) => Some(i32::try_from(*n).ok()?),
        Value::Null => None,
        _ => return None,
    };
    Some(AudioHeader {
        format: text(format)??,
        codec: text(codec)??,
        sample_rate: int(rate)?,
        channels: int(channels)?,
        bits_per_sample: int(bits)?,
        duration_s: float(duration)?,
        bitrate_kbps: float(bitrate)?,
        tags: Tags {
            title: text(title)?,
            artist: text(artist)?,
            album: text(album)?,
            genre: text(genre)?,
            track_number: int(track)?,
            year,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_comes_back_as_it_was_stored() {
        let header = AudioHeader {
            format: "flac".into(),
            codec: "flac".into(),
            sample_rate: Some(44_100),
            channels: Some(2),
            bits_per_sample: Some(24),
            duration_s: Some(183.25),
            bitrate_kbps: None,
            tags: Tags {
                title: Some("Title".into()),
                artist: None,
                album: Some("Album".into()),
                genre: None,
                track_number: Some(7),
                year: Some(-44),
            },
        };
        let values = to_values(&header);
        assert_eq!(values.len(), header_fields().len());
        assert_eq!(from_values(&values), Some(header));
    }

    #[test]
    fn values_of_another_shape_are_no_header() {
        assert_eq!(from_values(&[]), None);
        let mut values = to_values(&AudioHeader {
            format: "wav".into(),
            codec: "pcm".into(),
            sample_rate: None,
            channels: None,
            bits_per_sample: None,
            duration_s: None,
            bitrate_kbps: None,
            tags: Tags::default(),
        });
        values[2] = Value::Int64(-1);
        assert_eq!(from_values(&values), None, "a negative sample rate");
        values[2] = Value::Utf8("44100".into());
        assert_eq!(from_values(&values), None, "a rate that is text");
    }
}
