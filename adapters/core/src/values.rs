//! Scalar values as text (XML element content, URL parts, database columns), converted by
//! the field's declared type, with precise refusals when they do not fit.

use base64::Engine;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, Value};

/// Parses `text` as a value of `field`'s type (one element, for a repeated field).
pub fn parse_text(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let t = text.trim();
    let bad = |what: &str| {
        format!(
            "field {}: '{}' is not {what}",
            field.name(),
            shorten(text, 64)
        )
    };
    Ok(match field.kind() {
        Kind::Double => Value::F64(t.parse().map_err(|_| bad("a number"))?),
        Kind::Float => Value::F32(t.parse().map_err(|_| bad("a number"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(t.parse().map_err(|_| bad("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(t.parse().map_err(|_| bad("a 64-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(t.parse().map_err(|_| bad("an unsigned 32-bit integer"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(t.parse().map_err(|_| bad("an unsigned 64-bit integer"))?)
        }
        Kind::Bool => Value::Bool(match t {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(bad("a boolean (true, false, 1 or 0)")),
        }),
        Kind::String => Value::String(text.to_owned()),
        Kind::Bytes => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| bad("base64"))?
                .into(),
        ),
        Kind::Enum(e) => match e.get_value_by_name(t) {
            Some(v) => Value::EnumNumber(v.number()),
            None => match t.parse::<i32>() {
                Ok(n) => Value::EnumNumber(n),
                Err(_) => return Err(bad(&format!("a value of enum {}", e.full_name()))),
            },
        },
        Kind::Message(m) => {
            return Err(format!(
                "field {} is a message ({}), not a scalar",
                field.name(),
                m.full_name()
            ));
        }
    })
}

/// Sets a singular field, or appends to a repeated one.
pub fn set_or_push(message: &mut DynamicMessage, field: &FieldDescriptor, value: Value) {
    if field.is_list() {
        if let Value::List(list) = message.get_field_mut(field) {
            list.push(value);
        }
    } else {
        message.set_field(field, value);
    }
}

/// A scalar value as text: numbers in decimal, booleans as `true`/`false`, enums by
/// name, bytes in base64. `None` for messages, lists and maps.
pub fn scalar_text(field: &FieldDescriptor, value: &Value) -> Option<String> {
    Some(match value {
        Value::Bool(b) => b.to_string(),
        Value::I32(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::U32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::F32(v) => v.to_string(),
        Value::F64(v) => v.to_string(),
        Value::String(s) => s.clone(),
        Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::EnumNumber(n) => match field.kind() {
            Kind::Enum(e) => e
                .get_value(*n)
                .map(|v| v.name().to_owned())
                .unwrap_or_else(|| n.to_string()),
            _ => n.to_string(),
        },
        Value::Message(_) | Value::List(_) | Value::Map(_) => return None,
    })
}

/// The names of `message`'s fields, for messages that list them.
pub fn field_list(message: &prost_reflect::MessageDescriptor) -> String {
    message
        .fields()
        .map(|f| f.name().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `f` holds one scalar value (not a list, a map or a message).
pub fn is_scalar(f: &FieldDescriptor) -> bool {
    !f.is_list() && !f.is_map() && !matches!(f.kind(), Kind::Message(_))
}

/// At most `max` bytes of `text`, cut on a character boundary.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> prost_reflect::DescriptorPool {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.proto"),
            r#"syntax = "proto3"; package t;
            enum Colour { RED = 0; BLUE = 1; }
            message M { int32 a = 1; bool b = 2; repeated string c = 3; Colour d = 4; bytes e = 5; uint64 f = 6; }"#,
        )
        .unwrap();
        let mut c = protox::Compiler::new([dir.path()]).unwrap();
        c.open_file("t.proto").unwrap();
        c.descriptor_pool()
    }

    #[test]
    fn text_is_parsed_by_the_declared_type_and_refused_when_it_does_not_fit() {
        fn set_from_text(
            message: &mut DynamicMessage,
            field: &FieldDescriptor,
            text: &str,
        ) -> Result<(), String> {
            set_or_push(message, field, parse_text(field, text)?);
            Ok(())
        }
        let pool = pool();
        let m = pool.get_message_by_name("t.M").unwrap();
        let mut msg = DynamicMessage::new(m.clone());
        let f = |n: &str| m.get_field_by_name(n).unwrap();
        set_from_text(&mut msg, &f("a"), " 42 ").unwrap();
        set_from_text(&mut msg, &f("b"), "1").unwrap();
        set_from_text(&mut msg, &f("c"), "x").unwrap();
        set_from_text(&mut msg, &f("c"), "y").unwrap();
        set_from_text(&mut msg, &f("d"), "BLUE").unwrap();
        set_from_text(&mut msg, &f("e"), "aGk=").unwrap();
        assert_eq!(msg.get_field(&f("a")).as_i32(), Some(42));
        assert_eq!(msg.get_field(&f("b")).as_bool(), Some(true));
        assert_eq!(msg.get_field(&f("c")).as_list().unwrap().len(), 2);
        assert_eq!(
            scalar_text(&f("d"), &msg.get_field(&f("d"))).as_deref(),
            Some("BLUE")
        );
        assert_eq!(
            scalar_text(&f("e"), &msg.get_field(&f("e"))).as_deref(),
            Some("aGk=")
        );

        let err = set_from_text(&mut msg, &f("a"), "empat").unwrap_err();
        assert_eq!(err, "field a: 'empat' is not a 32-bit integer");
        let err = set_from_text(&mut msg, &f("f"), "-1").unwrap_err();
        assert_eq!(err, "field f: '-1' is not an unsigned 64-bit integer");
        let err = set_from_text(&mut msg, &f("d"), "GREEN").unwrap_err();
        assert_eq!(err, "field d: 'GREEN' is not a value of enum t.Colour");
        let err = set_from_text(&mut msg, &f("b"), "ya").unwrap_err();
        assert!(err.contains("not a boolean"), "{err}");
    }
}
