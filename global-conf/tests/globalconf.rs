//! The configuration client refuses every bad document and survives a registry outage.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lintas_certs::ca::Validity;
use lintas_certs::{Ca, KeyPair, Profile, keys};
use lintas_globalconf::{Anchor, ConfClient, ConfError, ManualClock, sign};
use lintas_proto::globalconf::v1::{GlobalConf, Member, SignedGlobalConf};
use prost::Message;

const YEAR: Duration = Duration::from_secs(365 * 86400);

struct Fixture {
    anchor: Anchor,
    key: KeyPair,
    cert: Vec<u8>,
    ca: Ca,
    clock: Arc<ManualClock>,
}

fn fixture() -> Fixture {
    fixture_with_signer_validity(YEAR)
}

fn fixture_with_signer_validity(signer_validity: Duration) -> Fixture {
    let now = SystemTime::now();
    let instance = "ID".parse().unwrap();
    let ca = Ca::create(&instance, Validity::starting(now, 10 * YEAR).unwrap()).unwrap();
    let key = keys::generate().unwrap();
    let cert = ca
        .issue_for_key(
            &key,
            &Profile::GlobalConf {
                instance: instance.clone(),
            },
            Validity::starting(now, signer_validity).unwrap(),
        )
        .unwrap();
    let anchor = Anchor::new(
        instance,
        vec!["https://127.0.0.1:1".into()],
        // Nothing listens on port 1: the "registry" is down for the whole test.
        vec!["http://127.0.0.1:1/globalconf".into()],
        &[ca.cert_der().to_vec()],
        std::slice::from_ref(&cert),
    )
    .unwrap();
    Fixture {
        anchor,
        key,
        cert,
        ca,
        clock: Arc::new(ManualClock::new(now)),
    }
}

impl Fixture {
    fn doc(&self, serial: u64, validity: Duration) -> GlobalConf {
        let now = lintas_globalconf::unix_secs(lintas_globalconf::Clock::now(&*self.clock));
        GlobalConf {
            instance: "ID".into(),
            serial,
            generated_at: now,
            expires_at: now + validity.as_secs() as i64,
            members: vec![Member {
                id: "ID/GOV/KEMENDAGRI".into(),
                name: "Kementerian Dalam Negeri".into(),
                subsystems: vec!["DUKCAPIL".into()],
            }],
            approved_cas: vec![self.ca.cert_der().to_vec()],
            ..Default::default()
        }
    }

    fn signed(&self, serial: u64) -> Vec<u8> {
        sign(
            &self.doc(serial, Duration::from_secs(600)),
            &self.key,
            &self.cert,
        )
        .unwrap()
    }

    fn client(&self, dir: &std::path::Path) -> Result<ConfClient, ConfError> {
        ConfClient::open(self.anchor.clone(), dir, self.clock.clone())
    }
}

#[test]
fn accepts_a_good_document_and_answers_lookups() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let client = f.client(dir.path()).unwrap();
    assert!(matches!(client.current(), Err(ConfError::NotLoaded)));
    let conf = client.accept(&f.signed(1)).unwrap();
    assert_eq!(conf.serial(), 1);
    assert!(conf.has_client(&"ID/GOV/KEMENDAGRI/DUKCAPIL".parse().unwrap()));
    assert!(!conf.has_client(&"ID/GOV/KEMENDAGRI/OTHER".parse().unwrap()));
    assert!(conf.has_client(&"ID/GOV/KEMENDAGRI".parse().unwrap()));
}

#[test]
fn tampered_documents_are_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let client = f.client(dir.path()).unwrap();
    let blob = f.signed(1);

    // Change the document after signing.
    let mut signed = SignedGlobalConf::decode(blob.as_slice()).unwrap();
    let mut conf = GlobalConf::decode(signed.conf.as_slice()).unwrap();
    conf.members[0].subsystems.push("INTRUDER".into());
    signed.conf = conf.encode_to_vec();
    let err = client.accept(&signed.encode_to_vec()).unwrap_err();
    assert!(matches!(err, ConfError::BadSignature), "{err}");

    // Flip one byte anywhere in the signature.
    let mut signed = SignedGlobalConf::decode(blob.as_slice()).unwrap();
    let last = signed.signature.len() - 2;
    signed.signature[last] ^= 1;
    assert!(client.accept(&signed.encode_to_vec()).is_err());

    // Signed by a key the anchor does not list (a self-made "registry").
    let other = fixture();
    let err = client.accept(&other.signed(5)).unwrap_err();
    assert!(matches!(err, ConfError::UnknownSigner), "{err}");

    // Garbage and oversize input.
    assert!(matches!(
        client.accept(b"\xff\xff\xff garbage"),
        Err(ConfError::Malformed(_))
    ));
    let huge = vec![0u8; lintas_globalconf::MAX_CONF_LEN + 1];
    assert!(matches!(
        client.accept(&huge),
        Err(ConfError::TooLarge { .. })
    ));
    assert!(matches!(client.current(), Err(ConfError::NotLoaded)));
}

#[test]
fn expired_document_is_refused_and_held_one_expires() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let client = f.client(dir.path()).unwrap();
    let short = sign(&f.doc(1, Duration::from_secs(60)), &f.key, &f.cert).unwrap();
    client.accept(&short).unwrap();
    f.clock.advance(Duration::from_secs(61));
    let err = client.current().unwrap_err();
    assert!(matches!(err, ConfError::Expired { serial: 1, .. }), "{err}");
    assert!(err.to_string().contains("expired at"));
    // Offering the same expired document again is refused too.
    assert!(matches!(
        client.accept(&short),
        Err(ConfError::Expired { .. })
    ));
}

#[test]
fn rollback_and_equivocation_are_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let client = f.client(dir.path()).unwrap();
    let old = f.signed(3);
    client.accept(&f.signed(5)).unwrap();
    let err = client.accept(&old).unwrap_err();
    assert!(
        matches!(
            err,
            ConfError::Rollback {
                held: 5,
                offered: 3
            }
        ),
        "{err}"
    );
    // Same serial, different contents.
    let mut doc = f.doc(5, Duration::from_secs(600));
    doc.members.clear();
    let twin = sign(&doc, &f.key, &f.cert).unwrap();
    assert!(matches!(
        client.accept(&twin),
        Err(ConfError::Equivocation { serial: 5 })
    ));
    assert_eq!(client.current().unwrap().serial(), 5);

    // Rollback protection survives a restart, even after the cached document expired.
    drop(client);
    f.clock.advance(Duration::from_secs(3600));
    let reopened = f.client(dir.path()).unwrap();
    assert_eq!(reopened.held_serial(), Some(5));
    assert!(matches!(reopened.current(), Err(ConfError::Expired { .. })));
    let err = reopened.accept(&f.signed(4)).unwrap_err();
    assert!(matches!(err, ConfError::Rollback { held: 5, .. }), "{err}");
    reopened.accept(&f.signed(6)).unwrap();
}

#[test]
fn tampered_cache_is_reported() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    f.client(dir.path()).unwrap().accept(&f.signed(1)).unwrap();
    let path = dir.path().join(lintas_globalconf::client::CACHE_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let err = f.client(dir.path()).err().unwrap();
    assert!(matches!(err, ConfError::Cache { .. }), "{err}");
}

#[tokio::test]
async fn keeps_working_from_cache_while_registry_is_down() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    f.client(dir.path()).unwrap().accept(&f.signed(7)).unwrap();

    // Restart: the registry (port 1) is unreachable.
    let client = f.client(dir.path()).unwrap();
    let err = client.fetch().await.unwrap_err();
    assert!(matches!(err, ConfError::Fetch { .. }), "{err}");
    assert_eq!(client.current().unwrap().serial(), 7);

    // Until the document expires: then fail closed.
    f.clock.advance(Duration::from_secs(601));
    assert!(matches!(
        client.current(),
        Err(ConfError::Expired { serial: 7, .. })
    ));
}

#[test]
fn anchor_refuses_unknown_keys_and_round_trips() {
    let f = fixture();
    let again = Anchor::parse(&f.anchor.text, "anchor.toml").unwrap();
    assert_eq!(again.fingerprint, f.anchor.fingerprint);
    let bogus = format!("{}\nbogus_key = 1\n", f.anchor.text);
    let err = Anchor::parse(&bogus, "anchor.toml").unwrap_err();
    assert!(err.to_string().contains("bogus_key"), "{err}");
    // A signing certificate from another CA is refused at load.
    let other = fixture();
    let text = f.anchor.text.replace(
        &lintas_certs::pem::cert_to_pem(&f.cert),
        &lintas_certs::pem::cert_to_pem(&other.cert),
    );
    assert!(Anchor::parse(&text, "anchor.toml").is_err());
}

#[test]
fn the_cache_outlives_the_signing_certificate() {
    let f = fixture_with_signer_validity(Duration::from_secs(86400));
    let dir = tempfile::tempdir().unwrap();
    f.client(dir.path()).unwrap().accept(&f.signed(9)).unwrap();
    // Two days later the signing certificate has expired: a fresh document signed with it
    // is refused, but the cache still opens and keeps its serial for rollback protection.
    f.clock.advance(Duration::from_secs(2 * 86400));
    let reopened = f.client(dir.path()).unwrap();
    assert_eq!(reopened.held_serial(), Some(9));
    let err = reopened.accept(&f.signed(10)).unwrap_err();
    assert!(matches!(err, ConfError::Signer(_)), "{err}");
}

#[test]
fn contents_that_break_ownership_or_instance_are_refused() {
    use lintas_proto::globalconf::v1::SecurityServer;
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let client = f.client(dir.path()).unwrap();
    let mut doc = f.doc(1, Duration::from_secs(600));
    doc.servers.push(SecurityServer {
        id: "ID/GOV/KEMENDAGRI/SS1".into(),
        address: "127.0.0.1:1".into(),
        clients: vec!["ID/GOV/KEMENSOS/DTKS".into()],
        ..Default::default()
    });
    let err = client
        .accept(&sign(&doc, &f.key, &f.cert).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("does not own"), "{err}");

    let mut doc = f.doc(1, Duration::from_secs(600));
    doc.members[0].id = "XX/GOV/KEMENDAGRI".into();
    let err = client
        .accept(&sign(&doc, &f.key, &f.cert).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("not of instance"), "{err}");
}

/// `text` with a signature by `ca`'s key, as a configuration announces an anchor.
fn signed_by(ca: &Ca, text: String) -> (String, Vec<u8>) {
    let signature = lintas_certs::sig::sign(
        ca.key(),
        lintas_globalconf::anchor::ANCHOR_DOMAIN,
        text.as_bytes(),
    )
    .unwrap();
    (text, signature)
}

#[test]
fn an_announced_anchor_is_adopted_only_if_a_held_ca_signed_it_and_it_trusts_the_signer() {
    let f = fixture();
    let now = SystemTime::now();
    let ca = vec![f.ca.cert_der().to_vec()];
    // Another signer of the same CA, and another CA of the same instance.
    let other_key = keys::generate().unwrap();
    let other_signer =
        f.ca.issue_for_key(
            &other_key,
            &Profile::GlobalConf {
                instance: "ID".parse().unwrap(),
            },
            Validity::starting(now, YEAR).unwrap(),
        )
        .unwrap();
    let stranger = Ca::create(
        &"ID".parse().unwrap(),
        Validity::starting(now, YEAR).unwrap(),
    )
    .unwrap();
    let both = [f.cert.clone(), other_signer.clone()];
    let good = signed_by(&f.ca, f.anchor.next(&ca, &both).unwrap().text);
    let by_stranger = signed_by(&stranger, good.0.clone());
    // The same version as held: nothing comes back or goes sideways.
    let same_version = signed_by(
        &f.ca,
        Anchor::new(
            "ID".parse().unwrap(),
            f.anchor.registry_urls.clone(),
            f.anchor.globalconf_urls.clone(),
            &ca,
            &both,
        )
        .unwrap()
        .text,
    );
    // (announced anchor and signature, adopted)
    let cases = [
        (good.clone(), true),
        // Signed by a CA the held anchor does not list (a stolen signing key's doing).
        (by_stranger, false),
        ((good.0.clone(), Vec::new()), false),
        (same_version, false),
        // Without the certificate that signed the announcing configuration.
        (
            signed_by(
                &f.ca,
                f.anchor
                    .next(&ca, std::slice::from_ref(&other_signer))
                    .unwrap()
                    .text,
            ),
            false,
        ),
        (("not toml [".to_string(), good.1.clone()), false),
    ];
    for ((text, signature), adopted) in cases {
        let dir = tempfile::tempdir().unwrap();
        let anchor_file = dir.path().join("anchor.toml");
        std::fs::write(&anchor_file, &f.anchor.text).unwrap();
        let client = f
            .client(dir.path())
            .unwrap()
            .adopting_anchors(anchor_file.clone());
        let mut doc = f.doc(1, Duration::from_secs(600));
        doc.anchor = text.clone();
        doc.anchor_signature = signature;
        let blob = sign(&doc, &f.key, &f.cert).unwrap();
        // The configuration itself is accepted either way.
        client.accept(&blob).unwrap();
        let held = std::fs::read_to_string(&anchor_file).unwrap();
        assert_eq!(held == text, adopted, "{text}");
        assert_eq!(client.anchor().text == text, adopted, "{text}");
        if adopted {
            assert_eq!(client.anchor().signing_certs.len(), 2);
            assert_eq!(client.anchor().version, 1);
        } else {
            assert_eq!(held, f.anchor.text);
        }
    }
}
