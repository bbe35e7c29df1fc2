//! The checks of a peer's signed request, in order, each refusal precise: configuration
//! fresh and trusted time; the TLS peer a registered server hosting (or owned by) the
//! client; the signature; addressed here; recent; never seen; the body; a service
//! provided here, called the way it is published (gRPC or REST, unary or stream), and
//! access rights.

use super::*;

/// Why a request was refused, before anything was delivered.
pub(super) struct Refusal {
    pub(super) code: Code,
    pub(super) message: String,
    /// A newer global configuration might explain the request (a server or client
    /// admitted since this server last fetched it).
    pub(super) newer_conf_may_help: bool,
    /// Why, in X-Road's terms, where the code does not say it.
    pub(super) reason: Option<&'static str>,
    /// Over a quota: whole seconds until the client may call again.
    pub(super) retry_after: Option<u64>,
}

impl Refusal {
    fn because(self, reason: &'static str) -> Self {
        Refusal {
            reason: Some(reason),
            ..self
        }
    }
}

fn refuse(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        newer_conf_may_help: false,
        reason: None,
        retry_after: None,
    }
}

fn refuse_unless_newer_conf(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        newer_conf_may_help: true,
        ..refuse(code, message)
    }
}

/// What travels how: a unary gRPC call on `Exchange.Call` with its body; on
/// `Exchange.Stream` (`via_stream`) a gRPC stream (no body: its messages follow), or a
/// REST call or a framed unary gRPC call (`grpc_framed`), whose body is in the opening
/// request or, `chunked`, follows in messages.
fn shape(
    header: &ex::RequestHeader,
    signed: &ex::SignedRequest,
    via_stream: bool,
) -> Result<(), Refusal> {
    let invalid = |why: &str| Err(refuse(Code::InvalidArgument, why.to_owned()));
    let rest = header.rest.is_some();
    let framed = header.grpc_framed;
    // A transfer: a body that travels whole or in chunks, answered the same way.
    let transfer = rest || framed;
    if header.stream && transfer {
        return invalid("a REST call or a framed gRPC call is not a stream");
    }
    if rest && framed {
        return invalid("a REST call is not a framed gRPC call");
    }
    if header.stream && !via_stream {
        return invalid("a request header marked as a stream must open Exchange.Stream");
    }
    if transfer && !via_stream {
        return invalid("a REST call or a framed gRPC call opens Exchange.Stream");
    }
    if via_stream && !header.stream && !transfer {
        return invalid("a stream must open with a request header marked as a stream");
    }
    if header.chunked && !transfer {
        return invalid("only a REST call's or a framed gRPC call's body comes in chunks");
    }
    if !header.idempotency_key.is_empty() {
        if via_stream {
            return invalid(
                "an idempotency key is taken on unary gRPC calls carried whole, not on streams, REST calls or large messages",
            );
        }
        if let Err(why) = crate::idempotency::check_key(&header.idempotency_key) {
            return Err(refuse(
                Code::InvalidArgument,
                format!("idempotency key {why}"),
            ));
        }
    }
    if (header.stream || header.chunked) && (header.body_len != 0 || !signed.body.is_empty()) {
        return invalid(if header.stream {
            "a stream opens without a body: its messages follow"
        } else {
            "a chunked body follows the opening request: it carries none"
        });
    }
    Ok(())
}

pub(super) fn check(
    s: &Provider,
    peer_hash: Option<[u8; 32]>,
    signed: &ex::SignedRequest,
    streaming: bool,
) -> Result<Accepted, Refusal> {
    if signed.header.len() > envelope::MAX_HEADER_BYTES {
        return Err(refuse(
            Code::InvalidArgument,
            format!(
                "request header is {} bytes; at most {} are accepted",
                signed.header.len(),
                envelope::MAX_HEADER_BYTES
            ),
        ));
    }
    let header = lintas_proto::decode_exact::<ex::RequestHeader>(&signed.header).map_err(|e| {
        refuse(
            Code::InvalidArgument,
            format!("request header is malformed: {e}"),
        )
    })?;
    let client: ClientId = header
        .client
        .parse()
        .map_err(|e| refuse(Code::InvalidArgument, format!("client: {e}")))?;
    shape(&header, signed, streaming)?;

    // 1. Configuration fresh (and kept as evidence). 1b. Trusted time: a server that
    // could not have its log time-stamped for too long fails closed.
    let as_refusal = |status: Status| refuse(status.code(), status.message().to_owned());
    let conf = s
        .conf
        .current(ErrorSource::ProviderServer)
        .map_err(as_refusal)?;
    s.recorder
        .check_trusted_time(ErrorSource::ProviderServer)
        .map_err(as_refusal)?;

    // 2. The TLS peer is a registered server that hosts the client.
    let peer_hash = peer_hash
        .ok_or_else(|| refuse(Code::Unauthenticated, "peer presented no TLS certificate"))?;
    let peer_entry = conf.server_by_tls(&peer_hash).ok_or_else(|| {
        refuse_unless_newer_conf(
            Code::PermissionDenied,
            "TLS peer is not a security server registered in the global configuration",
        )
    })?;
    // A subsystem the peer hosts, or the member that owns the peer.
    let hosted = match &client {
        ClientId::Subsystem(_) => peer_entry.clients.contains(&header.client),
        ClientId::Member(m) => peer_entry
            .id
            .parse::<ServerId>()
            .is_ok_and(|peer| peer.owner == *m),
    };
    if !hosted {
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

    // 3. Signed by the client's member with a certificate listed for the peer server.
    s.verifier
        .verify_signed(
            &conf,
            client.member(),
            &peer_entry.signing_certs,
            &signed.signer_cert,
            REQUEST_DOMAIN,
            &signed.header,
            signed.signature.as_ref(),
        )
        .map_err(|why| {
            // A renewed signing certificate is listed from the next configuration on.
            let message = format!("request {why}");
            if why.not_listed {
                refuse_unless_newer_conf(Code::Unauthenticated, message)
            } else {
                refuse(Code::Unauthenticated, message)
            }
        })?;

    // 4. Addressed to this server.
    if header.provider_server != s.own.id.to_string() {
        return Err(refuse(
            Code::FailedPrecondition,
            format!(
                "request is addressed to security server {}, not to this one ({})",
                header.provider_server, s.own.id
            ),
        ));
    }

    // 5. Signed recently.
    let skew = i64::try_from(s.settings.clock_skew.as_millis()).unwrap_or(i64::MAX);
    let age = s.recorder.now_ms().saturating_sub(header.time_unix_ms);
    if age.saturating_abs() > skew {
        return Err(refuse(
            Code::FailedPrecondition,
            format!(
                "request was signed {} s {} this server's clock; at most {} s of clock difference are allowed",
                age.saturating_abs() / 1000,
                if age >= 0 { "before" } else { "ahead of" },
                skew / 1000
            ),
        ));
    }

    // 6. A well-formed message id (taken as used only once every check has passed,
    // below, so that a forged copy of a request cannot use up the genuine one's id).
    envelope::check_message_id(&header.message_id)
        .map_err(|why| refuse(Code::InvalidArgument, format!("message id {why}")))?;

    // 7. The body is the one that was signed.
    if !envelope::body_matches(&header.body_sha256, header.body_len, &signed.body) {
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
    if !s.own.hosts(&provider) {
        return Err(refuse(
            Code::NotFound,
            format!("{provider} is not hosted on security server {}", s.own.id),
        )
        .because("UnknownMember"));
    }
    if method.service.as_str() == crate::opmon::SERVICE {
        // Built in: this server's monitoring records, for its owner's own subsystems
        // when the owner granted them.
        if *client.member() != s.own.id.owner {
            return Err(refuse(
                Code::PermissionDenied,
                format!(
                    "only subsystems of {} may read the operational data of security server {}",
                    s.own.id.owner, s.own.id
                ),
            ));
        }
        if !s.access.allowed(&conf, &client, &provider, &method, None) {
            return Err(refuse(
                Code::PermissionDenied,
                format!("{client} is not allowed to call {method} of {provider}"),
            ));
        }
        if header.stream || header.grpc_framed {
            return Err(refuse(
                Code::Unimplemented,
                format!("{method} is answered on Exchange.Call only"),
            ));
        }
        first_use(s, &header, &client)?;
        return Ok(Accepted {
            header,
            header_sha256: lintas_certs::sha256(&signed.header),
            client,
            method,
            target: Target::OperationalData,
            peer,
        });
    }
    if method.service.as_str() == crate::events::SUBSCRIPTIONS {
        // Built in: subscriptions to this server's topics; the topic's grants are
        // checked when the request names it.
        if header.stream || header.grpc_framed || header.rest.is_some() {
            return Err(refuse(
                Code::Unimplemented,
                format!("{method} is answered on Exchange.Call only"),
            ));
        }
        within_quota(s, &client, &provider, &method)?;
        first_use(s, &header, &client)?;
        return Ok(Accepted {
            header,
            header_sha256: lintas_certs::sha256(&signed.header),
            client,
            method,
            target: Target::Subscriptions,
            peer,
        });
    }
    let service = s
        .access
        .service(&provider, &method.service)
        .ok_or_else(|| {
            refuse(
                Code::Unimplemented,
                format!("{provider} provides no service {}", method.service),
            )
            .because("UnknownService")
        })?;
    if service.topic {
        return Err(refuse(
            Code::FailedPrecondition,
            format!(
                "{} of {provider} is a topic, not a service: subscribe to it with {}/Subscribe",
                method.service,
                crate::events::SUBSCRIPTIONS
            ),
        ));
    }
    let rest_path = check_rest(&service, &header, &method, &signed.secret_headers)?;
    if !s
        .access
        .allowed(&conf, &client, &provider, &method, rest_path)
    {
        let what = match &header.rest {
            Some(r) => format!(
                "{} {} of service {}",
                r.verb,
                or_root(&r.path),
                method.service
            ),
            None => method.to_string(),
        };
        return Err(refuse(
            Code::PermissionDenied,
            format!("{client} is not allowed to call {what} of {provider}"),
        ));
    }
    sent_by_its_publisher(&method, &client, &signed.body)?;
    within_quota(s, &client, &provider, &method)?;
    // A replay is refused and does not count against the client's quota.
    first_use(s, &header, &client).inspect_err(|_| {
        s.access.give_back_quota(&client, &provider, &method);
    })?;
    Ok(Accepted {
        header,
        header_sha256: lintas_certs::sha256(&signed.header),
        client,
        method,
        target: Target::App(Box::new(service)),
        peer,
    })
}

/// An event delivered to a subscriber's `EventSink` names as its publisher the client
/// that signed it: nobody granted the sink can pass off events as another's.
fn sent_by_its_publisher(
    method: &MethodPath,
    client: &ClientId,
    body: &[u8],
) -> Result<(), Refusal> {
    if method.service.as_str() != crate::events::SINK {
        return Ok(());
    }
    let event = <lintas_proto::events::v1::Event as prost::Message>::decode(body).map_err(|e| {
        refuse(
            Code::InvalidArgument,
            format!("the event is malformed: {e}"),
        )
    })?;
    if event.publisher != client.to_string() {
        return Err(refuse(
            Code::PermissionDenied,
            format!(
                "{client} delivered an event naming {} as its publisher",
                event.publisher
            ),
        ));
    }
    Ok(())
}

/// Within the quotas the service administrator set: one call is taken from each.
fn within_quota(
    s: &Provider,
    client: &ClientId,
    provider: &SubsystemId,
    method: &MethodPath,
) -> Result<(), Refusal> {
    let over = match s
        .access
        .take_quota(client, provider, method, Instant::now())
    {
        Ok(()) => return Ok(()),
        Err(over) => over,
    };
    let secs = crate::quotas::retry_after_secs(over.wait);
    s.outcomes.exchanges.quota_refused(client, provider, method);
    Err(Refusal {
        retry_after: Some(secs),
        ..refuse(
            Code::ResourceExhausted,
            format!(
                "{client} is over its quota for {} of {provider} ({}); retry after {secs} s",
                method.service,
                over.quota.describe()
            ),
        )
        .because(crate::errors::QUOTA_EXCEEDED)
    })
}

/// Why a request under an idempotency key is refused, in words the client can act on.
pub(super) fn idempotency_refusal(why: crate::idempotency::Refused, key: &str) -> Refusal {
    use crate::idempotency::Refused;
    match why {
        Refused::Reused { message_id } => refuse(
            Code::FailedPrecondition,
            format!(
                "idempotency key {key} was used for another request (message id {message_id}: another method or body); a new request needs a new key"
            ),
        )
        .because(crate::idempotency::KEY_REUSED),
        Refused::InProgress { message_id } => Refusal {
            retry_after: Some(1),
            ..refuse(
                Code::Aborted,
                format!(
                    "the request first sent under idempotency key {key} (message id {message_id}) is still being answered; send it again in a moment for its answer"
                ),
            )
            .because(crate::idempotency::IN_PROGRESS)
        },
        Refused::Interrupted { message_id } => refuse(
            Code::Unknown,
            format!(
                "the request first sent under idempotency key {key} (message id {message_id}) was being answered when this server stopped: whether the application acted on it is unknown; ask the provider before sending it under a new key"
            ),
        )
        .because(crate::idempotency::OUTCOME_UNKNOWN),
    }
}

/// Last, never seen before: the request's message id is taken as used once every other
/// check passed.
fn first_use(s: &Provider, header: &ex::RequestHeader, client: &ClientId) -> Result<(), Refusal> {
    if s.replay.first_use(
        &header.client,
        &header.message_id,
        header.time_unix_ms,
        s.recorder.now_ms(),
    ) {
        return Ok(());
    }
    Err(refuse(
        Code::AlreadyExists,
        format!(
            "message id {} was already used by {client} (replay refused)",
            header.message_id
        ),
    ))
}

fn or_root(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// A REST service is called with a REST request whose method is the HTTP method, a
/// gRPC service without one; the path must be one the access decision means. The path
/// to decide access on, for a REST call.
fn check_rest<'a>(
    service: &crate::access::ServiceEntry,
    header: &'a ex::RequestHeader,
    method: &MethodPath,
    secrets: &[ex::SecretValue],
) -> Result<Option<&'a str>, Refusal> {
    match (&header.rest, service.rest) {
        (None, false) => Ok(None),
        (None, true) => Err(refuse(
            Code::InvalidArgument,
            format!(
                "{} is a REST service: call it as /r1/PROVIDER/{}/PATH",
                method.service, method.service
            ),
        )
        .because("ServiceType")),
        (Some(_), false) => Err(refuse(
            Code::InvalidArgument,
            format!("{} is a gRPC service, not a REST service", method.service),
        )
        .because("ServiceType")),
        (Some(r), true) => {
            crate::endpoints::check_method(&r.verb)
                .and_then(|()| crate::endpoints::check_path(&r.path))
                .and_then(|()| crate::endpoints::check_query(&r.query))
                .and_then(|()| crate::http_headers::to_map(&r.headers, secrets).map(|_| ()))
                .map_err(|why| refuse(Code::InvalidArgument, why))?;
            if r.verb != method.method {
                return Err(refuse(
                    Code::InvalidArgument,
                    format!("method {method} does not name the HTTP method {}", r.verb),
                ));
            }
            Ok(Some(&r.path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a request header says it is.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Unary,
        Stream,
        Rest,
        Framed,
        StreamRest,
        StreamFramed,
        RestFramed,
    }

    /// kind, chunked, body, via Exchange.Stream, refused with.
    type Case = (Kind, bool, &'static [u8], bool, Option<&'static str>);

    #[test]
    fn what_travels_how_is_one_decision() {
        use Kind::*;
        let cases: &[Case] = &[
            (Unary, false, b"x", false, None),
            (Unary, false, b"x", true, Some("marked as a stream")),
            (Stream, false, b"", true, None),
            (Stream, false, b"", false, Some("must open Exchange.Stream")),
            (Stream, false, b"x", true, Some("opens without a body")),
            (Rest, false, b"x", true, None),
            (Rest, true, b"", true, None),
            (Rest, true, b"x", true, Some("carries none")),
            (Rest, false, b"x", false, Some("opens Exchange.Stream")),
            (Framed, false, b"x", true, None),
            (Framed, true, b"", true, None),
            (Framed, true, b"x", true, Some("carries none")),
            (Framed, false, b"x", false, Some("opens Exchange.Stream")),
            (StreamRest, false, b"", true, Some("not a stream")),
            (StreamFramed, false, b"", true, Some("not a stream")),
            (
                RestFramed,
                false,
                b"x",
                true,
                Some("not a framed gRPC call"),
            ),
            (
                Unary,
                true,
                b"",
                false,
                Some("only a REST call's or a framed"),
            ),
        ];
        for &(kind, chunked, body, via_stream, refused) in cases {
            let rest =
                matches!(kind, Rest | StreamRest | RestFramed).then(ex::RestRequest::default);
            let header = ex::RequestHeader {
                stream: matches!(kind, Stream | StreamRest | StreamFramed),
                grpc_framed: matches!(kind, Framed | StreamFramed | RestFramed),
                rest,
                chunked,
                body_len: body.len() as u64,
                ..Default::default()
            };
            let signed = ex::SignedRequest {
                body: body.to_vec(),
                ..Default::default()
            };
            let got = shape(&header, &signed, via_stream).err().map(|r| r.message);
            match (refused, &got) {
                (None, None) => {}
                (Some(want), Some(message)) if message.contains(want) => {}
                _ => panic!(
                    "{kind:?} chunked {chunked} via_stream {via_stream}: {got:?}, wanted {refused:?}"
                ),
            }
        }
    }
}
