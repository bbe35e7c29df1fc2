//! One exchange in a log: its signed request and answer, each by the right member with
//! a certificate the configuration of the day approved, bound to each other, the
//! records describing the headers they hold, a stream's messages, and what that proves
//! in plain words.

use super::*;

/// Verifies the records of one exchange (a signed request and what answers it) and
/// adds what they prove to `r`.
pub(super) fn exchange(
    origin: &ServerId,
    confs: &[VerifiedConf],
    certs: &HashMap<[u8; 32], &Vec<u8>>,
    key: [u8; 32],
    recs: Vec<(u64, Record)>,
    (after, before): (Option<i64>, Option<i64>),
    r: &mut Report,
) {
    let (client, message_id) = (recs[0].1.client.clone(), recs[0].1.message_id.clone());
    let name = format!("exchange {message_id} of {client}");
    let mut facts = ExchangeFacts {
        message_id: message_id.clone(),
        client: client.clone(),
        provider: recs[0].1.service_provider.clone(),
        method: recs[0].1.method.clone(),
        consumer_server: String::new(),
        provider_server: String::new(),
        records: recs.iter().map(|(i, _)| *i).collect(),
        request: None,
        response: None,
        status: None,
        outcome: None,
        recorded_after: after.map(iso8601),
        recorded_before: before.map(iso8601),
        attempt: 0,
        retry_of: None,
        idempotency_key: None,
        repeats: None,
        rest_request: None,
        rest_headers: Vec::new(),
        http_status: None,
        stream: None,
        chunks: None,
    };
    let mut pair = SignedPair::default();
    let failures_before = r.failures.len();
    if recs
        .iter()
        .filter(|(_, rec)| {
            is(
                rec,
                &[RecordKind::ResponseSent, RecordKind::ResponseReceived],
            )
        })
        .count()
        > 1
    {
        r.fail(format!(
            "{name}: more than one response is recorded for its request"
        ));
        return;
    }

    // The request: signed by the client's member.
    let request = recs
        .iter()
        .find(|(_, rec)| is(rec, &[RecordKind::RequestSent, RecordKind::RequestReceived]));
    let mut request_header = None;
    if let Some((index, rec)) = request {
        let sent = is(rec, &[RecordKind::RequestSent]);
        match lintas_proto::decode_exact::<ex::RequestHeader>(&rec.header) {
            Err(e) => r.fail(format!(
                "{name}: request header (record {index}) is malformed: {e}"
            )),
            Ok(h) => {
                facts.consumer_server = h.consumer_server.clone();
                facts.provider_server = h.provider_server.clone();
                facts.attempt = h.attempt;
                facts.retry_of =
                    (!h.retry_of_sha256.is_empty()).then(|| lintas_certs::hex(&h.retry_of_sha256));
                facts.idempotency_key =
                    (!h.idempotency_key.is_empty()).then(|| h.idempotency_key.clone());
                if let Some(rest) = &h.rest {
                    let path = if rest.path.is_empty() {
                        "/"
                    } else {
                        &rest.path
                    };
                    let query = if rest.query.is_empty() {
                        String::new()
                    } else {
                        format!("?{}", rest.query)
                    };
                    facts.rest_request = Some(format!("{} {path}{query}", rest.verb));
                    facts.rest_headers = rest.headers.iter().map(|h| h.name.clone()).collect();
                }
                let here = if sent {
                    &h.consumer_server
                } else {
                    &h.provider_server
                };
                let member = h.client.parse::<ClientId>().map(|c| c.member().clone());
                if *here != origin.to_string() {
                    r.fail(format!(
                        "{name}: the request names {here}, not {origin}, as this side's server"
                    ));
                }
                if h.message_id != rec.message_id
                    || h.client != rec.client
                    || h.method != rec.method
                    || h.service_provider != rec.service_provider
                {
                    r.fail(format!(
                        "{name}: record {index} does not describe the request header it holds"
                    ));
                }
                if h.body_sha256 != rec.body_sha256 || h.body_len != rec.body_len {
                    r.fail(format!(
                        "{name}: record {index} names another body than its signed header"
                    ));
                }
                match member.map_err(|e| e.to_string()).and_then(|m| {
                    signed_header(
                        "request",
                        rec,
                        REQUEST_DOMAIN,
                        h.time_unix_ms,
                        &m,
                        confs,
                        certs,
                    )
                }) {
                    Ok(f) => {
                        facts.request = Some(f);
                        pair.request = rec.signature.clone().map(|s| (rec.header.clone(), s));
                        request_header = Some((rec.header.clone(), h, *index));
                    }
                    Err(e) => r.fail(format!("{name}: {e}")),
                }
            }
        }
    }

    // The answer: signed by the provider's member and bound to the request.
    let mut response_header = None;
    if let Some((index, rec)) = recs.iter().find(|(_, rec)| {
        is(
            rec,
            &[RecordKind::ResponseSent, RecordKind::ResponseReceived],
        )
    }) {
        match lintas_proto::decode_exact::<ex::ResponseHeader>(&rec.header) {
            Err(e) => r.fail(format!(
                "{name}: response header (record {index}) is malformed: {e}"
            )),
            Ok(h) => {
                response_header = Some(h.clone());
                let bound = request_header.as_ref().is_some_and(|(bytes, req, _)| {
                    h.request_header_sha256 == lintas_certs::sha256(bytes)
                        && h.message_id == req.message_id
                        && h.provider_server == req.provider_server
                });
                if !bound {
                    r.fail(format!(
                        "{name}: the response (record {index}) is not bound to a request this bundle holds"
                    ));
                }
                if h.body_sha256 != rec.body_sha256 || h.body_len != rec.body_len {
                    r.fail(format!(
                        "{name}: record {index} names another body than its signed header"
                    ));
                }
                match facts
                    .provider
                    .parse::<SubsystemId>()
                    .map_err(|e| e.to_string())
                    .and_then(|p| {
                        signed_header(
                            "response",
                            rec,
                            RESPONSE_DOMAIN,
                            h.time_unix_ms,
                            &p.member,
                            confs,
                            certs,
                        )
                    }) {
                    Ok(f) => {
                        facts.response = Some(f);
                        facts.status = Some((h.status_code, h.status_message.clone()));
                        facts.http_status = h.rest.as_ref().map(|r| r.status);
                        facts.repeats = (!h.repeats_message_id.is_empty())
                            .then(|| h.repeats_message_id.clone());
                        pair.response = rec.signature.clone().map(|s| (rec.header.clone(), s));
                    }
                    Err(e) => r.fail(format!("{name}: {e}")),
                }
            }
        }
    }
    // A stream's messages, chained in each direction and named by the close.
    let messages = recs
        .iter()
        .any(|(_, rec)| is(rec, &[RecordKind::MessageSent, RecordKind::MessageReceived]));
    match &request_header {
        Some((bytes, req, _)) if req.stream || (messages && (req.rest.is_some() || req.grpc_framed)) => {
            let members = (
                req.client.parse::<ClientId>().map(|c| c.member().clone()),
                facts.provider.parse::<SubsystemId>().map(|p| p.member),
            );
            if let (Ok(client_member), Ok(provider_member)) = members {
                let checked = streams::check(&recs, bytes, response_header.as_ref(), |rec, h| {
                    let member = if h.from_provider {
                        &provider_member
                    } else {
                        &client_member
                    };
                    signed_header(
                        "message",
                        rec,
                        MESSAGE_DOMAIN,
                        h.time_unix_ms,
                        member,
                        confs,
                        certs,
                    )
                    .map(|_| ())
                });
                match checked {
                    Ok(f) if req.stream => facts.stream = Some(f),
                    Ok(f) => facts.chunks = Some(f),
                    Err(failures) => {
                        for e in failures {
                            r.fail(format!("{name}: {e}"));
                        }
                    }
                }
            }
        }
        _ if messages => r.fail(format!(
            "{name}: stream messages are recorded for an exchange that is neither a stream nor a REST call"
        )),
        _ => {}
    }
    if let Some((index, rec)) = recs
        .iter()
        .find(|(_, rec)| is(rec, &[RecordKind::Failed, RecordKind::Rejection]))
    {
        let what = if is(rec, &[RecordKind::Rejection]) {
            "refused the request"
        } else {
            "recorded that the exchange failed"
        };
        facts.outcome = Some(format!(
            "{origin} {what} (record {index}): {} {}",
            status_name(rec.status_code),
            rec.detail
        ));
    }
    if r.failures.len() > failures_before {
        r.exchanges.push(facts);
        return;
    }

    // In plain words.
    if let Some(req) = &facts.request {
        let travelled = if facts.consumer_server == origin.to_string() {
            format!(
                "sent it through its server {} to {}",
                facts.consumer_server, facts.provider_server
            )
        } else {
            format!(
                "and {} received it from {}",
                facts.provider_server, facts.consumer_server
            )
        };
        let what = match &facts.rest_request {
            Some(line) => {
                let service = facts
                    .method
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or_default();
                let headers = if facts.rest_headers.is_empty() {
                    "no headers".to_owned()
                } else {
                    format!("headers {}", facts.rest_headers.join(", "))
                };
                format!("{line} of REST service {service} ({headers})")
            }
            None => facts.method.clone(),
        };
        let body = match &facts.chunks {
            Some(c) if c.requests > 0 => format!("body in {} signed chunks", c.requests),
            _ => format!(
                "body SHA-256 {}, {} bytes",
                hex8(&lintas_certs::unhex(&req.body_sha256).unwrap_or_default()),
                req.body_len
            ),
        };
        r.proven.push(format!(
            "{client} requested {what} of {} (message {message_id}; {body}), signed by member {} at {} by its clock, {travelled}.",
            facts.provider,
            req.signed_by,
            req.signed_at
        ));
        if let Some(st) = &facts.stream {
            r.proven.push(format!(
                "{name} is a stream: {} message(s) from the client{} and {} from the application, each signed by its sender's member and chained to the one before it, so none is missing, repeated or out of order in this log.",
                st.requests,
                if st.request_ended { " (then its end)" } else { " (its end not recorded)" },
                st.responses
            ));
        }
        if let Some(c) = &facts.chunks {
            r.proven.push(format!(
                "{name}'s bodies travelled in chunks: {} from the client{} and {} from the backend or application, each signed by its sender's member and chained to the one before it, so none is missing, repeated or out of order in this log.",
                c.requests,
                if c.request_ended { " (then its end)" } else { "" },
                c.responses
            ));
        }
    }
    match (&facts.response, &facts.status) {
        (Some(resp), Some((code, message))) => r.proven.push(format!(
            "{} answered that request with {}{} ({}), signed by member {} at {} by its clock and bound to the request by its hash.",
            facts.provider,
            match facts.http_status {
                Some(http) if *code == 0 => format!("HTTP status {http}"),
                _ => status_name(*code),
            },
            if message.is_empty() { String::new() } else { format!(" \"{message}\"") },
            match &facts.chunks {
                Some(c) if c.responses > 0 => format!("body in {} signed chunks", c.responses),
                _ => format!(
                    "body SHA-256 {}, {} bytes",
                    hex8(&lintas_certs::unhex(&resp.body_sha256).unwrap_or_default()),
                    resp.body_len
                ),
            },
            resp.signed_by,
            resp.signed_at
        )),
        _ => r.not_established.push(format!(
            "{name}: no signed answer is recorded{}",
            facts
                .outcome
                .as_ref()
                .map(|o| format!("; {o}"))
                .unwrap_or_default()
        )),
    }
    match (&facts.idempotency_key, &facts.repeats) {
        (Some(key), Some(first)) => r.proven.push(format!(
            "{name} was sent under idempotency key {key}, and {} signed that its answer repeats its answer to exchange {first} under the same key, given without calling the application again.",
            facts.provider
        )),
        (Some(key), None) => r.proven.push(format!(
            "{name} was sent under idempotency key {key}."
        )),
        (None, Some(first)) => r.fail(format!(
            "{name}: the answer names exchange {first} as repeated, but the request carries no idempotency key"
        )),
        (None, None) => {}
    }
    match (&facts.recorded_after, &facts.recorded_before) {
        (Some(a), Some(b)) => r.proven.push(format!(
            "The records of {name} were written between {a} and {b}, by trusted time (RFC 3161 time-stamps of the log's checkpoints)."
        )),
        (None, Some(b)) => {
            r.proven.push(format!(
                "The records of {name} were written no later than {b}, by trusted time (an RFC 3161 time-stamp of a checkpoint that includes them)."
            ));
            r.not_established.push(format!(
                "{name}: no trusted time-stamp bounds from below when its records were written"
            ));
        }
        (Some(a), None) => {
            r.proven.push(format!(
                "The records of {name} were written after {a}, by trusted time (the RFC 3161 time-stamp they name)."
            ));
            r.not_established.push(format!(
                "{name}: no trusted time-stamp bounds from above when its records were written"
            ));
        }
        (None, None) => r.not_established.push(format!(
            "{name}: when its records were written is not bounded by any trusted time-stamp"
        )),
    }
    pair.client = client;
    pair.message_id = message_id;
    r.signed.insert(key, pair);
    r.exchanges.push(facts);
}

/// Checks a signed header: the certificate the record names, its chain to an authority
/// a configuration approves at the header's time, its member, and the batch signature.
#[allow(clippy::too_many_arguments)]
pub(super) fn signed_header(
    what: &str,
    rec: &Record,
    domain: &str,
    time_ms: i64,
    member: &MemberId,
    confs: &[VerifiedConf],
    certs: &HashMap<[u8; 32], &Vec<u8>>,
) -> Result<SignedFact, String> {
    let hash: [u8; 32] = rec
        .signer_cert_sha256
        .as_slice()
        .try_into()
        .map_err(|_| format!("the {what} record names no signing certificate"))?;
    let cert = certs.get(&hash).ok_or_else(|| {
        format!(
            "the {what}'s signing certificate ({}) is not in the bundle",
            hex8(&hash)
        )
    })?;
    let at = system_time(time_ms);
    let mut last_error = String::from("no configuration");
    let info = confs
        .iter()
        .find_map(|c| match c.trust_store().verify(cert, Role::Member, at) {
            Ok(info) => Some(info),
            Err(e) => {
                last_error = e.to_string();
                None
            }
        })
        .ok_or_else(|| {
            format!(
                "the {what}'s signing certificate was not valid at {} under any configuration in the bundle: {last_error}",
                at_ms(time_ms)
            )
        })?;
    // A header dated long before or after its record was not signed when it claims:
    // servers refuse requests outside their clock skew (at most an hour), and the
    // record's own time is held to the trusted window.
    if (time_ms - rec.time_unix_ms).abs() > MAX_SIGNING_SKEW_MS {
        return Err(format!(
            "the {what} says it was signed at {}, more than an hour from when it was recorded ({})",
            at_ms(time_ms),
            at_ms(rec.time_unix_ms)
        ));
    }
    // A certificate revoked by the time of signing, in any configuration the bundle
    // holds, does not count.
    for c in confs {
        if let Some(rv) = c
            .conf
            .revoked
            .iter()
            // Revocation times are whole seconds: within the same second the order is
            // not known, and the signature is not held against the certificate.
            .find(|rv| rv.serial == info.serial && rv.revoked_at < time_ms.div_euclid(1000))
        {
            return Err(format!(
                "the {what}'s signing certificate was revoked at {} ({}), before it was signed",
                iso8601(rv.revoked_at),
                rv.reason
            ));
        }
    }
    if info.identity != Identity::Member(member.clone()) {
        return Err(format!(
            "the {what} was signed by {}, not by member {member}",
            info.identity
        ));
    }
    let signature = rec
        .signature
        .as_ref()
        .ok_or_else(|| format!("the {what} record holds no signature"))?;
    lintas_wire::batch::verify(&info.public_key, domain, &rec.header, signature)
        .map_err(|e| format!("the {what}'s signature: {e}"))?;
    Ok(SignedFact {
        signed_by: member.to_string(),
        signed_at: at_ms(time_ms),
        header_sha256: lintas_certs::hex(&lintas_certs::sha256(&rec.header)),
        body_sha256: lintas_certs::hex(&rec.body_sha256),
        body_len: rec.body_len,
    })
}
