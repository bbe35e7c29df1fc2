//! A REST backend published from its OpenAPI document: gRPC consumers find it by
//! reflection and call it, and getOpenAPI answers the document.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_backend_published_from_its_openapi_document_is_called_over_grpc_too() {
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage};
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    const CODE: &str = "dukcapil.Kependudukan";

    let net = network().await;
    let legacy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let legacy_url = format!("http://{}", legacy.local_addr().unwrap());
    let (_stop_legacy, stop) = stopper();
    tokio::spawn(lintas_examples::dukcapil_rest::serve(legacy, stop));
    // Published with its OpenAPI document, no .proto: the methods are generated.
    let said = net
        .provider
        .admin()
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: CODE.into(),
            endpoint: format!("{legacy_url}/api/v1"),
            rest: true,
            openapi: include_bytes!("../../../../examples/openapi/dukcapil.yaml").to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert!(said.described, "{said:?}");
    assert_eq!(
        said.methods,
        ["CariPenduduk", "AmbilPenduduk", "AmbilKartuKeluarga"]
    );
    // Or fetched from the backend, which serves it.
    let fetched = net
        .provider
        .admin()
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: "dukcapil.Salinan".into(),
            endpoint: format!("{legacy_url}/api/v1"),
            rest: true,
            openapi_path: "/openapi.yaml".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert!(
        fetched.methods.contains(&"CariPenduduk".to_owned()),
        "{fetched:?}"
    );
    let missing = net
        .provider
        .admin()
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: "dukcapil.Hilang".into(),
            endpoint: format!("{legacy_url}/api/v1"),
            rest: true,
            openapi_path: "/tidak-ada.yaml".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(missing.message().contains("HTTP 404"), "{missing:?}");
    // A document that cannot be read is refused, saying why.
    let refused = net
        .provider
        .admin()
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: "rusak".into(),
            endpoint: legacy_url.clone(),
            rest: true,
            openapi: b"swagger: '2.0'".to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(refused.message().contains("OpenAPI 3.0"), "{refused:?}");
    // Access by HTTP method and path, as for any REST service: not the family card.
    grant_rest(&net, CODE, CONSUMER_CLIENT, "GET", "/penduduk").await;
    grant_rest(&net, CODE, CONSUMER_CLIENT, "GET", "/penduduk/*").await;
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();

    // A gRPC client learns the service by reflection, as grpcurl does, and calls it.
    let channel = plain_channel(&net.consumer_url).await.unwrap();
    assert!(
        reflected_services(channel.clone(), CONSUMER_CLIENT)
            .await
            .contains(&CODE.to_owned())
    );
    let answer = reflect(
        channel.clone(),
        CONSUMER_CLIENT,
        MessageRequest::FileContainingSymbol(CODE.into()),
    )
    .await;
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("{answer:?}")
    };
    let set = prost_types::FileDescriptorSet {
        file: files
            .file_descriptor_proto
            .iter()
            .map(|f| prost_types::FileDescriptorProto::decode(f.as_slice()).unwrap())
            .collect(),
    };
    let pool = DescriptorPool::from_file_descriptor_set(set).unwrap();
    let service = pool.get_service_by_name(CODE).unwrap();
    let call = |method: &'static str, request: serde_json::Value| {
        let m = service.methods().find(|m| m.name() == method).unwrap();
        let body = DynamicMessage::deserialize(m.input(), request)
            .unwrap()
            .encode_to_vec();
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.unwrap();
            let mut r = Request::new(Bytes::from(body));
            r.metadata_mut()
                .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
            r.metadata_mut()
                .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
            let path = format!("/{CODE}/{method}").parse().unwrap();
            grpc.unary(r, path, lintas_transport::RawCodec)
                .await
                .map(|answer| DynamicMessage::decode(m.output(), answer.into_inner()).unwrap())
        }
    };
    let nama = |answer: &DynamicMessage| {
        let data = answer.get_field_by_name("data").unwrap();
        let nama = data
            .as_message()
            .unwrap()
            .get_field_by_name("nama")
            .unwrap();
        nama.as_str().unwrap().to_owned()
    };
    let by_query = call("CariPenduduk", json!({"nik": NIK})).await.unwrap();
    assert_eq!(nama(&by_query), "Siti Rahayu");
    let by_path = call("AmbilPenduduk", json!({"nik": NIK})).await.unwrap();
    assert_eq!(nama(&by_path), "Siti Rahayu");
    // The backend's HTTP errors are gRPC statuses, its message passed on.
    let missing = call("AmbilPenduduk", json!({"nik": "3174000000000000"}))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    assert!(missing.message().contains("tidak ditemukan"), "{missing:?}");
    let denied = call("AmbilKartuKeluarga", json!({"no_kk": "3174010101090001"}))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // The same backend through the REST entry, and both logs hold the REST request the
    // gRPC call became.
    let (status, _, body) = curl(vec![
        "-H".into(),
        format!("X-Road-Client: {CONSUMER_CLIENT}"),
        format!(
            "{}/r1/{PROVIDER_CLIENT}/{CODE}/penduduk?nik={NIK}",
            net.consumer_url
        ),
    ])
    .await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["data"]["nama"], "Siti Rahayu");
    // getOpenAPI answers the document the provider published, byte for byte.
    let (status, headers, body) = curl(vec![
        "-H".into(),
        format!("X-Road-Client: {CONSUMER_CLIENT}"),
        format!(
            "{}/r1/{PROVIDER_CLIENT}/getOpenAPI?serviceCode={CODE}",
            net.consumer_url
        ),
    ])
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "text/yaml");
    assert_eq!(
        body,
        include_bytes!("../../../../examples/openapi/dukcapil.yaml")
    );
    let logged = Network::records(&net.provider)
        .iter()
        .filter(|r| r.kind() == RecordKind::RequestReceived && r.method == format!("/{CODE}/GET"))
        .count();
    assert_eq!(
        logged, 4,
        "three gRPC calls that reached the provider and one REST call"
    );
}
