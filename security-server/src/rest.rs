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
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, SerializeOptions, ServiceDescriptor};
use serde_json::{Value, json};
use tonic::Code;
use tonic::codegen::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::catalogue::{Catalogue, Described, allowed_methods};
use crate::consumer::{Call, Consumer, call_provider, random_id};
use crate::errors::{ERROR_SOURCE, ErrorSource};
use crate::local::caller;

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

/// An error answer: bus failures carry `X-Road-Error`.
struct Failure {
    http: StatusCode,
    kind: String,
    message: String,
    detail: String,
    bus: bool,
}

impl Failure {
    fn client(reason: &str, message: impl Into<String>) -> Self {
        Failure {
            http: StatusCode::BAD_REQUEST,
            kind: format!("Client.{reason}"),
            message: message.into(),
            detail: String::new(),
            bus: true,
        }
    }

    fn from_status(status: &tonic::Status, message_id: &str) -> Self {
        let source = status
            .metadata()
            .get(ERROR_SOURCE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(ErrorSource::ConsumerServer.as_str());
        let reason = code_name(status.code());
        let (kind, bus) = if source == ErrorSource::ProviderApp.as_str() {
            (format!("Service.{reason}"), false)
        } else if source == ErrorSource::ProviderServer.as_str() {
            (format!("Server.ServerProxy.{reason}"), true)
        } else if matches!(
            status.code(),
            Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied
        ) {
            (format!("Client.{reason}"), true)
        } else {
            (format!("Server.ClientProxy.{reason}"), true)
        };
        Failure {
            http: http_status(status.code()),
            kind,
            message: status.message().to_owned(),
            detail: message_id.to_owned(),
            bus,
        }
    }

    fn into_response(self) -> Response {
        let body = json!({"type": self.kind, "message": self.message, "detail": self.detail});
        let mut r = json_response(self.http, &body);
        if self.bus
            && let Ok(v) = HeaderValue::from_str(&self.kind)
        {
            r.headers_mut().insert("x-road-error", v);
        }
        r
    }
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

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Failure> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| Failure::client("InvalidHttpHeader", format!("{name} is not ASCII text"))),
    }
}

/// The calling client, named by `X-Road-Client` and authenticated as gRPC callers are.
fn client(
    s: &Rest,
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
    peer_cert: Option<[u8; 32]>,
) -> Result<SubsystemId, Failure> {
    let text = header_text(headers, "X-Road-Client")?.ok_or_else(|| {
        Failure::client(
            "MissingHeader",
            "the X-Road-Client header is required: INSTANCE/CLASS/MEMBER/SUBSYSTEM",
        )
    })?;
    let client: SubsystemId = text
        .parse()
        .map_err(|e| Failure::client("InvalidClientIdentifier", format!("X-Road-Client: {e}")))?;
    s.consumer
        .local
        .authenticate(&client, remote, peer_cert)
        .map_err(|st| Failure::from_status(&st, ""))?;
    Ok(client)
}

fn identifier_json(id: &ClientId) -> Value {
    let (member, subsystem): (&MemberId, Option<&str>) = match id {
        ClientId::Member(m) => (m, None),
        ClientId::Subsystem(s) => (&s.member, Some(s.subsystem.as_str())),
    };
    let mut v = json!({
        "object_type": if subsystem.is_some() { "SUBSYSTEM" } else { "MEMBER" },
        "xroad_instance": member.instance.as_str(),
        "member_class": member.class.as_str(),
        "member_code": member.member.as_str(),
    });
    if let Some(code) = subsystem {
        v["subsystem_code"] = json!(code);
    }
    v
}

async fn list_clients(State(s): State<Arc<Rest>>, req: Request) -> Response {
    let (remote, peer_cert) = caller(req.extensions());
    let outcome = async {
        s.consumer
            .local
            .authenticate_connection(remote, peer_cert)
            .map_err(|st| Failure::from_status(&st, ""))?;
        let conf = s
            .catalogue
            .discovery_conf()
            .await
            .map_err(|st| Failure::from_status(&st, ""))?;
        let members: Vec<Value> = crate::catalogue::clients(&conf)
            .iter()
            .map(|(id, name)| json!({"id": identifier_json(id), "name": name}))
            .collect();
        Ok::<_, Failure>(json!({ "member": members }))
    }
    .await;
    match outcome {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(f) => f.into_response(),
    }
}

fn service_json(d: &Described, methods: Vec<String>) -> Value {
    let mut v = match d.entry.provider.parse::<SubsystemId>() {
        Ok(p) => identifier_json(&ClientId::Subsystem(p)),
        Err(_) => json!({}),
    };
    v["object_type"] = json!("SERVICE");
    v["service_code"] = json!(d.entry.service);
    v["service_type"] = json!("GRPC");
    v["methods"] = json!(methods);
    v
}

/// The services (of one provider, or all) with the methods `client` may call; those it
/// may call none of are left out.
async fn allowed(
    s: &Rest,
    client: &SubsystemId,
    provider: Option<&SubsystemId>,
) -> Result<Value, Failure> {
    let conf = s
        .catalogue
        .discovery_conf()
        .await
        .map_err(|st| Failure::from_status(&st, ""))?;
    let services = s.catalogue.list(&conf, provider, Some(client)).await;
    let list: Vec<Value> = services
        .iter()
        .filter_map(|d| allowed_methods(&conf, d, client).map(|m| service_json(d, m)))
        .collect();
    Ok(json!({ "service": list }))
}

async fn all_allowed(State(s): State<Arc<Rest>>, req: Request) -> Response {
    let (remote, peer_cert) = caller(req.extensions());
    let outcome = match client(&s, req.headers(), remote, peer_cert) {
        Ok(client) => allowed(&s, &client, None).await,
        Err(f) => Err(f),
    };
    match outcome {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(f) => f.into_response(),
    }
}

/// Everything under `/r1/`: a service call or a provider's metaservice.
async fn r1(State(s): State<Arc<Rest>>, req: Request) -> Response {
    match r1_inner(&s, req).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
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
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 5 || parts.len() > 6 || parts.iter().any(|p| p.is_empty()) {
        return Err(Failure {
            http: StatusCode::NOT_FOUND,
            ..Failure::client(
                "InvalidRequest",
                format!(
                    "/r1/{path}: expected /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/package.Service/Method or /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/{{listMethods,allowedMethods,getOpenAPI}}"
                ),
            )
        });
    }
    let provider: SubsystemId = parts[..4]
        .join("/")
        .parse()
        .map_err(|e| Failure::client("InvalidServiceIdentifier", format!("provider: {e}")))?;
    let client = client(s, req.headers(), remote, peer_cert)?;
    let conf_error = |st: tonic::Status| Failure::from_status(&st, "");
    if parts.len() == 5 {
        let known = ["listMethods", "allowedMethods", "getOpenAPI"].contains(&parts[4]);
        if known && req.method() != tonic::codegen::http::Method::GET {
            return Err(Failure {
                http: StatusCode::METHOD_NOT_ALLOWED,
                ..Failure::client("InvalidRequest", "metaservices are called with GET")
            });
        }
        let body = match parts[4] {
            "listMethods" => {
                let conf = s.catalogue.discovery_conf().await.map_err(conf_error)?;
                let services = s.catalogue.list(&conf, Some(&provider), None).await;
                let list: Vec<Value> = services
                    .iter()
                    .map(|d| service_json(d, d.methods()))
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
                let service = d.service.ok_or_else(|| not_described(&provider, code))?;
                openapi(&provider, &service)
            }
            other => {
                return Err(Failure {
                    http: StatusCode::NOT_FOUND,
                    ..Failure::client(
                        "InvalidRequest",
                        format!(
                            "no metaservice {other}: listMethods, allowedMethods and getOpenAPI are served"
                        ),
                    )
                });
            }
        };
        return Ok(json_response(StatusCode::OK, &body));
    }
    call(s, req, client, provider, parts[4], parts[5]).await
}

fn not_described(provider: &SubsystemId, service: &str) -> Failure {
    Failure {
        http: StatusCode::NOT_FOUND,
        ..Failure::client(
            "ServiceNotDescribed",
            format!(
                "{service} of {provider} published no descriptors, so it cannot be called by REST or described"
            ),
        )
    }
}

async fn call(
    s: &Rest,
    req: Request,
    client: SubsystemId,
    provider: SubsystemId,
    service: &str,
    method_name: &str,
) -> Result<Response, Failure> {
    let headers = req.headers().clone();
    let message_id = match header_text(&headers, "X-Road-Id")? {
        Some(id) => {
            crate::envelope::check_message_id(id)
                .map_err(|why| Failure::client("InvalidMessageId", format!("X-Road-Id {why}")))?;
            id.to_owned()
        }
        None => random_id().map_err(|st| Failure::from_status(&st, ""))?,
    };
    let field = |name| {
        header_text(&headers, name).and_then(|v| {
            let v = v.unwrap_or_default();
            if v.len() > crate::consumer::MAX_FIELD {
                return Err(Failure::client(
                    "InvalidHttpHeader",
                    format!(
                        "{name} is longer than {} characters",
                        crate::consumer::MAX_FIELD
                    ),
                ));
            }
            Ok(v.to_owned())
        })
    };
    let (user_id, issue) = (field("X-Road-UserId")?, field("X-Road-Issue")?);
    let trace = crate::trace::TraceContext::continue_or_start(
        header_text(&headers, "traceparent").ok().flatten(),
        header_text(&headers, "tracestate").ok().flatten(),
    );
    if req.uri().query().is_some_and(|q| !q.is_empty()) {
        return Err(Failure::client(
            "InvalidRequest",
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
        .ok_or_else(|| Failure {
            http: StatusCode::NOT_FOUND,
            ..Failure::client(
                "InvalidRequest",
                format!("{service} has no method {method_name}"),
            )
        })?;
    let limit = s.consumer.settings.max_message_bytes;
    let deadline = s.consumer.settings.connection_limits.request_timeout();
    let body = tokio::time::timeout(deadline, axum::body::to_bytes(req.into_body(), limit))
        .await
        .map_err(|_| Failure {
            http: StatusCode::REQUEST_TIMEOUT,
            ..Failure::client(
                "InvalidRequest",
                format!(
                    "the request body did not arrive within {} s (connection_limits.request_timeout_secs)",
                    deadline.as_secs()
                ),
            )
        })?
        .map_err(|e| Failure {
            http: StatusCode::PAYLOAD_TOO_LARGE,
            ..Failure::client(
                "InvalidRequest",
                format!("reading the request body (limit {limit} bytes): {e}"),
            )
        })?;
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        DynamicMessage::new(method.input())
    } else {
        let mut de = serde_json::Deserializer::from_slice(&body);
        DynamicMessage::deserialize(method.input(), &mut de)
            .and_then(|m| de.end().map(|()| m))
            .map_err(|e| {
                Failure::client(
                    "InvalidRequest",
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
            .map_err(|e| Failure::client("InvalidRequest", format!("{e}")))?,
        message_id: message_id.clone(),
        user_id,
        purpose: String::new(),
        issue,
        trace: trace.clone(),
    };
    let answer = call_provider(&s.consumer, call, Bytes::from(input.encode_to_vec()))
        .await
        .map_err(|st| Failure::from_status(&st, &message_id))?;
    let output = DynamicMessage::decode(method.output(), answer.body).map_err(|e| {
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
            kind: "Server.ClientProxy.Internal".into(),
            message: format!("encoding the answer as JSON: {e}"),
            detail: message_id.clone(),
            bus: true,
        })?;
    let mut r = json_response(StatusCode::OK, &json);
    let h = r.headers_mut();
    let hash = base64::engine::general_purpose::STANDARD.encode(answer.request_hash);
    for (name, value) in [
        ("x-road-id", answer.message_id.as_str()),
        ("x-road-request-id", answer.message_id.as_str()),
        ("x-road-request-hash", hash.as_str()),
        ("x-road-client", &client.to_string()),
        ("x-road-service", &format!("{provider}/{service}")),
        ("traceparent", trace.traceparent.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    Ok(r)
}

/// An OpenAPI 3.0 description of calling `service` of `provider` through this entry.
pub fn openapi(provider: &SubsystemId, service: &ServiceDescriptor) -> Value {
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for m in service.methods() {
        let (input, output) = (m.input(), m.output());
        add_schema(&input, &mut schemas);
        add_schema(&output, &mut schemas);
        paths.insert(
            format!("/r1/{provider}/{}/{}", service.full_name(), m.name()),
            json!({"post": {
                "operationId": m.name(),
                "parameters": [
                    {"name": "X-Road-Client", "in": "header", "required": true,
                     "description": "The calling subsystem, INSTANCE/CLASS/MEMBER/SUBSYSTEM",
                     "schema": {"type": "string"}},
                    {"name": "X-Road-Id", "in": "header", "required": false,
                     "description": "Message id (generated when absent)",
                     "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "content": {"application/json":
                    {"schema": {"$ref": format!("#/components/schemas/{}", input.full_name())}}}},
                "responses": {
                    "200": {"description": output.full_name(), "content": {"application/json":
                        {"schema": {"$ref": format!("#/components/schemas/{}", output.full_name())}}}},
                    "default": {"description": "an error of the bus (X-Road-Error header) or of the service",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/lintas.Error"}}}}
                }
            }}),
        );
    }
    schemas.insert(
        "lintas.Error".into(),
        json!({"type": "object", "properties": {
            "type": {"type": "string"}, "message": {"type": "string"}, "detail": {"type": "string"}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {"title": format!("{} of {provider}", service.full_name()), "version": service.parent_file().package_name()},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn add_schema(m: &MessageDescriptor, schemas: &mut serde_json::Map<String, Value>) {
    if schemas.contains_key(m.full_name()) || well_known(m).is_some() {
        return;
    }
    // Placeholder first: recursive messages end here.
    schemas.insert(m.full_name().to_owned(), json!({}));
    let mut properties = serde_json::Map::new();
    for f in m.fields() {
        let one = |kind: &Kind, schemas: &mut serde_json::Map<String, Value>| match kind {
            Kind::Message(inner) => {
                if let Some(s) = well_known(inner) {
                    return s;
                }
                add_schema(inner, schemas);
                json!({"$ref": format!("#/components/schemas/{}", inner.full_name())})
            }
            other => scalar_schema(other),
        };
        let schema = if f.is_map() {
            let value = match f.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                k => k,
            };
            json!({"type": "object", "additionalProperties": one(&value, schemas)})
        } else if f.is_list() {
            json!({"type": "array", "items": one(&f.kind(), schemas)})
        } else {
            one(&f.kind(), schemas)
        };
        properties.insert(f.name().to_owned(), schema);
    }
    schemas.insert(
        m.full_name().to_owned(),
        json!({"type": "object", "properties": properties}),
    );
}

fn well_known(m: &MessageDescriptor) -> Option<Value> {
    Some(match m.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({"type": "integer"})
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64"})
        }
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        _ => return None,
    })
}

fn scalar_schema(kind: &Kind) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        // The protobuf JSON mapping writes 64-bit integers as strings.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "int64"})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
        }
        Kind::Message(m) => json!({"$ref": format!("#/components/schemas/{}", m.full_name())}),
    }
}
