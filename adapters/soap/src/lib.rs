//! The SOAP backend: each gRPC method becomes one SOAP operation (document/literal).
//!
//! ```toml
//! [soap]
//! endpoint = "http://127.0.0.1:8082/ws/kepesertaan"   # https:// needs ca_file
//! version = "1.1"                                     # or "1.2"
//! namespace = "http://bpjs-kesehatan.go.id/kepesertaan"
//! timeout_ms = 10000
//! field_names = "proto"                               # element names: "proto" or "json" (lowerCamelCase)
//!
//! [soap.methods.CekPeserta]
//! action = "http://bpjs-kesehatan.go.id/kepesertaan/CekPeserta"   # the SOAPAction
//! operation = "CekPesertaRequest"    # the request's body element (default: the method name)
//! response = "CekPesertaResponse"    # the answer's element holding the fields (default: operation + "Response")
//! namespace = "..."                  # optional: this operation's namespace
//! ```
//!
//! The request element (in the namespace) holds one unqualified child element per set
//! field, nested messages as nested elements and repeated fields as repeated elements.
//! In the answer, the children of the response element are read into the output
//! message by their local names: text is converted by each field's declared type, and
//! elements the message does not have are ignored. A SOAP fault becomes a gRPC error
//! (Client/Sender → INVALID_ARGUMENT, Server/Receiver → INTERNAL, other → UNKNOWN) with
//! its fault string.
#![forbid(unsafe_code)]

mod xml;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use lintas_adapter::values::{parse_text, scalar_text, set_or_push, shorten};
use lintas_adapter::{Adapter, AdapterError, Backend, CallFuture, backend_status, http};
use prost_reflect::{
    DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage, Value,
};
use serde::Deserialize;
use tonic::{Code, Status};

pub use xml::Element;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    endpoint: String,
    #[serde(default)]
    version: Version,
    namespace: String,
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

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
enum Version {
    #[default]
    #[serde(rename = "1.1")]
    V11,
    #[serde(rename = "1.2")]
    V12,
}

impl Version {
    fn envelope_ns(self) -> &'static str {
        match self {
            Version::V11 => "http://schemas.xmlsoap.org/soap/envelope/",
            Version::V12 => "http://www.w3.org/2003/05/soap-envelope",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    action: String,
    operation: Option<String>,
    response: Option<String>,
    namespace: Option<String>,
}

struct Operation {
    action: String,
    element: String,
    response: String,
    namespace: String,
}

pub struct SoapBackend {
    client: http::Client,
    /// The endpoint's path (and query), requested under the client's base.
    path: String,
    version: Version,
    names: http::FieldNames,
    headers: Vec<(HeaderName, HeaderValue)>,
    operations: BTreeMap<String, Arc<Operation>>,
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} '{name}' is not an XML element name"))
    }
}

/// Builds the backend from the adapter's `[soap]` section.
pub fn build(adapter: &Adapter, section: toml::Table) -> Result<Arc<dyn Backend>, AdapterError> {
    let section: Section = toml::Value::Table(section)
        .try_into()
        .map_err(|e| AdapterError::Config(format!("[soap]: {}", e.to_string().trim_end())))?;
    let bad = |e: String| AdapterError::Config(format!("[soap] {e}"));
    let uri: hyper::Uri = section
        .endpoint
        .parse()
        .map_err(|e| bad(format!("endpoint '{}': {e}", section.endpoint)))?;
    let base = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => {
            return Err(bad(format!(
                "endpoint '{}' must be an absolute http:// or https:// URL",
                section.endpoint
            )));
        }
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let client = http::Client::new(
        &base,
        section.ca_file.map(|p| adapter.path(&p)).as_deref(),
        Duration::from_millis(section.timeout_ms),
        section.max_response_bytes,
    )
    .map_err(|e| AdapterError::Config(format!("[soap] {e}")))?;
    let headers = http::header_list("soap", &section.headers)?;
    let mut operations = BTreeMap::new();
    for (method, m) in
        lintas_adapter::method_mappings::<Mapping>(&adapter.service, "soap", section.methods)?
    {
        let element = m.operation.unwrap_or_else(|| method.name().to_owned());
        let response = m.response.unwrap_or_else(|| format!("{element}Response"));
        let checked = check_name("operation", &element)
            .and_then(|()| check_name("response", &response))
            .and_then(|()| {
                if m.action.contains('"') || HeaderValue::from_str(&m.action).is_err() {
                    Err("action must be printable ASCII without '\"'".to_owned())
                } else {
                    Ok(())
                }
            })
            .and_then(|()| no_maps(&method.input(), &mut Vec::new()))
            .and_then(|()| no_maps(&method.output(), &mut Vec::new()));
        checked.map_err(|why| {
            AdapterError::Config(format!("[soap.methods.{}]: {why}", method.name()))
        })?;
        operations.insert(
            method.name().to_owned(),
            Arc::new(Operation {
                action: m.action,
                element,
                response,
                namespace: m.namespace.unwrap_or_else(|| section.namespace.clone()),
            }),
        );
    }
    Ok(Arc::new(SoapBackend {
        client,
        path,
        version: section.version,
        names: section.field_names,
        headers,
        operations,
    }))
}

/// SOAP elements have no map form: a message with a map field (at any depth) is refused.
fn no_maps(desc: &MessageDescriptor, seen: &mut Vec<String>) -> Result<(), String> {
    if seen.iter().any(|s| s == desc.full_name()) {
        return Ok(());
    }
    seen.push(desc.full_name().to_owned());
    for f in desc.fields() {
        if f.is_map() {
            return Err(format!(
                "field {} of {} is a map, which has no SOAP form",
                f.name(),
                desc.full_name()
            ));
        }
        if let Kind::Message(inner) = f.kind() {
            no_maps(&inner, seen)?;
        }
    }
    Ok(())
}

/// Writes the set fields of `message` as child elements.
fn write_fields(message: &DynamicMessage, names: http::FieldNames, out: &mut String) {
    for f in message.descriptor().fields() {
        if !message.has_field(&f) {
            continue;
        }
        let name = names.of(&f).to_owned();
        let value = message.get_field(&f);
        let items: Vec<&Value> = match value.as_ref() {
            Value::List(items) => items.iter().collect(),
            one => vec![one],
        };
        for item in items {
            out.push('<');
            out.push_str(&name);
            out.push('>');
            match item {
                Value::Message(inner) => write_fields(inner, names, out),
                scalar => {
                    let text = scalar_text(&f, scalar).unwrap_or_default();
                    out.push_str(&quick_xml::escape::escape(text.as_str()));
                }
            }
            out.push_str("</");
            out.push_str(&name);
            out.push('>');
        }
    }
}

impl SoapBackend {
    fn envelope(&self, op: &Operation, request: &DynamicMessage) -> String {
        let mut body = String::new();
        write_fields(request, self.names, &mut body);
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soap:Envelope xmlns:soap=\"{}\"><soap:Body>\
             <m:{el} xmlns:m=\"{}\">{body}</m:{el}>\
             </soap:Body></soap:Envelope>",
            self.version.envelope_ns(),
            quick_xml::escape::escape(op.namespace.as_str()),
            el = op.element,
        )
    }
}

/// Reads `element`'s children into a message of type `desc`.
fn read_message(
    element: &Element,
    desc: &MessageDescriptor,
    names: http::FieldNames,
    depth: usize,
) -> Result<DynamicMessage, String> {
    let mut message = DynamicMessage::new(desc.clone());
    for child in &element.children {
        let field = desc.fields().find(|f| names.of(f) == child.name);
        let Some(field) = field else { continue };
        if child.nil {
            continue;
        }
        if field.is_map() {
            return Err(format!(
                "field {} is a map, which SOAP answers cannot fill",
                field.name()
            ));
        }
        let value = match field.kind() {
            Kind::Message(inner) => {
                if depth >= xml::MAX_DEPTH {
                    return Err("the answer nests too deeply".into());
                }
                Value::Message(read_message(child, &inner, names, depth + 1)?)
            }
            _ => parse_text(&field, &child.text)?,
        };
        set_or_push(&mut message, &field, value);
    }
    Ok(message)
}

/// The gRPC error for a SOAP fault, if `body` holds one.
fn fault(body: &Element) -> Option<Status> {
    let f = body.children.iter().find(|c| c.name == "Fault")?;
    let text_of = |path: &[&str]| {
        let mut e = f;
        for name in path {
            e = e.children.iter().find(|c| c.name == *name)?;
        }
        Some(e.text.trim().to_owned())
    };
    // SOAP 1.1: faultcode/faultstring; SOAP 1.2: Code/Value and Reason/Text.
    let code = text_of(&["faultcode"]).or_else(|| text_of(&["Code", "Value"]))?;
    let reason = text_of(&["faultstring"])
        .or_else(|| text_of(&["Reason", "Text"]))
        .unwrap_or_default();
    let local = code.rsplit(':').next().unwrap_or(&code);
    let grpc = match local.split('.').next().unwrap_or(local) {
        "Client" | "Sender" => Code::InvalidArgument,
        "Server" | "Receiver" => Code::Internal,
        _ => Code::Unknown,
    };
    Some(backend_status(
        grpc,
        format!("SOAP fault {code}: {}", shorten(&reason, 512)),
    ))
}

/// Reads the backend's answer: the response element's fields, or the fault.
fn answer(
    method: &MethodDescriptor,
    op: &Operation,
    names: http::FieldNames,
    status: hyper::StatusCode,
    body: &[u8],
) -> Result<DynamicMessage, Status> {
    let not_soap = |why: String| {
        let code = if status.is_success() {
            Code::Internal
        } else {
            http::status_code(status)
        };
        backend_status(
            code,
            format!(
                "the backend's answer (HTTP {}) is not a SOAP envelope ({why}): {}",
                status.as_u16(),
                http::body_text(body)
            ),
        )
    };
    let text = std::str::from_utf8(body).map_err(|_| not_soap("not UTF-8".into()))?;
    let root = xml::parse(text).map_err(not_soap)?;
    if root.name != "Envelope" {
        return Err(not_soap(format!("the root element is {}", root.name)));
    }
    let soap_body = root
        .children
        .iter()
        .find(|c| c.name == "Body")
        .ok_or_else(|| not_soap("no Body".into()))?;
    if let Some(status) = fault(soap_body) {
        return Err(status);
    }
    if !status.is_success() {
        return Err(not_soap("an HTTP error without a fault".into()));
    }
    let response = soap_body.find(&op.response).ok_or_else(|| {
        backend_status(
            Code::Internal,
            format!("the backend's answer has no {} element", op.response),
        )
    })?;
    read_message(response, &method.output(), names, 0).map_err(|why| {
        backend_status(
            Code::Internal,
            format!(
                "the backend's answer does not fit {}: {why}",
                method.output().full_name()
            ),
        )
    })
}

impl Backend for SoapBackend {
    fn call(&self, method: &MethodDescriptor, request: DynamicMessage) -> CallFuture {
        let Some(op) = self.operations.get(method.name()).cloned() else {
            let status = Status::unimplemented(format!("no mapping for {}", method.full_name()));
            return Box::pin(async move { Err(status) });
        };
        let envelope = self.envelope(&op, &request);
        let mut headers = self.headers.clone();
        let content_type = match self.version {
            Version::V11 => {
                if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", op.action)) {
                    headers.push((HeaderName::from_static("soapaction"), v));
                }
                "text/xml; charset=utf-8".to_owned()
            }
            Version::V12 => format!(
                "application/soap+xml; charset=utf-8; action=\"{}\"",
                op.action
            ),
        };
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            headers.push((CONTENT_TYPE, v));
        }
        let client = self.client.clone();
        let path = self.path.clone();
        let names = self.names;
        let method = method.clone();
        Box::pin(async move {
            let a = client
                .send(Method::POST, &path, &headers, Some(Bytes::from(envelope)))
                .await?;
            answer(&method, &op, names, a.status, &a.body)
        })
    }
}

#[cfg(test)]
mod tests;
