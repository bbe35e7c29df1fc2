//! A REST service's OpenAPI 3.0 document (JSON or YAML), read with the `openapiv3`
//! types, and the gRPC descriptors generated from it, so that gRPC consumers see the
//! service without a hand-written `.proto`: one unary method per operation, named by
//! its `operationId`; a request message holding the path and query parameters and the
//! JSON body (`body`); a response message that is the JSON answer of the first 2xx
//! response (the schema's own message when it is an object, otherwise a message whose
//! `body` holds it); a message per object schema. Each field keeps the JSON name of its
//! property (`json_name`), so the protobuf JSON of a message is the backend's JSON.
//! What a schema cannot say in protobuf terms (`oneOf`, `anyOf`, free-form objects,
//! arrays of arrays) becomes `google.protobuf.Value`, `Struct` or `ListValue`, which
//! carry any JSON. The same document always gives the same descriptors.

use std::collections::{HashMap, HashSet};

use openapiv3::{
    OpenAPI, Parameter, ParameterSchemaOrContent, ReferenceOr, RequestBody, Response, Schema,
    SchemaKind, Type,
};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type as Scalar};
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MethodDescriptorProto,
    ServiceDescriptorProto,
};

/// Largest document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

const STRUCT_FILE: &str = "google/protobuf/struct.proto";
const DESCRIPTOR_FILE: &str = "google/protobuf/descriptor.proto";
const HTTP_FILE: &str = "google/api/http.proto";
const ANNOTATIONS_FILE: &str = "google/api/annotations.proto";
/// The field number of the `google.api.http` method option (`google.api.HttpRule`).
pub const HTTP_RULE_EXTENSION: u32 = 72295728;
/// Its full name, to look it up in a pool.
pub const HTTP_RULE: &str = "google.api.http";
const VALUE: &str = ".google.protobuf.Value";
const STRUCT: &str = ".google.protobuf.Struct";
const LIST: &str = ".google.protobuf.ListValue";

/// How one operation is called: the method, and where its request's fields go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The gRPC method name.
    pub method: String,
    /// The HTTP method, upper case.
    pub verb: String,
    /// The path template as the document writes it (`/penduduk/{nik}`).
    pub path: String,
    /// (parameter name, field name) of the path and query parameters.
    pub path_params: Vec<(String, String)>,
    pub query_params: Vec<(String, String)>,
    /// The field holding the JSON body, if the operation takes one.
    pub body: Option<String>,
    /// The answer's JSON is the response message's `body` field rather than the message.
    pub response_wrapped: bool,
}

/// The descriptors generated for a document.
#[derive(Debug)]
pub struct Described {
    /// An encoded `google.protobuf.FileDescriptorSet`.
    pub descriptor_set: Vec<u8>,
    pub operations: Vec<Operation>,
}

/// Reads an OpenAPI 3.0 document, JSON or YAML.
pub fn read(text: &[u8]) -> Result<OpenAPI, String> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the OpenAPI document has {} bytes; at most {MAX_DOCUMENT_BYTES} are accepted",
            text.len()
        ));
    }
    let text =
        std::str::from_utf8(text).map_err(|e| format!("the OpenAPI document is not UTF-8: {e}"))?;
    // Read twice: the version first, so a document of another version is named as such
    // rather than failing on what that version writes differently; then the whole,
    // straight into the typed document so that its order is kept.
    #[derive(serde::Deserialize)]
    struct Version {
        openapi: Option<String>,
    }
    let json = text.trim_start().starts_with('{');
    fn parse<T: serde::de::DeserializeOwned>(text: &str, json: bool) -> Result<T, String> {
        if json {
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))
        } else {
            serde_saphyr::from_str(text).map_err(|e| format!("not valid YAML: {e}"))
        }
    }
    let version: Version = parse(text, json).map_err(|e| format!("the OpenAPI document is {e}"))?;
    let version = version
        .openapi
        .ok_or("the document has no `openapi` version: an OpenAPI 3.0 document is expected")?;
    if !version.starts_with("3.0") {
        return Err(format!(
            "OpenAPI {version} is not read; an OpenAPI 3.0 document is expected (Swagger 2.0 and OpenAPI 3.1 documents convert to 3.0 with common tools)"
        ));
    }
    parse(text, json).map_err(|e| {
        format!(
            "the OpenAPI document does not follow OpenAPI 3.0 ({})",
            e.trim_start_matches("not valid JSON: ")
                .trim_start_matches("not valid YAML: ")
        )
    })
}

/// The descriptors of REST service `code` as `doc` describes it: the service's full name
/// is the code (`dukcapil.Penduduk`: service `Penduduk` of package `dukcapil`).
pub fn describe(code: &str, doc: &OpenAPI) -> Result<Described, String> {
    let (package, service) = match code.rsplit_once('.') {
        Some((p, s)) => (p.to_owned(), s.to_owned()),
        None => (String::new(), code.to_owned()),
    };
    let mut g = Generator {
        doc,
        package: package.clone(),
        messages: Vec::new(),
        taken: HashSet::from([service.clone()]),
        by_ref: HashMap::new(),
        uses_struct: false,
    };
    let mut methods = Vec::new();
    let mut operations = Vec::new();
    let mut method_names = HashSet::new();
    for (path, item) in doc.paths.paths.iter() {
        let ReferenceOr::Item(item) = item else {
            return Err(format!("path {path}: a path item by reference is not read"));
        };
        for (verb, op) in item.iter() {
            let base = match &op.operation_id {
                Some(id) => upper_camel(id),
                None => upper_camel(&format!("{verb} {path}")),
            };
            let name = unique(&base, &mut method_names);
            let mut params: Vec<&ReferenceOr<Parameter>> = item.parameters.iter().collect();
            params.extend(op.parameters.iter());
            let (input, operation) =
                g.request(&name, verb, path, &params, op.request_body.as_ref())?;
            let (output, response_wrapped) = g.response(&name, op.responses.responses.iter())?;
            methods.push(MethodDescriptorProto {
                name: Some(name.clone()),
                input_type: Some(input),
                output_type: Some(output),
                ..Default::default()
            });
            operations.push(Operation {
                response_wrapped,
                ..operation
            });
        }
    }
    if methods.is_empty() {
        return Err("the OpenAPI document describes no operation".into());
    }
    let file = FileDescriptorProto {
        name: Some(format!("{}.openapi.proto", code.replace('.', "/"))),
        package: (!package.is_empty()).then_some(package),
        message_type: g.messages,
        dependency: std::iter::once(ANNOTATIONS_FILE.to_owned())
            .chain(g.uses_struct.then(|| STRUCT_FILE.to_owned()))
            .collect(),
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let global = prost_reflect::DescriptorPool::global();
    let mut files = Vec::new();
    for name in [DESCRIPTOR_FILE, STRUCT_FILE] {
        if name == STRUCT_FILE && !g.uses_struct {
            continue;
        }
        let wkt = global
            .get_file_by_name(name)
            .ok_or_else(|| format!("{name} is not at hand"))?;
        files.push(wkt.file_descriptor_proto().encode_to_vec());
    }
    files.extend(http_files().iter().map(Message::encode_to_vec));
    // The service, each method with its `google.api.http` rule: prost's types do not
    // carry extensions, so these are encoded by hand (fields concatenate).
    let mut service_bytes = ServiceDescriptorProto {
        name: Some(service),
        ..Default::default()
    }
    .encode_to_vec();
    for (method, op) in methods.iter().zip(&operations) {
        let mut m = method.encode_to_vec();
        let mut options = Vec::new();
        put_bytes(HTTP_RULE_EXTENSION, &http_rule(op), &mut options);
        put_bytes(4, &options, &mut m);
        put_bytes(2, &m, &mut service_bytes);
    }
    let mut file_bytes = file.encode_to_vec();
    put_bytes(6, &service_bytes, &mut file_bytes);
    files.push(file_bytes);
    let mut descriptor_set = Vec::new();
    for f in &files {
        put_bytes(1, f, &mut descriptor_set);
    }
    // What was generated must make a pool, as every consumer will build one.
    prost_reflect::DescriptorPool::decode(descriptor_set.as_slice())
        .map_err(|e| format!("the generated descriptors do not hold together: {e}"))?;
    Ok(Described {
        descriptor_set,
        operations,
    })
}

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
fn put_bytes(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The encoded `google.api.HttpRule` of an operation: its verb and path (each path
/// parameter named by its field), `body` when it takes one, `response_body` when the
/// answer is wrapped.
fn http_rule(op: &Operation) -> Vec<u8> {
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
fn http_files() -> [FileDescriptorProto; 2] {
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

/// A property of an object schema: its name and schema.
type Property = (String, ReferenceOr<Box<Schema>>);

/// What a schema becomes in a field.
struct FieldType {
    scalar: Scalar,
    /// The message type, for `Scalar::Message`.
    message: Option<String>,
    repeated: bool,
}

impl FieldType {
    fn scalar(scalar: Scalar) -> Self {
        FieldType {
            scalar,
            message: None,
            repeated: false,
        }
    }
    fn message(name: &str) -> Self {
        FieldType {
            scalar: Scalar::Message,
            message: Some(name.to_owned()),
            repeated: false,
        }
    }
}

struct Generator<'a> {
    doc: &'a OpenAPI,
    package: String,
    messages: Vec<DescriptorProto>,
    /// Message names given out (and the service's).
    taken: HashSet<String>,
    /// The message of each component schema, by its name.
    by_ref: HashMap<String, String>,
    uses_struct: bool,
}

impl<'a> Generator<'a> {
    /// The full name of message `name` of this package.
    fn full(&self, name: &str) -> String {
        if self.package.is_empty() {
            format!(".{name}")
        } else {
            format!(".{}.{name}", self.package)
        }
    }

    fn any_json(&mut self, of: &str) -> FieldType {
        self.uses_struct = true;
        FieldType::message(of)
    }

    fn component(&self, reference: &str) -> Result<(&'a str, &'a ReferenceOr<Schema>), String> {
        let doc: &'a OpenAPI = self.doc;
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| {
                format!("reference {reference}: only #/components/schemas/NAME is read")
            })?;
        let (name, schema) = doc
            .components
            .as_ref()
            .and_then(|c| c.schemas.get_key_value(name))
            .ok_or_else(|| format!("reference {reference}: no such schema"))?;
        Ok((name.as_str(), schema))
    }

    /// The type a (possibly referenced) schema gives a field; `hint` names a message
    /// made for an inline object.
    fn field_type<S: AsSchema>(
        &mut self,
        hint: &str,
        schema: &ReferenceOr<S>,
    ) -> Result<FieldType, String> {
        match schema {
            ReferenceOr::Reference { reference } => {
                if let Some(name) = self.by_ref.get(reference) {
                    return Ok(FieldType::message(name));
                }
                let (name, target) = self.component(reference)?;
                let target = match target {
                    ReferenceOr::Item(s) => s,
                    ReferenceOr::Reference { .. } => {
                        return Err(format!(
                            "reference {reference}: a schema that is only a reference is not read"
                        ));
                    }
                };
                if is_object(target) {
                    let full = self.reserve(&upper_camel(name));
                    self.by_ref.insert(reference.clone(), full.clone());
                    self.build(&full, target)?;
                    Ok(FieldType::message(&full))
                } else {
                    self.schema_type(&upper_camel(name), target)
                }
            }
            ReferenceOr::Item(s) => self.schema_type(hint, s.as_schema()),
        }
    }

    fn schema_type(&mut self, hint: &str, s: &Schema) -> Result<FieldType, String> {
        Ok(match &s.schema_kind {
            SchemaKind::Type(Type::String(st)) => FieldType::scalar(match &st.format {
                openapiv3::VariantOrUnknownOrEmpty::Item(openapiv3::StringFormat::Byte) => {
                    Scalar::Bytes
                }
                _ => Scalar::String,
            }),
            SchemaKind::Type(Type::Integer(it)) => FieldType::scalar(match &it.format {
                openapiv3::VariantOrUnknownOrEmpty::Item(openapiv3::IntegerFormat::Int32) => {
                    Scalar::Int32
                }
                _ => Scalar::Int64,
            }),
            SchemaKind::Type(Type::Number(nt)) => FieldType::scalar(match &nt.format {
                openapiv3::VariantOrUnknownOrEmpty::Item(openapiv3::NumberFormat::Float) => {
                    Scalar::Float
                }
                _ => Scalar::Double,
            }),
            SchemaKind::Type(Type::Boolean(_)) => FieldType::scalar(Scalar::Bool),
            SchemaKind::Type(Type::Array(at)) => {
                let item = match &at.items {
                    Some(items) => self.field_type(&format!("{hint}Item"), items)?,
                    None => self.any_json(VALUE),
                };
                if item.repeated {
                    // An array of arrays: each inner one as a JSON list.
                    let mut t = self.any_json(LIST);
                    t.repeated = true;
                    t
                } else {
                    FieldType {
                        repeated: true,
                        ..item
                    }
                }
            }
            _ if is_object(s) => {
                let full = self.reserve(hint);
                self.build(&full, s)?;
                FieldType::message(&full)
            }
            SchemaKind::Type(Type::Object(_)) => self.any_json(STRUCT),
            _ => self.any_json(VALUE),
        })
    }

    /// A new message name from `hint`, unique in the file; its full name.
    fn reserve(&mut self, hint: &str) -> String {
        let name = unique(hint, &mut self.taken);
        self.full(&name)
    }

    /// The message `full` for object schema `s` (its properties, and those of every
    /// `allOf` part).
    fn build(&mut self, full: &str, s: &Schema) -> Result<(), String> {
        let index = self.messages.len();
        let name = full.rsplit('.').next().unwrap_or(full).to_owned();
        self.messages.push(DescriptorProto {
            name: Some(name.clone()),
            ..Default::default()
        });
        let mut fields = Vec::new();
        let mut used = HashSet::new();
        for (property, schema) in self.properties(s)? {
            let t = self.field_type(&format!("{name}{}", upper_camel(&property)), &schema)?;
            fields.push(field(&property, fields.len() as i32 + 1, t, &mut used));
        }
        self.messages[index].field = fields;
        Ok(())
    }

    /// The properties of an object schema, `allOf` parts merged, in document order.
    fn properties(&self, s: &Schema) -> Result<Vec<Property>, String> {
        match &s.schema_kind {
            SchemaKind::Type(Type::Object(o)) => Ok(o
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
            SchemaKind::AllOf { all_of } => {
                let mut all = Vec::new();
                for part in all_of {
                    let part = match part {
                        ReferenceOr::Item(s) => s,
                        ReferenceOr::Reference { reference } => {
                            match self.component(reference)?.1 {
                                ReferenceOr::Item(s) => s,
                                ReferenceOr::Reference { .. } => continue,
                            }
                        }
                    };
                    for (k, v) in self.properties(part)? {
                        if !all.iter().any(|(have, _)| *have == k) {
                            all.push((k, v));
                        }
                    }
                }
                Ok(all)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The request message of an operation and where its fields go.
    fn request(
        &mut self,
        method: &str,
        verb: &str,
        path: &str,
        params: &[&ReferenceOr<Parameter>],
        body: Option<&ReferenceOr<RequestBody>>,
    ) -> Result<(String, Operation), String> {
        let full = self.reserve(&format!("{method}Request"));
        let index = self.messages.len();
        self.messages.push(DescriptorProto {
            name: Some(full.rsplit('.').next().unwrap_or_default().to_owned()),
            ..Default::default()
        });
        let mut op = Operation {
            method: method.to_owned(),
            verb: verb.to_ascii_uppercase(),
            path: path.to_owned(),
            path_params: Vec::new(),
            query_params: Vec::new(),
            body: None,
            response_wrapped: false,
        };
        let mut fields = Vec::new();
        let mut used = HashSet::new();
        for p in params {
            let p = match p {
                ReferenceOr::Item(p) => p,
                ReferenceOr::Reference { reference } => {
                    let name = reference
                        .strip_prefix("#/components/parameters/")
                        .ok_or_else(|| format!("{method}: parameter {reference} is not read"))?;
                    match self
                        .doc
                        .components
                        .as_ref()
                        .and_then(|c| c.parameters.get(name))
                    {
                        Some(ReferenceOr::Item(p)) => p,
                        _ => {
                            return Err(format!(
                                "{method}: parameter {reference}: no such parameter"
                            ));
                        }
                    }
                }
            };
            let (data, into) = match p {
                Parameter::Path { parameter_data, .. } => (parameter_data, &mut op.path_params),
                Parameter::Query { parameter_data, .. } => (parameter_data, &mut op.query_params),
                // Headers and cookies are the client's own to send.
                _ => continue,
            };
            // An operation's parameter overrides the path item's of the same name.
            if into.iter().any(|(n, _)| *n == data.name) {
                continue;
            }
            let t = match &data.format {
                ParameterSchemaOrContent::Schema(s) => {
                    self.field_type(&format!("{method}{}", upper_camel(&data.name)), s)?
                }
                ParameterSchemaOrContent::Content(_) => FieldType::scalar(Scalar::String),
            };
            let f = field(&data.name, fields.len() as i32 + 1, t, &mut used);
            into.push((data.name.clone(), f.name.clone().unwrap_or_default()));
            fields.push(f);
        }
        let body = match body {
            Some(ReferenceOr::Item(b)) => Some(b),
            Some(ReferenceOr::Reference { reference }) => {
                let name = reference
                    .strip_prefix("#/components/requestBodies/")
                    .unwrap_or_default();
                match self
                    .doc
                    .components
                    .as_ref()
                    .and_then(|c| c.request_bodies.get(name))
                {
                    Some(ReferenceOr::Item(b)) => Some(b),
                    _ => return Err(format!("{method}: request body {reference}: no such body")),
                }
            }
            None => None,
        };
        if let Some(b) = body {
            let t = match json_schema(&b.content) {
                Some(s) => self.field_type(&format!("{method}Body"), s)?,
                None => self.any_json(VALUE),
            };
            let f = field("body", fields.len() as i32 + 1, t, &mut used);
            op.body = f.name.clone();
            fields.push(f);
        }
        self.messages[index].field = fields;
        Ok((full, op))
    }

    /// The response message of an operation, and whether the JSON answer is its `body`.
    fn response<'b>(
        &mut self,
        method: &str,
        responses: impl Iterator<Item = (&'b openapiv3::StatusCode, &'b ReferenceOr<Response>)>,
    ) -> Result<(String, bool), String> {
        let mut success = None;
        for (status, r) in responses {
            let ok = match status {
                openapiv3::StatusCode::Code(c) => (200..300).contains(c),
                openapiv3::StatusCode::Range(r) => *r == 2,
            };
            if ok {
                success = Some(r);
                break;
            }
        }
        let response = match success {
            Some(ReferenceOr::Item(r)) => Some(r),
            Some(ReferenceOr::Reference { reference }) => {
                let name = reference
                    .strip_prefix("#/components/responses/")
                    .unwrap_or_default();
                match self
                    .doc
                    .components
                    .as_ref()
                    .and_then(|c| c.responses.get(name))
                {
                    Some(ReferenceOr::Item(r)) => Some(r),
                    _ => return Err(format!("{method}: response {reference}: no such response")),
                }
            }
            None => None,
        };
        if let Some(schema) = response.and_then(|r| json_schema(&r.content)) {
            let t = self.field_type(&format!("{method}Response"), schema)?;
            if let (Scalar::Message, Some(name), false) = (t.scalar, &t.message, t.repeated)
                && !name.starts_with(".google.")
            {
                return Ok((name.clone(), false));
            }
            let full = self.reserve(&format!("{method}Response"));
            self.messages.push(DescriptorProto {
                name: Some(full.rsplit('.').next().unwrap_or_default().to_owned()),
                field: vec![field("body", 1, t, &mut HashSet::new())],
                ..Default::default()
            });
            return Ok((full, true));
        }
        // No JSON answer: an empty message.
        let full = self.reserve(&format!("{method}Response"));
        self.messages.push(DescriptorProto {
            name: Some(full.rsplit('.').next().unwrap_or_default().to_owned()),
            ..Default::default()
        });
        Ok((full, false))
    }
}

/// Schemas of `Box<Schema>` and `Schema` alike.
trait AsSchema {
    fn as_schema(&self) -> &Schema;
}
impl AsSchema for Schema {
    fn as_schema(&self) -> &Schema {
        self
    }
}
impl AsSchema for Box<Schema> {
    fn as_schema(&self) -> &Schema {
        self
    }
}

/// The JSON schema of a content map (`application/json` or another JSON type).
fn json_schema(
    content: &indexmap::IndexMap<String, openapiv3::MediaType>,
) -> Option<&ReferenceOr<Schema>> {
    content
        .iter()
        .find(|(t, _)| {
            let t = t.split(';').next().unwrap_or_default().trim();
            t == "application/json" || t.ends_with("+json")
        })
        .and_then(|(_, m)| m.schema.as_ref())
}

/// An object with properties (or made of `allOf` parts): a message of its own.
fn is_object(s: &Schema) -> bool {
    match &s.schema_kind {
        SchemaKind::Type(Type::Object(o)) => !o.properties.is_empty(),
        SchemaKind::AllOf { .. } => true,
        _ => false,
    }
}

/// A field for JSON property `json`, its name made a protobuf identifier unique in the
/// message.
fn field(
    json: &str,
    number: i32,
    t: FieldType,
    used: &mut HashSet<String>,
) -> FieldDescriptorProto {
    let mut name: String = json
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name = format!("f_{name}");
    }
    let name = unique(&name, used);
    FieldDescriptorProto {
        name: Some(name),
        number: Some(number),
        label: Some(if t.repeated {
            Label::Repeated
        } else {
            Label::Optional
        } as i32),
        r#type: Some(t.scalar as i32),
        type_name: t.message,
        json_name: Some(json.to_owned()),
        ..Default::default()
    }
}

/// `name`, or `name2`, `name3`, ... if taken; marked taken.
fn unique(name: &str, taken: &mut HashSet<String>) -> String {
    let mut candidate = name.to_owned();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}{n}");
        n += 1;
    }
    candidate
}

/// `cari_penduduk`, `cariPenduduk`, `get /penduduk/{nik}` → `CariPenduduk`,
/// `GetPendudukNik`: a protobuf identifier starting with a capital.
fn upper_camel(text: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if upper {
                out.push(c.to_ascii_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        } else {
            upper = true;
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'X');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::{DescriptorPool, Kind};

    const DUKCAPIL: &str = include_str!("../../examples/openapi/dukcapil.yaml");

    fn pool(d: &Described) -> DescriptorPool {
        DescriptorPool::decode(d.descriptor_set.as_slice()).unwrap()
    }

    #[test]
    fn the_example_api_becomes_a_service_with_one_method_per_operation() {
        let doc = read(DUKCAPIL.as_bytes()).unwrap();
        let d = describe("dukcapil.Kependudukan", &doc).unwrap();
        let pool = pool(&d);
        let service = pool.get_service_by_name("dukcapil.Kependudukan").unwrap();
        let names: Vec<_> = service.methods().map(|m| m.name().to_owned()).collect();
        assert_eq!(
            names,
            ["CariPenduduk", "AmbilPenduduk", "AmbilKartuKeluarga"]
        );
        assert_eq!(
            d.operations[2],
            Operation {
                method: "AmbilKartuKeluarga".into(),
                verb: "GET".into(),
                path: "/kk/{no_kk}".into(),
                path_params: vec![("no_kk".into(), "no_kk".into())],
                query_params: vec![("aktif_saja".into(), "aktif_saja".into())],
                body: None,
                response_wrapped: false,
            }
        );
        // The response of a lookup is the referenced schema's message; its fields keep
        // their JSON names and types.
        let lookup = service.methods().next().unwrap();
        assert_eq!(lookup.output().full_name(), "dukcapil.JawabanPenduduk");
        let data = lookup.output().get_field_by_name("data").unwrap();
        let Kind::Message(penduduk) = data.kind() else {
            panic!("data is a message")
        };
        assert_eq!(penduduk.full_name(), "dukcapil.Penduduk");
        assert_eq!(penduduk.fields().count(), 7);
        // An inline schema gets a message named after where it is.
        let kk = service.methods().nth(2).unwrap().output();
        let anggota = kk
            .get_field_by_name("data")
            .and_then(|f| f.kind().as_message().cloned())
            .and_then(|m| m.get_field_by_name("anggota"))
            .unwrap();
        assert!(anggota.is_list());
        // Each method says how it is called over HTTP, as gRPC transcoding reads it.
        let http = pool.get_extension_by_name(HTTP_RULE).unwrap();
        let rules: Vec<String> = service
            .methods()
            .map(|m| {
                let rule = m.options().get_extension(&http).into_owned();
                let rule = rule.as_message().unwrap().clone();
                format!(
                    "{:?}",
                    rule.get_field_by_name("get").unwrap().as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            rules,
            ["\"/penduduk\"", "\"/penduduk/{nik}\"", "\"/kk/{no_kk}\""]
        );
        // Twice the same document, twice the same bytes.
        assert_eq!(
            describe("dukcapil.Kependudukan", &doc)
                .unwrap()
                .descriptor_set,
            d.descriptor_set
        );
    }

    #[test]
    fn schemas_map_to_protobuf_types_and_json_names_are_kept() {
        let doc = read(
            br#"{"openapi": "3.0.0", "info": {"title": "t", "version": "1"},
            "paths": {"/berkas/{id}": {"post": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "format": "int32"}},
                               {"name": "tag", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
                               {"name": "X-Trace", "in": "header", "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                    "nama-lengkap": {"type": "string"}, "skor": {"type": "number"}, "aktif": {"type": "boolean"},
                    "data": {"type": "object"}, "pilihan": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                    "matriks": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                    "2fa": {"type": "string", "format": "byte"}}}}}},
                "responses": {"201": {"description": "ok", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}}},
                              "400": {"description": "no"}}}}}}"#,
        )
        .unwrap();
        let d = describe("Berkas", &doc).unwrap();
        let pool = pool(&d);
        let m = pool
            .get_service_by_name("Berkas")
            .unwrap()
            .methods()
            .next()
            .unwrap();
        assert_eq!(m.name(), "PostBerkasId");
        let op = &d.operations[0];
        assert_eq!(op.path_params, [("id".to_owned(), "id".to_owned())]);
        assert_eq!(op.query_params, [("tag".to_owned(), "tag".to_owned())]);
        assert_eq!(op.body.as_deref(), Some("body"));
        assert!(op.response_wrapped);
        let input = m.input();
        assert_eq!(
            input.fields().count(),
            3,
            "the header parameter stays the client's"
        );
        assert!(matches!(
            input.get_field_by_name("id").unwrap().kind(),
            Kind::Int32
        ));
        assert!(input.get_field_by_name("tag").unwrap().is_list());
        let Kind::Message(body) = input.get_field_by_name("body").unwrap().kind() else {
            panic!("body is a message")
        };
        let kinds: Vec<(String, String, String)> = body
            .fields()
            .map(|f| {
                let kind = match f.kind() {
                    Kind::Message(m) => m.full_name().to_owned(),
                    k => format!("{k:?}"),
                };
                (
                    f.name().to_owned(),
                    f.json_name().to_owned(),
                    format!("{}{kind}", if f.is_list() { "repeated " } else { "" }),
                )
            })
            .collect();
        let want = [
            ("nama_lengkap", "nama-lengkap", "string"),
            ("skor", "skor", "double"),
            ("aktif", "aktif", "bool"),
            ("data", "data", "google.protobuf.Struct"),
            ("pilihan", "pilihan", "google.protobuf.Value"),
            ("matriks", "matriks", "repeated google.protobuf.ListValue"),
            ("f_2fa", "2fa", "bytes"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(kinds, want);
        let out = m.output().get_field_by_name("body").unwrap();
        assert!(out.is_list() && matches!(out.kind(), Kind::String));
    }

    #[test]
    fn documents_that_cannot_be_read_say_why() {
        let cases: [(&[u8], &str); 6] = [
            (b"openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths: {}\n", "OpenAPI 3.1.0 is not read"),
            (b"swagger: '2.0'\n", "no `openapi` version"),
            (b"{not json", "not valid JSON"),
            (b"openapi: [3.0\n", "not valid YAML"),
            (b"openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths: {}\n", "no operation"),
            (
                b"openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      responses:\n        '200':\n          description: x\n          content:\n            application/json:\n              schema: {$ref: '#/components/schemas/Hilang'}\n",
                "no such schema",
            ),
        ];
        for (text, want) in cases {
            let got = read(text).and_then(|doc| describe("x.Y", &doc).map(|_| ()));
            match got {
                Err(e) if e.contains(want) => {}
                other => panic!(
                    "{}: {other:?}, wanted {want}",
                    String::from_utf8_lossy(text)
                ),
            }
        }
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert!(read(&big).unwrap_err().contains("at most"));
    }

    #[test]
    fn recursive_schemas_end_in_their_own_message() {
        let doc = read(
            b"openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /pohon:\n    get:\n      operationId: pohon\n      responses:\n        '200':\n          description: x\n          content:\n            application/json:\n              schema: {$ref: '#/components/schemas/Simpul'}\ncomponents:\n  schemas:\n    Simpul:\n      type: object\n      properties:\n        nama: {type: string}\n        anak: {type: array, items: {$ref: '#/components/schemas/Simpul'}}\n",
        )
        .unwrap();
        let d = describe("p.Pohon", &doc).unwrap();
        let simpul = pool(&d).get_message_by_name("p.Simpul").unwrap();
        let anak = simpul.get_field_by_name("anak").unwrap();
        assert_eq!(anak.kind().as_message().unwrap().full_name(), "p.Simpul");
    }
}
