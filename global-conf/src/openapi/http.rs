//! The `google.api.http` rules of generated methods: each encoded by hand into the
//! method's options (prost's descriptor types carry no extensions), the two files that
//! declare them, and the reading of a rule back from a method.

use prost_types::field_descriptor_proto::{Label, Type as Scalar};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};

use super::{
    ANNOTATIONS_FILE, DESCRIPTOR_FILE, HTTP_FILE, HTTP_RULE, HTTP_RULE_EXTENSION, Operation,
};

/// A method's `google.api.http` rule, as generated here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The HTTP method, upper case.
    pub verb: String,
    /// The path template, variables named by field (`/penduduk/{nik}`).
    pub template: String,
    /// The request field sent as the JSON body (`*`: all not in the path), or empty.
    pub body: String,
    /// The response field the JSON answer fills, or empty for the whole message.
    pub response_body: String,
}

/// The `google.api.http` rule of `method`, read from its options.
pub fn rule(method: &prost_reflect::MethodDescriptor) -> Result<Rule, String> {
    let extension = method
        .parent_pool()
        .get_extension_by_name(HTTP_RULE)
        .ok_or("the service's descriptors carry no HTTP rules")?;
    let options = method.options();
    if !options.has_extension(&extension) {
        return Err(format!("method {} has no HTTP rule", method.name()));
    }
    let rule = options.get_extension(&extension);
    let rule = rule.as_message().ok_or("the HTTP rule is malformed")?;
    let text = |m: &prost_reflect::DynamicMessage, name: &str| {
        m.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let (verb, template) = ["get", "put", "post", "delete", "patch"]
        .iter()
        .find_map(|v| {
            let t = text(rule, v);
            (!t.is_empty()).then(|| (v.to_ascii_uppercase(), t))
        })
        .or_else(|| {
            let custom = rule.get_field_by_name("custom")?;
            let custom = custom.as_message()?;
            let kind = text(custom, "kind");
            (!kind.is_empty()).then(|| (kind, text(custom, "path")))
        })
        .ok_or("the HTTP rule names no method")?;
    Ok(Rule {
        verb,
        template,
        body: text(rule, "body"),
        response_body: text(rule, "response_body"),
    })
}

/// Appends field `number` holding `bytes` (length-delimited) to `out`.
pub(super) fn put_bytes(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The encoded `google.api.HttpRule` of an operation: its verb and path (each path
/// parameter named by its field), `body` when it takes one, `response_body` when the
/// answer is wrapped.
pub(super) fn http_rule(op: &Operation) -> Vec<u8> {
    let mut path = op.path.clone();
    for (param, field) in &op.path_params {
        path = path.replace(&format!("{{{param}}}"), &format!("{{{field}}}"));
    }
    let mut rule = Vec::new();
    match op.verb.as_str() {
        "GET" => put_bytes(2, path.as_bytes(), &mut rule),
        "PUT" => put_bytes(3, path.as_bytes(), &mut rule),
        "POST" => put_bytes(4, path.as_bytes(), &mut rule),
        "DELETE" => put_bytes(5, path.as_bytes(), &mut rule),
        "PATCH" => put_bytes(6, path.as_bytes(), &mut rule),
        other => {
            let mut custom = Vec::new();
            put_bytes(1, other.as_bytes(), &mut custom);
            put_bytes(2, path.as_bytes(), &mut custom);
            put_bytes(8, &custom, &mut rule);
        }
    }
    if let Some(body) = &op.body {
        put_bytes(7, body.as_bytes(), &mut rule);
    }
    if op.response_wrapped {
        put_bytes(12, b"body", &mut rule);
    }
    rule
}

/// `google/api/http.proto` (the part a rule needs) and `google/api/annotations.proto`,
/// which declares the method option.
pub(super) fn http_files() -> [FileDescriptorProto; 2] {
    let string = |name: &str, number: i32, oneof: Option<i32>| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(Scalar::String as i32),
        json_name: Some(name.into()),
        oneof_index: oneof,
        ..Default::default()
    };
    let message = |name: &str, number: i32, type_name: &str, label: Label, oneof: Option<i32>| {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(label as i32),
            r#type: Some(Scalar::Message as i32),
            type_name: Some(type_name.into()),
            json_name: Some(name.into()),
            oneof_index: oneof,
            ..Default::default()
        }
    };
    let http = FileDescriptorProto {
        name: Some(HTTP_FILE.into()),
        package: Some("google.api".into()),
        message_type: vec![
            DescriptorProto {
                name: Some("HttpRule".into()),
                field: vec![
                    string("selector", 1, None),
                    string("get", 2, Some(0)),
                    string("put", 3, Some(0)),
                    string("post", 4, Some(0)),
                    string("delete", 5, Some(0)),
                    string("patch", 6, Some(0)),
                    message(
                        "custom",
                        8,
                        ".google.api.CustomHttpPattern",
                        Label::Optional,
                        Some(0),
                    ),
                    string("body", 7, None),
                    string("response_body", 12, None),
                    message(
                        "additional_bindings",
                        11,
                        ".google.api.HttpRule",
                        Label::Repeated,
                        None,
                    ),
                ],
                oneof_decl: vec![prost_types::OneofDescriptorProto {
                    name: Some("pattern".into()),
                    ..Default::default()
                }],
                ..Default::default()
            },
            DescriptorProto {
                name: Some("CustomHttpPattern".into()),
                field: vec![string("kind", 1, None), string("path", 2, None)],
                ..Default::default()
            },
        ],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let annotations = FileDescriptorProto {
        name: Some(ANNOTATIONS_FILE.into()),
        package: Some("google.api".into()),
        dependency: vec![HTTP_FILE.into(), DESCRIPTOR_FILE.into()],
        extension: vec![FieldDescriptorProto {
            extendee: Some(".google.protobuf.MethodOptions".into()),
            ..message(
                "http",
                HTTP_RULE_EXTENSION as i32,
                ".google.api.HttpRule",
                Label::Optional,
                None,
            )
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    [http, annotations]
}
