//! The messages of a streaming exchange in one log: each signed by its sender's member
//! and chained to the one before it in its direction (`lintas_wire::chain`), and the
//! signed close naming the last message the application sent and the end the client
//! sent. A message missing, repeated, reordered or moved between streams breaks a chain.

use lintas_log::{Record, RecordKind};
use lintas_proto::exchange::v1 as ex;
use lintas_wire::chain::Chain;

/// What one log shows of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StreamFacts {
    /// The client's messages, and whether its end is recorded.
    pub requests: u64,
    pub request_ended: bool,
    /// The application's messages.
    pub responses: u64,
}

/// Checks the message records of a stream whose signed request header is `request`
/// (answered by `response`, when recorded). `verify(record, from_provider)` checks a
/// record's signature by the right member.
pub fn check(
    recs: &[(u64, Record)],
    request: &[u8],
    response: Option<&ex::ResponseHeader>,
    mut verify: impl FnMut(&Record, &ex::MessageHeader) -> Result<(), String>,
) -> Result<StreamFacts, Vec<String>> {
    let hash = lintas_certs::sha256(request);
    let mut client = Chain::new(hash, false);
    let mut app = Chain::new(hash, true);
    let mut failures = Vec::new();
    // The close says how many of the client's messages the provider's server received
    // and which was the last: the log's chain must hold that message at that place.
    let received = response.map(|r| r.request_messages);
    let mut at_received = (received == Some(0)).then_some(hash);
    for (index, rec) in recs {
        let kind = RecordKind::try_from(rec.kind).unwrap_or_default();
        if !matches!(kind, RecordKind::MessageSent | RecordKind::MessageReceived) {
            continue;
        }
        let from_provider = match lintas_proto::decode_exact::<ex::MessageHeader>(&rec.header) {
            Ok(h) => h.from_provider,
            Err(e) => {
                failures.push(format!("message record {index} is malformed: {e}"));
                continue;
            }
        };
        let chain = if from_provider { &mut app } else { &mut client };
        match chain.accept(&rec.header, None) {
            Ok(h) => {
                if h.body_sha256 != rec.body_sha256 || h.body_len != rec.body_len {
                    failures.push(format!(
                        "message record {index} names another body than its signed header"
                    ));
                }
                if let Err(e) = verify(rec, &h) {
                    failures.push(format!("message record {index}: {e}"));
                }
                if !from_provider && !h.end && Some(client.count()) == received {
                    at_received = Some(client.last());
                }
            }
            Err(e) => failures.push(format!("message record {index}: {e}")),
        }
    }
    if let Some(r) = response {
        if r.messages != app.count() || r.last_message_sha256 != app.last() {
            failures.push(format!(
                "the signed close counts {} messages from the application where the log holds {}",
                r.messages,
                app.count()
            ));
        }
        if r.request_messages > client.count()
            || at_received.is_none_or(|h| r.request_last_sha256 != h)
        {
            failures.push(format!(
                "the signed close says the provider's server received {} of the client's messages, which this log's chain does not show",
                r.request_messages
            ));
        }
        if !r.request_end_sha256.is_empty()
            && (!client.ended() || r.request_end_sha256 != client.last())
        {
            failures.push(
                "the signed close names an end of the client's messages the log does not hold"
                    .into(),
            );
        }
    }
    if failures.is_empty() {
        Ok(StreamFacts {
            requests: client.count(),
            request_ended: client.ended(),
            responses: app.count(),
        })
    } else {
        Err(failures)
    }
}
