//! REST services passed through, as X-Road's REST protocol has them:
//! `/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE_CODE/PATH?QUERY` with any method,
//! headers and body. The request line, the end-to-end headers and the body's hash are
//! signed and logged like any exchange; the backend's status, headers and body come
//! back unchanged (headers filtered as [`crate::http_headers`] says).

use lintas_identifiers::{Code as IdCode, ServerId, ServiceName};
use lintas_proto::exchange::v1 as ex;

use super::*;

/// Most bytes of request line and forwarded headers: they are signed into the request
/// header, which the provider's server accepts up to 16 KiB.
const MAX_REQUEST_HEAD: usize = crate::http_headers::MAX_CARRIED;

pub(super) async fn call(
    s: &Rest,
    req: Request,
    client: ClientId,
    provider: SubsystemId,
    code: &str,
    path: String,
) -> Result<Response, Failure> {
    let Fields {
        message_id,
        user_id,
        issue,
        trace,
        idempotency_key,
    } = fields(req.headers())?;
    if !idempotency_key.is_empty() {
        return Err(Failure::client(
            "BadRequest",
            "Idempotency-Key is taken on calls to gRPC services (/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/package.Service/Method), not yet on a REST service's calls: send the request without it",
        ));
    }
    let service: ServiceName = code
        .parse()
        .map_err(|e| Failure::client("InvalidServiceIdentifier", format!("service code: {e}")))?;
    crate::endpoints::check_path(&path).map_err(|why| Failure::client("BadRequest", why))?;
    let verb = req.method().as_str().to_owned();
    crate::endpoints::check_method(&verb).map_err(|why| Failure::client("BadRequest", why))?;
    let represented_party = represented_party(req.headers())?;
    let server = match header_text(req.headers(), "X-Road-Security-Server")? {
        Some(text) => Some(
            text.parse::<ServerId>()
                .map_err(|e| {
                    Failure::client(
                        "InvalidSecurityServer",
                        format!("X-Road-Security-Server: {e}"),
                    )
                })?
                .to_string(),
        ),
        None => None,
    };
    let query = req.uri().query().unwrap_or_default().to_owned();
    crate::endpoints::check_query(&query).map_err(|why| Failure::client("BadRequest", why))?;
    let (headers, secrets) =
        crate::http_headers::carried(req.headers()).map_err(|why| Failure {
            http: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "Server.ClientProxy.InternalError".into(),
            message: why,
            detail: message_id.clone(),
            bus: true,
            retry_after: None,
        })?;
    let rest = ex::RestRequest {
        verb: verb.clone(),
        path,
        query,
        headers,
    };
    let head =
        rest.path.len() + rest.query.len() + crate::http_headers::size(&rest.headers, &secrets);
    if head > MAX_REQUEST_HEAD {
        return Err(Failure {
            http: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ..Failure::client(
                "BadRequest",
                format!(
                    "the path, query and forwarded headers take {head} bytes; at most {MAX_REQUEST_HEAD} are carried"
                ),
            )
        });
    }
    // A body announced larger than the limit is refused before any of it is read.
    let max = s.consumer.settings.max_body_bytes;
    if let Some(len) = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|len| *len > max)
    {
        return Err(Failure {
            http: StatusCode::PAYLOAD_TOO_LARGE,
            ..Failure::client(
                "BadRequest",
                format!(
                    "the request body has {len} bytes; at most {max} are carried (max_body_bytes)"
                ),
            )
        });
    }
    let upload = first_chunk(s, req.into_body()).await?;
    let call = Call {
        client: client.clone(),
        provider: provider.clone(),
        method: format!("/{service}/{verb}")
            .parse()
            .map_err(|e| Failure::client("BadRequest", format!("{e}")))?,
        message_id: message_id.clone(),
        user_id,
        purpose: String::new(),
        issue,
        trace: trace.clone(),
        rest: Some(rest),
        rest_secrets: secrets,
        represented_party,
        server,
        idempotency_key: String::new(),
    };
    let answered = crate::consumer::transfer::call(&s.consumer, call, upload)
        .await
        .map_err(|st| match crate::errors::reason_of(&st) {
            Some(crate::consumer::transfer::BODY_TOO_LARGE) => Failure {
                http: StatusCode::PAYLOAD_TOO_LARGE,
                ..Failure::client("BadRequest", st.message())
            },
            _ => Failure::from_status(&st, &message_id),
        })?;
    let answer = &answered.answer;
    let rest = answer.rest.clone().unwrap_or_default();
    // A final status: an informational one (1xx) would change what the connection is.
    let status = u16::try_from(rest.status)
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| Failure {
            http: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "Server.ServerProxy.InvalidResponse".into(),
            message: format!("the backend answered with HTTP status {}", rest.status),
            detail: message_id.clone(),
            bus: true,
            retry_after: None,
        })?;
    let headers =
        crate::http_headers::to_map(&rest.headers, &answer.rest_secrets).map_err(|why| {
            Failure {
                http: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "Server.ClientProxy.InconsistentResponse".into(),
                message: why,
                detail: message_id.clone(),
                bus: true,
                retry_after: None,
            }
        })?;
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    answer_headers(
        r.headers_mut(),
        answer,
        &client,
        &format!("{provider}/{service}"),
        &trace,
    );
    *r.body_mut() = answered.body;
    Ok(r)
}

/// The request body's first chunk (or the whole of a small body), within the request
/// deadline and the body limit; the rest is read as the call goes.
async fn first_chunk(
    s: &Rest,
    mut body: Body,
) -> Result<crate::consumer::transfer::Upload, Failure> {
    let settings = &s.consumer.settings;
    let mut first = bytes::BytesMut::new();
    let mut read = crate::chunks::Progress::default();
    crate::chunks::fill(
        &mut body,
        &mut first,
        &mut read,
        settings.connection_limits.request_timeout(),
        settings.max_body_bytes,
        false,
    )
    .await
    .map_err(|why| {
        let http = match why {
            crate::chunks::Unread::Slow(_) => StatusCode::REQUEST_TIMEOUT,
            crate::chunks::Unread::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            crate::chunks::Unread::Broken(_) => StatusCode::BAD_REQUEST,
        };
        Failure {
            http,
            ..Failure::client(
                "BadRequest",
                crate::consumer::transfer::unread(why).message().to_owned(),
            )
        }
    })?;
    Ok(crate::consumer::transfer::Upload {
        first,
        read,
        rest: body,
    })
}

/// `X-Road-Represented-Party: [CLASS/]CODE`, the party the client acts for.
fn represented_party(headers: &HeaderMap) -> Result<String, Failure> {
    let Some(text) = bounded_header(headers, "X-Road-Represented-Party")? else {
        return Ok(String::new());
    };
    let bad = |why: String| {
        Failure::client(
            "InvalidRepresentedParty",
            format!("X-Road-Represented-Party '{text}': {why}; expected CLASS/CODE or CODE"),
        )
    };
    let parts: Vec<&str> = text.split('/').collect();
    if parts.len() > 2 {
        return Err(bad("too many parts".into()));
    }
    for (part, what) in parts.iter().zip(if parts.len() == 2 {
        ["party class", "party code"].iter()
    } else {
        ["party code", ""].iter()
    }) {
        IdCode::parse_part(part, what).map_err(|e| bad(e.to_string()))?;
    }
    Ok(text.to_owned())
}
