//! Serving a signed document (the global configuration) over HTTP to many pollers: a
//! strong `ETag` (the SHA-256 of the bytes), `304 Not Modified` for a poller that
//! already holds them, and a gzip body for one that accepts it. The document is signed,
//! so the registry, a mirror or any HTTP cache can serve it alike.

use std::io::Write;
use std::sync::{Arc, Mutex};

use hyper::body::Bytes;

/// The `ETag` of a document: its SHA-256, hex, quoted.
pub fn etag_of(blob: &[u8]) -> String {
    format!("\"{}\"", lintas_certs::hex(&lintas_certs::sha256(blob)))
}

/// Whether an `If-None-Match` header value names `etag` (or is `*`). Weak tags (`W/`)
/// compare by their value, as RFC 9110 has `If-None-Match` do.
pub fn none_match_hits(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Whether an `Accept-Encoding` header value takes gzip (`gzip`, `x-gzip` or `*` with a
/// non-zero weight, and gzip not refused by name).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let mut named = None;
    let mut star = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default().to_ascii_lowercase();
        let weight = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => named = Some(weight > 0.0),
            "*" => star = Some(weight > 0.0),
            _ => {}
        }
    }
    named.or(star).unwrap_or(false)
}

/// A document as served: its bytes, their tag and their gzip form.
pub struct Published {
    blob: Arc<Vec<u8>>,
    /// The same bytes, shared by every answer without a copy.
    raw: Bytes,
    etag: String,
    gzip: Bytes,
}

/// How to answer one request for a [`Published`] document.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// `304 Not Modified`: the poller holds these bytes.
    NotModified,
    /// `200` with the document, gzip-encoded or not.
    Full { body: Bytes, gzip: bool },
}

impl Published {
    pub fn new(blob: Arc<Vec<u8>>) -> Self {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing to a Vec cannot fail.
        let gzip = encoder
            .write_all(&blob)
            .and_then(|()| encoder.finish())
            .unwrap_or_default();
        Published {
            etag: etag_of(&blob),
            raw: Bytes::from(blob.as_ref().clone()),
            blob,
            gzip: Bytes::from(gzip),
        }
    }

    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// The answer to a request with these `If-None-Match` and `Accept-Encoding` values.
    pub fn answer(&self, if_none_match: Option<&str>, accept_encoding: Option<&str>) -> Answer {
        if if_none_match.is_some_and(|v| none_match_hits(v, &self.etag)) {
            return Answer::NotModified;
        }
        if accept_encoding.is_some_and(accepts_gzip) && !self.gzip.is_empty() {
            return Answer::Full {
                body: self.gzip.clone(),
                gzip: true,
            };
        }
        Answer::Full {
            body: self.raw.clone(),
            gzip: false,
        }
    }
}

/// The newest document prepared for serving, made again only when the document changes
/// (one hash and one compression per generation, not per request).
#[derive(Default)]
pub struct PublishedCache(Mutex<Option<Arc<Published>>>);

impl PublishedCache {
    /// `blob` prepared for serving; `blob` is the newest document.
    pub fn get(&self, blob: Arc<Vec<u8>>) -> Arc<Published> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match held.as_ref() {
            Some(p) if Arc::ptr_eq(&p.blob, &blob) || p.blob == blob => p.clone(),
            _ => {
                let p = Arc::new(Published::new(blob));
                *held = Some(p.clone());
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_requests_follow_the_tag() {
        let p = Published::new(Arc::new(b"signed configuration".to_vec()));
        let tag = p.etag().to_owned();
        let cases: [(Option<String>, bool); 7] = [
            (None, false),
            (Some(tag.clone()), true),
            (Some(format!("W/{tag}")), true),
            (Some(format!("\"other\", {tag}")), true),
            (Some("*".into()), true),
            (Some("\"other\"".into()), false),
            (Some(tag.trim_matches('"').to_owned()), false),
        ];
        for (header, not_modified) in cases {
            let answer = p.answer(header.as_deref(), None);
            assert_eq!(answer == Answer::NotModified, not_modified, "{header:?}");
        }
    }

    #[test]
    fn gzip_is_served_only_when_accepted() {
        let blob = b"signed configuration ".repeat(100);
        let p = Published::new(Arc::new(blob.clone()));
        let cases = [
            (None, false),
            (Some("gzip"), true),
            (Some("br, gzip;q=0.5"), true),
            (Some("x-gzip"), true),
            (Some("gzip;q=0"), false),
            (Some("*"), true),
            (Some("*;q=0"), false),
            (Some("gzip;q=0, *"), false),
            (Some("identity"), false),
            (Some("zstd, deflate"), false),
        ];
        for (header, gzip) in cases {
            match p.answer(None, header) {
                Answer::Full { body, gzip: g } => {
                    assert_eq!(g, gzip, "{header:?}");
                    let plain = if g {
                        let mut out = Vec::new();
                        std::io::Read::read_to_end(
                            &mut flate2::read::GzDecoder::new(body.as_ref()),
                            &mut out,
                        )
                        .unwrap();
                        out
                    } else {
                        body.to_vec()
                    };
                    assert_eq!(plain, blob, "{header:?}");
                }
                Answer::NotModified => panic!("{header:?}: not modified without a tag"),
            }
        }
    }

    #[test]
    fn the_cache_prepares_each_document_once() {
        let cache = PublishedCache::default();
        let first = Arc::new(b"one".to_vec());
        let a = cache.get(first.clone());
        assert!(Arc::ptr_eq(&a, &cache.get(first)));
        let b = cache.get(Arc::new(b"two".to_vec()));
        assert_ne!(a.etag(), b.etag());
    }
}
