//! Plain HTTP GET of the signed blob. Integrity comes from the signature, not the
//! transport, so any HTTP cache or mirror can serve the document.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::{ConfError, MAX_CONF_LEN};

pub(crate) async fn get(url: &str, timeout: Duration) -> Result<Vec<u8>, ConfError> {
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
        let resp = client
            .get(uri)
            .await
            .map_err(|e| err(format!("request failed: {e}")))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP status {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_CONF_LEN)
            .collect()
            .await
            .map_err(|e| err(format!("reading body: {e}")))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| err(format!("no answer within {timeout:?}")))?
}
