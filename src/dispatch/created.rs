//! The created post, from the 201's body as the proxy copied it: decoded (gzip, deflate, raw
//! deflate) within a bound, or, when the exchange ended before the body did, as much of its
//! beginning as shows the post's id (the dispatcher then fetches the post by that id).

use std::io::Read;

use super::queue::BodyEncoding;
use crate::mattermost::model::is_valid_id;

/// Decodes as much of the beginning of `body` as it can (at most `limit` bytes): what a cut
/// short (possibly compressed) 201 still tells.
pub fn decode_prefix(body: &[u8], encoding: BodyEncoding, limit: usize) -> Vec<u8> {
    fn partial(mut r: impl Read, limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < limit {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n.min(limit - out.len())]),
            }
        }
        out
    }
    match encoding {
        BodyEncoding::Identity => body[..body.len().min(limit)].to_vec(),
        BodyEncoding::Gzip => partial(flate2::read::MultiGzDecoder::new(body), limit),
        BodyEncoding::Deflate => {
            let zlib = partial(flate2::read::ZlibDecoder::new(body), limit);
            if zlib.is_empty() {
                partial(flate2::read::DeflateDecoder::new(body), limit)
            } else {
                zlib
            }
        }
    }
}

/// The post id at the start of a Mattermost post object (`{"id":"…"` comes first in every
/// version's field order), if the beginning of `json` shows it.
pub fn leading_post_id(json: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(json)
        .or_else(|e| std::str::from_utf8(&json[..e.valid_up_to()]))
        .ok()?;
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"id\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let id = &rest[..rest.find('"')?];
    is_valid_id(id).then_some(id)
}

/// Decodes `body` per `encoding`, reading at most `limit` decoded bytes.
pub fn decode_body(body: &[u8], encoding: BodyEncoding, limit: usize) -> Option<Vec<u8>> {
    fn bounded(mut r: impl Read, limit: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        r.by_ref()
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .ok()?;
        (out.len() <= limit).then_some(out)
    }
    match encoding {
        BodyEncoding::Identity => (body.len() <= limit).then(|| body.to_vec()),
        BodyEncoding::Gzip => bounded(flate2::read::MultiGzDecoder::new(body), limit),
        // HTTP "deflate" is a zlib stream; some servers send raw deflate instead.
        BodyEncoding::Deflate => bounded(flate2::read::ZlibDecoder::new(body), limit)
            .or_else(|| bounded(flate2::read::DeflateDecoder::new(body), limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn compressed_bodies_decode_within_the_bound() {
        let plain = br#"{"id":"p1","channel_id":"c1","message":"hi"}"#.to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(&plain).unwrap();
        let zl = zl.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(&plain).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(decode_body(&gz, BodyEncoding::Gzip, 1024).unwrap(), plain);
        assert_eq!(
            decode_body(&zl, BodyEncoding::Deflate, 1024).unwrap(),
            plain
        );
        assert_eq!(
            decode_body(&raw, BodyEncoding::Deflate, 1024).unwrap(),
            plain
        );
        assert_eq!(
            decode_body(&plain, BodyEncoding::Identity, 1024).unwrap(),
            plain
        );
        assert!(
            decode_body(&gz, BodyEncoding::Gzip, 10).is_none(),
            "over the bound"
        );
        assert!(decode_body(b"not gzip", BodyEncoding::Gzip, 1024).is_none());
    }

    #[test]
    fn a_cut_short_201_still_shows_its_post_id() {
        let full = br#"{"id":"4xp9fdt8zjbqfy5pnkb8bq7xyo","create_at":1,"message":"hi"}"#;
        let rows: &[(&[u8], Option<&str>, &str)] = &[
            (&full[..], Some("4xp9fdt8zjbqfy5pnkb8bq7xyo"), "whole"),
            (
                &full[..40],
                Some("4xp9fdt8zjbqfy5pnkb8bq7xyo"),
                "cut after the id",
            ),
            (&full[..20], None, "cut inside the id"),
            (b" {\n \"id\" : \"abc\" ,", Some("abc"), "spaces"),
            (br#"{"create_at":1,"id":"abc"}"#, None, "id not first"),
            (br#"{"id":"../x"}"#, None, "not an id"),
            (b"", None, "nothing"),
        ];
        for (json, want, what) in rows {
            assert_eq!(leading_post_id(json), *want, "{what}");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(full).unwrap();
        let gz = gz.finish().unwrap();
        let prefix = decode_prefix(&gz[..gz.len() - 12], BodyEncoding::Gzip, 1024);
        assert_eq!(
            leading_post_id(&prefix),
            Some("4xp9fdt8zjbqfy5pnkb8bq7xyo"),
            "cut gzip"
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_bound() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 1024 * 1024);
        assert!(decode_body(&bomb, BodyEncoding::Gzip, 4 * 1024 * 1024).is_none());
    }
}
