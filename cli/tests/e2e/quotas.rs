//! Quotas: set by the provider's administrator, enforced by its server as token buckets
//! per client, answered with RESOURCE_EXHAUSTED and a retry-after (HTTP 429 with
//! Retry-After through the REST entry), published in the catalogue and counted in the
//! metrics.

use axum::body::Bytes;
use lintas_proto::discovery::v1 as discovery_pb;
use lintas_proto::discovery::v1::discovery_client::DiscoveryClient;
use lintas_proto::ss::v1 as admin_pb;
use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;

use super::rest_services::curl;
use super::*;

fn quota(method: &str, client: &str, rate: &str) -> admin_pb::Quota {
    admin_pb::Quota {
        provider: PROVIDER_CLIENT.into(),
        service: SERVICE.into(),
        method: method.into(),
        client: client.into(),
        rate: rate.into(),
        burst: 0,
    }
}

async fn set(net: &Network, q: admin_pb::Quota) -> Result<admin_pb::Quota, Status> {
    SecurityServerAdmin::set_quota(&net.provider.admin(), Request::new(q))
        .await
        .map(|r| r.into_inner())
}

/// Publishes the provider's services and quotas, and has the consumer's server fetch
/// the configuration listing them.
async fn publish(net: &Network) {
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_quota_is_refused_until_it_may_call_again() {
    let net = network().await;
    // Bad quotas are refused, naming what is wrong.
    for (bad, code, words) in [
        (
            quota("CariNik", "", "2/fortnight"),
            Code::InvalidArgument,
            "rate",
        ),
        (
            quota("Cari Nik", "", "2/h"),
            Code::InvalidArgument,
            "method",
        ),
        (quota("", "ID/GOV", "2/h"), Code::InvalidArgument, "client"),
        (
            admin_pb::Quota {
                service: "tidak.Ada".into(),
                ..quota("", "", "2/h")
            },
            Code::FailedPrecondition,
            "no service tidak.Ada",
        ),
    ] {
        let e = set(&net, bad).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(words), "{words}: {e:?}");
    }
    // Every client may call CariNik twice an hour.
    let set_every = set(&net, quota("CariNik", "", "2/h")).await.unwrap();
    assert_eq!((set_every.rate.as_str(), set_every.burst), ("2/h", 2));
    publish(&net).await;

    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let refused = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(source(&refused), "provider-server");
    assert!(
        refused.message().contains("over its quota") && refused.message().contains(SERVICE),
        "{refused:?}"
    );
    // The refusal names the limit it hit.
    assert!(
        refused.message().contains("2/h times (burst 2)"),
        "{refused:?}"
    );
    // One call comes back every 30 minutes.
    let retry_after: u64 = refused
        .metadata()
        .get("retry-after")
        .expect("a retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1800).contains(&retry_after), "{retry_after}");

    // The catalogue tells consumers: discovery lists the quotas that hold the caller.
    let mut discovery = DiscoveryClient::new(plain_channel(&net.consumer_url).await.unwrap());
    let mut request = Request::new(discovery_pb::AllowedMethodsRequest {
        provider: PROVIDER_CLIENT.into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    let listed = discovery
        .allowed_methods(request)
        .await
        .unwrap()
        .into_inner();
    let service = listed
        .services
        .iter()
        .find(|s| s.service == SERVICE)
        .unwrap();
    assert_eq!(
        service.quotas,
        vec![discovery_pb::Quota {
            method: "CariNik".into(),
            client: String::new(),
            rate: "2/h".into(),
            burst: 2,
        }]
    );

    // The client's own quota replaces the one for every client: it may call again.
    set(&net, quota("CariNik", CONSUMER_CLIENT, "100/s"))
        .await
        .unwrap();
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    // A quota on the whole service holds too: one call a day (its bucket starts full).
    set(&net, quota("", CONSUMER_CLIENT, "1/day"))
        .await
        .unwrap();
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let refused = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // Counted in the provider's metrics, by client and service.
    let (_, _, text) = super::adapters::http(&net.provider_ops, "GET", "/metrics", &[], "").await;
    let refusals = super::ops::sample(
        &text,
        &format!(
            "lintas_quota_refusals_total{{client=\"{CONSUMER_CLIENT}\",provider=\"{PROVIDER_CLIENT}\",service=\"{SERVICE}\"}}"
        ),
    );
    assert_eq!(refusals, Some(2.0), "{text}");

    // Listed, and removed by their service, method and client.
    let listed =
        SecurityServerAdmin::list_quotas(&net.provider.admin(), Request::new(Default::default()))
            .await
            .unwrap()
            .into_inner()
            .quotas;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let removed = SecurityServerAdmin::remove_quota(
        &net.provider.admin(),
        Request::new(quota("", CONSUMER_CLIENT, "")),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(removed.rate, "1/day");
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let again = SecurityServerAdmin::remove_quota(
        &net.provider.admin(),
        Request::new(quota("", CONSUMER_CLIENT, "")),
    )
    .await
    .unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_client_over_its_quota_gets_429_with_retry_after() {
    let net = network().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_url = format!("http://{}", listener.local_addr().unwrap());
    let (_stop_backend, stop) = stopper();
    let echo = axum::Router::new().route("/echo", axum::routing::post(|b: Bytes| async move { b }));
    tokio::spawn(async move {
        axum::serve(listener, echo)
            .with_graceful_shutdown(stop)
            .await
    });
    let admin = net.provider.admin();
    SecurityServerAdmin::add_service(
        &admin,
        Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: "gema".into(),
            endpoint: backend_url,
            rest: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    SecurityServerAdmin::grant(
        &admin,
        Request::new(admin_pb::Grant {
            provider: PROVIDER_CLIENT.into(),
            service: "gema".into(),
            subject: CONSUMER_CLIENT.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    // One POST a minute for each client; other HTTP methods are not held.
    set(
        &net,
        admin_pb::Quota {
            service: "gema".into(),
            ..quota("POST", "", "1/min")
        },
    )
    .await
    .unwrap();
    publish(&net).await;
    let call = || {
        curl(vec![
            "-H".into(),
            format!("X-Road-Client: {CONSUMER_CLIENT}"),
            "--data-binary".into(),
            "halo".into(),
            format!("{}/r1/{PROVIDER_CLIENT}/gema/echo", net.consumer_url),
        ])
    };
    let (status, _, body) = call().await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"halo");
    let (status, headers, body) = call().await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 429, "{text}");
    assert_eq!(headers["x-road-error"], "Server.ServerProxy.QuotaExceeded");
    let retry_after: u64 = headers["retry-after"].parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(text.contains("over its quota"), "{text}");
}
