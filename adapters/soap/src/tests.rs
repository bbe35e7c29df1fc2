use super::*;

fn method() -> MethodDescriptor {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.proto"),
        r#"syntax = "proto3"; package t;
        service S { rpc Cek(Req) returns (Res); }
        message Req { string nik = 1; repeated string tag = 2; Inner inner = 3; }
        message Inner { int32 n = 1; }
        message Res { string nama = 1; int32 kelas = 2; bool aktif = 3; repeated Inner riwayat = 4; }"#,
    )
    .unwrap();
    let mut c = protox::Compiler::new([dir.path()]).unwrap();
    c.open_file("t.proto").unwrap();
    c.descriptor_pool()
        .get_service_by_name("t.S")
        .unwrap()
        .methods()
        .next()
        .unwrap()
}

fn op() -> Operation {
    Operation {
        action: "urn:cek".into(),
        element: "CekRequest".into(),
        response: "CekResponse".into(),
        namespace: "urn:t&co".into(),
    }
}

#[test]
fn request_fields_become_escaped_child_elements() {
    let m = method();
    let mut req = DynamicMessage::new(m.input());
    req.set_field_by_name("nik", Value::String("<31&74>".into()));
    req.set_field_by_name(
        "tag",
        Value::List(vec![Value::String("a".into()), Value::String("b".into())]),
    );
    let mut inner = DynamicMessage::new(
        m.input()
            .get_field_by_name("inner")
            .unwrap()
            .kind()
            .as_message()
            .unwrap()
            .clone(),
    );
    inner.set_field_by_name("n", Value::I32(7));
    req.set_field_by_name("inner", Value::Message(inner));
    let mut body = String::new();
    write_fields(&req, http::FieldNames::Proto, &mut body);
    assert_eq!(
        body,
        "<nik>&lt;31&amp;74&gt;</nik><tag>a</tag><tag>b</tag><inner><n>7</n></inner>"
    );
    // The envelope parses back, with the text unescaped.
    let backend_envelope = format!(
        "<soap:Envelope xmlns:soap=\"x\"><soap:Body><m:CekRequest xmlns:m=\"urn:t&amp;co\">{body}</m:CekRequest></soap:Body></soap:Envelope>"
    );
    let root = xml::parse(&backend_envelope).unwrap();
    assert_eq!(root.find("nik").unwrap().text, "<31&74>");
}

const OK: &str = r#"<?xml version="1.0"?>
<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <S:Body><ns2:CekResponse xmlns:ns2="urn:t">
    <nama>Siti &amp; <![CDATA[Agus]]> &#65;</nama><kelas> 2 </kelas><aktif>true</aktif>
    <riwayat><n>1</n></riwayat><riwayat><n>2</n></riwayat>
    <tidakDikenal>x</tidakDikenal><nama2 xsi:nil="true"/>
  </ns2:CekResponse></S:Body></S:Envelope>"#;

#[test]
fn answers_are_read_by_local_names_and_declared_types() {
    let m = method();
    let res = answer(
        &m,
        &op(),
        http::FieldNames::Proto,
        hyper::StatusCode::OK,
        OK.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        res.get_field_by_name("nama").unwrap().as_str(),
        Some("Siti & Agus A")
    );
    assert_eq!(res.get_field_by_name("kelas").unwrap().as_i32(), Some(2));
    assert_eq!(
        res.get_field_by_name("aktif").unwrap().as_bool(),
        Some(true)
    );
    assert_eq!(
        res.get_field_by_name("riwayat")
            .unwrap()
            .as_list()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn faults_mismatches_and_malformed_answers_are_precise_errors() {
    let m = method();
    let err = |status: u16, body: &str| {
        answer(
            &m,
            &op(),
            http::FieldNames::Proto,
            hyper::StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
        )
        .unwrap_err()
    };
    let f11 = err(
        500,
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>NIK tidak terdaftar</faultstring></s:Fault></s:Body></s:Envelope>"#,
    );
    assert_eq!(f11.code(), Code::InvalidArgument);
    assert_eq!(f11.message(), "SOAP fault s:Client: NIK tidak terdaftar");
    let f12 = err(
        500,
        r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault><e:Code><e:Value>e:Receiver</e:Value></e:Code><e:Reason><e:Text xml:lang="id">basis data mati</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>"#,
    );
    assert_eq!(f12.code(), Code::Internal);
    assert_eq!(f12.message(), "SOAP fault e:Receiver: basis data mati");

    let mismatch = err(200, &OK.replace("<kelas> 2 </kelas>", "<kelas>dua</kelas>"));
    assert_eq!(mismatch.code(), Code::Internal);
    assert_eq!(
        mismatch.message(),
        "the backend's answer does not fit t.Res: field kelas: 'dua' is not a 32-bit integer"
    );
    let missing = err(200, &OK.replace("CekResponse", "LainResponse"));
    assert_eq!(
        missing.message(),
        "the backend's answer has no CekResponse element"
    );
    let html = err(503, "<html><body>Service Unavailable</body>");
    assert_eq!(html.code(), Code::Unavailable);
    assert!(
        html.message().contains("is not a SOAP envelope"),
        "{html:?}"
    );
    let doctype = err(200, "<!DOCTYPE x [<!ENTITY a \"b\">]><x/>");
    assert!(
        doctype.message().contains("a DOCTYPE is not accepted"),
        "{doctype:?}"
    );
    let unknown_entity = err(200, &OK.replace("&amp;", "&nbsp;"));
    assert!(
        unknown_entity.message().contains("unknown entity &nbsp;"),
        "{unknown_entity:?}"
    );
    let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
    assert!(err(200, &deep).message().contains("too deep"));
    let truncated = err(200, &OK[..OK.len() - 20]);
    assert!(
        truncated.message().contains("not a SOAP envelope"),
        "{truncated:?}"
    );
}
