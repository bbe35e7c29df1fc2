//! The X-Road-style REST entry of the consumer endpoint, for applications written for
//! X-Road's REST protocol (over HTTP/1.1 or HTTP/2, on the consumer port):
//!
//! | request | answer |
//! |---|---|
//! | `POST /r1/{instance}/{class}/{member}/{subsystem}/{package.Service}/{Method}` with `X-Road-Client` and a JSON body (any verb is accepted; no body is the empty message) | the method's response message as JSON |
//! | `GET /listClients` | the members and subsystems of the instance |
//! | `GET /r1/{provider subsystem}/listMethods` | the provider's services and methods |
//! | `GET /r1/{provider subsystem}/allowedMethods` | those the client may call |
//! | `GET /allowedMethods` | those the client may call, of every provider |
//! | `GET /r1/{provider subsystem}/getOpenAPI?serviceCode={package.Service}` | an OpenAPI 3 description |
//!
//! The JSON body is the request message in the protobuf JSON mapping (field names as in
//! the `.proto` file or lowerCamelCase); answers use the `.proto` field names. Optional
//! request headers: `X-Road-Id` (message id), `X-Road-UserId`, `X-Road-Issue`. Answers
//! carry `X-Road-Id`, `X-Road-Request-Id` (the message id), `X-Road-Request-Hash` (base64
//! SHA-256 of the signed request header, as logged on both sides), `X-Road-Client` and
//! `X-Road-Service`. When the bus itself fails, the answer has an `X-Road-Error` header
//! and a JSON body `{type, message, detail}` (detail: the message id); an error of the
//! provider's application has the same body without the header.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{any, get};
use base64::Engine;
use bytes::Bytes;
use lintas_identifiers::{ClientId, MemberId, SubsystemId};
use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Value, json};
use tonic::Code;
use tonic::codegen::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::catalogue::{Catalogue, Described, allowed_methods};
use crate::consumer::{Answer, Call, Consumer, call_provider, random_id};
use crate::errors::ErrorSource;
use crate::local::caller;
use crate::xroad_error::{Failure, accepts, header_text, json_response, wants_xml, xml_text};

mod meta;
mod openapi;
mod pass;

use meta::{all_allowed, allowed, list_clients, service_json};
pub use openapi::openapi;

/// What the REST entry uses: the consumer side of exchanges and the catalogue.
pub struct Rest {
    pub consumer: Arc<Consumer>,
    pub catalogue: Arc<Catalogue>,
}

/// The REST routes, to be merged into the consumer endpoint's router.
pub fn routes(rest: Arc<Rest>) -> axum::Router {
    axum::Router::new()
        .route("/r1/{*rest}", any(r1))
        .route("/listClients", get(list_clients))
        .route("/allowedMethods", get(all_allowed))
        .with_state(rest)
}

/// The calling client, named by `X-Road-Client` and authenticated as gRPC callers are.
fn client(
    s: &Rest,
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
    peer_cert: Option<[u8; 32]>,
) -> Result<ClientId, Failure> {
    let text = header_text(headers, "X-Road-Client")?.ok_or_else(|| {
        Failure::client(
            "MissingHeader",
            "the X-Road-Client header is required: INSTANCE/CLASS/MEMBER[/SUBSYSTEM]",
        )
    })?;
    let client: ClientId = text
        .parse()
        .map_err(|e| Failure::client("InvalidClientIdentifier", format!("X-Road-Client: {e}")))?;
    s.consumer
        .local
        .authenticate(&client, remote, peer_cert)
        .map_err(|st| Failure::from_status(&st, ""))?;
    Ok(client)
}

/// Everything under `/r1/`: a service call or a provider's metaservice.
async fn r1(State(s): State<Arc<Rest>>, req: Request) -> Response {
    let xml = wants_xml(req.headers());
    match r1_inner(&s, req).await {
        Ok(r) => r,
        Err(f) => f.into_response(xml),
    }
}

async fn r1_inner(s: &Rest, req: Request) -> Result<Response, Failure> {
    let (remote, peer_cert) = caller(req.extensions());
    // Held until the request ends: requests in progress are bounded.
    let _ticket = s.consumer.admit(remote).map_err(|st| Failure {
        http: StatusCode::SERVICE_UNAVAILABLE,
        ..Failure::from_status(&st, "")
    })?;
    let path = req
        .uri()
        .path()
        .strip_prefix("/r1/")
        .unwrap_or_default()
        .to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let parts: Vec<&str> = path.splitn(6, '/').collect();
    if parts.len() < 5 || parts[..5].iter().any(|p| p.is_empty()) {
        return Err(Failure::client(
            "BadRequest",
            format!(
                "/r1/{path}: expected /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE_CODE/PATH for a REST service, /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/package.Service/Method for a gRPC service, or /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/{{listMethods,allowedMethods,getOpenAPI}}"
            ),
        ));
    }
    let provider: SubsystemId = parts[..4]
        .join("/")
        .parse()
        .map_err(|e| Failure::client("InvalidServiceIdentifier", format!("provider: {e}")))?;
    let client = client(s, req.headers(), remote, peer_cert)?;
    let conf_error = |st: tonic::Status| Failure::from_status(&st, "");
    let metaservice = ["listMethods", "allowedMethods", "getOpenAPI"].contains(&parts[4]);
    if !(metaservice && parts.len() == 5) {
        // A REST service of the provider, by its code: the rest of the path is the
        // backend's.
        let conf = s
            .consumer
            .conf
            .current(ErrorSource::ConsumerServer)
            .map_err(conf_error)?;
        let mut rest = rest_service(&conf, &provider, parts[4]);
        if rest.is_none() && s.consumer.conf.refresh_since(Some(conf.serial())).await {
            // Published since the last poll.
            let conf = s
                .consumer
                .conf
                .current(ErrorSource::ConsumerServer)
                .map_err(conf_error)?;
            rest = rest_service(&conf, &provider, parts[4]);
        }
        if rest == Some(true) {
            let sub_path = match parts.get(5) {
                Some(p) => format!("/{p}"),
                None => String::new(),
            };
            return pass::call(s, req, client, provider, parts[4], sub_path).await;
        }
    }
    if parts.len() == 5 {
        let known = metaservice;
        if known && req.method() != tonic::codegen::http::Method::GET {
            return Err(Failure::client(
                "BadRequest",
                "metaservices are called with GET",
            ));
        }
        let body = match parts[4] {
            "listMethods" => {
                let conf = s.catalogue.discovery_conf().await.map_err(conf_error)?;
                let services = s.catalogue.list(&conf, Some(&provider), None).await;
                let list: Vec<Value> = services
                    .iter()
                    .map(|d| service_json(&conf, d, d.methods(), None))
                    .collect();
                json!({ "service": list })
            }
            "allowedMethods" => allowed(s, &client, Some(&provider)).await?,
            "getOpenAPI" => {
                let code = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("serviceCode="))
                    .ok_or_else(|| {
                        Failure::client(
                            "MissingParameter",
                            "getOpenAPI needs ?serviceCode=package.Service",
                        )
                    })?;
                let conf = s.catalogue.discovery_conf().await.map_err(conf_error)?;
                let d = s
                    .catalogue
                    .described(&conf, &provider, code)
                    .await
                    .map_err(conf_error)?;
                if d.entry.rest {
                    // A REST service: the document its provider published, as given.
                    let document = s
                        .catalogue
                        .openapi_document(&d.entry)
                        .await
                        .map_err(conf_error)?;
                    let json = document.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
                    let mut r = Response::new(Body::from(document));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(if json {
                            "application/json"
                        } else {
                            "text/yaml"
                        }),
                    );
                    return Ok(r);
                }
                let service = d.service.ok_or_else(|| not_described(&provider, code))?;
                openapi(&provider, &service)
            }
            other => {
                return Err(Failure::client(
                    "BadRequest",
                    format!(
                        "no metaservice {other}: listMethods, allowedMethods and getOpenAPI are served"
                    ),
                ));
            }
        };
        return Ok(json_response(StatusCode::OK, &body));
    }
    match parts.get(5) {
        Some(method) if !method.is_empty() && !method.contains('/') => {
            call(s, req, client, provider, parts[4], method).await
        }
        _ => Err(Failure::client(
            "BadRequest",
            format!(
                "/r1/{path}: {} of {provider} is not a REST service; a gRPC service is called as /r1/{provider}/package.Service/Method",
                parts[4]
            ),
        )),
    }
}

/// Whether `code` of `provider` is a REST service (`Some(true)`), a gRPC service
/// (`Some(false)`) or unknown (`None`) in `conf`.
fn rest_service(
    conf: &lintas_globalconf::VerifiedConf,
    provider: &SubsystemId,
    code: &str,
) -> Option<bool> {
    let provider = provider.to_string();
    conf.conf
        .services
        .iter()
        .find(|r| r.provider == provider && r.service == code)
        .map(|r| r.rest)
}

fn not_described(provider: &SubsystemId, service: &str) -> Failure {
    Failure::client(
        "ServiceNotDescribed",
        format!(
            "{service} of {provider} published no descriptors, so it cannot be called by REST or described"
        ),
    )
}

/// What every call through the REST entry names in its headers.
struct Fields {
    message_id: String,
    user_id: String,
    issue: String,
    trace: crate::trace::TraceContext,
    /// `Idempotency-Key`, checked; empty without one.
    idempotency_key: String,
}

fn fields(headers: &HeaderMap) -> Result<Fields, Failure> {
    let message_id = match header_text(headers, "X-Road-Id")? {
        Some(id) => {
            crate::envelope::check_message_id(id)
                .map_err(|why| Failure::client("InvalidMessageId", format!("X-Road-Id {why}")))?;
            id.to_owned()
        }
        None => random_id().map_err(|st| Failure::from_status(&st, ""))?,
    };
    let field = |name| bounded_header(headers, name).map(|v| v.unwrap_or_default().to_owned());
    let idempotency_key = field("Idempotency-Key")?;
    if !idempotency_key.is_empty() {
        crate::idempotency::check_key(&idempotency_key).map_err(|why| {
            Failure::client("InvalidHttpHeader", format!("Idempotency-Key {why}"))
        })?;
    }
    Ok(Fields {
        idempotency_key,
        message_id,
        user_id: field("X-Road-UserId")?,
        issue: field("X-Road-Issue")?,
        trace: crate::trace::TraceContext::continue_or_start(
            header_text(headers, "traceparent").ok().flatten(),
            header_text(headers, "tracestate").ok().flatten(),
        ),
    })
}

/// A header's text, at most [`crate::consumer::MAX_FIELD`] characters.
fn bounded_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Failure> {
    let v = header_text(headers, name)?;
    if v.is_some_and(|v| v.len() > crate::consumer::MAX_FIELD) {
        return Err(Failure::client(
            "InvalidHttpHeader",
            format!(
                "{name} is longer than {} characters",
                crate::consumer::MAX_FIELD
            ),
        ));
    }
    Ok(v)
}

/// The request body, within the message limit and the request deadline.
async fn read_body(s: &Rest, body: Body) -> Result<Bytes, Failure> {
    let limit = s.consumer.settings.max_message_bytes;
    let deadline = s.consumer.settings.connection_limits.request_timeout();
    tokio::time::timeout(deadline, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| Failure {
            http: StatusCode::REQUEST_TIMEOUT,
            ..Failure::client(
                "BadRequest",
                format!(
                    "the request body did not arrive within {} s (connection_limits.request_timeout_secs)",
                    deadline.as_secs()
                ),
            )
        })?
        .map_err(|e| Failure {
            http: StatusCode::PAYLOAD_TOO_LARGE,
            ..Failure::client(
                "BadRequest",
                format!("reading the request body (limit {limit} bytes): {e}"),
            )
        })
}

/// The headers X-Road's REST protocol adds to an answer: message id, request hash,
/// client and service, and the trace the call is part of.
fn answer_headers(
    h: &mut HeaderMap,
    answer: &Answer,
    client: &ClientId,
    service: &str,
    trace: &crate::trace::TraceContext,
) {
    let hash = base64::engine::general_purpose::STANDARD.encode(answer.request_hash);
    for (name, value) in [
        ("x-road-id", answer.message_id.as_str()),
        ("x-road-request-id", answer.message_id.as_str()),
        ("x-road-request-hash", hash.as_str()),
        ("x-road-client", &client.to_string()),
        ("x-road-service", service),
        ("traceparent", trace.traceparent.as_str()),
        // A repeat under an idempotency key: the exchange that first answered it.
        (
            "lintas-repeats-message-id",
            answer.repeats_message_id.as_str(),
        ),
    ] {
        if value.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
}

async fn call(
    s: &Rest,
    req: Request,
    client: ClientId,
    provider: SubsystemId,
    service: &str,
    method_name: &str,
) -> Result<Response, Failure> {
    let Fields {
        message_id,
        user_id,
        issue,
        trace,
        idempotency_key,
    } = fields(req.headers())?;
    if req.uri().query().is_some_and(|q| !q.is_empty()) {
        return Err(Failure::client(
            "BadRequest",
            "query parameters are not mapped: send the request message as a JSON body",
        ));
    }
    let conf = s
        .consumer
        .conf
        .current(ErrorSource::ConsumerServer)
        .map_err(|st| Failure::from_status(&st, &message_id))?;
    // A service published since the last poll: fetch once before refusing.
    let d = match s.catalogue.described(&conf, &provider, service).await {
        Err(st) if st.code() == Code::NotFound => {
            let conf = s
                .catalogue
                .discovery_conf()
                .await
                .map_err(|st| Failure::from_status(&st, &message_id))?;
            s.catalogue.described(&conf, &provider, service).await
        }
        other => other,
    }
    .map_err(|st| Failure::from_status(&st, &message_id))?;
    let descriptor = d.service.ok_or_else(|| not_described(&provider, service))?;
    let method = descriptor
        .methods()
        .find(|m| m.name() == method_name)
        .ok_or_else(|| {
            Failure::client(
                "BadRequest",
                format!("{service} has no method {method_name}"),
            )
        })?;
    let body = read_body(s, req.into_body()).await?;
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        DynamicMessage::new(method.input())
    } else {
        let mut de = serde_json::Deserializer::from_slice(&body);
        DynamicMessage::deserialize(method.input(), &mut de)
            .and_then(|m| de.end().map(|()| m))
            .map_err(|e| {
                Failure::client(
                    "BadRequest",
                    format!(
                        "the body is not a valid {} in JSON: {e}",
                        method.input().full_name()
                    ),
                )
            })?
    };
    let call = Call {
        client: client.clone(),
        provider: provider.clone(),
        method: format!("/{service}/{method_name}")
            .parse()
            .map_err(|e| Failure::client("BadRequest", format!("{e}")))?,
        message_id: message_id.clone(),
        user_id,
        purpose: String::new(),
        issue,
        trace: trace.clone(),
        rest: None,
        rest_secrets: Vec::new(),
        represented_party: String::new(),
        server: None,
        idempotency_key,
    };
    let answer = call_provider(&s.consumer, call, Bytes::from(input.encode_to_vec()))
        .await
        .map_err(|st| Failure::from_status(&st, &message_id))?;
    let output = DynamicMessage::decode(method.output(), answer.body.clone()).map_err(|e| {
        Failure::from_status(
            &crate::errors::error(
                Code::DataLoss,
                ErrorSource::ConsumerServer,
                format!(
                    "the answer is not a valid {}: {e}",
                    method.output().full_name()
                ),
            ),
            &message_id,
        )
    })?;
    let json = output
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().use_proto_field_name(true),
        )
        .map_err(|e| Failure {
            http: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "Server.ClientProxy.InternalError".into(),
            message: format!("encoding the answer as JSON: {e}"),
            detail: message_id.clone(),
            bus: true,
            retry_after: None,
        })?;
    let mut r = json_response(StatusCode::OK, &json);
    answer_headers(
        r.headers_mut(),
        &answer,
        &client,
        &format!("{provider}/{service}"),
        &trace,
    );
    Ok(r)
}
