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

mod http;
mod schema;

pub use http::{Rule, rule};
use http::{http_files, http_rule, put_bytes};
use schema::{Generator, unique, upper_camel};

use openapiv3::{OpenAPI, Parameter, ReferenceOr};
use prost::Message;
use prost_types::{FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};

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

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::{DescriptorPool, Kind};

    const DUKCAPIL: &str = include_str!("../../../examples/openapi/dukcapil.yaml");

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
