//! The answer to `GET /globalconf`: the newest signed configuration with its `ETag`,
//! `304 Not Modified` when the poller holds it, gzip when the poller accepts it.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lintas_globalconf::publish::{Answer, Published};

use crate::ops::HttpMetrics;

/// How long pollers and caches may reuse an answer without asking.
const CACHE_CONTROL: &str = "public, max-age=30";

pub(crate) fn response(published: &Published, answer: Answer, metrics: &HttpMetrics) -> Response {
    let count = |kind: &str| {
        metrics
            .conf_fetches
            .get_or_create(&vec![("answer", kind.to_owned())])
            .inc();
    };
    let tag = (header::ETAG, published.etag().to_owned());
    let cache = (header::CACHE_CONTROL, CACHE_CONTROL.to_owned());
    let vary = (header::VARY, "Accept-Encoding".to_owned());
    match answer {
        Answer::NotModified => {
            count("not_modified");
            (StatusCode::NOT_MODIFIED, [tag, cache, vary]).into_response()
        }
        Answer::Full { body, gzip } => {
            count(if gzip { "gzip" } else { "full" });
            metrics.conf_bytes.inc_by(body.len() as u64);
            let kind = (header::CONTENT_TYPE, "application/octet-stream".to_owned());
            if gzip {
                let encoding = (header::CONTENT_ENCODING, "gzip".to_owned());
                ([kind, tag, cache, vary, encoding], body).into_response()
            } else {
                ([kind, tag, cache, vary], body).into_response()
            }
        }
    }
}
