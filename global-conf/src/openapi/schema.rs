//! Messages from the schemas of an OpenAPI document, and the request and response
//! message of each operation.

use std::collections::{HashMap, HashSet};

use openapiv3::{
    OpenAPI, Parameter, ParameterSchemaOrContent, ReferenceOr, RequestBody, Response, Schema,
    SchemaKind, Type,
};
use prost_types::field_descriptor_proto::{Label, Type as Scalar};
use prost_types::{DescriptorProto, FieldDescriptorProto};

use super::{LIST, Operation, STRUCT, VALUE};

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

pub(super) struct Generator<'a> {
    pub(super) doc: &'a OpenAPI,
    pub(super) package: String,
    pub(super) messages: Vec<DescriptorProto>,
    /// Message names given out (and the service's).
    pub(super) taken: HashSet<String>,
    /// The message of each component schema, by its name.
    pub(super) by_ref: HashMap<String, String>,
    pub(super) uses_struct: bool,
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
    pub(super) fn request(
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
    pub(super) fn response<'b>(
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
pub(super) fn unique(name: &str, taken: &mut HashSet<String>) -> String {
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
pub(super) fn upper_camel(text: &str) -> String {
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
