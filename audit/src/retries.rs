//! Retries in a consumer's log: a call that did not reach the provider's application on
//! one server may be tried again on another, as a new signed request that names the
//! previous attempt's header. Each link is checked here.

use std::collections::HashMap;

use crate::{ExchangeFacts, Report};

/// Checks each retry against the attempt it names: the same call (client and message
/// id), an earlier attempt, and one that was never answered; a retry of an answered
/// request would deliver one call twice.
pub(crate) fn check(r: &mut Report) {
    enum Finding {
        Proven(String),
        Failed(String),
        Unknown(String),
    }
    let by_hash: HashMap<&str, &ExchangeFacts> = r
        .exchanges
        .iter()
        .filter_map(|x| Some((x.request.as_ref()?.header_sha256.as_str(), x)))
        .collect();
    let mut findings = Vec::new();
    for x in &r.exchanges {
        let Some(previous) = &x.retry_of else {
            continue;
        };
        let name = format!(
            "exchange {} of {} (attempt {})",
            x.message_id, x.client, x.attempt
        );
        findings.push(match by_hash.get(previous.as_str()) {
            None => Finding::Unknown(format!(
                "{name}: the attempt it retries ({}…) is not in this bundle",
                previous.get(..16).unwrap_or(previous)
            )),
            Some(p) if p.client != x.client || p.message_id != x.message_id => {
                Finding::Failed(format!(
                    "{name}: the attempt it names as retried belongs to another call ({} of {})",
                    p.message_id, p.client
                ))
            }
            Some(p) if p.response.is_some() || p.attempt >= x.attempt => Finding::Failed(format!(
                "{name}: it retries an attempt that was answered or is not earlier, so one call could be delivered twice"
            )),
            Some(p) => Finding::Proven(format!(
                "{name} on {} retried attempt {} on {}, which ended without an answer{}.",
                x.provider_server,
                p.attempt,
                p.provider_server,
                p.outcome
                    .as_ref()
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default()
            )),
        });
    }
    for f in findings {
        match f {
            Finding::Proven(m) => r.proven.push(m),
            Finding::Failed(m) => r.fail(m),
            Finding::Unknown(m) => r.not_established.push(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SignedFact;

    fn attempt(
        n: u32,
        id: &str,
        hash: &str,
        retry_of: Option<&str>,
        answered: bool,
    ) -> ExchangeFacts {
        let fact = |h: &str| SignedFact {
            signed_by: "ID/GOV/KEMENSOS".into(),
            signed_at: String::new(),
            header_sha256: h.into(),
            body_sha256: String::new(),
            body_len: 0,
        };
        ExchangeFacts {
            message_id: id.into(),
            client: "ID/GOV/KEMENSOS/DTKS".into(),
            provider: "ID/GOV/KEMENDAGRI/DUKCAPIL".into(),
            method: "/a.v1.A/Get".into(),
            consumer_server: "ID/GOV/KEMENSOS/SS1".into(),
            provider_server: format!("ID/GOV/KEMENDAGRI/SS{}", n + 1),
            records: Vec::new(),
            request: Some(fact(hash)),
            response: answered.then(|| fact("response")),
            status: None,
            outcome: (!answered).then(|| "Unavailable: unreachable".into()),
            recorded_after: None,
            recorded_before: None,
            attempt: n,
            retry_of: retry_of.map(str::to_owned),
            idempotency_key: None,
            repeats: None,
            rest_request: None,
            rest_headers: Vec::new(),
            http_status: None,
            stream: None,
            chunks: None,
        }
    }

    #[test]
    fn retry_links_are_checked() {
        // (the exchanges, then how many are proven, failed and unknown)
        let cases = [
            (
                vec![
                    attempt(0, "m", "a", None, false),
                    attempt(1, "m", "b", Some("a"), true),
                ],
                (1, 0, 0),
            ),
            // The retried attempt is not in the bundle.
            (vec![attempt(1, "m", "b", Some("a"), true)], (0, 0, 1)),
            // It names another call.
            (
                vec![
                    attempt(0, "other", "a", None, false),
                    attempt(1, "m", "b", Some("a"), true),
                ],
                (0, 1, 0),
            ),
            // It retries an answered attempt: the call could have been delivered twice.
            (
                vec![
                    attempt(0, "m", "a", None, true),
                    attempt(1, "m", "b", Some("a"), true),
                ],
                (0, 1, 0),
            ),
            // The "previous" attempt is not earlier.
            (
                vec![
                    attempt(2, "m", "a", None, false),
                    attempt(1, "m", "b", Some("a"), true),
                ],
                (0, 1, 0),
            ),
            // No retry: nothing to say.
            (vec![attempt(0, "m", "a", None, true)], (0, 0, 0)),
        ];
        for (exchanges, (proven, failed, unknown)) in cases {
            let mut r = Report {
                origin: "ID/GOV/KEMENSOS/SS1".into(),
                verified: false,
                checkpoint: None,
                exchanges,
                proven: Vec::new(),
                failures: Vec::new(),
                not_established: Vec::new(),
                signed: Default::default(),
            };
            check(&mut r);
            assert_eq!(
                (r.proven.len(), r.failures.len(), r.not_established.len()),
                (proven, failed, unknown),
                "{:?} {:?} {:?}",
                r.proven,
                r.failures,
                r.not_established
            );
        }
    }
}
