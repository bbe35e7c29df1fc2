//! The provider endpoint: peer security servers call `Exchange.Call` over mutual TLS.
//!
//! Checks, in this order, each refusal recorded and answered with a precise status:
//! configuration fresh; TLS peer is a registered server hosting the client; signature by
//! a valid, unrevoked signing certificate of the client's member from an approved CA;
//! header names this server; time within the allowed skew; message id never seen;
//! body hash; access rights. Then the request is recorded, the application called, and
//! a response header bound to the request signed, recorded and returned.

use std::sync::Arc;
use std::time::Duration;

use lintas_certs::Identity;
use lintas_identifiers::{MethodPath, ServerId, SubsystemId};
use lintas_log::{Record, RecordKind};
use lintas_proto::exchange::v1 as ex;
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Request, Response, Status};

use crate::daemon::{
    ErrorSource, REQUEST_DOMAIN, RESPONSE_DOMAIN, SecurityServer, bytes, error, now_ms,
};
use crate::raw::RawCodec;

pub struct ProviderService(pub Arc<SecurityServer>);

/// Why a request was refused, before anything was delivered.
struct Refusal {
    code: Code,
    message: String,
    /// A newer global configuration might explain the request (a server or client
    /// admitted since this server last fetched it).
    newer_conf_may_help: bool,
}

fn refuse(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        newer_conf_may_help: false,
    }
}

fn refuse_unless_newer_conf(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        newer_conf_may_help: true,
        ..refuse(code, message)
    }
}

/// What the checks established about an accepted request.
struct Accepted {
    header: ex::RequestHeader,
    client: SubsystemId,
    method: MethodPath,
    endpoint: String,
    peer: ServerId,
}

/// Metadata passed on to the provider application, so it knows who calls and why.
fn forwarded(h: &ex::RequestHeader) -> [(&'static str, &str); 5] {
    [
        ("lintas-client", &h.client),
        ("lintas-message-id", &h.message_id),
        ("lintas-user-id", &h.user_id),
        ("lintas-purpose", &h.purpose),
        ("lintas-issue", &h.issue),
    ]
}

impl ProviderService {
    fn check(
        &self,
        peer_cert: Option<&[u8]>,
        signed: &ex::SignedRequest,
    ) -> Result<Accepted, Refusal> {
        let s = &self.0;
        let header = ex::RequestHeader::decode(signed.header.as_slice()).map_err(|e| {
            refuse(
                Code::InvalidArgument,
                format!("request header is malformed: {e}"),
            )
        })?;
        let client: SubsystemId = header
            .client
            .parse()
            .map_err(|e| refuse(Code::InvalidArgument, format!("client: {e}")))?;

        // 1. Configuration fresh.
        let conf = s
            .conf
            .current()
            .map_err(|e| refuse(Code::Unavailable, e.to_string()))?;

        // 2. The TLS peer is a registered server that hosts the client.
        let peer_cert = peer_cert
            .ok_or_else(|| refuse(Code::Unauthenticated, "peer presented no TLS certificate"))?;
        let peer_hash = lintas_certs::sha256(peer_cert);
        let peer_entry = conf
            .conf
            .servers
            .iter()
            .find(|e| e.tls_cert_sha256 == peer_hash)
            .ok_or_else(|| {
                refuse_unless_newer_conf(
                    Code::PermissionDenied,
                    "TLS peer is not a security server registered in the global configuration",
                )
            })?;
        if !peer_entry.clients.contains(&header.client) {
            return Err(refuse_unless_newer_conf(
                Code::PermissionDenied,
                format!(
                    "peer server {} does not host client {client}",
                    peer_entry.id
                ),
            ));
        }
        if peer_entry.id != header.consumer_server {
            return Err(refuse(
                Code::PermissionDenied,
                format!(
                    "request claims consumer server {}, but the TLS peer is {}",
                    header.consumer_server, peer_entry.id
                ),
            ));
        }
        let peer: ServerId = peer_entry
            .id
            .parse()
            .map_err(|e| refuse(Code::Internal, format!("configuration: {e}")))?;

        // 3. Signature by a valid, unrevoked signing certificate of the client's member.
        let now = s.clock.now();
        let signer = s
            .verify_signer(&conf, &signed.signer_cert, now)
            .map_err(|e| {
                refuse(
                    Code::Unauthenticated,
                    format!("signing certificate refused: {e}"),
                )
            })?;
        if signer.identity != Identity::Member(client.member.clone()) {
            return Err(refuse(
                Code::Unauthenticated,
                format!(
                    "request is signed by {}, not by the client's member {}",
                    signer.identity, client.member
                ),
            ));
        }
        lintas_certs::sig::verify(
            &signer.public_key,
            REQUEST_DOMAIN,
            &signed.header,
            &signed.signature,
        )
        .map_err(|_| refuse(Code::Unauthenticated, "request signature does not verify"))?;

        // 4. Addressed to this server.
        if header.provider_server != s.id.to_string() {
            return Err(refuse(
                Code::FailedPrecondition,
                format!(
                    "request is addressed to security server {}, not to this one ({})",
                    header.provider_server, s.id
                ),
            ));
        }

        // 5. Signed recently.
        let skew = i64::try_from(s.settings.clock_skew.as_millis()).unwrap_or(i64::MAX);
        let age = now_ms(&*s.clock).saturating_sub(header.time_unix_ms);
        if age.abs() > skew {
            return Err(refuse(
                Code::FailedPrecondition,
                format!(
                    "request was signed {} s {} this server's clock; at most {} s are allowed",
                    age.abs() / 1000,
                    if age >= 0 { "behind" } else { "ahead of" },
                    skew / 1000
                ),
            ));
        }

        // 6. Never seen before.
        check_message_id(&header.message_id)
            .map_err(|why| refuse(Code::InvalidArgument, format!("message id: {why}")))?;
        let key = format!("{}/{}", header.client, header.message_id);
        let fresh = s
            .seen
            .compare_and_swap(
                key.as_bytes(),
                None as Option<&[u8]>,
                Some(&header.time_unix_ms.to_be_bytes()[..]),
            )
            .map_err(|e| refuse(Code::Unavailable, format!("replay store: {e}")))?;
        if fresh.is_err() {
            return Err(refuse(
                Code::AlreadyExists,
                format!(
                    "message id {} was already used by {client} (replay refused)",
                    header.message_id
                ),
            ));
        }

        // 7. The body is the one that was signed.
        if header.body_len != signed.body.len() as u64
            || header.body_sha256 != lintas_certs::sha256(&signed.body)
        {
            return Err(refuse(
                Code::InvalidArgument,
                "request body does not match the signed hash",
            ));
        }

        // 8. Access rights, for a service this server provides.
        let provider: SubsystemId = header
            .service_provider
            .parse()
            .map_err(|e| refuse(Code::InvalidArgument, format!("service provider: {e}")))?;
        let method: MethodPath = header
            .method
            .parse()
            .map_err(|e| refuse(Code::InvalidArgument, format!("method: {e}")))?;
        if !s.hosts(&provider) {
            return Err(refuse(
                Code::NotFound,
                format!("{provider} is not hosted on security server {}", s.id),
            ));
        }
        let service = s
            .access
            .service(&provider, &method.service)
            .ok_or_else(|| {
                refuse(
                    Code::Unimplemented,
                    format!("{provider} provides no service {}", method.service),
                )
            })?;
        if !s.access.allowed(&conf, &client, &provider, &method) {
            return Err(refuse(
                Code::PermissionDenied,
                format!("{client} is not allowed to call {method} of {provider}"),
            ));
        }
        Ok(Accepted {
            header,
            client,
            method,
            endpoint: service.endpoint,
            peer,
        })
    }

    /// Calls the application; returns (status code, message, body, produced by the
    /// provider server rather than the application).
    async fn call_app(&self, accepted: &Accepted, body: Vec<u8>) -> (Code, String, Vec<u8>, bool) {
        let s = &self.0;
        let channel = match s.app_channel(&accepted.endpoint) {
            Ok(c) => c,
            Err(status) => return (status.code(), status.message().to_owned(), Vec::new(), true),
        };
        let path: PathAndQuery = match accepted.method.to_string().parse() {
            Ok(p) => p,
            Err(e) => {
                return (
                    Code::Internal,
                    format!("method path: {e}"),
                    Vec::new(),
                    true,
                );
            }
        };
        let mut request = Request::new(tokio_stream::once(bytes(body)));
        for (key, v) in forwarded(&accepted.header) {
            if !v.is_empty()
                && let Ok(v) = v.parse()
            {
                request.metadata_mut().insert(key, v);
            }
        }
        request.set_timeout(s.settings.app_timeout);
        let max = s.settings.max_message_bytes;
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let call = async {
            grpc.ready().await.map_err(|e| {
                (
                    Code::Unavailable,
                    format!("provider application unreachable: {e}"),
                    true,
                )
            })?;
            let mut stream = grpc
                .streaming(request, path, RawCodec)
                .await
                .map_err(app_status)?
                .into_inner();
            let first = stream.message().await.map_err(app_status)?;
            let second = stream.message().await.map_err(app_status)?;
            match (first, second) {
                (Some(b), None) => Ok(b),
                (None, _) => Err((
                    Code::Internal,
                    "provider application answered without a message".into(),
                    true,
                )),
                (Some(_), Some(_)) => Err((
                    Code::Unimplemented,
                    "provider application answered with more than one message; streaming is not supported yet".into(),
                    true,
                )),
            }
        };
        match tokio::time::timeout(s.settings.app_timeout + Duration::from_secs(1), call).await {
            Ok(Ok(body)) => (Code::Ok, String::new(), body.to_vec(), false),
            Ok(Err((code, message, by_server))) => (code, message, Vec::new(), by_server),
            Err(_) => (
                Code::DeadlineExceeded,
                "provider application did not answer in time".into(),
                Vec::new(),
                true,
            ),
        }
    }
}

/// An error from the application's gRPC stack. Transport failures (the application is
/// down) are the provider server's to report; statuses the application sent are its own.
fn app_status(status: Status) -> (Code, String, bool) {
    let transport =
        status.code() == Code::Unavailable && std::error::Error::source(&status).is_some();
    if transport {
        (
            Code::Unavailable,
            format!("provider application unreachable: {}", status.message()),
            true,
        )
    } else {
        (status.code(), status.message().to_owned(), false)
    }
}

/// A message id is 1 to 128 printable ASCII characters.
pub(crate) fn check_message_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > 128 {
        return Err("must be 1 to 128 characters");
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces");
    }
    Ok(())
}

#[tonic::async_trait]
impl ex::exchange_server::Exchange for ProviderService {
    async fn call(
        &self,
        request: Request<ex::SignedRequest>,
    ) -> Result<Response<ex::SignedResponse>, Status> {
        let s = &self.0;
        let side = ErrorSource::ProviderServer;
        let peer_cert = lintas_transport::peer_cert(&request);
        let signed = request.into_inner();
        let mut checked = self.check(peer_cert.as_deref(), &signed);
        if let Err(r) = &checked
            && r.newer_conf_may_help
            && s.refresh_conf_now().await
        {
            checked = self.check(peer_cert.as_deref(), &signed);
        }
        let accepted = match checked {
            Ok(a) => a,
            Err(refusal) => {
                let claimed =
                    ex::RequestHeader::decode(signed.header.as_slice()).unwrap_or_default();
                tracing::warn!(client = %claimed.client, code = ?refusal.code, reason = %refusal.message, "request refused");
                s.record(
                    Record {
                        kind: RecordKind::Rejection as i32,
                        time_unix_ms: now_ms(&*s.clock),
                        message_id: claimed.message_id,
                        client: claimed.client,
                        service_provider: claimed.service_provider,
                        method: claimed.method,
                        peer_server: claimed.consumer_server,
                        header: signed.header,
                        signature: signed.signature,
                        signer_cert_sha256: lintas_certs::sha256(&signed.signer_cert).to_vec(),
                        body_sha256: lintas_certs::sha256(&signed.body).to_vec(),
                        body_len: signed.body.len() as u64,
                        status_code: refusal.code as i32,
                        detail: refusal.message.clone(),
                    },
                    side,
                )
                .await?;
                return Err(error(refusal.code, side, refusal.message));
            }
        };
        let h = &accepted.header;
        let request_record = s
            .record(
                Record {
                    kind: RecordKind::RequestReceived as i32,
                    time_unix_ms: now_ms(&*s.clock),
                    message_id: h.message_id.clone(),
                    client: accepted.client.to_string(),
                    service_provider: h.service_provider.clone(),
                    method: h.method.clone(),
                    peer_server: accepted.peer.to_string(),
                    header: signed.header.clone(),
                    signature: signed.signature.clone(),
                    signer_cert_sha256: lintas_certs::sha256(&signed.signer_cert).to_vec(),
                    body_sha256: h.body_sha256.clone(),
                    body_len: h.body_len,
                    status_code: 0,
                    detail: String::new(),
                },
                side,
            )
            .await?;

        let (code, message, body, by_server) = self.call_app(&accepted, signed.body).await;
        let body_sha256 = lintas_certs::sha256(&body).to_vec();
        let response_header = ex::ResponseHeader {
            request_header_sha256: lintas_certs::sha256(&signed.header).to_vec(),
            message_id: h.message_id.clone(),
            status_code: code as i32,
            status_message: message.clone(),
            body_sha256: body_sha256.clone(),
            body_len: body.len() as u64,
            time_unix_ms: now_ms(&*s.clock),
            provider_server: s.id.to_string(),
            request_record,
            error_source: if by_server {
                side.as_str().into()
            } else {
                String::new()
            },
        }
        .encode_to_vec();
        let signature = lintas_certs::sig::sign(&s.sign_key, RESPONSE_DOMAIN, &response_header)
            .map_err(|e| error(Code::Internal, side, e.to_string()))?;
        s.record(
            Record {
                kind: RecordKind::ResponseSent as i32,
                time_unix_ms: now_ms(&*s.clock),
                message_id: h.message_id.clone(),
                client: accepted.client.to_string(),
                service_provider: h.service_provider.clone(),
                method: h.method.clone(),
                peer_server: accepted.peer.to_string(),
                header: response_header.clone(),
                signature: signature.clone(),
                signer_cert_sha256: lintas_certs::sha256(&s.sign_cert).to_vec(),
                body_sha256,
                body_len: body.len() as u64,
                status_code: code as i32,
                detail: message,
            },
            side,
        )
        .await?;
        Ok(Response::new(ex::SignedResponse {
            header: response_header,
            signature,
            signer_cert: s.sign_cert.clone(),
            body,
        }))
    }
}
