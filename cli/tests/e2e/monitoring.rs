//! Following exchanges: W3C trace context across the bus, operational monitoring
//! records, and spans for an OTLP collector.

use super::adapters::http;
use super::ops::{publish_described, sample};
use super::*;

/// A population registry that remembers the trace context each call arrived with.
type Seen = Arc<std::sync::Mutex<Vec<(String, String)>>>;

struct TraceApp {
    seen: Seen,
}

#[tonic::async_trait]
impl lintas_examples::kependudukan::v1::penduduk_server::Penduduk for TraceApp {
    async fn cari_nik(
        &self,
        request: Request<CariNikRequest>,
    ) -> Result<tonic::Response<DataPenduduk>, Status> {
        let md = request.metadata();
        let get = |k| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        self.seen
            .lock()
            .unwrap()
            .push((get("traceparent"), get("tracestate")));
        Ok(tonic::Response::new(DataPenduduk {
            nik: request.into_inner().nik,
            nama: "Traced".into(),
            ..Default::default()
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_the_provider_application_and_both_logs() {
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let net = network().await;
    let seen = Seen::default();
    let app = TraceApp { seen: seen.clone() };
    let (endpoint, _stop_app) = serve_population_app(app).await;
    // Published with its descriptors, so the REST entry can call it too.
    publish_described(&net, endpoint).await;

    let trace_ids = |id: &str| -> Vec<String> {
        [&net.consumer, &net.provider]
            .iter()
            .flat_map(|s| Network::records(s))
            .filter(|r| r.message_id == id)
            .map(|r| r.trace_id)
            .collect()
    };
    let grpc = |traceparent: Option<&'static str>, id: &'static str| {
        let url = net.consumer_url.clone();
        async move {
            let mut req = Request::new(CariNikRequest { nik: NIK.into() });
            let md = req.metadata_mut();
            md.insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
            md.insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
            md.insert("lintas-message-id", id.parse().unwrap());
            if let Some(t) = traceparent {
                md.insert("traceparent", t.parse().unwrap());
                md.insert("tracestate", "lintas=test,other=1".parse().unwrap());
            }
            PendudukClient::new(plain_channel(&url).await.unwrap())
                .cari_nik(req)
                .await
                .unwrap()
        }
    };

    // The application's own trace context arrives unchanged and names both records.
    let answer = grpc(Some(PARENT), "traced-1").await;
    assert_eq!(answer.metadata().get("traceparent").unwrap(), PARENT);
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        &(PARENT.to_owned(), "lintas=test,other=1".to_owned())
    );
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(trace_ids("traced-1"), vec![id; 4]);

    // Without one, the consumer's server starts one, which the caller is told.
    let answer = grpc(None, "traced-2").await;
    let started = answer
        .metadata()
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let started_id = lintas_ss::trace::trace_id_of(&started)
        .expect("a valid traceparent")
        .to_owned();
    assert_ne!(started_id, id);
    assert_eq!(seen.lock().unwrap().last().unwrap().0, started);
    assert_eq!(trace_ids("traced-2"), vec![started_id; 4]);

    // The REST entry takes it from the HTTP header.
    let address = net.consumer_url.trim_start_matches("http://").to_owned();
    let (status, headers, body) = http(
        &address,
        "POST",
        &format!("/r1/{PROVIDER_CLIENT}/{SERVICE}/CariNik"),
        &[
            ("X-Road-Client", CONSUMER_CLIENT),
            ("X-Road-Id", "traced-3"),
            ("traceparent", PARENT),
            ("Content-Type", "application/json"),
        ],
        &format!(r#"{{"nik": "{NIK}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["traceparent"], PARENT);
    assert_eq!(seen.lock().unwrap().last().unwrap().0, PARENT);
    assert_eq!(trace_ids("traced-3"), vec![id; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exchange_has_an_operational_record_that_the_owner_can_query() {
    use lintas_proto::opmon::v1 as om;
    use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
    let net = network().await;
    let started = lintas_ss::daemon::now_ms(&*net.inst.clock);
    // One answered call with a user id, one refused (no grant for this client).
    let mut req = Request::new(CariNikRequest { nik: NIK.into() });
    let md = req.metadata_mut();
    md.insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    md.insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    md.insert("lintas-message-id", "opmon-1".parse().unwrap());
    md.insert("lintas-user-id", "ID3174012305870001".parse().unwrap());
    PendudukClient::new(plain_channel(&net.consumer_url).await.unwrap())
        .cari_nik(req)
        .await
        .unwrap();
    net.cari(OTHER_CLIENT, NIK).await.unwrap_err();

    // Records are written by a task of their own: two exchanges, two records each side.
    for server in [&net.consumer, &net.provider] {
        tokio::time::timeout(Duration::from_secs(10), server.opmon().written(2))
            .await
            .expect("monitoring records are written");
    }
    let query = |server: &Arc<lintas_ss::daemon::SecurityServer>, q: om::OpQuery| {
        let admin = server.admin();
        async move {
            admin
                .operational_data(Request::new(q))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let all = om::OpQuery {
        from_unix_ms: started - 1000,
        ..Default::default()
    };
    for (server, side) in [(&net.consumer, "consumer"), (&net.provider, "provider")] {
        let page = query(server, all.clone()).await;
        let ok = page
            .records
            .iter()
            .find(|r| r.message_id == "opmon-1")
            .unwrap_or_else(|| panic!("{side}: {page:?}"));
        assert_eq!(ok.side, side);
        assert_eq!(ok.client, CONSUMER_CLIENT);
        assert_eq!(ok.provider, PROVIDER_CLIENT);
        assert_eq!(
            (ok.service.as_str(), ok.method.as_str()),
            (SERVICE, "CariNik")
        );
        assert_eq!(ok.code, "Ok");
        assert_eq!(ok.trace_id.len(), 32);
        assert!(ok.request_bytes > 0 && ok.response_bytes > 0, "{ok:?}");
        // Never the id itself: a keyed hash of it.
        assert!(ok.user_id.starts_with("hmac:"), "{ok:?}");
        assert!(!format!("{page:?}").contains("ID3174012305870001"));
        assert!(
            ok.total_us > 0 && ok.signing_us > 0 && ok.durable_us > 0,
            "{ok:?}"
        );
        if side == "consumer" {
            assert!(ok.peer_us > 0 && ok.peer_server == PROVIDER, "{ok:?}");
        } else {
            assert!(ok.app_us > 0 && ok.peer_server == CONSUMER, "{ok:?}");
        }
        let refused = page
            .records
            .iter()
            .find(|r| r.client == OTHER_CLIENT)
            .unwrap_or_else(|| panic!("{side}: {page:?}"));
        assert_eq!(refused.code, "PermissionDenied");
        assert_eq!(refused.error_source, "provider-server");
        // What the provider's server refused stays a claim there.
        assert_eq!(refused.unverified, side == "provider", "{refused:?}");
        assert!(!ok.unverified);
    }
    // Refused requests count under `unverified` labels, not the names they claimed.
    let (_, _, metrics) = http(&net.provider_ops, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("lintas_exchanges_total{side=\"provider\",client=\"unverified\",provider=\"unverified\",service=\"unverified\",method=\"\",code=\"PermissionDenied\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&format!("client=\"{OTHER_CLIENT}\"")),
        "{metrics}"
    );
    // Filters.
    let only = query(
        &net.provider,
        om::OpQuery {
            client: OTHER_CLIENT.into(),
            ..all.clone()
        },
    )
    .await;
    assert!(only.records.iter().all(|r| r.client == OTHER_CLIENT));
    let later = lintas_ss::daemon::now_ms(&*net.inst.clock) + 60_000;
    let none = net
        .provider
        .admin()
        .operational_data(Request::new(om::OpQuery {
            from_unix_ms: later,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(none.records.is_empty());

    // Through the bus: the owner's own subsystem, once granted, reads the server's
    // records; another member's subsystem never can.
    let call = |url: String, client: &'static str| async move {
        let mut req = Request::new(om::OpQuery {
            from_unix_ms: started - 1000,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("lintas-client", client.parse().unwrap());
        req.metadata_mut()
            .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
        om::operational_data_client::OperationalDataClient::new(plain_channel(&url).await.unwrap())
            .query(req)
            .await
    };
    let foreign = call(net.consumer_url.clone(), CONSUMER_CLIENT)
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied, "{foreign:?}");
    assert!(
        foreign.message().contains("only subsystems of"),
        "{foreign:?}"
    );
    let ungranted = call(net.provider_url.clone(), PROVIDER_CLIENT)
        .await
        .unwrap_err();
    assert_eq!(ungranted.code(), Code::PermissionDenied, "{ungranted:?}");
    net.provider
        .access
        .grant(Grant {
            provider: PROVIDER_CLIENT.parse().unwrap(),
            service: lintas_ss::opmon::SERVICE.parse().unwrap(),
            method: None,
            subject: Subject::Client(ClientId::Subsystem(PROVIDER_CLIENT.parse().unwrap())),
            path: None,
        })
        .unwrap();
    let page = call(net.provider_url.clone(), PROVIDER_CLIENT)
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.records.iter().any(|r| r.message_id == "opmon-1"),
        "{page:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_an_otlp_collector_when_one_is_configured() {
    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    // The collector's side of OTLP/HTTP: JSON bodies POSTed to /v1/traces.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let collector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or_default());
                "{}"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(collector, app).await });
    let net = network_edited(true, |c| c.otlp_endpoint = endpoint.clone()).await;

    let mut req = Request::new(CariNikRequest { nik: NIK.into() });
    let md = req.metadata_mut();
    md.insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    md.insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    md.insert("traceparent", PARENT.parse().unwrap());
    PendudukClient::new(plain_channel(&net.consumer_url).await.unwrap())
        .cari_nik(req)
        .await
        .unwrap();

    // One span from each server, both children of the caller's span.
    let mut spans = std::collections::BTreeMap::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while spans.len() < 2 {
            let body = rx.recv().await.unwrap();
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                let server = rs["resource"]["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["key"] == "lintas.server")
                    .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
                    .unwrap();
                for span in rs["scopeSpans"][0]["spans"].as_array().unwrap() {
                    spans.insert(server.clone(), span.clone());
                }
            }
        }
    })
    .await
    .expect("both servers export their span");
    for (server, kind) in [(CONSUMER, 3), (PROVIDER, 2)] {
        let span = &spans[server];
        assert_eq!(
            span["traceId"], "0af7651916cd43dd8448eb211c80319c",
            "{span}"
        );
        assert_eq!(span["parentSpanId"], "b7ad6b7169203331");
        assert_eq!(span["kind"], kind);
        assert!(
            span["name"].as_str().unwrap().ends_with("CariNik"),
            "{span}"
        );
        assert_eq!(span["status"]["code"], 1);
        assert!(
            span["attributes"].as_array().unwrap().iter().any(
                |a| a["key"] == "lintas.client" && a["value"]["stringValue"] == CONSUMER_CLIENT
            ),
            "{span}"
        );
    }
    let (_, _, text) = http(&net.consumer_ops, "GET", "/metrics", &[], "").await;
    // Counted once the collector has answered, which may be a moment after it received.
    assert!(
        sample(&text, "lintas_otlp_spans_exported_total").is_some(),
        "{text}"
    );
}
