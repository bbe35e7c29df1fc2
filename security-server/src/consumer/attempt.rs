//! One attempt at a call on one of the provider's security servers: a request header
//! signed for that server (linked to the previous attempt, if any) and recorded, the
//! exchange, the answer verified and recorded. The attempt says whether the request
//! could have reached the application, so the caller knows whether another server may
//! be tried, and tells the selector how the server did.

use std::time::Instant;

use bytes::Bytes;
use lintas_globalconf::VerifiedConf;
use lintas_identifiers::SubsystemId;
use lintas_log::RecordKind;
use lintas_proto::exchange::v1 as ex;
use lintas_proto::globalconf::v1::SecurityServer as Entry;
use prost::Message;
use tonic::{Code, Request, Status};

use crate::consumer::{Answer, Call, Consumer};
use crate::envelope::{self, REQUEST_DOMAIN, RESPONSE_DOMAIN};
use crate::errors::{ErrorSource, error, was_not_delivered};
use crate::outcome::{Progress, Stage};
use crate::select::Outcome;

fn consumer_error(code: Code, message: impl Into<String>) -> Status {
    error(code, ErrorSource::ConsumerServer, message)
}

/// One attempt: the call, on `target`.
pub(crate) struct Attempt<'a> {
    pub call: &'a Call,
    pub body: &'a Bytes,
    pub conf: &'a VerifiedConf,
    pub target: &'a Entry,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// SHA-256 of the previous attempt's signed header.
    pub retry_of: Option<[u8; 32]>,
}

/// Why an attempt failed, and whether another server may be tried.
pub(crate) struct Failed {
    pub status: Status,
    /// The request did not reach the application and the failure is the server's
    /// (unreachable, unavailable, busy): another server of the provider may be tried.
    pub retry: bool,
    /// SHA-256 of this attempt's signed header (zero when none was signed).
    pub request_hash: [u8; 32],
}

impl From<Status> for Failed {
    fn from(status: Status) -> Self {
        Failed {
            status,
            retry: false,
            request_hash: [0; 32],
        }
    }
}

/// An exchange that did not end with a verified answer: the status for the
/// application, the response if one arrived, and how the server did.
struct Unanswered {
    status: Status,
    received: Option<ex::SignedResponse>,
    outcome: Outcome,
}

/// Whether a failed attempt may be repeated on another server: only when nothing
/// reached the application and the server (not the request) was the problem.
pub(crate) fn retryable(outcome: Outcome, code: Code) -> bool {
    outcome == Outcome::NotSent && matches!(code, Code::Unavailable | Code::ResourceExhausted)
}

/// What a provider server's refusal means for trying another of its servers: one made
/// before calling the application for being unavailable or busy was not sent (and
/// counts against the server); one for the client's own quota was answered.
pub(crate) fn refusal_outcome(status: &Status) -> Outcome {
    let over_quota = crate::errors::reason_of(status) == Some(crate::errors::QUOTA_EXCEEDED);
    match (was_not_delivered(status), status.code()) {
        _ if over_quota => Outcome::Answered,
        (true, Code::Unavailable | Code::ResourceExhausted) => Outcome::NotSent,
        _ => Outcome::Answered,
    }
}

/// A provider server's refusal as this server passes it on: it is unsigned, so only the
/// code, the message, the reason and the seconds to wait before retrying, under this
/// server's own source tag.
pub(crate) fn passed_on(status: &Status) -> Status {
    let mut passed = error(status.code(), ErrorSource::ProviderServer, status.message());
    if let Some(reason) = crate::errors::reason_of(status)
        && let Ok(v) = reason.parse()
    {
        passed.metadata_mut().insert(crate::errors::ERROR_REASON, v);
    }
    match crate::errors::retry_after_of(status) {
        Some(secs) => crate::errors::with_retry_after(passed, secs),
        None => passed,
    }
}

/// The TLS certificate hashes the configuration lists for `target`, its current one
/// first (during a renewal, the one before it too: the peer may present either).
pub(crate) fn pins_of(target: &Entry) -> Result<Vec<[u8; 32]>, Status> {
    let pins = lintas_globalconf::tls_pins(target);
    if pins.first().map(<[u8; 32]>::as_slice) != Some(target.tls_cert_sha256.as_slice()) {
        return Err(consumer_error(
            Code::Internal,
            "configuration: bad certificate hash",
        ));
    }
    Ok(pins)
}

/// The request header of `call` for `target`, without its body (the fields every
/// attempt and every stream share).
pub(crate) fn request_header(
    s: &Consumer,
    call: &Call,
    conf: &VerifiedConf,
    target: &Entry,
) -> ex::RequestHeader {
    ex::RequestHeader {
        message_id: call.message_id.clone(),
        client: call.client.to_string(),
        service_provider: call.provider.to_string(),
        method: call.method.to_string(),
        consumer_server: s.own.id.to_string(),
        provider_server: target.id.clone(),
        time_unix_ms: s.recorder.now_ms(),
        conf_serial: conf.serial(),
        user_id: call.user_id.clone(),
        purpose: call.purpose.clone(),
        issue: call.issue.clone(),
        idempotency_key: call.idempotency_key.clone(),
        traceparent: call.trace.traceparent.clone(),
        tracestate: call.trace.tracestate.clone(),
        represented_party: call.represented_party.clone(),
        ..Default::default()
    }
}

/// Signs, records and exchanges the request with `a.target`, then records the answer.
pub(crate) async fn run(
    s: &Consumer,
    a: Attempt<'_>,
    progress: &Progress,
) -> Result<Answer, Failed> {
    let Attempt {
        call,
        body,
        conf,
        target,
        attempt,
        retry_of,
    } = a;
    let Call {
        client,
        provider,
        method,
        message_id,
        trace,
        rest,
        ..
    } = call;
    let pins = pins_of(target)?;
    let body_sha256 = lintas_certs::sha256(body);
    let header = ex::RequestHeader {
        body_sha256: body_sha256.to_vec(),
        body_len: body.len() as u64,
        attempt,
        retry_of_sha256: retry_of.map(|h| h.to_vec()).unwrap_or_default(),
        rest: rest.clone(),
        ..request_header(s, call, conf, target)
    }
    .encode_to_vec();
    let request_hash = lintas_certs::sha256(&header);
    progress.set_peer(&target.id);
    // Signed with the key of the certificate the request names.
    let keys = s.own.keys();
    let signature = progress
        .time(Stage::Signing, keys.signer.sign(REQUEST_DOMAIN, &header))
        .await
        .map_err(|e| consumer_error(Code::Internal, format!("signing the request: {e}")))?;
    let ctx = envelope::Context {
        message_id: message_id.clone(),
        client: client.to_string(),
        service_provider: provider.to_string(),
        method: method.to_string(),
        peer_server: target.id.clone(),
        peer_cert_sha256: pins[0].to_vec(),
        trace_id: trace.trace_id().to_owned(),
    };
    // The record of what was signed is written while the request travels: the
    // application is answered only after a later record of this exchange is durable,
    // and records become durable in order.
    let sent = s.recorder.record_soon(
        ctx.record(
            RecordKind::RequestSent,
            s.recorder.now_ms(),
            &header,
            Some(&signature),
            &keys.sign_cert,
            &body_sha256,
            body.len() as u64,
            Code::Ok,
            "",
        ),
        ErrorSource::ConsumerServer,
    )?;
    let signed = ex::SignedRequest {
        header,
        signature: Some(signature),
        signer_cert: keys.sign_cert.clone(),
        body: body.to_vec(),
        secret_headers: call.rest_secrets.clone(),
    };

    // From here every outcome is recorded before the application hears of it.
    let in_flight = s.selector.start(&target.id);
    let started = Instant::now();
    let exchanged = progress
        .time(
            Stage::Peer,
            exchange(s, conf, target, provider, &pins, message_id, signed),
        )
        .await;
    let outcome = match &exchanged {
        Ok(_) => Outcome::Answered,
        Err(u) => u.outcome,
    };
    s.selector
        .report(&target.id, outcome, started.elapsed(), Instant::now());
    drop(in_flight);
    match exchanged {
        Ok((response, answer)) => {
            let code = Code::from_i32(answer.status_code);
            let durable = std::time::Instant::now();
            let received = s
                .recorder
                .record(
                    ctx.record(
                        RecordKind::ResponseReceived,
                        s.recorder.now_ms(),
                        &response.header,
                        response.signature.as_ref(),
                        &response.signer_cert,
                        &answer.body_sha256,
                        answer.body_len,
                        code,
                        &answer.status_message,
                    ),
                    ErrorSource::ConsumerServer,
                )
                .await?;
            let sent = sent.await?;
            progress.add(Stage::Durable, durable.elapsed());
            s.recorder
                .keep_bodies(&[(sent, body), (received, &response.body)]);
            if code != Code::Ok {
                let source = if answer.error_source == ErrorSource::ProviderServer.as_str() {
                    ErrorSource::ProviderServer
                } else {
                    ErrorSource::ProviderApp
                };
                return Err(error(code, source, answer.status_message).into());
            }
            if rest.is_some() != answer.rest.is_some() {
                return Err(error(
                    Code::Internal,
                    ErrorSource::ProviderServer,
                    "the provider server answered a REST call without an HTTP status, or the reverse",
                )
                .into());
            }
            Ok(Answer {
                body: Bytes::from(response.body),
                message_id: message_id.clone(),
                request_hash,
                rest: answer.rest,
                rest_secrets: response.secret_headers,
                repeats_message_id: answer.repeats_message_id,
            })
        }
        Err(Unanswered {
            status,
            received,
            outcome,
        }) => {
            let empty = ex::SignedResponse::default();
            let r = received.as_ref().unwrap_or(&empty);
            // An oversized header from a hostile peer is not copied; its hash is enough.
            let header: &[u8] = if r.header.len() <= envelope::MAX_HEADER_BYTES {
                &r.header
            } else {
                &[]
            };
            s.recorder
                .record(
                    ctx.record(
                        RecordKind::Failed,
                        s.recorder.now_ms(),
                        header,
                        r.signature.as_ref(),
                        &r.signer_cert,
                        &lintas_certs::sha256(&r.body),
                        r.body.len() as u64,
                        status.code(),
                        status.message(),
                    ),
                    ErrorSource::ConsumerServer,
                )
                .await?;
            sent.await?;
            Err(Failed {
                retry: retryable(outcome, status.code()),
                status,
                request_hash,
            })
        }
    }
}

/// Sends the signed request to the provider server and verifies the signed response.
/// On failure returns the status for the application and, if one arrived, the
/// response that was refused.
async fn exchange(
    s: &Consumer,
    conf: &VerifiedConf,
    target: &Entry,
    provider: &SubsystemId,
    pins: &[[u8; 32]],
    message_id: &str,
    signed: ex::SignedRequest,
) -> Result<(ex::SignedResponse, ex::ResponseHeader), Unanswered> {
    let fail = |status: Status, outcome| Unanswered {
        status,
        received: None,
        outcome,
    };
    let request_header_sha256 = lintas_certs::sha256(&signed.header);
    let keys = s.own.keys();
    let channel = s
        .peers
        .channel(conf, &target.address, pins, &keys)
        .map_err(|st| fail(st, Outcome::NotSent))?;
    let limit = s.settings.max_message_bytes + envelope::ENVELOPE_MARGIN;
    let mut peer = ex::exchange_client::ExchangeClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let deadline = s.settings.app_timeout + std::time::Duration::from_secs(5);
    let mut call = Request::new(signed);
    call.set_timeout(deadline);
    let response = match tokio::time::timeout(deadline, peer.call(call)).await {
        Err(_) => {
            return Err(fail(
                consumer_error(
                    Code::DeadlineExceeded,
                    format!(
                        "provider security server {} did not answer within {} s",
                        target.id,
                        deadline.as_secs()
                    ),
                ),
                Outcome::Lost,
            ));
        }
        Ok(Ok(r)) => r.into_inner(),
        // The connection failed: this side's problem to report. Only a connection that
        // could not be made is known to have carried nothing.
        Ok(Err(status)) if std::error::Error::source(&status).is_some() => {
            let outcome = if lintas_transport::connect_failed(&status) {
                Outcome::NotSent
            } else {
                Outcome::Lost
            };
            return Err(fail(
                consumer_error(
                    Code::Unavailable,
                    format!(
                        "provider security server {} at {} unreachable: {}",
                        target.id,
                        target.address,
                        status.message()
                    ),
                ),
                outcome,
            ));
        }
        // The provider server refused. Its answer is unsigned: only the code and the
        // message are passed on, under this server's own source tag. A refusal it made
        // before calling the application says so; one for being unavailable or busy
        // counts against the server.
        Ok(Err(status)) => {
            let outcome = refusal_outcome(&status);
            return Err(fail(passed_on(&status), outcome));
        }
    };

    // The answer must be signed by the provider's member and bound to this request.
    let refused = |why: String, response: ex::SignedResponse| Unanswered {
        status: consumer_error(Code::DataLoss, format!("response refused: {why}")),
        received: Some(response),
        // It answered; what it answered is refused, and is not retried elsewhere.
        outcome: Outcome::Answered,
    };
    if response.header.len() > envelope::MAX_HEADER_BYTES {
        return Err(refused("header too large".into(), response));
    }
    let verify = |conf: &VerifiedConf, listed: &[Vec<u8>]| {
        s.verifier.verify_signed(
            conf,
            &provider.member,
            listed,
            &response.signer_cert,
            RESPONSE_DOMAIN,
            &response.header,
            response.signature.as_ref(),
        )
    };
    if let Err(why) = verify(conf, &target.signing_certs) {
        // A renewed provider certificate is listed from the next configuration on.
        let newer = if why.not_listed && s.conf.refresh_now().await {
            s.conf.client().current().ok()
        } else {
            None
        };
        let listed_now = newer.as_ref().and_then(|c| {
            c.conf
                .servers
                .iter()
                .find(|e| e.id == target.id)
                .map(|e| verify(c, &e.signing_certs))
        });
        if !matches!(listed_now, Some(Ok(()))) {
            return Err(refused(why.to_string(), response));
        }
    }
    let answer = match lintas_proto::decode_exact::<ex::ResponseHeader>(&response.header) {
        Ok(a) => a,
        Err(e) => return Err(refused(format!("header is malformed: {e}"), response)),
    };
    if answer.request_header_sha256 != request_header_sha256
        || answer.message_id != message_id
        || answer.provider_server != target.id
    {
        return Err(refused("it does not answer this request".into(), response));
    }
    if !envelope::body_matches(&answer.body_sha256, answer.body_len, &response.body) {
        return Err(refused(
            "body does not match the signed hash".into(),
            response,
        ));
    }
    Ok((response, answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::{QUOTA_EXCEEDED, not_delivered, with_reason};

    #[test]
    fn a_refusal_over_a_quota_is_answered_and_busy_ones_are_not_sent() {
        let provider = |code| error(code, ErrorSource::ProviderServer, "x");
        let cases = [
            (not_delivered(provider(Code::Unavailable)), Outcome::NotSent),
            (
                not_delivered(provider(Code::ResourceExhausted)),
                Outcome::NotSent,
            ),
            (
                not_delivered(with_reason(
                    provider(Code::ResourceExhausted),
                    QUOTA_EXCEEDED,
                )),
                Outcome::Answered,
            ),
            (provider(Code::Unavailable), Outcome::Answered),
            (
                not_delivered(provider(Code::PermissionDenied)),
                Outcome::Answered,
            ),
        ];
        for (status, want) in cases {
            assert_eq!(refusal_outcome(&status), want, "{status:?}");
            assert!(!retryable(want, status.code()) || want == Outcome::NotSent);
        }
        let passed = passed_on(&crate::errors::with_retry_after(
            with_reason(provider(Code::ResourceExhausted), QUOTA_EXCEEDED),
            7,
        ));
        assert_eq!(crate::errors::retry_after_of(&passed), Some(7));
        assert_eq!(crate::errors::reason_of(&passed), Some(QUOTA_EXCEEDED));
    }
}
