//! Bytes in JSON as standard base64 strings.

/// For `Option<Vec<u8>>` fields: `#[serde(default, with = "lintas_manage::b64::option")]`.
pub mod option {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(default, with = "super::option")]
        b: Option<Vec<u8>>,
    }

    #[test]
    fn round_trip_and_refusal() {
        let cases: &[(&str, Option<Option<Vec<u8>>>)] = &[
            (r#"{"b":"AAEC"}"#, Some(Some(vec![0, 1, 2]))),
            (r#"{"b":null}"#, Some(None)),
            (r#"{}"#, Some(None)),
            (r#"{"b":"not base64!"}"#, None),
        ];
        for (json, expected) in cases {
            let got = serde_json::from_str::<T>(json).ok().map(|t| t.b);
            assert_eq!(&got, expected, "{json}");
        }
        let json = serde_json::to_string(&T {
            b: Some(vec![0, 1, 2]),
        })
        .unwrap();
        assert_eq!(json, r#"{"b":"AAEC"}"#);
    }
}
