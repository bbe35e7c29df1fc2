//! W3C Trace Context (`traceparent`, `tracestate`) across the bus. The consumer's
//! application may send one (gRPC metadata, or HTTP headers on the REST entry); when it
//! sends none, or one that does not parse, the consumer's server starts one. The pair
//! travels in the signed request header and reaches the provider's application
//! unchanged; its trace id is in both servers' records, in their log lines (the
//! exchange's span) and in the operational monitoring records.

use aws_lc_rs::rand::SecureRandom;

/// Longest `tracestate` carried (the W3C limit for what a vendor must propagate).
pub const MAX_TRACESTATE: usize = 512;

/// A trace context as carried on one exchange.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: String,
}

impl TraceContext {
    /// The caller's context when `traceparent` is valid (with its `tracestate`, when that
    /// fits), otherwise a new one.
    pub fn continue_or_start(traceparent: Option<&str>, tracestate: Option<&str>) -> Self {
        match traceparent.filter(|t| trace_id_of(t).is_some()) {
            Some(t) => TraceContext {
                traceparent: t.to_owned(),
                tracestate: tracestate
                    .filter(|s| valid_tracestate(s))
                    .unwrap_or_default()
                    .to_owned(),
            },
            None => Self::start(),
        }
    }

    /// A new trace, sampled.
    pub fn start() -> Self {
        let mut ids = [0u8; 24];
        // Without randomness there is no usable id; an all-zero one is invalid, so the
        // provider side starts its own rather than join a shared one.
        let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut ids);
        TraceContext {
            traceparent: format!(
                "00-{}-{}-01",
                lintas_certs::hex(&ids[..16]),
                lintas_certs::hex(&ids[16..])
            ),
            tracestate: String::new(),
        }
    }

    /// The 32 hex digits of the trace id (empty when the context is not valid).
    pub fn trace_id(&self) -> &str {
        trace_id_of(&self.traceparent).unwrap_or("")
    }
}

/// The trace id of a valid `traceparent`: `VERSION-TRACEID-PARENTID-FLAGS` in lower-case
/// hex, version not `ff`, ids not all zero; version 00 has exactly these four fields,
/// later versions may append more after a dash.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let t = traceparent.as_bytes();
    if t.len() < 55 || t[2] != b'-' || t[35] != b'-' || t[52] != b'-' {
        return None;
    }
    let hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let (version, trace, parent, flags) = (&t[..2], &t[3..35], &t[36..52], &t[53..55]);
    if !(hex(version) && hex(trace) && hex(parent) && hex(flags)) || version == b"ff" {
        return None;
    }
    if trace.iter().all(|c| *c == b'0') || parent.iter().all(|c| *c == b'0') {
        return None;
    }
    match (version, t.len()) {
        (b"00", 55) => {}
        (b"00", _) => return None,
        (_, 55) => {}
        (_, _) if t[55] == b'-' => {}
        _ => return None,
    }
    traceparent.get(3..35)
}

/// A `tracestate` worth carrying: printable ASCII within the size limit.
fn valid_tracestate(s: &str) -> bool {
    s.len() <= MAX_TRACESTATE && s.bytes().all(|c| (0x20..0x7f).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_are_parsed_as_w3c_says() {
        let cases = [
            (GOOD, Some("4bf92f3577b34da6a3ce929d0e0e4736")),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ),
            // A later version may carry more fields.
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                None,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                None,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                None,
            ),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
            ("", None),
            (
                "not a traceparent at all, but long enough to be checked!!",
                None,
            ),
        ];
        for (t, id) in cases {
            assert_eq!(trace_id_of(t), id, "{t}");
        }
    }

    #[test]
    fn a_valid_context_is_kept_unchanged_and_an_invalid_one_replaced() {
        let kept = TraceContext::continue_or_start(Some(GOOD), Some("vendor=abc"));
        assert_eq!(kept.traceparent, GOOD);
        assert_eq!(kept.tracestate, "vendor=abc");
        assert_eq!(kept.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let too_long = "a=".to_owned() + &"b".repeat(MAX_TRACESTATE);
        let trimmed = TraceContext::continue_or_start(Some(GOOD), Some(&too_long));
        assert_eq!(trimmed.tracestate, "", "an oversize tracestate is dropped");

        for bad in [None, Some("garbage")] {
            let new = TraceContext::continue_or_start(bad, Some("vendor=abc"));
            assert_eq!(new.trace_id().len(), 32, "{new:?}");
            assert_eq!(new.tracestate, "", "no state without its parent");
            assert_ne!(new, TraceContext::start(), "ids are random");
        }
    }
}
