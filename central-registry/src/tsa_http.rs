//! The registry's RFC 3161 time-stamping authority over plain HTTP (`POST /tsa`). Anyone
//! can reach it, so it protects the registry and the exchanges that wait for tokens:
//! each source address has a rate (`tsa_requests_per_minute_per_source`, answered with
//! 429 beyond it), a few signatures run at once on the blocking pool, and a request
//! that cannot start signing within a second is answered 503 instead of queueing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lintas_ops::metrics::Labels;
use lintas_ops::prometheus_client::metrics::counter::Counter;
use lintas_ops::prometheus_client::metrics::family::Family;

use crate::registry::Registry;

/// Time-stamp requests signed at once.
const CONCURRENT_SIGNATURES: usize = 4;
/// Longest a request waits for its turn to be signed.
const WAIT_FOR_TURN: Duration = Duration::from_secs(1);

pub(crate) struct TsaEndpoint {
    tsa: lintas_timestamp::Tsa,
    registry: Arc<Registry>,
    signing: Arc<tokio::sync::Semaphore>,
    per_source: lintas_transport::rate::RateLimit,
    requests: Family<Labels, Counter>,
}

impl TsaEndpoint {
    pub fn new(
        tsa: lintas_timestamp::Tsa,
        registry: Arc<Registry>,
        per_minute: u32,
        requests: Family<Labels, Counter>,
    ) -> Arc<Self> {
        Arc::new(TsaEndpoint {
            tsa,
            registry,
            signing: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_SIGNATURES)),
            per_source: lintas_transport::rate::RateLimit::per_minute(per_minute),
            requests,
        })
    }

    fn count(&self, result: &str) {
        self.requests
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// Answers one time-stamp request from `peer`.
    pub async fn answer(self: Arc<Self>, peer: SocketAddr, body: axum::body::Bytes) -> Response {
        if !self.per_source.allow(peer.ip(), Instant::now()) {
            self.count("limited");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "60")],
                "too many time-stamp requests from this address\n",
            )
                .into_response();
        }
        let turn = tokio::time::timeout(WAIT_FOR_TURN, self.signing.clone().acquire_owned()).await;
        let Ok(Ok(turn)) = turn else {
            self.count("busy");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "the time-stamping authority is busy\n",
            )
                .into_response();
        };
        // Signing is quick but CPU-bound: the blocking pool keeps HTTP responsive.
        let me = self.clone();
        // The turn goes with the signing: a caller that leaves does not free it early.
        let reply = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            me.tsa.respond(&body, me.registry.unix_now())
        })
        .await
        .unwrap_or_default();
        self.count(if reply.is_empty() {
            "failed"
        } else {
            "answered"
        });
        (
            [(header::CONTENT_TYPE, lintas_timestamp::REPLY_MEDIA_TYPE)],
            reply,
        )
            .into_response()
    }
}
