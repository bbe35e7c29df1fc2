//! An OpenAPI 3.0 description of calling a gRPC service through the REST entry, built
//! from its descriptors (`getOpenAPI`).

use prost_reflect::{Kind, MessageDescriptor, ServiceDescriptor};
use serde_json::{Value, json};

use lintas_identifiers::SubsystemId;

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
