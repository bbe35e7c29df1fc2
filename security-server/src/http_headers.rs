//! Which HTTP headers of a REST call travel end to end, as X-Road's REST protocol has
//! them: hop-by-hop headers (RFC 9110 section 7.6.1, and any a `Connection` header
//! names), the ones that would reveal or describe one hop (`Host`, `User-Agent`,
//! `Server`, `Content-Length`, `Expect`) and the `X-Road-*` headers the bus itself sets
//! stay at each hop. Everything else (content type, accept, authorization, cookies,
//! custom headers, other `X-Road-*` headers) is forwarded unchanged and signed.

use base64::Engine;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use lintas_proto::exchange::v1::{HttpHeader, RequestHeader};

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers each hop sets for itself, or that would tell one hop about another.
const PER_HOP: [&str; 5] = ["host", "content-length", "expect", "user-agent", "server"];

/// The `X-Road-*` headers the bus reads or sets: never taken from a client or a backend
/// as they are.
const BUS: [&str; 10] = [
    "x-road-client",
    "x-road-service",
    "x-road-id",
    "x-road-userid",
    "x-road-issue",
    "x-road-represented-party",
    "x-road-security-server",
    "x-road-request-id",
    "x-road-request-hash",
    "x-road-error",
];

/// Whether `name` (lower case) stays at this hop, given the names a `Connection`
/// header lists.
fn stays(name: &str, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name)
        || PER_HOP.contains(&name)
        || BUS.contains(&name)
        || name.starts_with("lintas-")
        || connection.iter().any(|c| c == name)
}

fn connection_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

fn end_to_end(headers: &HeaderMap) -> Vec<HttpHeader> {
    let connection = connection_names(headers);
    headers
        .iter()
        .filter(|(name, _)| !stays(name.as_str(), &connection))
        .map(|(name, value)| HttpHeader {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

/// The headers of a client's REST request that go to the provider's backend.
pub fn forwarded(headers: &HeaderMap) -> Vec<HttpHeader> {
    end_to_end(headers)
}

/// The headers of a backend's answer that go back to the client.
pub fn passed_back(headers: &HeaderMap) -> Vec<HttpHeader> {
    end_to_end(headers)
}

/// The signed headers of an answer as a header map for the client, again without any
/// that stay at a hop (a peer's list is not trusted to be clean).
pub fn to_map(headers: &[HttpHeader]) -> HeaderMap {
    let connection: Vec<String> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| {
            String::from_utf8_lossy(&h.value)
                .split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.is_empty())
        .collect();
    let mut map = HeaderMap::new();
    for h in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(&h.value),
        ) && !stays(name.as_str(), &connection)
        {
            map.append(name, value);
        }
    }
    map
}

/// The headers the provider server adds to a REST request for its backend: who calls
/// and for whom, the service, the message id, the end user and case as the client gave
/// them, the request hash both logs hold (base64 SHA-256 of the signed request header),
/// and the trace context.
pub fn to_backend(h: &RequestHeader, request_hash: &[u8; 32]) -> Vec<(HeaderName, HeaderValue)> {
    let service = h
        .method
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let hash = base64::engine::general_purpose::STANDARD.encode(request_hash);
    let pairs = [
        ("x-road-client", h.client.clone()),
        (
            "x-road-service",
            format!("{}/{service}", h.service_provider),
        ),
        ("x-road-id", h.message_id.clone()),
        ("x-road-userid", h.user_id.clone()),
        ("x-road-issue", h.issue.clone()),
        ("x-road-represented-party", h.represented_party.clone()),
        ("x-road-request-hash", hash),
        ("traceparent", h.traceparent.clone()),
        ("tracestate", h.tracestate.clone()),
    ];
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .filter_map(|(k, v)| Some((HeaderName::from_static(k), HeaderValue::from_str(&v).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn end_to_end_headers_travel_and_per_hop_ones_stay() {
        let given = map(&[
            ("Content-Type", "application/json; charset=utf-8"),
            ("Accept", "application/xml"),
            ("Authorization", "Bearer abc"),
            ("X-Custom", "one"),
            ("X-Custom", "two"),
            ("Host", "ss1.example"),
            ("Content-Length", "12"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "keep-alive, X-Drop-Me"),
            ("Keep-Alive", "timeout=5"),
            ("X-Drop-Me", "1"),
            ("Upgrade", "h2c"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic x"),
            ("X-Road-Client", "ID/GOV/X/APP"),
            ("X-Road-Request-Hash", "forged"),
            ("x-road-contract", "1"),
            ("User-Agent", "curl/8"),
            ("lintas-client", "ID/GOV/X/APP"),
            ("Expect", "100-continue"),
        ]);
        let kept: Vec<(String, String)> = forwarded(&given)
            .into_iter()
            .map(|h| (h.name, String::from_utf8(h.value).unwrap()))
            .collect();
        let expected: Vec<(String, String)> = [
            ("content-type", "application/json; charset=utf-8"),
            ("accept", "application/xml"),
            ("authorization", "Bearer abc"),
            ("x-custom", "one"),
            ("x-custom", "two"),
            ("x-road-contract", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(kept, expected);
        assert_eq!(passed_back(&given).len(), expected.len());
    }

    #[test]
    fn a_peers_list_is_cleaned_again() {
        let list = [
            ("location", "/persons/2"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("x-road-error", "forged"),
            ("bad name", "x"),
        ]
        .iter()
        .map(|(k, v)| HttpHeader {
            name: k.to_string(),
            value: v.as_bytes().to_vec(),
        })
        .collect::<Vec<_>>();
        let m = to_map(&list);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m.get("location").unwrap(), "/persons/2");
    }
}
