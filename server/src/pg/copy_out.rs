//! `COPY (query) TO STDOUT` in PostgreSQL's text and CSV formats. Values come in the text form
//! the server sends in data rows, so `COPY` and `SELECT` print the same values.

use bytes::{Buf, Bytes};
use datafusion_postgres::pgwire::api::results::{CopyResponse, SendableRowStream};
use datafusion_postgres::pgwire::messages::copy::CopyData;
use datafusion_postgres::pgwire::messages::data::DataRow;
use futures::StreamExt;

use super::statements::CopyOut;

/// A text-format copy response: an optional header line, then one line per row.
pub fn response(copy: &CopyOut, names: &[String], rows: SendableRowStream) -> CopyResponse {
    let header = copy.header.then(|| {
        let fields: Vec<Option<&[u8]>> = names.iter().map(|n| Some(n.as_bytes())).collect();
        Ok(CopyData::new(line(copy, &fields)))
    });
    let format = copy.clone();
    let lines = rows.map(move |row| {
        let row = row?;
        Ok(CopyData::new(line(&format, &fields(&row))))
    });
    CopyResponse::new(0, names.len(), futures::stream::iter(header).chain(lines))
}

/// The fields of a data row: each is a length (-1 for NULL) and that many bytes.
fn fields(row: &DataRow) -> Vec<Option<&[u8]>> {
    let mut data: &[u8] = &row.data;
    let mut fields = Vec::with_capacity(usize::try_from(row.field_count).unwrap_or(0));
    for _ in 0..row.field_count {
        let len = data.get_i32();
        if len < 0 {
            fields.push(None);
        } else {
            let (value, rest) = data.split_at(len as usize);
            fields.push(Some(value));
            data = rest;
        }
    }
    fields
}

fn line(copy: &CopyOut, fields: &[Option<&[u8]>]) -> Bytes {
    let mut out = Vec::new();
    let mut delimiter = [0u8; 4];
    let delimiter = copy.delimiter.encode_utf8(&mut delimiter).as_bytes();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(delimiter);
        }
        match field {
            None => out.extend_from_slice(copy.null.as_bytes()),
            Some(value) if copy.csv => csv_field(&mut out, value, copy, delimiter),
            Some(value) => text_field(&mut out, value, delimiter),
        }
    }
    out.push(b'\n');
    out.into()
}

/// Text format: backslash escapes for the delimiter, backslash and line breaks.
fn text_field(out: &mut Vec<u8>, value: &[u8], delimiter: &[u8]) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ if delimiter.len() == 1 && b == delimiter[0] => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
}

/// CSV: quoted when it holds the delimiter, a quote or a line break, or reads like NULL.
fn csv_field(out: &mut Vec<u8>, value: &[u8], copy: &CopyOut, delimiter: &[u8]) {
    let needs_quotes = value == copy.null.as_bytes()
        || value.windows(delimiter.len()).any(|w| w == delimiter)
        || value.iter().any(|b| matches!(b, b'"' | b'\n' | b'\r'));
    if !needs_quotes {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(csv: bool) -> CopyOut {
        CopyOut {
            query: String::new(),
            csv,
            header: false,
            delimiter: if csv { ',' } else { '\t' },
            null: if csv { String::new() } else { "\\N".into() },
        }
    }

    #[test]
    fn text_and_csv_lines() {
        let fields = [
            Some(&b"a\tb\\c\nd"[..]),
            None,
            Some(&b""[..]),
            Some(&b"say \"hi\", ok"[..]),
        ];
        assert_eq!(
            &line(&copy(false), &fields)[..],
            &b"a\\tb\\\\c\\nd\t\\N\t\tsay \"hi\", ok\n"[..]
        );
        assert_eq!(
            &line(&copy(true), &fields)[..],
            &b"\"a\tb\\c\nd\",,\"\",\"say \"\"hi\"\", ok\"\n"[..]
        );
    }

    #[test]
    fn data_row_fields() {
        let mut data = bytes::BytesMut::new();
        for field in [Some(&b"12"[..]), None, Some(&b""[..])] {
            match field {
                Some(v) => {
                    data.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    data.extend_from_slice(v);
                }
                None => data.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let row = DataRow::new(data, 3);
        assert_eq!(fields(&row), vec![Some(&b"12"[..]), None, Some(&b""[..])]);
    }
}
