//! The metaservices of the REST entry: `listClients` (X-Road's `clientList` XML, or
//! JSON), and the services a client may call with their methods or, for a REST service,
//! the endpoints of its grants.

use super::*;

fn identifier_json(id: &ClientId) -> Value {
    let (member, subsystem): (&MemberId, Option<&str>) = match id {
        ClientId::Member(m) => (m, None),
        ClientId::Subsystem(s) => (&s.member, Some(s.subsystem.as_str())),
    };
    let mut v = json!({
        "object_type": if subsystem.is_some() { "SUBSYSTEM" } else { "MEMBER" },
        "xroad_instance": member.instance.as_str(),
        "member_class": member.class.as_str(),
        "member_code": member.member.as_str(),
    });
    if let Some(code) = subsystem {
        v["subsystem_code"] = json!(code);
    }
    v
}

/// `GET /listClients[?xRoadInstance=ID]`: XML unless `Accept` names
/// `application/json`, as X-Road's security server answers.
pub(super) async fn list_clients(State(s): State<Arc<Rest>>, req: Request) -> Response {
    let (remote, peer_cert) = caller(req.extensions());
    let json = accepts(req.headers(), &["application/json"]);
    let instance = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("xRoadInstance="))
            .map(str::to_owned)
    });
    let outcome = async {
        s.consumer
            .local
            .authenticate_connection(remote, peer_cert)
            .map_err(|st| Failure::from_status(&st, ""))?;
        let conf = s
            .catalogue
            .discovery_conf()
            .await
            .map_err(|st| Failure::from_status(&st, ""))?;
        let mut clients = crate::catalogue::clients(&conf);
        // One instance per configuration: another one has no clients here.
        if instance.is_some_and(|i| i != conf.conf.instance) {
            clients.clear();
        }
        Ok::<_, Failure>(clients)
    }
    .await;
    match outcome {
        Ok(clients) if json => {
            let members: Vec<Value> = clients
                .iter()
                .map(|(id, name)| json!({"id": identifier_json(id), "name": name}))
                .collect();
            let mut r = json_response(StatusCode::OK, &json!({ "member": members }));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
        Ok(clients) => {
            let mut r = Response::new(Body::from(client_list_xml(&clients)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/xml; charset=UTF-8"),
            );
            r
        }
        Err(f) => f.into_response(!json),
    }
}

/// X-Road's `clientList` document (namespaces of its `xroad.xsd` and `identifiers`).
fn client_list_xml(clients: &[(ClientId, String)]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ns2:clientList xmlns:ns1=\"http://x-road.eu/xsd/identifiers\" xmlns:ns2=\"http://x-road.eu/xsd/xroad.xsd\">",
    );
    for (id, name) in clients {
        let (member, subsystem) = match id {
            ClientId::Member(m) => (m, None),
            ClientId::Subsystem(s) => (&s.member, Some(s.subsystem.as_str())),
        };
        out.push_str(&format!(
            "<ns2:member><ns2:id ns1:objectType=\"{}\"><ns1:xRoadInstance>{}</ns1:xRoadInstance><ns1:memberClass>{}</ns1:memberClass><ns1:memberCode>{}</ns1:memberCode>",
            if subsystem.is_some() { "SUBSYSTEM" } else { "MEMBER" },
            xml_text(member.instance.as_str()),
            xml_text(member.class.as_str()),
            xml_text(member.member.as_str()),
        ));
        if let Some(code) = subsystem {
            out.push_str(&format!(
                "<ns1:subsystemCode>{}</ns1:subsystemCode>",
                xml_text(code)
            ));
        }
        out.push_str(&format!(
            "</ns2:id><ns2:name>{}</ns2:name></ns2:member>",
            xml_text(name)
        ));
    }
    out.push_str("</ns2:clientList>");
    out
}

/// A service as the metaservices list it: a gRPC service with its methods, a REST
/// service with the endpoints (method and path pattern) of its grants, as X-Road lists
/// a REST service's endpoints.
pub(super) fn service_json(
    conf: &lintas_globalconf::VerifiedConf,
    d: &Described,
    methods: Vec<String>,
    client: Option<&ClientId>,
) -> Value {
    let mut v = match d.entry.provider.parse::<SubsystemId>() {
        Ok(p) => identifier_json(&ClientId::Subsystem(p)),
        Err(_) => json!({}),
    };
    v["object_type"] = json!("SERVICE");
    v["service_code"] = json!(d.entry.service);
    if d.entry.rest {
        // As X-Road names a REST service added with its OpenAPI document.
        let kind = if d.entry.openapi_sha256.is_empty() {
            "REST"
        } else {
            "OPENAPI"
        };
        v["service_type"] = json!(kind);
        let endpoints: Vec<Value> = crate::catalogue::rest_endpoints(conf, &d.entry, client)
            .into_iter()
            .map(|(method, path)| json!({"method": method, "path": path}))
            .collect();
        v["endpoint_list"] = json!(endpoints);
    } else {
        v["service_type"] = json!("GRPC");
        v["methods"] = json!(methods);
    }
    v
}

/// The services (of one provider, or all) with the methods `client` may call; those it
/// may call none of are left out.
pub(super) async fn allowed(
    s: &Rest,
    client: &ClientId,
    provider: Option<&SubsystemId>,
) -> Result<Value, Failure> {
    let conf = s
        .catalogue
        .discovery_conf()
        .await
        .map_err(|st| Failure::from_status(&st, ""))?;
    let services = s.catalogue.list(&conf, provider, Some(client)).await;
    let list: Vec<Value> = services
        .iter()
        .filter_map(|d| {
            allowed_methods(&conf, d, client).map(|m| service_json(&conf, d, m, Some(client)))
        })
        .collect();
    Ok(json!({ "service": list }))
}

pub(super) async fn all_allowed(State(s): State<Arc<Rest>>, req: Request) -> Response {
    let (remote, peer_cert) = caller(req.extensions());
    let xml = wants_xml(req.headers());
    let outcome = match client(&s, req.headers(), remote, peer_cert) {
        Ok(client) => allowed(&s, &client, None).await,
        Err(f) => Err(f),
    };
    match outcome {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(f) => f.into_response(xml),
    }
}
