//! The front door of the reader: gzip or plain bytes, UTF-8 or ISO-8859-1,
//! bounded by [`Limits::max_input_bytes`] before and after inflating (a gzip
//! bomb inflates about 1000:1).

use super::model::{Limits, ParseOutcome, XmlError};
use super::reader::parse;
use crate::xdr::text_from_wire;
use flate2::read::GzDecoder;
use std::io::Read;

/// Parses bytes that are either plain XML or gzip (`1f 8b` magic), in UTF-8 or
/// ISO-8859-1 (the encoding Ganglia declares; transcoded before parsing).
/// A document over [`Limits::max_input_bytes`] (as given or gunzipped) is
/// refused whole with [`XmlError::LimitExceeded`].
pub fn parse_bytes(input: &[u8], limits: &Limits) -> ParseOutcome {
    let too_large = || ParseOutcome {
        error: Some(XmlError::LimitExceeded {
            limit: limits.max_input_bytes,
        }),
        ..ParseOutcome::default()
    };
    if input.len() > limits.max_input_bytes {
        return too_large();
    }
    if input.starts_with(&[0x1f, 0x8b]) {
        let (plain, result) = inflate(input, limits.max_input_bytes.saturating_add(1));
        if plain.len() > limits.max_input_bytes {
            return too_large();
        }
        if let Err(e) = result {
            // Keep what decompressed: a cut gzip stream still yields its prefix.
            let mut out = parse_text(&plain, limits);
            if out.error.is_none() || plain.is_empty() {
                out.error = Some(XmlError::Io(format!("gzip: {e}")));
            }
            return out;
        }
        parse_text(&plain, limits)
    } else {
        parse_text(input, limits)
    }
}

/// Gunzips `input`, stopping at `cap` bytes of output. The buffer grows by
/// doubling but never past `cap`, so a bomb costs at most `cap` bytes.
fn inflate(input: &[u8], cap: usize) -> (Vec<u8>, std::io::Result<()>) {
    let mut d = GzDecoder::new(input).take(u64::try_from(cap).unwrap_or(u64::MAX));
    let mut out: Vec<u8> = Vec::with_capacity(input.len().saturating_mul(4).min(cap));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match d.read(&mut chunk) {
            Ok(0) => return (out, Ok(())),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return (out, Err(e)),
        };
        let Some(got) = chunk.get(..n) else {
            return (out, Ok(()));
        };
        let spare = out.capacity().saturating_sub(out.len());
        if spare < got.len() {
            let want = out
                .capacity()
                .saturating_mul(2)
                .max(out.len().saturating_add(got.len()))
                .min(cap);
            out.reserve_exact(want.saturating_sub(out.len()));
        }
        out.extend_from_slice(got);
    }
}

fn parse_text(input: &[u8], limits: &Limits) -> ParseOutcome {
    match std::str::from_utf8(input) {
        Ok(_) => parse(input, limits),
        Err(_) => parse(text_from_wire(input).as_bytes(), limits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn oversized_documents_are_refused_whole_plain_or_gunzipped() {
        let doc = br#"<GANGLIA_XML VERSION="3.7.2" SOURCE="gmond"><CLUSTER NAME="c" LOCALTIME="1"/></GANGLIA_XML>"#;
        let fits = Limits {
            max_input_bytes: doc.len(),
            ..Limits::default()
        };
        let tight = Limits {
            max_input_bytes: doc.len() - 1,
            ..Limits::default()
        };
        let refused = Some(XmlError::LimitExceeded {
            limit: doc.len() - 1,
        });
        assert_eq!(parse_bytes(doc, &fits).error, None);
        let gz = gzip(doc);
        let fits_gz = Limits {
            max_input_bytes: doc.len().max(gz.len()),
            ..Limits::default()
        };
        assert_eq!(parse_bytes(&gz, &fits_gz).error, None);
        let out = parse_bytes(doc, &tight);
        assert_eq!((out.error, out.document.items.len()), (refused.clone(), 0));
        let out = parse_bytes(&gzip(doc), &tight);
        assert_eq!((out.error, out.document.items.len()), (refused, 0));
        // A bomb: 64 MiB of zeros in about 64 KB, against a 1 MiB limit.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let small = Limits {
            max_input_bytes: 1 << 20,
            ..Limits::default()
        };
        let out = parse_bytes(&bomb, &small);
        assert_eq!(out.error, Some(XmlError::LimitExceeded { limit: 1 << 20 }));
        assert!(
            out.error.unwrap().to_string().contains("max_input_bytes"),
            "the message names the limit"
        );
    }

    #[test]
    fn inflating_stops_one_byte_past_the_cap() {
        let bomb = gzip(&vec![0u8; 8 << 20]);
        let (plain, result) = inflate(&bomb, 1000);
        assert!(result.is_ok());
        assert_eq!(plain.len(), 1000);
        assert!(plain.capacity() <= 1000, "{}", plain.capacity());
    }
}
