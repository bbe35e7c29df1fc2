//! The REST/JSON backend: each gRPC method becomes one HTTP request, by rules like those
//! of `google.api.http` annotations.
//!
//! ```toml
//! [rest]
//! base_url = "http://127.0.0.1:8081"   # https:// needs ca_file
//! timeout_ms = 10000                   # default 10 s
//! field_names = "proto"                # JSON keys: "proto" (as in the .proto) or "json" (lowerCamelCase)
//! headers = { "X-Api-Key" = "..." }    # sent with every request
//!
//! [rest.methods.CariNik]
//! verb = "GET"                # GET, POST, PUT, PATCH or DELETE
//! path = "/penduduk/{nik}"    # {field} is filled from the request, percent-encoded
//! body = "*"                  # optional: "*" = every field not in the path, or one field's name
//! response = "data"           # optional: where the answer sits in the returned JSON (dot path)
//! ```
//!
//! Fields in neither the path nor the body go in the query string (set fields only;
//! repeated scalars as repeated parameters). The answer is read by the protobuf JSON
//! mapping (both key styles accepted; unknown keys ignored). An HTTP error status
//! becomes the gRPC status grpc-gateway would give it, with the backend's text.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use lintas_adapter::values::{field_list, is_scalar, scalar_text};
use lintas_adapter::{Adapter, AdapterError, Backend, CallFuture, backend_status, http};
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MethodDescriptor, ReflectMessage,
    SerializeOptions, Value,
};
use serde::Deserialize;
use tonic::{Code, Status};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    base_url: String,
    #[serde(default = "http::default_timeout_ms")]
    timeout_ms: u64,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    field_names: http::FieldNames,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "http::default_max_response")]
    max_response_bytes: usize,
    #[serde(default)]
    methods: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    verb: String,
    path: String,
    body: Option<String>,
    response: Option<String>,
}

enum Part {
    Text(String),
    Field(FieldDescriptor),
}

enum Body {
    None,
    /// Every field not in the path.
    Rest,
    One(FieldDescriptor),
}

struct Route {
    verb: Method,
    path: Vec<Part>,
    body: Body,
    query: Vec<FieldDescriptor>,
    response: Vec<String>,
}

pub struct RestBackend {
    client: http::Client,
    headers: Vec<(HeaderName, HeaderValue)>,
    serialize: SerializeOptions,
    /// How fields are named in JSON keys and the query string.
    names: http::FieldNames,
    routes: BTreeMap<String, Arc<Route>>,
}

/// Builds the backend from the adapter's `[rest]` section.
pub fn build(adapter: &Adapter, section: toml::Table) -> Result<Arc<dyn Backend>, AdapterError> {
    Ok(Arc::new(backend(adapter, section)?))
}

fn backend(adapter: &Adapter, section: toml::Table) -> Result<RestBackend, AdapterError> {
    let section: Section = toml::Value::Table(section)
        .try_into()
        .map_err(|e| AdapterError::Config(format!("[rest]: {}", e.to_string().trim_end())))?;
    let client = http::Client::new(
        &section.base_url,
        section.ca_file.map(|p| adapter.path(&p)).as_deref(),
        Duration::from_millis(section.timeout_ms),
        section.max_response_bytes,
    )
    .map_err(|e| AdapterError::Config(format!("[rest] {e}")))?;
    let headers = http::header_list("rest", &section.headers)?;
    let mut routes = BTreeMap::new();
    for (method, mapping) in
        lintas_adapter::method_mappings::<Mapping>(&adapter.service, "rest", section.methods)?
    {
        let route = route(&method, mapping).map_err(|why| {
            AdapterError::Config(format!("[rest.methods.{}]: {why}", method.name()))
        })?;
        routes.insert(method.name().to_owned(), Arc::new(route));
    }
    Ok(RestBackend {
        client,
        headers,
        names: section.field_names,
        serialize: SerializeOptions::new()
            .use_proto_field_name(section.field_names == http::FieldNames::Proto)
            .skip_default_fields(false)
            .stringify_64_bit_integers(false),
        routes,
    })
}

fn route(method: &MethodDescriptor, m: Mapping) -> Result<Route, String> {
    let input = method.input();
    let field = |name: &str| {
        input.get_field_by_name(name).ok_or_else(|| {
            format!(
                "{} has no field '{name}' (it has: {})",
                input.full_name(),
                field_list(&input)
            )
        })
    };
    let verb = match m.verb.to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        other => {
            return Err(format!(
                "verb '{other}' is not one of GET, POST, PUT, PATCH, DELETE"
            ));
        }
    };
    if !m.path.starts_with('/') {
        return Err(format!("path '{}' must start with /", m.path));
    }
    if m.path.contains(['?', '#']) {
        return Err(format!(
            "path '{}' must not hold a query or fragment: fields outside the path and body go in the query string",
            m.path
        ));
    }
    let mut path = Vec::new();
    let mut rest = m.path.as_str();
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("path '{}': '{{' without '}}'", m.path))?;
        if rest[..open].contains('}') {
            return Err(format!("path '{}': '}}' without '{{'", m.path));
        }
        path.push(Part::Text(rest[..open].to_owned()));
        let f = field(&rest[open + 1..close])?;
        if !is_scalar(&f) {
            return Err(format!(
                "path field '{}' must be a single scalar, not a list or a message",
                f.name()
            ));
        }
        path.push(Part::Field(f));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("path '{}': '}}' without '{{'", m.path));
    }
    path.push(Part::Text(rest.to_owned()));
    let in_path = |f: &FieldDescriptor| {
        path.iter()
            .any(|p| matches!(p, Part::Field(g) if g.number() == f.number()))
    };
    let body = match m.body.as_deref() {
        None => Body::None,
        Some(_) if verb == Method::GET => return Err("a GET request carries no body".into()),
        Some("*") => Body::Rest,
        Some(name) => {
            let f = field(name)?;
            if in_path(&f) {
                return Err(format!(
                    "field '{name}' cannot be both in the path and the body"
                ));
            }
            Body::One(f)
        }
    };
    let mut query = Vec::new();
    if !matches!(body, Body::Rest) {
        for f in input.fields() {
            if in_path(&f) || matches!(&body, Body::One(b) if b.number() == f.number()) {
                continue;
            }
            if f.is_map() || matches!(f.kind(), Kind::Message(_)) {
                return Err(format!(
                    "field '{}' is a message or a map and cannot go in the query string; map it to the body (body = \"*\" or body = \"{}\")",
                    f.name(),
                    f.name()
                ));
            }
            query.push(f);
        }
    }
    let response = match m.response.as_deref() {
        None | Some("") => Vec::new(),
        Some(p) => p.split('.').map(str::to_owned).collect(),
    };
    Ok(Route {
        verb,
        path,
        body,
        query,
        response,
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl RestBackend {
    /// A field's name in JSON and in the query string.
    fn json_key<'a>(&self, f: &'a FieldDescriptor) -> &'a str {
        self.names.of(f)
    }

    fn to_json(&self, message: &DynamicMessage) -> Result<serde_json::Value, Status> {
        message
            .serialize_with_options(serde_json::value::Serializer, &self.serialize)
            .map_err(|e| Status::internal(format!("encoding the request as JSON: {e}")))
    }

    fn request(
        &self,
        route: &Route,
        mut message: DynamicMessage,
    ) -> Result<(String, Option<Bytes>), Status> {
        let mut target = String::new();
        for part in &route.path {
            match part {
                Part::Text(t) => target.push_str(t),
                Part::Field(f) => {
                    let v = message.get_field(f);
                    let text = scalar_text(f, &v).unwrap_or_default();
                    if text.is_empty() {
                        return Err(Status::invalid_argument(format!(
                            "field {} is needed: it fills the URL path",
                            f.name()
                        )));
                    }
                    encode(&text, &mut target);
                    message.clear_field(f);
                }
            }
        }
        let mut sep = '?';
        for f in &route.query {
            if !message.has_field(f) {
                continue;
            }
            let v = message.get_field(f);
            let values: Vec<String> = match v.as_ref() {
                Value::List(items) => items.iter().filter_map(|i| scalar_text(f, i)).collect(),
                one => scalar_text(f, one).into_iter().collect(),
            };
            for text in values {
                target.push(sep);
                sep = '&';
                encode(self.json_key(f), &mut target);
                target.push('=');
                encode(&text, &mut target);
            }
        }
        let body = match &route.body {
            Body::None => None,
            Body::Rest => {
                // Every field but those in the path (proto3 writes defaults too).
                let mut json = self.to_json(&message)?;
                if let Some(object) = json.as_object_mut() {
                    for part in &route.path {
                        if let Part::Field(f) = part {
                            object.remove(self.json_key(f));
                        }
                    }
                }
                Some(json)
            }
            Body::One(f) => {
                let mut only = DynamicMessage::new(message.descriptor());
                only.set_field(f, message.get_field(f).into_owned());
                let key = self.json_key(f);
                Some(
                    self.to_json(&only)?
                        .get(key)
                        .cloned()
                        .unwrap_or(serde_json::Value::Null),
                )
            }
        };
        let body = body
            .map(|b| serde_json::to_vec(&b).map(Bytes::from))
            .transpose()
            .map_err(|e| Status::internal(format!("encoding the request as JSON: {e}")))?;
        Ok((target, body))
    }
}

/// Reads the backend's JSON answer as `method`'s output message.
fn answer(
    method: &MethodDescriptor,
    response: &[String],
    body: &[u8],
) -> Result<DynamicMessage, Status> {
    let output = method.output();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(output));
    }
    let mut json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        backend_status(
            Code::Internal,
            format!(
                "the backend's answer is not JSON ({e}): {}",
                http::body_text(body)
            ),
        )
    })?;
    for (depth, key) in response.iter().enumerate() {
        json = match json {
            serde_json::Value::Object(mut o) => o.remove(key).ok_or_else(|| {
                backend_status(
                    Code::Internal,
                    format!(
                        "the backend's answer has no '{}'",
                        response[..=depth].join(".")
                    ),
                )
            })?,
            _ => {
                return Err(backend_status(
                    Code::Internal,
                    format!(
                        "the backend's answer has no object at '{}'",
                        response[..depth].join(".")
                    ),
                ));
            }
        };
    }
    DynamicMessage::deserialize_with_options(
        output.clone(),
        json,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(|e| {
        backend_status(
            Code::Internal,
            format!(
                "the backend's answer does not fit {}: {e}",
                output.full_name()
            ),
        )
    })
}

impl Backend for RestBackend {
    fn call(&self, method: &MethodDescriptor, request: DynamicMessage) -> CallFuture {
        let prepared = self
            .routes
            .get(method.name())
            .ok_or_else(|| Status::unimplemented(format!("no mapping for {}", method.full_name())));
        let prepared = prepared.and_then(|route| {
            let (target, body) = self.request(route, request)?;
            Ok((route.clone(), target, body))
        });
        let (route, target, body) = match prepared {
            Ok(p) => p,
            Err(status) => return Box::pin(async move { Err(status) }),
        };
        let mut headers = self.headers.clone();
        headers.push((
            hyper::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        ));
        if body.is_some() {
            headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        }
        let client = self.client.clone();
        let method = method.clone();
        Box::pin(async move {
            let a = client
                .send(route.verb.clone(), &target, &headers, body)
                .await?;
            let verb = &route.verb;
            if !a.status.is_success() {
                return Err(backend_status(
                    http::status_code(a.status),
                    format!(
                        "backend answered {verb} {target} with HTTP {}: {}",
                        status_text(a.status),
                        http::body_text(&a.body)
                    ),
                ));
            }
            answer(&method, &route.response, &a.body)
        })
    }
}

fn status_text(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_for(
        field_names: &str,
    ) -> (
        RestBackend,
        prost_reflect::ServiceDescriptor,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("u.proto"),
            r#"syntax = "proto3"; package u;
            service U { rpc Ubah(UbahReq) returns (Res); rpc Cari(CariReq) returns (Res); }
            message UbahReq { string id = 1; string nama = 2; int64 umur = 3; }
            message CariReq { repeated string tag = 1; bool aktif = 2; string q = 3; string no_kk = 4; }
            message Res {}"#,
        )
        .unwrap();
        let config = dir.path().join("a.toml");
        std::fs::write(
            &config,
            format!(
                r#"[adapter]
                listen = "127.0.0.1:0"
                proto = "u.proto"
                service = "u.U"
                [rest]
                base_url = "http://127.0.0.1:9"
                field_names = "{field_names}"
                [rest.methods.Ubah]
                verb = "PUT"
                path = "/users/{{id}}"
                body = "*"
                [rest.methods.Cari]
                verb = "GET"
                path = "/users"
                "#
            ),
        )
        .unwrap();
        let adapter = lintas_adapter::load(&config).unwrap();
        let lintas_adapter::BackendSection::Rest(t) = &adapter.backend else {
            panic!()
        };
        (
            backend(&adapter, t.clone()).unwrap(),
            adapter.service.clone(),
            dir,
        )
    }

    fn request(
        b: &RestBackend,
        service: &prost_reflect::ServiceDescriptor,
        method: &str,
        fields: &[(&str, Value)],
    ) -> (String, Option<serde_json::Value>) {
        let m = service.methods().find(|m| m.name() == method).unwrap();
        let mut msg = DynamicMessage::new(m.input());
        for (name, v) in fields {
            msg.set_field_by_name(name, v.clone());
        }
        let (target, body) = b.request(&b.routes[method], msg).unwrap();
        (target, body.map(|b| serde_json::from_slice(&b).unwrap()))
    }

    #[test]
    fn path_fields_leave_the_body_and_the_rest_go_to_the_query_string() {
        let (b, service, _dir) = backend_for("proto");
        let (target, body) = request(
            &b,
            &service,
            "Ubah",
            &[
                ("id", Value::String("a/b c".into())),
                ("nama", Value::String("Siti".into())),
                ("umur", Value::I64(38)),
            ],
        );
        assert_eq!(target, "/users/a%2Fb%20c");
        assert_eq!(body, Some(serde_json::json!({"nama": "Siti", "umur": 38})));

        let (target, body) = request(
            &b,
            &service,
            "Cari",
            &[
                (
                    "tag",
                    Value::List(vec![Value::String("x&y".into()), Value::String("z".into())]),
                ),
                ("aktif", Value::Bool(true)),
                ("no_kk", Value::String("1".into())),
            ],
        );
        assert_eq!(target, "/users?tag=x%26y&tag=z&aktif=true&no_kk=1");
        assert_eq!(body, None);

        let (b, service, _dir) = backend_for("json");
        let (target, _) = request(
            &b,
            &service,
            "Cari",
            &[("no_kk", Value::String("1".into()))],
        );
        assert_eq!(target, "/users?noKk=1");
        let err = b
            .request(
                &b.routes["Ubah"],
                DynamicMessage::new(service.methods().next().unwrap().input()),
            )
            .unwrap_err();
        assert_eq!(err.message(), "field id is needed: it fills the URL path");
    }
}
