//! Every byte of an evidence bundle is verified or refused: a small real bundle, with
//! each of its bytes changed in turn, never verifies, and the verifier never panics.

use super::*;

/// A bundle of one exchange as the provider's server exports it: records, proofs, a
/// witnessed checkpoint, a time-stamp, configurations and certificates.
async fn small_bundle(net: &Network) -> Vec<u8> {
    cari_with_id(net, "bukti-0000").await;
    net.provider.evidence.checkpoint_now().unwrap().unwrap();
    net.provider
        .evidence
        .timestamp_now()
        .await
        .unwrap()
        .unwrap();
    cari_with_id(net, "bukti-0001").await;
    net.provider.evidence.witness_now().await.unwrap();
    let q = lintas_proto::ss::v1::EvidenceQuery {
        message_id: "bukti-0001".into(),
        ..Default::default()
    };
    net.provider
        .evidence
        .export(&q)
        .await
        .unwrap()
        .encode_to_vec()
}

#[tokio::test]
async fn every_byte_of_a_bundle_is_verified_or_refused() {
    let net = network().await;
    let bytes = small_bundle(&net).await;
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    let whole = lintas_audit::verify_bytes(&bytes, &anchor);
    assert!(whole.verified, "{:#?}", whole.failures);
    assert!(whole.checkpoint.as_ref().unwrap().witnessed_by.is_some());

    let bundle = lintas_proto::audit::v1::EvidenceBundle::decode(bytes.as_slice()).unwrap();
    assert!(!bundle.timestamps.is_empty() && !bundle.certificates.is_empty());

    // What is added, not changed: each is refused and says why.
    let refused = |changed: &lintas_proto::audit::v1::EvidenceBundle, says: &str| {
        let r = lintas_audit::verify_bytes(&changed.encode_to_vec(), &anchor);
        assert!(
            !r.verified && r.failures.iter().any(|f| f.contains(says)),
            "{says}: {:#?}",
            r.failures
        );
    };
    let mut extra_cert = bundle.clone();
    extra_cert
        .certificates
        .push(lintas_certs::files::read_cert(&net.consumer_paths.tls_cert()).unwrap());
    refused(&extra_cert, "named by none of its records");
    let mut twice = bundle.clone();
    twice.global_confs.push(twice.global_confs[0].clone());
    refused(&twice, "repeats serial");
    let mut dated = bundle.clone();
    dated.exported_unix_ms = 1;
    refused(&dated, "export time");
    let mut unknown = bytes.clone();
    unknown.extend_from_slice(&[0xF8, 0x07, 0x01]);
    let r = lintas_audit::verify_bytes(&unknown, &anchor);
    assert!(
        r.failures[0].contains("not an evidence bundle"),
        "{:?}",
        r.failures
    );

    let started = std::time::Instant::now();
    let mut accepted = Vec::new();
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0xFF] {
            let mut changed = bytes.clone();
            changed[at] ^= flip;
            if lintas_audit::verify_bytes(&changed, &anchor).verified {
                accepted.push((at, flip));
            }
        }
    }
    println!(
        "{} bytes, each changed two ways, verified in {:?}",
        bytes.len(),
        started.elapsed()
    );
    assert!(
        accepted.is_empty(),
        "{} changed bundles verified, at (offset, xor): {:?}",
        accepted.len(),
        &accepted[..accepted.len().min(40)]
    );
}
