//! Error answers of X-Road's REST protocol, shared by the REST entry and the consumer
//! endpoint (which answers a path it does not serve with one): the error type in
//! X-Road's terms (`Server.ClientProxy.*`, `Server.ServerProxy.*`, `Client.*`,
//! `Service.*`), JSON or XML by `Accept`, and `X-Road-Error` on failures of the bus.

use axum::body::Body;
use axum::response::Response;
use serde_json::{Value, json};
use tonic::Code;
use tonic::codegen::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::errors::{ERROR_SOURCE, ErrorSource};

/// An error answer: bus failures carry `X-Road-Error`.
pub(crate) struct Failure {
    pub(crate) http: StatusCode,
    pub(crate) kind: String,
    pub(crate) message: String,
    pub(crate) detail: String,
    pub(crate) bus: bool,
    /// Over a quota: seconds until the client may call again (HTTP 429, `Retry-After`).
    pub(crate) retry_after: Option<u64>,
}

impl Failure {
    /// A request the REST entry cannot take: `Client.{reason}`, HTTP 400 unless the
    /// caller says otherwise.
    pub(crate) fn client(reason: &str, message: impl Into<String>) -> Self {
        Failure {
            http: StatusCode::BAD_REQUEST,
            kind: format!("Client.{reason}"),
            message: message.into(),
            detail: String::new(),
            bus: true,
            retry_after: None,
        }
    }

    /// An error of the bus in X-Road's terms: `Server.ClientProxy.*` from this server,
    /// `Server.ServerProxy.*` from the provider's server (both HTTP 500), `Client.*` for
    /// a request this server found wrong (HTTP 400); an error of the provider's gRPC
    /// application keeps its status as grpc-gateway maps it, without `X-Road-Error`.
    pub(crate) fn from_status(status: &tonic::Status, message_id: &str) -> Self {
        let source = status
            .metadata()
            .get(ERROR_SOURCE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(ErrorSource::ConsumerServer.as_str());
        let reason = crate::errors::reason_of(status);
        let (kind, bus) = xroad_type(source, status.code(), reason);
        let acted_on = client_refusal(status.code(), reason);
        let retry_after = crate::errors::retry_after_of(status).filter(|_| acted_on.is_some());
        let http = if !bus {
            http_status(status.code())
        } else if let Some(http) = acted_on {
            http
        } else if kind.starts_with("Server.") {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        Failure {
            http,
            kind,
            message: status.message().to_owned(),
            detail: message_id.to_owned(),
            bus,
            retry_after,
        }
    }

    pub(crate) fn into_response(self, xml: bool) -> Response {
        let mut r = if xml {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error><type>{}</type><message>{}</message><detail>{}</detail></error>",
                xml_text(&self.kind),
                xml_text(&self.message),
                xml_text(&self.detail)
            );
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=utf-8"),
            );
            r
        } else {
            let body = json!({"type": self.kind, "message": self.message, "detail": self.detail});
            json_response(StatusCode::OK, &body)
        };
        *r.status_mut() = self.http;
        if self.bus
            && let Ok(v) = HeaderValue::from_str(&self.kind)
        {
            r.headers_mut().insert("x-road-error", v);
        }
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

/// The HTTP status of a refusal the client acts on, as API gateways answer them (and
/// with `Retry-After` when the refusal gives one): over a quota, 429; an idempotency
/// key used for another request, 422; the request first sent under the key still being
/// answered, 409 (the statuses of the IETF `Idempotency-Key` header). Any other failure
/// of the bus is X-Road's 500 or 400.
fn client_refusal(code: Code, reason: Option<&str>) -> Option<StatusCode> {
    use crate::idempotency::{IN_PROGRESS, KEY_REUSED};
    match (code, reason?) {
        (Code::ResourceExhausted, crate::errors::QUOTA_EXCEEDED) => {
            Some(StatusCode::TOO_MANY_REQUESTS)
        }
        (Code::FailedPrecondition, KEY_REUSED) => Some(StatusCode::UNPROCESSABLE_ENTITY),
        (Code::Aborted, IN_PROGRESS) => Some(StatusCode::CONFLICT),
        _ => None,
    }
}

/// X-Road's error type for a status from `source` with `code` and, if known, the
/// reason in X-Road's terms; and whether the bus (not the application) failed.
fn xroad_type(source: &str, code: Code, reason: Option<&str>) -> (String, bool) {
    if source == ErrorSource::ProviderApp.as_str() {
        return (format!("Service.{}", code_name(code)), false);
    }
    let consumer = source != ErrorSource::ProviderServer.as_str();
    if consumer && code == Code::InvalidArgument && reason.is_none() {
        return ("Client.BadRequest".into(), true);
    }
    let reason = reason.unwrap_or(match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => "BadRequest",
        Code::NotFound | Code::Unimplemented => "UnknownService",
        Code::PermissionDenied => "AccessDenied",
        Code::Unauthenticated => "SslAuthenticationFailed",
        Code::Unavailable => "NetworkError",
        Code::DeadlineExceeded | Code::Cancelled => "IOError",
        Code::DataLoss => "InconsistentResponse",
        Code::ResourceExhausted => "TooManyRequests",
        Code::AlreadyExists => "DuplicateMessageId",
        _ => "InternalError",
    });
    let proxy = if consumer {
        "ClientProxy"
    } else {
        "ServerProxy"
    };
    (format!("Server.{proxy}.{reason}"), true)
}

/// Text for an XML element: `&`, `<` and `>` escaped, characters XML 1.0 cannot
/// hold dropped.
pub(crate) fn xml_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Whether `Accept` names one of `types` (parameters and weights aside, as X-Road's
/// security server reads it).
pub(crate) fn accepts(headers: &HeaderMap, types: &[&str]) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .any(|t| types.iter().any(|want| t.eq_ignore_ascii_case(want)))
}

/// Whether the caller asked for XML (`text/xml`, `application/xml` or `text/*`).
pub(crate) fn wants_xml(headers: &HeaderMap) -> bool {
    accepts(headers, &["text/xml", "application/xml", "text/*"])
}

/// A gRPC code's name in CamelCase, as in X-Road's error types.
fn code_name(code: Code) -> String {
    format!("{code:?}")
}

/// The HTTP status for a gRPC code (as grpc-gateway maps them).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, Failure> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| Failure::client("InvalidHttpHeader", format!("{name} is not ASCII text"))),
    }
}

/// A request to the consumer endpoint that is neither gRPC nor a path of X-Road's REST
/// protocol: an X-Road error, not a gRPC status in an HTTP 200.
pub(crate) fn unknown_path(headers: &HeaderMap, path: &str) -> Response {
    Failure::client(
        "BadRequest",
        format!(
            "{path} is not a path of this security server: REST calls go to /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE_CODE/..., discovery to /listClients and /allowedMethods, gRPC calls are sent with content-type application/grpc"
        ),
    )
    .into_response(wants_xml(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_follow_x_road() {
        let consumer = ErrorSource::ConsumerServer.as_str();
        let provider = ErrorSource::ProviderServer.as_str();
        let app = ErrorSource::ProviderApp.as_str();
        let cases: &[(&str, Code, Option<&str>, &str, bool)] = &[
            (
                consumer,
                Code::InvalidArgument,
                None,
                "Client.BadRequest",
                true,
            ),
            (
                provider,
                Code::InvalidArgument,
                None,
                "Server.ServerProxy.BadRequest",
                true,
            ),
            (
                consumer,
                Code::PermissionDenied,
                None,
                "Server.ClientProxy.AccessDenied",
                true,
            ),
            (
                provider,
                Code::PermissionDenied,
                None,
                "Server.ServerProxy.AccessDenied",
                true,
            ),
            (
                provider,
                Code::NotFound,
                None,
                "Server.ServerProxy.UnknownService",
                true,
            ),
            (
                consumer,
                Code::Unavailable,
                None,
                "Server.ClientProxy.NetworkError",
                true,
            ),
            (
                consumer,
                Code::DeadlineExceeded,
                None,
                "Server.ClientProxy.IOError",
                true,
            ),
            (
                provider,
                Code::DataLoss,
                None,
                "Server.ServerProxy.InconsistentResponse",
                true,
            ),
            (
                provider,
                Code::AlreadyExists,
                None,
                "Server.ServerProxy.DuplicateMessageId",
                true,
            ),
            (
                consumer,
                Code::Internal,
                None,
                "Server.ClientProxy.InternalError",
                true,
            ),
            // A reason in X-Road's terms wins over the code's default.
            (
                consumer,
                Code::InvalidArgument,
                Some("UnknownMember"),
                "Server.ClientProxy.UnknownMember",
                true,
            ),
            (
                provider,
                Code::Unavailable,
                Some("MaintenanceMode"),
                "Server.ServerProxy.MaintenanceMode",
                true,
            ),
            // The application's own errors are not the bus's.
            (app, Code::NotFound, None, "Service.NotFound", false),
            (
                app,
                Code::InvalidArgument,
                Some("x"),
                "Service.InvalidArgument",
                false,
            ),
            // An unknown source is this server's.
            (
                "other",
                Code::Unauthenticated,
                None,
                "Server.ClientProxy.SslAuthenticationFailed",
                true,
            ),
        ];
        for (source, code, reason, kind, bus) in cases {
            assert_eq!(
                xroad_type(source, *code, *reason),
                ((*kind).to_owned(), *bus),
                "{source} {code:?} {reason:?}"
            );
        }
    }

    #[test]
    fn answers_are_json_or_xml_by_accept() {
        let cases: &[(&[&str], bool)] = &[
            (&[], false),
            (&["application/json"], false),
            (&["application/xml"], true),
            (&["text/xml;q=0.9"], true),
            (&["application/json, text/*"], true),
            (&["TEXT/XML"], true),
            (&["application/xhtml+xml"], false),
        ];
        for (accept, xml) in cases {
            let mut headers = HeaderMap::new();
            for a in *accept {
                headers.append(header::ACCEPT, HeaderValue::from_str(a).unwrap());
            }
            assert_eq!(wants_xml(&headers), *xml, "{accept:?}");
            let r = unknown_path(&headers, "/r2/x");
            assert_eq!(r.status(), StatusCode::BAD_REQUEST);
            assert_eq!(r.headers()["x-road-error"], "Client.BadRequest");
            let ct = r.headers()[header::CONTENT_TYPE].to_str().unwrap();
            assert_eq!(ct.contains("xml"), *xml, "{accept:?}: {ct}");
        }
    }

    #[test]
    fn a_refusal_over_a_quota_is_429_with_retry_after() {
        use crate::errors::{QUOTA_EXCEEDED, error, retry_after_of, with_reason, with_retry_after};
        let over = with_retry_after(
            with_reason(
                error(Code::ResourceExhausted, ErrorSource::ProviderServer, "over"),
                QUOTA_EXCEEDED,
            ),
            30,
        );
        let r = Failure::from_status(&over, "m1").into_response(false);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "30");
        assert_eq!(
            r.headers()["x-road-error"],
            "Server.ServerProxy.QuotaExceeded"
        );
        // Busy without a quota stays a failure of the bus, as X-Road answers it.
        let busy = error(Code::ResourceExhausted, ErrorSource::ProviderServer, "busy");
        let r = Failure::from_status(&busy, "m2").into_response(false);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        // A peer's value is taken only as a plain number of seconds.
        // Only over a quota.
        let late = with_retry_after(busy.clone(), 30);
        let r = Failure::from_status(&late, "m3").into_response(false);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        for (value, want) in [
            ("12", Some(12)),
            ("2678400", Some(2_678_400)),
            ("2678401", None),
            ("0", None),
            ("", None),
            ("1.5", None),
            ("-1", None),
            ("12345678901", None),
        ] {
            let mut st = busy.clone();
            st.metadata_mut()
                .insert(crate::errors::RETRY_AFTER, value.parse().unwrap());
            assert_eq!(retry_after_of(&st), want, "{value:?}");
        }
    }

    #[test]
    fn refusals_a_client_acts_on_have_statuses_of_their_own() {
        use crate::errors::QUOTA_EXCEEDED;
        use crate::idempotency::{IN_PROGRESS, KEY_REUSED, OUTCOME_UNKNOWN};
        let cases = [
            (Code::ResourceExhausted, Some(QUOTA_EXCEEDED), Some(429)),
            (Code::ResourceExhausted, None, None),
            (Code::FailedPrecondition, Some(KEY_REUSED), Some(422)),
            (Code::FailedPrecondition, None, None),
            (Code::Aborted, Some(IN_PROGRESS), Some(409)),
            (Code::Aborted, Some(KEY_REUSED), None),
            (Code::Unknown, Some(OUTCOME_UNKNOWN), None),
            (Code::Unavailable, Some(IN_PROGRESS), None),
        ];
        for (code, reason, want) in cases {
            assert_eq!(
                client_refusal(code, reason).map(|s| s.as_u16()),
                want,
                "{code:?} {reason:?}"
            );
        }
        let in_progress = crate::errors::with_retry_after(
            crate::errors::with_reason(
                crate::errors::error(Code::Aborted, ErrorSource::ProviderServer, "wait"),
                IN_PROGRESS,
            ),
            1,
        );
        let r = Failure::from_status(&in_progress, "m1").into_response(false);
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            r.headers()["x-road-error"],
            "Server.ServerProxy.IdempotencyInProgress"
        );
    }

    #[test]
    fn xml_text_escapes_markup_and_drops_what_xml_cannot_hold() {
        assert_eq!(xml_text("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(xml_text("tab\there\u{1}\u{fffe}"), "tab\there");
    }
}
