//! The HTTP client of REST services: a REST call accepted by the provider side is sent
//! to the service's backend as an HTTP/1.1 request (TLS when the base URL is `https`,
//! trusting the certificates configured with the service), its body streamed as it
//! arrives; the status and headers come back within the time limit and the body is
//! left to the caller to read, chunk by chunk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lintas_proto::exchange::v1 as ex;
use tonic::Code;

use crate::access::ServiceEntry;

/// A request body as the backend is sent it: whole, or chunks as they arrive.
pub type RequestBody = BoxBody<Bytes, crate::chunks::BoxError>;

type Pool = Client<hyper_rustls::HttpsConnector<HttpConnector>, RequestBody>;

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
    /// The client's end-to-end headers, credentials' values checked and restored.
    pub headers: hyper::HeaderMap,
    /// Headers the provider server adds (who calls, the message id, ...).
    pub added: Vec<(HeaderName, HeaderValue)>,
    pub body: RequestBody,
    /// How long the backend may take to answer with its status and headers.
    pub timeout: Duration,
}

/// The backend's status and end-to-end headers (credentials as commitments, their
/// values beside), and its body, still to read.
pub struct Answered {
    pub head: ex::RestResponse,
    pub secrets: Vec<ex::SecretValue>,
    pub body: hyper::body::Incoming,
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

    /// Sends one request to the backend and waits for its status and headers.
    /// Failures name the service, not the backend's address, to the remote consumer;
    /// the address and the cause go to this server's log.
    pub async fn send(&self, s: Send<'_>) -> Result<Answered, Unanswered> {
        let pool = self.client(s.service)?;
        let base = s.service.endpoint.trim_end_matches('/');
        let service = format!(
            "REST service {} of {}",
            s.service.service, s.service.provider
        );
        let mut url = format!("{base}{}", s.request.path);
        if !s.request.query.is_empty() {
            url.push('?');
            url.push_str(&s.request.query);
        }
        let verb = hyper::Method::from_bytes(s.request.verb.as_bytes())
            .map_err(|_| unanswered(Code::InvalidArgument, "not an HTTP method"))?;
        let mut request = hyper::Request::builder().method(verb).uri(&url);
        let headers = request.headers_mut().ok_or_else(|| {
            unanswered(
                Code::InvalidArgument,
                "the request's path or query is not valid",
            )
        })?;
        headers.extend(s.headers);
        for (name, value) in s.added {
            headers.insert(name, value);
        }
        let request = request.body(s.body).map_err(|e| {
            unanswered(
                Code::InvalidArgument,
                format!("the request is not valid: {e}"),
            )
        })?;
        let exchange = async {
            let response = pool.request(request).await.map_err(|e| {
                let cause = std::error::Error::source(&e)
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                tracing::warn!(backend = base, error = %format!("{e}{cause}"), "REST backend unreachable");
                unanswered(Code::Unavailable, format!("the backend of {service} is unreachable"))
            })?;
            let (parts, body) = response.into_parts();
            let (headers, secrets) = crate::http_headers::carried(&parts.headers)
                .map_err(|e| unanswered(Code::Internal, e))?;
            let size = crate::http_headers::size(&headers, &secrets);
            if size > crate::http_headers::MAX_CARRIED {
                return Err(unanswered(
                    Code::Internal,
                    format!(
                        "the backend of {service} answered with {size} bytes of headers; at most {} are carried",
                        crate::http_headers::MAX_CARRIED
                    ),
                ));
            }
            let head = ex::RestResponse {
                status: u32::from(parts.status.as_u16()),
                headers,
            };
            Ok(Answered {
                head,
                secrets,
                body,
            })
        };
        tokio::time::timeout(s.timeout, exchange)
            .await
            .map_err(|_| {
                unanswered(
                    Code::DeadlineExceeded,
                    format!(
                        "the backend of {service} did not answer within {} s",
                        s.timeout.as_secs()
                    ),
                )
            })?
    }
}
