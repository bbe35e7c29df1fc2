//! Plain HTTP GET of the signed blob. Integrity comes from the signature, not the
//! transport, so any HTTP cache or mirror can serve the document. The poller names the
//! document it holds (`If-None-Match`), so an unchanged one costs a `304`, and accepts
//! gzip.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::{ConfError, MAX_CONF_LEN};

/// What a fetch brought.
pub(crate) enum Fetched {
    /// The server has nothing newer than the document tagged in the request.
    NotModified,
    Document(Vec<u8>),
}

/// GETs `url`, naming the held document's `etag` if there is one.
pub(crate) async fn get(
    url: &str,
    etag: Option<&str>,
    timeout: Duration,
) -> Result<Fetched, ConfError> {
    let err = |detail: String| ConfError::Fetch {
        url: url.to_owned(),
        detail,
    };
    let uri: hyper::Uri = url.parse().map_err(|e| err(format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(err(
            "only http:// URLs are supported (the document is signed; put a TLS proxy in front if needed)"
                .into(),
        ));
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let work = async {
        let mut request = hyper::Request::get(uri).header(hyper::header::ACCEPT_ENCODING, "gzip");
        if let Some(tag) = etag {
            request = request.header(hyper::header::IF_NONE_MATCH, tag);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| err(format!("request: {e}")))?;
        let resp = client
            .request(request)
            .await
            .map_err(|e| err(format!("request failed: {e}")))?;
        if resp.status() == hyper::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified);
        }
        if !resp.status().is_success() {
            return Err(err(format!("HTTP status {}", resp.status())));
        }
        let gzip = match resp.headers().get(hyper::header::CONTENT_ENCODING) {
            None => false,
            Some(v) if v.as_bytes().eq_ignore_ascii_case(b"gzip") => true,
            Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") => false,
            Some(v) => {
                return Err(err(format!(
                    "the answer is encoded as {}, which was not asked for",
                    String::from_utf8_lossy(v.as_bytes())
                )));
            }
        };
        let body = Limited::new(resp.into_body(), MAX_CONF_LEN)
            .collect()
            .await
            .map_err(|e| err(format!("reading body: {e}")))?
            .to_bytes();
        if gzip {
            return gunzip(&body).map(Fetched::Document).map_err(err);
        }
        Ok(Fetched::Document(body.to_vec()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| err(format!("no answer within {timeout:?}")))?
}

/// Decompresses a gzip body, refusing one that would grow past [`MAX_CONF_LEN`].
fn gunzip(body: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_CONF_LEN as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the gzip body does not decompress: {e}"))?;
    if out.len() > MAX_CONF_LEN {
        return Err(format!(
            "the gzip body decompresses to more than {MAX_CONF_LEN} bytes"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_bodies_are_bounded() {
        let gz = |data: &[u8]| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(gunzip(&gz(b"document")).unwrap(), b"document");
        // A small body that would decompress past the limit (a gzip bomb) is refused.
        let bomb = gz(&vec![0u8; MAX_CONF_LEN + 1]);
        assert!(bomb.len() < MAX_CONF_LEN / 100);
        assert!(gunzip(&bomb).unwrap_err().contains("more than"));
        assert!(
            gunzip(b"not gzip")
                .unwrap_err()
                .contains("does not decompress")
        );
    }
}
