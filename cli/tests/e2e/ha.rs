//! High availability and scale: the configuration served to many pollers (ETag, 304,
//! gzip), and a provider subsystem on two security servers with failover.

use super::adapters::http;
use super::ops::{ops_get, sample};
use super::*;

#[tokio::test]
async fn pollers_get_304_for_the_configuration_they_hold_and_gzip_otherwise() {
    let inst = Instance::start().await;
    let http_addr = inst.config.http_listen.to_string();
    let signed = pb::registration_client::RegistrationClient::new(inst.channel(None))
        .get_global_conf(pb::GetGlobalConfRequest {})
        .await
        .unwrap()
        .into_inner();
    let blob = prost::Message::encode_to_vec(&signed);
    let etag = format!("\"{}\"", lintas_certs::hex(&lintas_certs::sha256(&blob)));

    // The tag is the document's SHA-256; holding it gets a 304 with no body.
    let (status, headers, _) = http(&http_addr, "HEAD", "/globalconf", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("etag"), Some(&etag));
    assert_eq!(
        headers.get("vary").map(String::as_str),
        Some("Accept-Encoding")
    );
    for held in [etag.as_str(), &format!("\"stale\", W/{etag}")] {
        let (status, headers, body) = http(
            &http_addr,
            "GET",
            "/globalconf",
            &[("If-None-Match", held)],
            "",
        )
        .await;
        assert_eq!(status, 304, "{held}");
        assert_eq!(headers.get("etag"), Some(&etag));
        assert!(body.is_empty());
    }
    let (status, headers, _) = http(
        &http_addr,
        "HEAD",
        "/globalconf",
        &[("If-None-Match", "\"stale\""), ("Accept-Encoding", "gzip")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-encoding").map(String::as_str),
        Some("gzip")
    );

    // The configuration client asks for gzip, then names what it holds.
    let anchor = lintas_globalconf::Anchor::load(&inst.anchor()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client =
        lintas_globalconf::ConfClient::open(anchor, dir.path(), inst.clock.clone()).unwrap();
    let first = client.fetch().await.unwrap();
    assert_eq!(first.blob, blob);
    let again = client.fetch().await.unwrap();
    assert_eq!(again.serial(), first.serial());
    let (_, _, metrics) = ops_get(&inst.ops, "/metrics").await;
    let fetches = |answer: &str| {
        sample(
            &metrics,
            &format!("lintas_globalconf_fetches_total{{answer=\"{answer}\"}}"),
        )
        .unwrap_or(0.0)
    };
    // Two HEADs and one GET with the tag above; the client's two fetches.
    assert_eq!(fetches("gzip"), 2.0, "{metrics}");
    assert_eq!(fetches("not_modified"), 3.0, "{metrics}");
    assert_eq!(fetches("full"), 1.0, "{metrics}");
}
