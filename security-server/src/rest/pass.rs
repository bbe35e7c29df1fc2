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
    } = fields(req.headers())?;
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
    let body = read_body(s, req.into_body()).await?;
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
    };
    let answer = call_provider(&s.consumer, call, body)
        .await
        .map_err(|st| Failure::from_status(&st, &message_id))?;
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
        })?;
    let headers =
        crate::http_headers::to_map(&rest.headers, &answer.rest_secrets).map_err(|why| {
            Failure {
                http: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "Server.ClientProxy.InconsistentResponse".into(),
                message: why,
                detail: message_id.clone(),
                bus: true,
            }
        })?;
    let mut r = Response::new(Body::from(answer.body.clone()));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    answer_headers(
        r.headers_mut(),
        &answer,
        &client,
        &format!("{provider}/{service}"),
        &trace,
    );
    Ok(r)
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
