//! The registry's unit tests: failed writes, and registration requests under abuse.
use super::*;
use crate::store::StoreError;
use lintas_globalconf::SystemClock;
use std::sync::atomic::AtomicBool;

/// An in-memory store whose writes can be made to fail.
#[derive(Default)]
struct FlakyStore {
    data: crate::store::MemoryStore,
    fail: AtomicBool,
}

impl RegistryStore for FlakyStore {
    fn load(&self) -> std::result::Result<Vec<Stored>, StoreError> {
        self.data.load()
    }
    fn get(&self, key: &str) -> std::result::Result<Option<Stored>, StoreError> {
        self.data.get(key)
    }
    fn apply(&self, expect: &[Expect], batch: Vec<Put>) -> std::result::Result<(), ApplyError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError("disk full".into()).into());
        }
        self.data.apply(expect, batch)
    }
}

fn registry(store: Arc<FlakyStore>) -> Registry {
    registry_with(store, Arc::new(SystemClock))
}

fn registry_with(store: Arc<FlakyStore>, clock: Arc<dyn Clock>) -> Registry {
    let (keys, policy) = keys_and_policy(&*clock);
    Registry::open(store, keys, policy, clock).unwrap()
}

/// A second set of the same keys (another registry node of the instance).
fn same_keys(keys: &Keys) -> Keys {
    let copy =
        |k: &lintas_certs::KeyPair| lintas_certs::keys::from_pem(&k.serialize_pem()).unwrap();
    Keys {
        ca: Ca::load(keys.ca.cert_der().to_vec(), copy(keys.ca.key())).unwrap(),
        conf_key: keys.conf_key.clone(),
        conf_cert: keys.conf_cert.clone(),
        tsa_cert: keys.tsa_cert.clone(),
        anchor_text: keys.anchor_text.clone(),
        anchor_signature: keys.anchor_signature.clone(),
        cas: keys.cas.clone(),
    }
}

fn keys_and_policy(clock: &dyn Clock) -> (Keys, Policy) {
    let now = clock.now();
    let year = Duration::from_secs(365 * 86400);
    let instance: Code = "ID".parse().unwrap();
    let ca = Ca::create(&instance, Validity::starting(now, year).unwrap()).unwrap();
    let conf_key = lintas_certs::keys::generate().unwrap();
    let conf_cert = ca
        .issue_for_key(
            &conf_key,
            &Profile::GlobalConf {
                instance: instance.clone(),
            },
            Validity::starting(now, year).unwrap(),
        )
        .unwrap();
    let keys = Keys {
        cas: vec![ca.cert_der().to_vec()],
        anchor_text: String::new(),
        anchor_signature: Vec::new(),
        ca,
        conf_key: std::sync::Arc::new(conf_key),
        conf_cert,
        tsa_cert: Vec::new(),
    };
    let policy = Policy {
        instance,
        registration: PendingLimits {
            max_total: 100,
            max_per_source: 10,
            ttl_secs: 3600,
        },
        conf_validity: Duration::from_secs(3600),
        cert_validity: year,
        token_ttl: Duration::from_secs(3600),
        tsa_urls: vec!["http://127.0.0.1:1/tsa".into()],
        auto_approve_renewals: true,
        renewal_grace: Duration::from_secs(7 * 86400),
    };
    (keys, policy)
}

/// A registration request for `server` from `source`, with fresh keys.
fn submission(server: &str, source: &str) -> Submission {
    let csr = || {
        let key = lintas_certs::keys::generate().unwrap();
        lintas_certs::ca::make_csr(&key, "test").unwrap()
    };
    Submission {
        server_id: server.into(),
        address: "ss.example:5500".into(),
        tls_csr: csr(),
        signing_csr: csr(),
        log_csr: csr(),
        clients: Vec::new(),
        member_name: "A".into(),
        enrolment_token: String::new(),
        source: source.into(),
        peer_cert: None,
    }
}

/// The server entry of the configuration the registry publishes now.
fn published_server(reg: &Registry, id: &str) -> gc::SecurityServer {
    use prost::Message as _;
    let signed =
        lintas_proto::globalconf::v1::SignedGlobalConf::decode(reg.latest_conf().as_slice())
            .unwrap();
    let conf = gc::GlobalConf::decode(signed.conf.as_slice()).unwrap();
    conf.servers.into_iter().find(|s| s.id == id).unwrap()
}

#[test]
fn a_server_renews_with_its_own_certificate_and_the_old_ones_go_after_the_grace_period() {
    let clock = Arc::new(lintas_globalconf::ManualClock::new(
        std::time::SystemTime::now(),
    ));
    let reg = registry_with(Arc::new(FlakyStore::default()), clock.clone());
    let server = "ID/GOV/A/SS1";
    let log_key = lintas_certs::keys::generate().unwrap();
    let log_csr = lintas_certs::ca::make_csr(&log_key, "test").unwrap();
    let mut first = submission(server, "10.1.1.1");
    first.log_csr = log_csr.clone();
    let filed = reg.submit(first).unwrap();
    let approved = reg
        .approve("administrator admin", &filed.request_id)
        .unwrap();
    let old_tls = lintas_certs::unhex(&approved.tls_cert_hex).unwrap();
    let old_signing = lintas_certs::unhex(&approved.signing_cert_hex).unwrap();
    let renewal = |peer: Option<Vec<u8>>, log_csr: Vec<u8>| {
        let mut r = submission(server, "10.1.1.1");
        r.log_csr = log_csr;
        r.peer_cert = peer;
        r
    };

    // Refused: another server's certificate; a changed log key.
    let other = submission("ID/GOV/A/SS2", "10.1.1.2");
    let other_id = reg.submit(other).unwrap().request_id;
    let other_tls = lintas_certs::unhex(
        &reg.approve("administrator admin", &other_id)
            .unwrap()
            .tls_cert_hex,
    )
    .unwrap();
    let err = reg
        .submit(renewal(Some(other_tls), log_csr.clone()))
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::PermissionDenied(m) if m.contains("cannot ask for certificates of ID/GOV/A/SS1")),
        "{err}"
    );
    let fresh_log =
        lintas_certs::ca::make_csr(&lintas_certs::keys::generate().unwrap(), "t").unwrap();
    let err = reg
        .submit(renewal(Some(old_tls.clone()), fresh_log))
        .unwrap_err();
    assert!(err.to_string().contains("changes the log key"), "{err}");

    // With its own certificate, at once; both generations are listed.
    let renewed = reg
        .submit(renewal(Some(old_tls.clone()), log_csr.clone()))
        .unwrap();
    assert_eq!(renewed.state, RegState::Approved);
    assert!(renewed.renewal);
    assert!(
        renewed.decided_by.contains("TLS certificate"),
        "{}",
        renewed.decided_by
    );
    let new_tls = lintas_certs::unhex(&renewed.tls_cert_hex).unwrap();
    let entry = published_server(&reg, server);
    assert_eq!(
        entry.tls_cert_sha256,
        lintas_certs::sha256(&new_tls).to_vec()
    );
    assert_eq!(
        entry.other_tls_cert_sha256,
        vec![lintas_certs::sha256(&old_tls).to_vec()]
    );
    assert_eq!(entry.signing_certs.len(), 2);
    assert!(
        reg.retire_due().unwrap().is_empty(),
        "not before the grace period"
    );

    // After the grace period the old ones are revoked, in one change.
    clock.advance(Duration::from_secs(7 * 86400 + 1));
    let revoked = reg.retire_due().unwrap();
    let serial = |der: &[u8]| CertInfo::parse(der).unwrap().serial_hex();
    assert_eq!(
        revoked.len(),
        2,
        "the renewed server's first two only: {revoked:?}"
    );
    assert!(revoked.contains(&serial(&old_tls)) && revoked.contains(&serial(&old_signing)));
    let entry = published_server(&reg, server);
    assert!(entry.other_tls_cert_sha256.is_empty());
    assert_eq!(entry.signing_certs.len(), 1);
    assert!(reg.retire_due().unwrap().is_empty());
}

#[test]
fn anonymous_requests_are_limited_per_source_expire_and_never_block_the_real_operator() {
    let store = Arc::new(FlakyStore::default());
    let clock = Arc::new(lintas_globalconf::ManualClock::new(
        std::time::SystemTime::now(),
    ));
    let reg = registry_with(store.clone(), clock.clone());
    let server = "ID/GOV/A/SS1";
    // A flood from one source stops at its limit (10 here)...
    for _ in 0..10 {
        reg.submit(submission(server, "10.9.9.9")).unwrap();
    }
    let err = reg.submit(submission(server, "10.9.9.9")).unwrap_err();
    assert!(
        matches!(&err, RegistryError::ResourceExhausted(m) if m.contains("10.9.9.9")),
        "{err}"
    );
    // ...while the real operator, elsewhere, files for the same server id.
    let real = reg.submit(submission(server, "10.1.1.1")).unwrap();
    assert_eq!(reg.list_registrations(Some(RegState::Pending)).len(), 11);
    assert_eq!(reg.counts().pending_registrations, 11);
    // The audit says the server id is a claim, and by whom.
    let audit: Vec<String> = store
        .load()
        .unwrap()
        .into_iter()
        .filter(|s| s.key.starts_with("audit/"))
        .map(|s| String::from_utf8_lossy(&s.value).into_owned())
        .collect();
    assert!(
        audit
            .iter()
            .any(|a| a.contains("unverified requester from 10.1.1.1 claiming server ID/GOV/A/SS1")),
        "{audit:?}"
    );
    // Approving the real one closes the others for that server.
    reg.approve("administrator admin", &real.request_id)
        .unwrap();
    assert_eq!(reg.counts().pending_registrations, 0);
    let closed = reg.list_registrations(Some(RegState::Rejected));
    assert_eq!(closed.len(), 10);
    assert!(
        closed[0].reason.contains("superseded"),
        "{}",
        closed[0].reason
    );
    assert!(
        reg.approve("administrator admin", &real.request_id)
            .is_err(),
        "decided once"
    );

    // Undecided requests expire, and a restart finds the pending ones.
    let old = reg.submit(submission("ID/GOV/B/SS1", "10.9.9.9")).unwrap();
    clock.advance(Duration::from_secs(1800));
    let young = reg.submit(submission("ID/GOV/B/SS1", "10.9.9.9")).unwrap();
    clock.advance(Duration::from_secs(1800));
    assert_eq!(reg.expire_registrations().unwrap(), 1);
    let gone = reg.status(&old.request_id).unwrap_err();
    assert!(gone.to_string().contains("expire"), "{gone}");
    assert!(
        store
            .get(&format!("registration/{}", old.request_id))
            .unwrap()
            .is_none()
    );
    drop(reg);
    let reg = registry_with(store, clock);
    assert_eq!(
        reg.status(&young.request_id).unwrap().state,
        RegState::Pending
    );
    assert_eq!(reg.counts().pending_registrations, 1);
}

#[test]
fn a_failed_write_changes_nothing_and_stops_further_changes_until_restart() {
    let store = Arc::new(FlakyStore::default());
    let reg = registry(store.clone());
    let serial = reg.add_member("t", "ID/GOV/A", "A").unwrap();
    let published = reg.latest_conf();

    store.fail.store(true, Ordering::SeqCst);
    let err = reg.add_member("t", "ID/GOV/B", "B").unwrap_err();
    assert!(matches!(err, RegistryError::Internal(_)), "{err}");
    // Memory and the published document are as before the failed change.
    assert_eq!(reg.members().len(), 1);
    assert_eq!(reg.latest_conf(), published);

    // Even once the disk works again, the registry refuses until restarted, because
    // it cannot know what the failed write left behind.
    store.fail.store(false, Ordering::SeqCst);
    let err = reg.add_member("t", "ID/GOV/C", "C").unwrap_err();
    assert!(err.to_string().contains("restart"), "{err}");

    // A restart reloads from the store and works again, continuing the serial.
    let reg = registry(store);
    assert_eq!(reg.members().len(), 1);
    assert!(reg.add_member("t", "ID/GOV/C", "C").unwrap() > serial);
}

#[test]
fn two_nodes_over_one_store_make_one_history() {
    let store = Arc::new(FlakyStore::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (keys, policy) = keys_and_policy(&*clock);
    let b_keys = same_keys(&keys);
    let a = Registry::open(store.clone(), keys, policy.clone(), clock.clone()).unwrap();
    let b = Registry::open(store.clone(), b_keys, policy, clock).unwrap();

    // Changes alternate between the nodes: each sees the other's and the serial only
    // grows, one step per change, whichever node made it.
    let mut serials = Vec::new();
    for (n, member) in ["ID/GOV/A", "ID/GOV/B", "ID/GOV/C", "ID/GOV/D"]
        .iter()
        .enumerate()
    {
        let node = if n % 2 == 0 { &a } else { &b };
        serials.push(node.add_member("admin", member, "M").unwrap());
    }
    assert!(serials.windows(2).all(|w| w[1] == w[0] + 1), "{serials:?}");
    assert!(b.sync().unwrap() || a.sync().unwrap());
    assert_eq!(a.members().len(), 4);
    assert_eq!(b.members().len(), 4);
    assert_eq!(a.latest_conf(), b.latest_conf());
    // A member added on one node exists for the other, even before it syncs.
    let again = b.add_member("admin", "ID/GOV/A", "again").unwrap_err();
    assert!(matches!(again, RegistryError::AlreadyExists(_)), "{again}");

    // A request filed on one node is decided once: the second approval, on the other
    // node, finds it decided.
    let filed = a.submit(submission("ID/GOV/A/SS1", "10.0.0.1")).unwrap();
    b.sync().unwrap();
    assert_eq!(b.list_registrations(Some(RegState::Pending)).len(), 1);
    let approved = b.approve("admin", &filed.request_id).unwrap();
    assert_eq!(approved.state, RegState::Approved);
    let twice = a.approve("admin", &filed.request_id).unwrap_err();
    assert!(
        matches!(
            twice,
            RegistryError::FailedPrecondition(_) | RegistryError::NotFound(_)
        ),
        "{twice}"
    );
    assert_eq!(a.servers().len(), 1);
    assert_eq!(
        a.status(&filed.request_id).unwrap().state,
        RegState::Approved
    );

    // Audit records of both nodes never share a key.
    let audits = store
        .load()
        .unwrap()
        .into_iter()
        .filter(|s| s.key.starts_with("audit/"))
        .count();
    assert!(audits >= 6, "{audits}");

    // One history of generations, whichever node published: after a sync, both list
    // the same serials, newest first, each caused by the node's change.
    a.sync().unwrap();
    b.sync().unwrap();
    let (on_a, _) = a.generations_page("", 100).unwrap();
    let (on_b, _) = b.generations_page("", 100).unwrap();
    let serials_of = |g: &[GenerationRec]| g.iter().map(|g| g.serial).collect::<Vec<_>>();
    assert_eq!(serials_of(&on_a), serials_of(&on_b));
    assert!(
        serials
            .iter()
            .all(|s| on_a.iter().any(|g| g.serial == *s && g.actor == "admin")),
        "{on_a:?}"
    );

    // The witness: a record stored by one node is read by the other.
    assert!(matches!(
        b.witnessed("ID/GOV/A/SS1"),
        Err(RegistryError::NotFound(_))
    ));
}

#[test]
fn the_periodic_re_signing_is_skipped_when_another_node_did_it_lately() {
    let (validity, refresh) = (Duration::from_secs(3600), Duration::from_secs(600));
    // (expires at, now, due)
    let cases = [
        (None, 0, true),
        // Signed just now (by another node): not due.
        (Some(3600), 0, false),
        // Signed 299 s ago: not yet; 300 s (half a period): due.
        (Some(3600), 299, false),
        (Some(3600), 300, true),
        // A full period ago, as on a single node: due.
        (Some(3600), 600, true),
        // Expired: due.
        (Some(3600), 4000, true),
    ];
    for (expires_at, now, due) in cases {
        assert_eq!(
            resign_due(expires_at, now, validity, refresh),
            due,
            "{expires_at:?} at {now}"
        );
    }
}

#[test]
fn catalogue_entries_of_earlier_versions_still_load() {
    // Grants were [method, subject] pairs, and there was no REST flag.
    let old = r#"{"provider":"ID/GOV/A/APP","service":"a.v1.S","descriptor_sha256":"","grants":[["Cari","ID/GOV/B/APP"],["","group:bansos"]]}"#;
    let entry: CatalogueService = serde_json::from_str(old).unwrap();
    assert!(!entry.rest);
    assert_eq!(
        entry.grants,
        [
            CatalogueGrant {
                method: "Cari".into(),
                subject: "ID/GOV/B/APP".into(),
                path: String::new(),
            },
            CatalogueGrant {
                method: String::new(),
                subject: "group:bansos".into(),
                path: String::new(),
            },
        ]
    );
    // Written again, it reads back the same.
    let again: CatalogueService =
        serde_json::from_slice(&serde_json::to_vec(&entry).unwrap()).unwrap();
    assert_eq!(again.grants, entry.grants);
}

#[test]
fn every_published_generation_is_recorded_with_its_cause_and_digest_and_survives_a_restart() {
    let store = Arc::new(FlakyStore::default());
    let reg = registry(store.clone());
    let first = reg.republish("registry", "start").unwrap();
    let member = reg.add_member("alice", "ID/GOV/A", "A").unwrap();
    // A change that publishes nothing makes no generation.
    reg.create_token("alice", "ID/GOV/A/SS1", None).unwrap();
    let last = reg.republish("registry", "periodic refresh").unwrap();
    assert_eq!((member, last), (first + 1, first + 2));

    let (page, next) = reg.generations_page("", 100).unwrap();
    assert!(next.is_empty());
    let got: Vec<(u64, &str, &str)> = page
        .iter()
        .map(|g| (g.serial, g.actor.as_str(), g.action.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (last, "registry", "periodic refresh"),
            (member, "alice", "added member ID/GOV/A (A)"),
            (first, "registry", "start"),
        ]
    );
    // The newest one's digest is that of the document served.
    let served = reg.latest_conf();
    assert_eq!(
        page[0].sha256,
        lintas_certs::hex(&lintas_certs::sha256(&served))
    );
    assert_eq!(page[0].bytes, served.len() as u64);
    assert_eq!(
        Some(page[0].expires_at),
        lintas_globalconf::expiry_of(&served)
    );

    // Pages of one, newest first, cover them all; a token not given is refused.
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let (one, next) = reg.generations_page(&token, 1).unwrap();
        seen.extend(one.iter().map(|g| g.serial));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen, [last, member, first]);
    assert!(matches!(
        reg.generations_page("zz", 1),
        Err(RegistryError::InvalidArgument(_))
    ));

    // After a restart the history is read back from the store.
    drop(reg);
    let again = registry(store);
    let (reloaded, _) = again.generations_page("", 100).unwrap();
    assert_eq!(
        reloaded.iter().map(|g| g.serial).collect::<Vec<_>>(),
        [last, member, first]
    );
}
