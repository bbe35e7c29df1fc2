//! The HTTP/1.1 client of the REST and SOAP backends: pooled connections, TLS with the
//! configured CA certificates, a timeout and a bound on the answer's size.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{HeaderMap, Method, StatusCode, Uri};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::{Code, Status};

use crate::{AdapterError, backend_status};

#[derive(Clone)]
pub struct Client {
    pool: Pool<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Where the backend is, without a trailing slash, for messages.
    pub base: String,
    timeout: Duration,
    max_response_bytes: usize,
}

/// A backend's answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Client {
    /// A client for the backend at `base_url` (`http://` or `https://`). An `https://`
    /// backend needs `ca_file`: the PEM certificates to trust for it.
    pub fn new(
        base_url: &str,
        ca_file: Option<&Path>,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<Self, AdapterError> {
        let bad = |why: String| AdapterError::Config(format!("base_url '{base_url}': {why}"));
        let uri: Uri = base_url.parse().map_err(|e| bad(format!("{e}")))?;
        let tls = match (uri.scheme_str(), ca_file) {
            (Some("http"), None) => None,
            (Some("http"), Some(_)) => {
                return Err(bad("ca_file is only for https:// backends".into()));
            }
            (Some("https"), Some(ca)) => {
                let pem = std::fs::read_to_string(ca)
                    .map_err(|e| bad(format!("ca_file {}: {e}", ca.display())))?;
                let mut roots = rustls::RootCertStore::empty();
                for der in lintas_certs::pem::certs_from_pem(&pem, "ca_file")
                    .map_err(|e| bad(e.to_string()))?
                {
                    roots
                        .add(der.into())
                        .map_err(|e| bad(format!("ca_file {}: {e}", ca.display())))?;
                }
                Some(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            }
            (Some("https"), None) => {
                return Err(bad(
                    "an https:// backend needs ca_file: the PEM certificates to trust for it"
                        .into(),
                ));
            }
            _ => return Err(bad("must start with http:// or https://".into())),
        };
        if uri.host().is_none() {
            return Err(bad("no host".into()));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match tls {
            Some(config) => builder.with_tls_config(config).https_only(),
            // Never used for TLS: the scheme was checked to be http.
            None => builder
                .with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
                .https_or_http(),
        }
        .enable_http1()
        .wrap_connector(http);
        Ok(Client {
            pool: Pool::builder(TokioExecutor::new()).build(connector),
            base: base_url.trim_end_matches('/').to_owned(),
            timeout,
            max_response_bytes,
        })
    }

    /// Sends one request to `path_and_query` (starting with `/`) under the base URL.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
        body: Option<Bytes>,
    ) -> Result<Answer, Status> {
        let url = format!("{}{path_and_query}", self.base);
        let mut request = hyper::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| backend_status(Code::Internal, format!("building a request: {e}")))?;
        let exchange = async {
            let response = self.pool.request(request).await.map_err(|e| {
                let cause = std::error::Error::source(&e)
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                backend_status(
                    Code::Unavailable,
                    format!("backend {} unreachable: {e}{cause}", self.base),
                )
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    backend_status(
                        Code::Unavailable,
                        format!(
                            "reading the answer of {url}: {e} (limit {} bytes)",
                            self.max_response_bytes
                        ),
                    )
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                backend_status(
                    Code::DeadlineExceeded,
                    format!(
                        "backend {} did not answer within {} ms",
                        self.base,
                        self.timeout.as_millis()
                    ),
                )
            })?
    }
}

/// Default `timeout_ms` of HTTP backends.
pub fn default_timeout_ms() -> u64 {
    10_000
}

/// Default `max_response_bytes` of HTTP backends.
pub fn default_max_response() -> usize {
    4 * 1024 * 1024
}

/// How message fields are named in JSON keys or XML elements: as in the `.proto` file,
/// or in lowerCamelCase (`field_names = "proto" | "json"`).
#[derive(serde::Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum FieldNames {
    #[default]
    Proto,
    Json,
}

impl FieldNames {
    pub fn of(self, f: &prost_reflect::FieldDescriptor) -> &str {
        match self {
            FieldNames::Proto => f.name(),
            FieldNames::Json => f.json_name(),
        }
    }
}

/// The `headers` table of section `section` as header names and values.
pub fn header_list(
    section: &str,
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>, AdapterError> {
    headers
        .iter()
        .map(|(k, v)| {
            let bad = |e: &dyn std::fmt::Display| {
                AdapterError::Config(format!("[{section}] headers: '{k}': {e}"))
            };
            Ok((
                hyper::header::HeaderName::try_from(k.as_str()).map_err(|e| bad(&e))?,
                hyper::header::HeaderValue::try_from(v.as_str()).map_err(|e| bad(&e))?,
            ))
        })
        .collect()
}

/// The gRPC status for a backend's HTTP error status (the reverse of grpc-gateway's
/// mapping, with 412 as FAILED_PRECONDITION and other client errors as INVALID_ARGUMENT).
pub fn status_code(status: StatusCode) -> Code {
    match status.as_u16() {
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        501 => Code::Unimplemented,
        502..=503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        // 400 and every other client error.
        400..=499 => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

/// The answer's body as text for an error message, shortened.
pub fn body_text(body: &[u8]) -> String {
    crate::values::shorten(String::from_utf8_lossy(body).trim(), 512)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn identity() -> (lintas_certs::KeyPair, Vec<u8>) {
        let validity = lintas_certs::ca::Validity::starting(
            std::time::SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap();
        lintas_certs::ca::self_signed(
            &["localhost".into(), "127.0.0.1".into()],
            "backend",
            validity,
        )
        .unwrap()
    }

    /// A TLS server on loopback answering every request with `answer` (or never, when
    /// `answer` is empty); returns its port.
    async fn tls_backend(cert: Vec<u8>, key: &lintas_certs::KeyPair, answer: &'static str) -> u16 {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    if answer.is_empty() {
                        // Holds the connection without answering.
                        let _ = tls.read(&mut buf).await;
                        return;
                    }
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}";

    #[tokio::test]
    async fn https_backends_are_trusted_through_ca_file_only() {
        let (key, cert) = identity();
        let port = tls_backend(cert.clone(), &key, OK).await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, lintas_certs::pem::cert_to_pem(&cert)).unwrap();
        let url = format!("https://localhost:{port}");
        let client = Client::new(&url, Some(&ca), Duration::from_secs(5), 1024).unwrap();
        let answer = client.send(Method::GET, "/x", &[], None).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"{\"ok\":true}");

        // Another certificate in ca_file: the handshake is refused.
        let (_, other) = identity();
        let wrong = dir.path().join("wrong.pem");
        std::fs::write(&wrong, lintas_certs::pem::cert_to_pem(&other)).unwrap();
        let client = Client::new(&url, Some(&wrong), Duration::from_secs(5), 1024).unwrap();
        let err = client
            .send(Method::GET, "/x", &[], None)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("unreachable"), "{err:?}");
        assert!(
            err.message().to_lowercase().contains("certificate"),
            "{err:?}"
        );

        // An answer larger than allowed is refused, not read whole.
        let small = Client::new(&url, Some(&ca), Duration::from_secs(5), 4).unwrap();
        let err = small
            .send(Method::GET, "/x", &[], None)
            .await
            .err()
            .unwrap();
        assert!(err.message().contains("(limit 4 bytes)"), "{err:?}");

        for (base, ca_file, want) in [
            ("https://localhost:1", None, "needs ca_file"),
            (
                "http://localhost:1",
                Some(ca.as_path()),
                "only for https://",
            ),
            (
                "ftp://localhost:1",
                None,
                "must start with http:// or https://",
            ),
        ] {
            let err = Client::new(base, ca_file, Duration::from_secs(1), 1)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(want), "{base}: {err}");
        }
    }

    #[tokio::test]
    async fn a_backend_that_does_not_answer_times_out() {
        let (key, cert) = identity();
        let port = tls_backend(cert.clone(), &key, "").await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, lintas_certs::pem::cert_to_pem(&cert)).unwrap();
        let client = Client::new(
            &format!("https://localhost:{port}"),
            Some(&ca),
            Duration::from_millis(200),
            1024,
        )
        .unwrap();
        let err = client
            .send(Method::GET, "/x", &[], None)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(
            err.message().contains("did not answer within 200 ms"),
            "{err:?}"
        );
    }
}
