//! Idempotency keys: a PNBP payment sent with a key, whose consumer's server is killed
//! while the payment is being made, is retried under the same key once that server is
//! back, and is paid once; the retry gets the first payment's proof.

use lintas_examples::pnbp::v1::pembayaran_client::PembayaranClient;
use lintas_examples::pnbp::v1::{BayarRequest, BuktiBayar, RiwayatRequest};
use lintas_examples::pnbp_kas::{Hold, Kas};

use super::binary::*;
use super::*;

const PNBP: &str = "pnbp.v1.Pembayaran";
const KODE: &str = "820261207000123";

/// Pays through the consumer endpoint at `listen`, with an idempotency key and a
/// message id; answers the proof and the message id the answer repeats, if any.
async fn bayar(
    listen: &str,
    key: &str,
    message_id: &str,
    jumlah: i64,
) -> Result<(BuktiBayar, Option<String>), Status> {
    let channel = plain_channel(&format!("http://{listen}")).await?;
    let mut req = Request::new(BayarRequest {
        kode_billing: KODE.into(),
        jumlah,
        rekening: "1234567890".into(),
    });
    let md = req.metadata_mut();
    md.insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    md.insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    md.insert("lintas-message-id", message_id.parse().unwrap());
    md.insert("lintas-idempotency-key", key.parse().unwrap());
    let answer = PembayaranClient::new(channel).bayar(req).await?;
    let repeats = answer
        .metadata()
        .get("lintas-repeats-message-id")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok((answer.into_inner(), repeats))
}

/// Asks for the payments of the billing code, without a key (the consumer's server's
/// configuration listing the service may take a moment).
async fn riwayat(listen: &str) -> Result<Vec<BuktiBayar>, Status> {
    let channel = plain_channel(&format!("http://{listen}")).await?;
    let mut req = Request::new(RiwayatRequest {
        kode_billing: KODE.into(),
    });
    req.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    req.metadata_mut()
        .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    Ok(PembayaranClient::new(channel)
        .riwayat(req)
        .await?
        .into_inner()
        .pembayaran)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_retried_after_the_consumers_server_was_killed_is_paid_once() {
    let inst = Instance::start().await;
    inst.follow_system_clock();
    let mut servers = binary_pair(&inst).await;
    let hold = Arc::new(Hold::default());
    let kas = Arc::new(Kas::holding(hold.clone()));
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}", app.local_addr().unwrap());
    let (_stop_app, stop) = stopper();
    tokio::spawn(lintas_examples::pnbp_kas::serve(app, kas.clone(), stop));
    let provider = servers[0].config.clone();
    publish_payments(&provider, &app_url);
    let consumer = servers[1].consumer_listen.clone();
    let mut listed = false;
    for _ in 0..100 {
        if riwayat(&consumer).await.is_ok() {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "the consumer's server never listed {PNBP}");

    // The payment reaches the treasury's register, and the consumer's server dies while
    // it is being made.
    let arrived = hold.arrived.notified();
    let first = tokio::spawn({
        let consumer = consumer.clone();
        async move { bayar(&consumer, "bayar-2026-0001", "bayar-1", 150_000).await }
    });
    arrived.await;
    servers[1].daemon.stop_with("-KILL");
    hold.release.add_permits(1);
    // The client sees its connection break (the code depends on its gRPC stack).
    let lost = first.await.unwrap().unwrap_err();
    assert!(
        matches!(lost.code(), Code::Unknown | Code::Unavailable),
        "{lost:?}"
    );
    // The provider's server finished it: one payment.
    let mut paid = Vec::new();
    for _ in 0..100 {
        paid = kas.payments();
        if !paid.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(paid.len(), 1);

    // Back, the client sends the same payment under the same key: the answer is the
    // first payment's proof, and the register is not called again.
    let s = &servers[1];
    servers[1].daemon = serve_child(&s.dir, &s.consumer_listen, &s.peer).0;
    let mut retried = None;
    for attempt in 0..100 {
        match bayar(
            &consumer,
            "bayar-2026-0001",
            &format!("bayar-2-{attempt}"),
            150_000,
        )
        .await
        {
            Ok(answer) => {
                retried = Some(answer);
                break;
            }
            // The restarted server may not take calls yet.
            Err(e) if e.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the retry was refused: {e:?}"),
        }
    }
    let (proof, repeats) = retried.expect("the retry is answered");
    assert_eq!(proof, paid[0]);
    assert_eq!(repeats.as_deref(), Some("bayar-1"));
    assert_eq!(kas.payments().len(), 1, "paid twice");

    // Another payment under the same key is refused, naming the first; the register is
    // still not called.
    let refused = bayar(&consumer, "bayar-2026-0001", "bayar-3", 200_000)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("bayar-1") && refused.message().contains("new key"),
        "{refused:?}"
    );
    // A new key is a new payment.
    hold.release.add_permits(1);
    let (second, repeats) = bayar(&consumer, "bayar-2026-0002", "bayar-4", 200_000)
        .await
        .unwrap();
    assert_eq!(repeats, None);
    assert_ne!(second.ntpn, proof.ntpn);
    assert_eq!(riwayat(&consumer).await.unwrap().len(), 2);

    // Through the REST entry, with the `Idempotency-Key` header, the same holds.
    let path = format!("/r1/{PROVIDER_CLIENT}/{PNBP}/Bayar");
    let pay = |key: &str, id: &str, jumlah: i64| {
        let (consumer, path, key, id) = (
            consumer.clone(),
            path.clone(),
            key.to_owned(),
            id.to_owned(),
        );
        async move {
            super::adapters::http(
                &consumer,
                "POST",
                &path,
                &[
                    ("X-Road-Client", CONSUMER_CLIENT),
                    ("X-Road-Id", &id),
                    ("Idempotency-Key", &key),
                    ("Content-Type", "application/json"),
                ],
                &format!(
                    r#"{{"kode_billing": "{KODE}", "jumlah": {jumlah}, "rekening": "1234567890"}}"#
                ),
            )
            .await
        }
    };
    hold.release.add_permits(1);
    let (status, headers, paid_once) = pay("rest-2026-0001", "rest-bayar-1", 300_000).await;
    assert_eq!(status, 200, "{paid_once}");
    assert!(!headers.contains_key("lintas-repeats-message-id"));
    let (status, headers, again) = pay("rest-2026-0001", "rest-bayar-2", 300_000).await;
    assert_eq!((status, &again), (200, &paid_once));
    assert_eq!(headers["lintas-repeats-message-id"], "rest-bayar-1");
    let (status, headers, refused) = pay("rest-2026-0001", "rest-bayar-3", 1).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        headers["x-road-error"],
        "Server.ServerProxy.IdempotencyKeyReused"
    );
    assert!(refused.contains("rest-bayar-1"), "{refused}");
    let (status, _, bad) = pay("kunci buruk", "rest-bayar-4", 1).await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad.contains("Idempotency-Key must be printable ASCII"),
        "{bad}"
    );
    assert_eq!(riwayat(&consumer).await.unwrap().len(), 3, "paid once");

    // Both logs hold the first payment's exchange and the retry's, and verify.
    let anchor = lintas_globalconf::Anchor::load(&inst.anchor()).unwrap();
    let out = servers[0].dir.join("payment.evidence");
    run(lintas_cmd(&[
        "audit",
        "export",
        "--client",
        CONSUMER_CLIENT,
        "--config",
        &provider,
    ])
    .arg("--out")
    .arg(&out));
    let bundle =
        lintas_proto::audit::v1::EvidenceBundle::decode(std::fs::read(&out).unwrap().as_slice())
            .unwrap();
    let report = lintas_audit::verify(&bundle, &anchor);
    assert!(report.verified, "{:#?}", report.failures);
    let exchange = |id: &str| {
        report
            .exchanges
            .iter()
            .find(|x| x.message_id == id)
            .unwrap_or_else(|| panic!("{id} is not in the provider's log"))
    };
    let first = exchange("bayar-1");
    assert_eq!(first.idempotency_key.as_deref(), Some("bayar-2026-0001"));
    assert!(first.response.is_some() && first.repeats.is_none());
    let retry = report
        .exchanges
        .iter()
        .find(|x| x.message_id.starts_with("bayar-2-") && x.response.is_some())
        .expect("the retry's answer is in the provider's log");
    assert_eq!(retry.repeats.as_deref(), Some("bayar-1"));
    assert_eq!(
        retry.response.as_ref().unwrap().body_sha256,
        first.response.as_ref().unwrap().body_sha256,
        "the retry's answer is the first's"
    );
    assert!(
        report
            .proven
            .iter()
            .any(|p| p.contains("its answer to exchange bayar-1")
                && p.contains("without calling the application again")),
        "{:#?}",
        report.proven
    );
    assert!(exchange("bayar-4").repeats.is_none());

    // The consumer's receipts: the first payment's answer never reached its server (it
    // was killed), the retry's did, and names the first.
    let consumer_config = servers[1].config.clone();
    let no_receipt = lintas_cmd(&["audit", "receipt", "bayar-1", "--config", &consumer_config])
        .arg("--out")
        .arg(servers[1].dir.join("none.receipt"))
        .output()
        .unwrap();
    assert!(!no_receipt.status.success());
    let said = String::from_utf8_lossy(&no_receipt.stderr);
    assert!(
        said.contains("no signed answer to exchange bayar-1"),
        "{said}"
    );
    let receipt = servers[1].dir.join("payment.receipt");
    let written = run(lintas_cmd(&[
        "audit",
        "receipt",
        &retry.message_id,
        "--config",
        &consumer_config,
    ])
    .arg("--out")
    .arg(&receipt));
    assert!(written.contains("answered with Ok"), "{written}");
    let verified = run(lintas_cmd(&["audit", "verify"])
        .arg(&receipt)
        .arg("--anchor")
        .arg(inst.anchor()));
    assert!(
        verified.contains("its answer to exchange bayar-1")
            && verified.contains(&format!("{PROVIDER_CLIENT} answered that request with Ok")),
        "{verified}"
    );
    // One changed byte and the receipt no longer verifies.
    let mut bytes = std::fs::read(&receipt).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&receipt, &bytes).unwrap();
    let damaged = lintas_cmd(&["audit", "verify"])
        .arg(&receipt)
        .arg("--anchor")
        .arg(inst.anchor())
        .output()
        .unwrap();
    assert!(!damaged.status.success(), "{damaged:?}");
}

/// Publishes the payment service at `app_url` on the server of `config`, granted to the
/// consumer's client.
fn publish_payments(config: &str, app_url: &str) {
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/proto/pnbp/v1/pembayaran.proto");
    run(lintas_cmd(&[
        "ss",
        "service",
        "add",
        PROVIDER_CLIENT,
        PNBP,
        "--endpoint",
        app_url,
    ])
    .arg("--proto")
    .arg(&proto)
    .args(["--config", config]));
    run(&mut lintas_cmd(&[
        "ss",
        "acl",
        "grant",
        PROVIDER_CLIENT,
        PNBP,
        CONSUMER_CLIENT,
        "--config",
        config,
    ]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_of_a_keyed_payment_reach_the_one_of_two_servers_that_keeps_the_key() {
    use super::ha::PROVIDER2;
    let inst = Instance::start().await;
    inst.follow_system_clock();
    let env: [(&str, &std::ffi::OsStr); 1] = [("LINTAS_SS_CONF_POLL_SECS", "5".as_ref())];
    let servers = binary_servers_env(
        &inst,
        &[
            (PROVIDER, PROVIDER_CLIENT),
            (PROVIDER2, PROVIDER_CLIENT),
            (CONSUMER, CONSUMER_CLIENT),
        ],
        &env,
    )
    .await;
    // One treasury application behind both of its security servers.
    let kas = Arc::new(Kas::default());
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}", app.local_addr().unwrap());
    let (_stop_app, stop) = stopper();
    tokio::spawn(lintas_examples::pnbp_kas::serve(app, kas.clone(), stop));
    for s in &servers[..2] {
        publish_payments(&s.config, &app_url);
    }
    let consumer = servers[2].consumer_listen.clone();
    // The consumer's server holds a configuration whose catalogue lists the service on
    // both servers (before, the servers it may go to change as they come to list it).
    let anchor = lintas_globalconf::Anchor::load(&inst.anchor()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let registry =
        lintas_globalconf::ConfClient::open(anchor, cache.path(), inst.clock.clone()).unwrap();
    let mut both = None;
    for _ in 0..300 {
        let conf = registry.fetch().await.unwrap();
        if conf
            .conf
            .services
            .iter()
            .filter(|r| r.service == PNBP)
            .count()
            == 2
        {
            both = Some(conf.serial());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let both = both.expect("the catalogue never listed the service on both servers");
    let mut held = false;
    for _ in 0..300 {
        let (_, _, text) = super::ops::ops_get(&servers[2].ops, "/metrics").await;
        if super::ops::sample(&text, "lintas_globalconf_serial").unwrap_or(0.0) >= both as f64 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        held,
        "the consumer's server never fetched configuration {both}"
    );

    // Sent again and again under one key (each time with a message id of its own), the
    // payment is made once: every repeat reaches the server that keeps the key. (Were
    // they spread over both servers, each would keep the key on its own and pay.)
    let (first, repeats) = bayar(&consumer, "bayar-ha-0001", "ha-0", 75_000)
        .await
        .unwrap();
    assert_eq!(repeats, None);
    for n in 1..10 {
        let (again, repeats) = bayar(&consumer, "bayar-ha-0001", &format!("ha-{n}"), 75_000)
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(repeats.as_deref(), Some("ha-0"), "repeat {n}");
    }
    assert_eq!(kas.payments().len(), 1, "paid more than once");
    // Other keys spread over both servers.
    let records = || async {
        (
            super::ha::log_records(&servers[0].ops).await,
            super::ha::log_records(&servers[1].ops).await,
        )
    };
    let before = records().await;
    for n in 0..16 {
        bayar(
            &consumer,
            &format!("bayar-ha-1{n:03}"),
            &format!("hb-{n}"),
            1_000,
        )
        .await
        .unwrap();
    }
    let after = records().await;
    assert_eq!(kas.payments().len(), 17);
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "keyed calls all went to one server: {before:?} -> {after:?}"
    );
}
