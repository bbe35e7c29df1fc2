//! Which HTTP headers of a REST call travel end to end, as X-Road's REST protocol has
//! them: hop-by-hop headers (RFC 9110 section 7.6.1, and any a `Connection` header
//! names), the ones that would reveal or describe one hop (`Host`, `User-Agent`,
//! `Server`, `Content-Length`, `Expect`) and the `X-Road-*` headers the bus itself sets
//! stay at each hop. Everything else (content type, accept, authorization, cookies,
//! custom headers, other `X-Road-*` headers) is forwarded unchanged and signed.

use base64::Engine;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use lintas_proto::exchange::v1::{HttpHeader, RequestHeader, SecretValue};

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

/// Headers each hop sets for itself, that would tell one hop about another, or that
/// claim where a request came from (a backend that trusts its security server would
/// believe them).
const PER_HOP: [&str; 11] = [
    "host",
    "content-length",
    "expect",
    "user-agent",
    "server",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

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

/// Headers that carry credentials: signed as commitments, never written into a log.
const SECRET: [&str; 4] = ["authorization", "cookie", "set-cookie", "x-api-key"];

/// Most bytes of headers carried in one direction: they are signed into a header that
/// peers accept up to 16 KiB.
pub const MAX_CARRIED: usize = 12 * 1024;

/// The end-to-end headers of a request (to the provider's backend) or of an answer (to
/// the client), in order; credentials as commitments, with their values and nonces
/// beside them.
pub fn carried(headers: &HeaderMap) -> Result<(Vec<HttpHeader>, Vec<SecretValue>), String> {
    let connection = connection_names(headers);
    let mut listed = Vec::new();
    let mut secrets = Vec::new();
    for (name, value) in headers {
        if stays(name.as_str(), &connection) {
            continue;
        }
        if SECRET.contains(&name.as_str()) {
            let mut nonce = [0u8; 32];
            aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut nonce)
                .map_err(|_| "random number generator failed".to_owned())?;
            listed.push(HttpHeader {
                name: name.as_str().to_owned(),
                value: Vec::new(),
                value_commitment: commitment(&nonce, value.as_bytes()).to_vec(),
            });
            secrets.push(SecretValue {
                nonce: nonce.to_vec(),
                value: value.as_bytes().to_vec(),
            });
        } else {
            listed.push(HttpHeader {
                name: name.as_str().to_owned(),
                value: value.as_bytes().to_vec(),
                value_commitment: Vec::new(),
            });
        }
    }
    Ok((listed, secrets))
}

fn commitment(nonce: &[u8], value: &[u8]) -> [u8; 32] {
    let mut joined = Vec::with_capacity(nonce.len() + value.len());
    joined.extend_from_slice(nonce);
    joined.extend_from_slice(value);
    lintas_certs::sha256(&joined)
}

/// Bytes of names and values (credentials counted by their values) of `headers`.
pub fn size(headers: &[HttpHeader], secrets: &[SecretValue]) -> usize {
    headers
        .iter()
        .map(|h| h.name.len() + h.value.len())
        .sum::<usize>()
        + secrets.iter().map(|v| v.value.len()).sum::<usize>()
}

/// The signed headers of a request or an answer as a header map for the next hop, the
/// credentials' values checked against their signed commitments; again without any
/// header that stays at a hop (a peer's list is not trusted to be clean).
pub fn to_map(headers: &[HttpHeader], secrets: &[SecretValue]) -> Result<HeaderMap, String> {
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
    let mut secrets = secrets.iter();
    let mut map = HeaderMap::new();
    for h in headers {
        let value = if h.value_commitment.is_empty() {
            h.value.clone()
        } else {
            let secret = secrets
                .next()
                .ok_or_else(|| format!("the value of credential header {} is missing", h.name))?;
            if !h.value.is_empty()
                || commitment(&secret.nonce, &secret.value).as_slice() != h.value_commitment
            {
                return Err(format!(
                    "credential header {} does not match its signed commitment",
                    h.name
                ));
            }
            secret.value.clone()
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) && !stays(name.as_str(), &connection)
        {
            map.append(name, value);
        }
    }
    if secrets.next().is_some() {
        return Err("more credential values than credential headers".into());
    }
    Ok(map)
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
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn end_to_end_headers_travel_credentials_as_commitments_and_per_hop_ones_stay() {
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
            ("X-Forwarded-For", "10.0.0.1"),
            ("Forwarded", "for=10.0.0.1"),
            ("lintas-client", "ID/GOV/X/APP"),
            ("Expect", "100-continue"),
            ("Cookie", "sesi=rahasia"),
        ]);
        let (listed, secrets) = carried(&given).unwrap();
        let kept: Vec<(String, String, bool)> = listed
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    String::from_utf8(h.value.clone()).unwrap(),
                    h.value_commitment.len() == 32,
                )
            })
            .collect();
        let expected: Vec<(String, String, bool)> = [
            ("content-type", "application/json; charset=utf-8", false),
            ("accept", "application/xml", false),
            // Credentials: no value in what is signed and logged.
            ("authorization", "", true),
            ("x-custom", "one", false),
            ("x-custom", "two", false),
            ("x-road-contract", "1", false),
            ("cookie", "", true),
        ]
        .iter()
        .map(|(k, v, c)| (k.to_string(), v.to_string(), *c))
        .collect();
        assert_eq!(kept, expected);
        assert_eq!(secrets.len(), 2);
        // The next hop gets the values back, checked against the commitments.
        let next = to_map(&listed, &secrets).unwrap();
        assert_eq!(next.get("authorization").unwrap(), "Bearer abc");
        assert_eq!(next.get("cookie").unwrap(), "sesi=rahasia");
        assert_eq!(next.get_all("x-custom").iter().count(), 2);
        // A value swapped in transit, one missing, one too many: refused.
        let mut swapped = secrets.clone();
        swapped[0].value = b"Bearer lain".to_vec();
        assert!(
            to_map(&listed, &swapped)
                .unwrap_err()
                .contains("commitment")
        );
        assert!(
            to_map(&listed, &secrets[..1])
                .unwrap_err()
                .contains("missing")
        );
        let mut extra = secrets.clone();
        extra.push(secrets[0].clone());
        assert!(
            to_map(&listed, &extra)
                .unwrap_err()
                .contains("more credential")
        );
        assert_eq!(
            size(&listed, &secrets),
            kept.iter()
                .map(|(k, v, _)| k.len() + v.len())
                .sum::<usize>()
                + 22
        );
    }

    #[test]
    fn a_peers_list_is_cleaned_again() {
        let list = [
            ("location", "/persons/2"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "10"),
            ("host", "admin.internal"),
            ("x-road-userid", "smuggled"),
            ("x-road-error", "forged"),
            ("bad name", "x"),
        ]
        .iter()
        .map(|(k, v)| HttpHeader {
            name: k.to_string(),
            value: v.as_bytes().to_vec(),
            value_commitment: Vec::new(),
        })
        .collect::<Vec<_>>();
        let m = to_map(&list, &[]).unwrap();
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m.get("location").unwrap(), "/persons/2");
    }
}
