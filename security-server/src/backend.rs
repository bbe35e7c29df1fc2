//! The HTTP client of REST services: a REST call accepted by the provider side is sent
//! to the service's backend as an HTTP/1.1 request (TLS when the base URL is `https`,
//! trusting the certificates configured with the service), and its status, headers and
//! body come back, the body bounded in size and the whole in time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lintas_proto::exchange::v1 as ex;
use tonic::Code;

use crate::access::ServiceEntry;

type Pool = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Most clients kept (one per set of trusted certificates); beyond it the pool starts
/// over.
const MAX_CLIENTS: usize = 64;

/// Why a backend did not answer: the provider server's failure, as a gRPC code.
#[derive(Debug)]
pub struct Unanswered {
    pub code: Code,
    pub message: String,
}

fn unanswered(code: Code, message: impl Into<String>) -> Unanswered {
    Unanswered {
        code,
        message: message.into(),
    }
}

/// Pooled HTTP clients of REST backends, by the certificates they trust.
#[derive(Default)]
pub struct Backends {
    clients: Mutex<HashMap<String, Pool>>,
}

/// What to send and how long to wait.
pub struct Send<'a> {
    pub service: &'a ServiceEntry,
    pub request: &'a ex::RestRequest,
    /// Headers the provider server adds (who calls, the message id, ...).
    pub added: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub timeout: Duration,
    pub max_answer_bytes: usize,
}

impl Backends {
    fn client(&self, service: &ServiceEntry) -> Result<Pool, Unanswered> {
        let key = service
            .ca_pem
            .as_deref()
            .map(|p| lintas_certs::hex(&lintas_certs::sha256(p.as_bytes())))
            .unwrap_or_default();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &service.ca_pem {
            let certs = lintas_certs::pem::certs_from_pem(pem, "CA certificates")
                .map_err(|e| unanswered(Code::Internal, e.to_string()))?;
            for der in certs {
                roots
                    .add(der.into())
                    .map_err(|e| unanswered(Code::Internal, format!("CA certificate: {e}")))?;
            }
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pool: Pool = Client::builder(TokioExecutor::new()).build(connector);
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, pool.clone());
        Ok(pool)
    }

    /// Sends one request to the backend and reads its whole answer.
    pub async fn send(&self, s: Send<'_>) -> Result<(ex::RestResponse, Bytes), Unanswered> {
        let pool = self.client(s.service)?;
        let base = s.service.endpoint.trim_end_matches('/');
        let mut url = format!("{base}{}", s.request.path);
        if !s.request.query.is_empty() {
            url.push('?');
            url.push_str(&s.request.query);
        }
        let verb = hyper::Method::from_bytes(s.request.verb.as_bytes())
            .map_err(|_| unanswered(Code::InvalidArgument, "not an HTTP method"))?;
        let mut request = hyper::Request::builder().method(verb).uri(&url);
        let headers = request.headers_mut().ok_or_else(|| {
            unanswered(Code::InvalidArgument, format!("URL '{url}' is not valid"))
        })?;
        for h in &s.request.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(&h.value),
            ) else {
                return Err(unanswered(
                    Code::InvalidArgument,
                    format!("header '{}' is not valid", h.name),
                ));
            };
            headers.append(name, value);
        }
        for (name, value) in s.added {
            headers.insert(name, value);
        }
        let request = request
            .body(Full::new(s.body))
            .map_err(|e| unanswered(Code::InvalidArgument, format!("request to {url}: {e}")))?;
        let max = s.max_answer_bytes;
        let exchange = async {
            let response = pool.request(request).await.map_err(|e| {
                let cause = std::error::Error::source(&e)
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                unanswered(
                    Code::Unavailable,
                    format!("REST backend {base} unreachable: {e}{cause}"),
                )
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| {
                    unanswered(
                        Code::Unavailable,
                        format!(
                            "reading the answer of REST backend {base}: {e} (limit {max} bytes)"
                        ),
                    )
                })?
                .to_bytes();
            let answer = ex::RestResponse {
                status: u32::from(parts.status.as_u16()),
                headers: crate::http_headers::passed_back(&parts.headers),
            };
            Ok((answer, body))
        };
        tokio::time::timeout(s.timeout, exchange)
            .await
            .map_err(|_| {
                unanswered(
                    Code::DeadlineExceeded,
                    format!(
                        "REST backend {base} did not answer within {} s",
                        s.timeout.as_secs()
                    ),
                )
            })?
    }
}
