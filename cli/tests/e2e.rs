//! End-to-end tests: a real registry on loopback (OS-chosen ports, temporary directories),
//! security servers joining it, and the real `lintas` binary. All integration tests live
//! in this one binary.

#[path = "e2e/bench.rs"]
mod bench;
#[path = "e2e/exchange.rs"]
mod exchange;
#[path = "e2e/registry_backup.rs"]
mod registry_backup;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lintas_certs::{CertError, Role};
use lintas_globalconf::{ConfError, ManualClock};
use lintas_proto::registry::v1 as pb;
use lintas_proto::registry::v1::registry_admin_client::RegistryAdminClient;
use lintas_registry::{InitOptions, RegistryConfig};
use lintas_ss::{Enrolment, Node, SsConfig, SsError};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;

/// A running registry in a temporary directory. Stops when dropped.
struct Instance {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: RegistryConfig,
    clock: Arc<ManualClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The operations listener, `host:port`.
    ops: String,
    /// The management API and console, `host:port`.
    management: String,
}

impl Instance {
    async fn start() -> Self {
        Self::start_with_users(&[]).await
    }

    /// A registry whose management plane has `users` (name, role; the password is
    /// `USER_PASSWORD`) from its first start.
    async fn start_with_users(users: &[(&str, lintas_manage::Role)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let report = lintas_registry::init(
            &InitOptions {
                instance: "ID".parse().unwrap(),
                dir: root.join("registry"),
                grpc_listen: grpc.local_addr().unwrap(),
                http_listen: http.local_addr().unwrap(),
                public_host: "127.0.0.1".into(),
                admin_name: "admin".parse().unwrap(),
                database: String::new(),
                other_nodes: Vec::new(),
                pkcs11: None,
            },
            clock.clone(),
        )
        .unwrap();
        let config = RegistryConfig::load(&report.config_path, std::iter::empty()).unwrap();
        let plane_users =
            lintas_manage::Users::open(&lintas_registry::Paths(config.data_dir.clone()).users())
                .unwrap();
        for (name, role) in users {
            plane_users.add_user(name, USER_PASSWORD, &[*role]).unwrap();
        }
        let mut instance = Instance {
            _dir: dir,
            root,
            config,
            clock,
            stop: None,
            task: None,
            ops: String::new(),
            management: String::new(),
        };
        instance.serve(grpc, http).await;
        instance
    }

    async fn serve(&mut self, grpc: TcpListener, http: TcpListener) {
        let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.ops = ops.local_addr().unwrap().to_string();
        let management = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.management = management.local_addr().unwrap().to_string();
        let registry = lintas_registry::open(&self.config, self.clock.clone()).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = self.config.clone();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let listeners = lintas_registry::Listeners {
                grpc,
                http,
                ops,
                management: Some(management),
            };
            lintas_registry::serve(registry, &config, listeners, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        }));
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Stops the registry and starts it again from the same directory and ports.
    async fn restart(&mut self) {
        self.stop().await;
        let grpc = TcpListener::bind(self.config.grpc_listen).await.unwrap();
        let http = TcpListener::bind(self.config.http_listen).await.unwrap();
        self.serve(grpc, http).await;
    }

    /// Keeps the registry's clock with the machine's while the test runs, for tests
    /// whose security servers run as processes on the machine's clock (the TSA's
    /// tokens must not fall behind the records they cover).
    fn follow_system_clock(&self) {
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                clock.catch_up(SystemTime::now());
            }
        });
    }

    fn anchor(&self) -> PathBuf {
        self.root.join("registry/anchor.toml")
    }

    fn admin_dir(&self) -> PathBuf {
        self.root.join("registry/admin")
    }

    /// A TLS channel to the registry, trusting the anchor and presenting `identity`.
    fn channel(&self, identity: Option<(&[u8], &lintas_certs::KeyPair)>) -> Channel {
        let anchor = lintas_globalconf::Anchor::load(&self.anchor()).unwrap();
        let tls = lintas_transport::client_config(
            anchor.trust_store(),
            lintas_certs::Role::Registry,
            identity,
        )
        .unwrap();
        lintas_transport::channel(&self.config.public_url, tls).unwrap()
    }

    /// The registration requests waiting for an administrator.
    async fn pending(&self) -> Vec<pb::RegistrationStatus> {
        self.admin()
            .list_registrations(pb::ListRegistrationsRequest {
                state: pb::RegistrationState::Pending as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .registrations
    }

    fn admin(&self) -> RegistryAdminClient<Channel> {
        lintas_registry::admin::connect(&self.admin_dir(), &self.config.public_url).unwrap()
    }

    /// A new security server directory for `server` hosting `clients`.
    fn node(&self, server: &str, clients: &[&str]) -> Node {
        self.node_at(server, clients, "127.0.0.1:5500")
    }

    /// A new security server directory whose peers reach it at `address`; local
    /// applications call it over plaintext loopback (development mode).
    fn node_at(&self, server: &str, clients: &[&str], address: &str) -> Node {
        self.node_with(server, clients, address, true)
    }

    fn node_with(&self, server: &str, clients: &[&str], address: &str, dev: bool) -> Node {
        let dir = self.root.join(server.replace('/', "_"));
        let mut config = SsConfig::new(server.parse().unwrap(), address.parse().unwrap());
        config.clients = clients.iter().map(|c| c.parse().unwrap()).collect();
        config.member_name = "Test member".into();
        config.consumer_listen = "127.0.0.1:0".parse().unwrap();
        config.provider_listen = "127.0.0.1:0".parse().unwrap();
        config.dev_plaintext_loopback = dev;
        let path = lintas_ss::init(&dir, &config, &self.anchor()).unwrap();
        Node::open(SsConfig::load(&path, std::iter::empty()).unwrap()).unwrap()
    }

    /// Registers `node` and approves it as the administrator.
    async fn enrol(&self, node: &Node) {
        let submitted = node.register(None).await.unwrap();
        self.admin()
            .approve(pb::DecisionRequest {
                request_id: submitted.request_id,
                reason: String::new(),
            })
            .await
            .unwrap();
        assert!(matches!(node.poll().await.unwrap(), Enrolment::Approved(_)));
    }

    fn conf_client(&self, node: &Node) -> lintas_globalconf::ConfClient {
        node.conf_client(self.clock.clone()).unwrap()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

const PROVIDER: &str = "ID/GOV/KEMENDAGRI/SS1";
/// The password of the management users tests make.
const USER_PASSWORD: &str = "kata sandi yang panjang";
const PROVIDER_CLIENT: &str = "ID/GOV/KEMENDAGRI/DUKCAPIL";
const CONSUMER: &str = "ID/GOV/KEMENSOS/SS1";
const CONSUMER_CLIENT: &str = "ID/GOV/KEMENSOS/DTKS";

fn read_cert(path: &Path) -> Vec<u8> {
    lintas_certs::files::read_cert(path).unwrap()
}

#[tokio::test]
async fn registration_round_trip_with_admin_approval() {
    let inst = Instance::start().await;
    let node = inst.node(PROVIDER, &[PROVIDER_CLIENT]);

    // Before registering, polling says so.
    assert!(matches!(node.poll().await, Err(SsError::NotRegistered)));
    let before_submit = inst.conf_client(&node).fetch().await.unwrap().serial();
    let submitted = node.register(None).await.unwrap();
    assert_eq!(submitted.state(), pb::RegistrationState::Pending);
    assert!(matches!(node.poll().await.unwrap(), Enrolment::Pending(_)));

    // The administrator sees the request with the server's key fingerprints.
    let mut admin = inst.admin();
    let pending = inst.pending().await;
    assert_eq!(pending.len(), 1);
    let (tls_fp, sign_fp) = node.key_fingerprints().unwrap();
    assert_eq!(pending[0].tls_key_fingerprint, tls_fp);
    assert_eq!(pending[0].signing_key_fingerprint, sign_fp);
    assert_eq!(pending[0].server_id, PROVIDER);

    // Someone else asks for the same server id with keys of their own: that does not
    // block the real operator; the administrator sees both, each with its fingerprints
    // and source, and approving the real one closes the other.
    let impostor = {
        let dir = inst.root.join("impostor");
        let mut config =
            SsConfig::new(PROVIDER.parse().unwrap(), "127.0.0.1:5599".parse().unwrap());
        config.clients = vec![PROVIDER_CLIENT.parse().unwrap()];
        let path = lintas_ss::init(&dir, &config, &inst.anchor()).unwrap();
        Node::open(SsConfig::load(&path, std::iter::empty()).unwrap()).unwrap()
    };
    let claim = impostor.register(None).await.unwrap();
    assert_eq!(claim.state(), pb::RegistrationState::Pending);
    let both = inst.pending().await;
    assert_eq!(both.len(), 2);
    assert!(
        both.iter()
            .all(|r| r.server_id == PROVIDER && r.source == "127.0.0.1")
    );
    assert_ne!(both[0].tls_key_fingerprint, both[1].tls_key_fingerprint);

    // Not in the configuration before approval, and a pending request changes nothing
    // published: no new serial.
    let client = inst.conf_client(&node);
    let conf = client.fetch().await.unwrap();
    assert!(conf.server(&PROVIDER.parse().unwrap()).is_none());
    assert_eq!(conf.serial(), before_submit);
    assert!(!pending[0].renewal);
    assert_eq!(pending[0].member_name, "Test member");

    admin
        .approve(pb::DecisionRequest {
            request_id: submitted.request_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let Enrolment::Approved(status) = node.poll().await.unwrap() else {
        panic!("not approved");
    };
    assert_eq!(status.decided_by, "administrator admin");
    let err = impostor.poll().await.unwrap_err();
    assert!(err.to_string().contains("superseded"), "{err}");

    // Certificates are stored, chain to the anchor CA and hold this server's keys.
    let trust = node.anchor.trust_store();
    let tls = trust
        .verify(
            &read_cert(&node.paths.tls_cert()),
            Role::Server,
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(tls.identity.to_uri(), format!("lintas:server:{PROVIDER}"));
    let sign = trust
        .verify(
            &read_cert(&node.paths.sign_cert()),
            Role::Member,
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(sign.identity.to_uri(), "lintas:member:ID/GOV/KEMENDAGRI");

    // The next configuration, fetched over HTTP and verified, lists the server.
    let conf = client.fetch().await.unwrap();
    node.check_listed(&conf).unwrap();
    assert!(conf.has_client(&PROVIDER_CLIENT.parse().unwrap()));
    let entry = conf.server(&PROVIDER.parse().unwrap()).unwrap();
    assert_eq!(entry.signing_certs.len(), 1);

    // Registering again (key renewal, new address) is marked as such for the reviewer.
    let again = node.register(None).await.unwrap();
    let listed = inst.pending().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].request_id, again.request_id);
    assert!(listed[0].renewal);

    // A decided registration cannot be decided again.
    let err = admin
        .reject(pb::DecisionRequest {
            request_id: submitted.request_id,
            reason: "too late".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn enrolment_tokens_pre_approve_once_for_one_server() {
    let inst = Instance::start().await;
    let mut admin = inst.admin();
    let token = |server: &str, ttl: u64| pb::CreateEnrolmentTokenRequest {
        server_id: server.into(),
        ttl_seconds: ttl,
    };
    let t = admin
        .create_enrolment_token(token(CONSUMER, 600))
        .await
        .unwrap()
        .into_inner();

    // The token is bound to its server.
    let other = inst.node("ID/GOV/KEMENSOS/SS2", &[]);
    let err = other.register(Some(&t.token)).await.unwrap_err();
    assert!(err.to_string().contains("PermissionDenied"), "{err}");
    assert!(err.to_string().contains(CONSUMER), "{err}");

    // Someone files a pending request for the server id first; the token holder is not
    // blocked by it, and the squatter's request is closed.
    let mut squat_request = pb::RegistrationRequest {
        server_id: CONSUMER.into(),
        address: "127.0.0.1:6666".into(),
        tls_csr: csr(),
        signing_csr: csr(),
        log_csr: csr(),
        ..Default::default()
    };
    squat_request.member_name = "squatter".into();
    let mut reg = pb::registration_client::RegistrationClient::new(inst.channel(None));
    let squat = reg.submit(squat_request).await.unwrap().into_inner();

    let node = inst.node(CONSUMER, &[CONSUMER_CLIENT]);
    let status = node.register(Some(&t.token)).await.unwrap();
    assert_eq!(status.state(), pb::RegistrationState::Approved);
    let closed = reg
        .status(pb::StatusRequest {
            request_id: squat.request_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.state(), pb::RegistrationState::Rejected);
    assert!(closed.reason.contains("superseded"), "{}", closed.reason);
    assert_eq!(status.decided_by, "enrolment-token");
    assert!(node.paths.tls_cert().exists() && node.paths.sign_cert().exists());

    // Used once only.
    let err = node.register(Some(&t.token)).await.unwrap_err();
    assert!(err.to_string().contains("already been used"), "{err}");

    // Expired tokens are refused.
    let t = admin
        .create_enrolment_token(token("ID/GOV/KEMENSOS/SS3", 60))
        .await
        .unwrap()
        .into_inner();
    inst.clock.advance(Duration::from_secs(61));
    let late = inst.node("ID/GOV/KEMENSOS/SS3", &[]);
    let err = late.register(Some(&t.token)).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    // A made-up token is refused.
    let err = late.register(Some("00112233")).await.unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
}

#[tokio::test]
async fn rejection_reaches_the_requester_with_its_reason() {
    let inst = Instance::start().await;
    let node = inst.node(PROVIDER, &[PROVIDER_CLIENT]);
    let submitted = node.register(None).await.unwrap();
    let mut admin = inst.admin();
    let err = admin
        .reject(pb::DecisionRequest {
            request_id: submitted.request_id.clone(),
            reason: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    admin
        .reject(pb::DecisionRequest {
            request_id: submitted.request_id.clone(),
            reason: "fingerprints did not match the phone call".into(),
        })
        .await
        .unwrap();
    match node.poll().await {
        Err(SsError::Rejected { reason }) => {
            assert_eq!(reason, "fingerprints did not match the phone call")
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    let err = admin
        .approve(pb::DecisionRequest {
            request_id: "does-not-exist".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn configuration_over_grpc_matches_http_and_health_is_served() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let inst = Instance::start().await;
    let anchor = lintas_globalconf::Anchor::load(&inst.anchor()).unwrap();
    let channel = inst.channel(None);

    let signed = pb::registration_client::RegistrationClient::new(channel.clone())
        .get_global_conf(pb::GetGlobalConfRequest {})
        .await
        .unwrap()
        .into_inner();
    let blob = prost::Message::encode_to_vec(&signed);
    let over_grpc =
        lintas_globalconf::verify(&blob, &anchor, lintas_globalconf::Clock::now(&*inst.clock))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let over_http =
        lintas_globalconf::ConfClient::open(anchor.clone(), dir.path(), inst.clock.clone())
            .unwrap()
            .fetch()
            .await
            .unwrap();
    assert_eq!(over_grpc.blob, over_http.blob);

    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "lintas.registry.v1.Registration",
        "lintas.registry.v1.RegistryAdmin",
    ] {
        assert_serving(health.clone(), service).await;
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn revoked_certificates_leave_the_next_configuration() {
    let inst = Instance::start().await;
    let provider = inst.node(PROVIDER, &[PROVIDER_CLIENT]);
    let consumer = inst.node(CONSUMER, &[CONSUMER_CLIENT]);
    inst.enrol(&provider).await;
    inst.enrol(&consumer).await;
    let client = inst.conf_client(&provider);
    let before = client.fetch().await.unwrap();
    let sign_der = read_cert(&consumer.paths.sign_cert());
    before
        .trust_store()
        .verify(&sign_der, Role::Member, SystemTime::now())
        .unwrap();

    let serial = lintas_certs::CertInfo::parse(&sign_der)
        .unwrap()
        .serial_hex();
    let mut admin = inst.admin();
    let r = admin
        .revoke(pb::RevokeRequest {
            serial: serial.clone(),
            reason: "key compromise".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.conf_serial > before.serial());

    let after = client.fetch().await.unwrap();
    assert_eq!(after.serial(), r.conf_serial);
    let entry = after.server(&CONSUMER.parse().unwrap()).unwrap();
    assert!(
        entry.signing_certs.is_empty(),
        "revoked certificate still listed"
    );
    assert!(
        after
            .conf
            .revoked
            .iter()
            .any(|c| lintas_certs::hex(&c.serial) == serial && c.reason == "key compromise")
    );
    let err = after
        .trust_store()
        .verify(&sign_der, Role::Member, SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, CertError::Revoked { .. }), "{err}");
    // The provider's own entry is untouched.
    provider.check_listed(&after).unwrap();

    // Revoking the TLS certificate takes the server's identity out of the configuration.
    let tls_serial = lintas_certs::CertInfo::parse(&read_cert(&consumer.paths.tls_cert()))
        .unwrap()
        .serial_hex();
    admin
        .revoke(pb::RevokeRequest {
            serial: tls_serial,
            reason: "decommissioned".into(),
        })
        .await
        .unwrap();
    let conf = client.fetch().await.unwrap();
    let err = consumer.check_listed(&conf).unwrap_err();
    assert!(
        err.to_string().contains("different TLS certificate"),
        "{err}"
    );

    // Twice, or an unknown serial: precise errors.
    let again = admin
        .revoke(pb::RevokeRequest {
            serial,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let unknown = admin
        .revoke(pb::RevokeRequest {
            serial: "0102".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let garbage = admin
        .revoke(pb::RevokeRequest {
            serial: "xyz".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn expired_and_rolled_back_configurations_are_refused_over_the_network() {
    let inst = Instance::start().await;
    let node = inst.node(PROVIDER, &[PROVIDER_CLIENT]);
    inst.enrol(&node).await;
    let client = inst.conf_client(&node);
    let held = client.fetch().await.unwrap();

    // A mirror that keeps serving this (soon old) document.
    let old_blob = held.blob.clone();
    let mirror = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mirror_url = format!("http://{}/globalconf", mirror.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/globalconf",
            axum::routing::get(move || {
                let b = old_blob.clone();
                async move { b }
            }),
        );
        axum::serve(mirror, app).await.unwrap();
    });

    // The registry publishes a newer serial; the server takes it.
    inst.admin()
        .add_group(pb::AddGroupRequest {
            code: "bansos".into(),
            description: "social assistance agencies".into(),
        })
        .await
        .unwrap();
    let newer = client.fetch().await.unwrap();
    assert!(newer.serial() > held.serial());

    // Rollback: the mirror's older document is refused.
    let rolled = inst.conf_client(&node).with_urls(vec![mirror_url.clone()]);
    let err = rolled.fetch().await.unwrap_err();
    assert!(matches!(err, ConfError::Rollback { .. }), "{err}");

    // Expiry: time passes beyond validity while the registry has re-signed nothing.
    inst.clock
        .advance(Duration::from_secs(inst.config.conf_validity_secs + 1));
    let err = client.fetch().await.unwrap_err();
    assert!(matches!(err, ConfError::Expired { .. }), "{err}");
    assert!(matches!(client.current(), Err(ConfError::Expired { .. })));

    // Any change re-signs with a fresh expiry, and servers recover.
    inst.admin()
        .add_group(pb::AddGroupRequest {
            code: "health".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let fresh = client.fetch().await.unwrap();
    assert_eq!(fresh.conf.groups.len(), 2);
    client.current().unwrap();
}

#[tokio::test]
async fn admin_api_requires_an_unrevoked_admin_certificate() {
    let inst = Instance::start().await;
    let node = inst.node(PROVIDER, &[PROVIDER_CLIENT]);
    inst.enrol(&node).await;

    // No client certificate at all.
    let mut anonymous = RegistryAdminClient::new(inst.channel(None));
    let err = anonymous
        .list_members(pb::ListMembersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("administrator client certificate"));

    // A security server's certificate is not an administrator's.
    let tls_key = lintas_certs::keys::read(&node.paths.tls_key()).unwrap();
    let tls_cert = read_cert(&node.paths.tls_cert());
    let mut server = RegistryAdminClient::new(inst.channel(Some((&tls_cert, &tls_key))));
    let err = server
        .add_member(pb::AddMemberRequest {
            id: "ID/GOV/EVIL".into(),
            name: "evil".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("security server"),
        "{}",
        err.message()
    );

    // An administrator certificate from another instance's CA is refused in the TLS
    // handshake (the client trusts our registry; only its certificate is foreign).
    let foreign = Instance::start().await;
    let foreign_admin = foreign.admin_dir();
    let cert = read_cert(&lintas_registry::admin::cert_path(&foreign_admin));
    let key = lintas_certs::keys::read(&lintas_registry::admin::key_path(&foreign_admin)).unwrap();
    let mut stranger = RegistryAdminClient::new(inst.channel(Some((&cert, &key))));
    let err = stranger
        .list_members(pb::ListMembersRequest::default())
        .await
        .unwrap_err();
    // TLS 1.3 reports a refused client certificate as an alert after the handshake.
    assert!(format!("{err:?}").contains("fatal alert"), "{err:?}");

    // An administrator certificate signed by the instance CA but not issued through the
    // registry (e.g. with `lintas certs issue` on the CA key) is refused: it could never
    // be revoked.
    let reg_dir = inst.root.join("registry");
    let ca = lintas_certs::Ca::load(
        read_cert(&reg_dir.join("ca.crt.pem")),
        lintas_certs::keys::read(&reg_dir.join("ca.key.pem")).unwrap(),
    )
    .unwrap();
    let rogue_key = lintas_certs::keys::generate().unwrap();
    let rogue = ca
        .issue_for_key(
            &rogue_key,
            &lintas_certs::Profile::Admin {
                instance: "ID".parse().unwrap(),
                name: "rogue".parse().unwrap(),
            },
            lintas_certs::ca::Validity::starting(SystemTime::now(), Duration::from_secs(3600))
                .unwrap(),
        )
        .unwrap();
    let err = RegistryAdminClient::new(inst.channel(Some((&rogue, &rogue_key))))
        .list_members(pb::ListMembersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("not issued through this registry"),
        "{}",
        err.message()
    );

    // A second administrator, issued through the API from their own CSR, can act.
    let mut admin = inst.admin();
    let bob_key = lintas_certs::keys::generate().unwrap();
    let bob_cert = admin
        .issue_admin_certificate(pb::IssueAdminCertificateRequest {
            name: "bob".into(),
            csr: lintas_certs::ca::make_csr(&bob_key, "bob").unwrap(),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate;
    let mut bob = RegistryAdminClient::new(inst.channel(Some((&bob_cert, &bob_key))));
    bob.add_group(pb::AddGroupRequest {
        code: "bobs".into(),
        description: String::new(),
    })
    .await
    .unwrap();
    let bad = admin
        .issue_admin_certificate(pb::IssueAdminCertificateRequest {
            name: "bad name".into(),
            csr: csr(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // A revoked administrator certificate is refused from then on.
    let admin_serial = lintas_certs::CertInfo::parse(&read_cert(
        &lintas_registry::admin::cert_path(&inst.admin_dir()),
    ))
    .unwrap()
    .serial_hex();
    admin
        .revoke(pb::RevokeRequest {
            serial: admin_serial,
            reason: "left the ministry".into(),
        })
        .await
        .unwrap();
    let err = admin
        .list_members(pb::ListMembersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("revoked"));
}

#[tokio::test]
async fn an_enrolled_server_cannot_pose_as_the_registry() {
    use tokio_stream::StreamExt;
    let inst = Instance::start().await;
    let node = inst.node(PROVIDER, &[PROVIDER_CLIENT]);
    inst.enrol(&node).await;
    // The server's TLS certificate names 127.0.0.1, the registry's host too, and chains
    // to the same CA: only its role tells it apart.
    let trust = node.anchor.trust_store();
    let cert = read_cert(&node.paths.tls_cert());
    let key = lintas_certs::keys::read(&node.paths.tls_key()).unwrap();
    let config =
        lintas_transport::server_config(&cert, &key, trust, lintas_transport::ClientAuth::Optional)
            .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let mut incoming = lintas_transport::incoming(
        listener,
        config,
        lintas_transport::Admission::new("test", Default::default()),
    );
    tokio::spawn(async move { while incoming.next().await.is_some() {} });

    let connect = |role| {
        let tls = lintas_transport::client_config(trust, role, None).unwrap();
        pb::registration_client::RegistrationClient::new(
            lintas_transport::channel(&url, tls).unwrap(),
        )
    };
    let err = connect(lintas_certs::Role::Registry)
        .status(pb::StatusRequest {
            request_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let chain = format!("{:?}", std::error::Error::source(&err));
    assert!(chain.contains("expected the registry"), "{chain}");
}

fn csr() -> Vec<u8> {
    lintas_certs::ca::make_csr(&lintas_certs::keys::generate().unwrap(), "t").unwrap()
}

#[tokio::test]
async fn bad_registrations_and_admin_input_are_refused_with_clear_errors() {
    let inst = Instance::start().await;
    let mut reg = pb::registration_client::RegistrationClient::new(inst.channel(None));
    let good = || pb::RegistrationRequest {
        server_id: PROVIDER.into(),
        address: "127.0.0.1:5500".into(),
        tls_csr: csr(),
        signing_csr: csr(),
        log_csr: csr(),
        clients: vec![PROVIDER_CLIENT.into()],
        ..Default::default()
    };
    let refused = |code: Code, needle: &'static str| {
        move |r: Result<tonic::Response<pb::RegistrationStatus>, tonic::Status>| {
            let e = r.expect_err(needle);
            assert_eq!(e.code(), code, "{}", e.message());
            assert!(
                e.message().contains(needle),
                "'{}' lacks '{needle}'",
                e.message()
            );
        }
    };

    // Each bad request, and what the refusal must say.
    type Spoil = fn(&mut pb::RegistrationRequest);
    let bad: [(Spoil, &str); 11] = [
        (|r| r.tls_csr = b"\x30\x03garbage".to_vec(), "tls_csr"),
        (
            |r| {
                let n = r.signing_csr.len();
                r.signing_csr[n - 5] ^= 0xff; // signature damaged: no proof of possession
            },
            "signing_csr",
        ),
        (|r| r.signing_csr = r.tls_csr.clone(), "separate"),
        (
            |r| r.log_csr = Vec::new(),
            "log_csr: certificate signing request refused: empty",
        ),
        (
            |r| r.log_csr = r.signing_csr.clone(),
            "the log key must be separate",
        ),
        (
            |r| r.server_id = "ID/GOV/KEMEN DAGRI/SS1".into(),
            "character ' '",
        ),
        (
            |r| r.server_id = format!("ID/GOV/{}/SS1", "A".repeat(70)),
            "at most 64",
        ),
        (|r| r.server_id = "XX/GOV/KEMENDAGRI/SS1".into(), "instance"),
        (
            |r| r.clients = vec!["ID/GOV/KEMENSOS/DTKS".into()],
            "not a subsystem of",
        ),
        (|r| r.address = "127.0.0.1".into(), "address"),
        (|r| r.member_name = "x".repeat(300), "member_name"),
    ];
    for (spoil, needle) in bad {
        let mut r = good();
        spoil(&mut r);
        refused(Code::InvalidArgument, needle)(reg.submit(r).await);
    }

    // Oversized requests are cut off before they are decoded.
    let mut r = good();
    r.member_name = "x".repeat(inst.config.max_request_bytes + 1);
    let e = reg.submit(r).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{}", e.message());

    // Polling with an unknown id.
    let e = reg
        .status(pb::StatusRequest {
            request_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Nothing of the above left a trace.
    let mut admin = inst.admin();
    let all = admin
        .list_registrations(pb::ListRegistrationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .registrations;
    assert!(all.is_empty());

    // Administrative input is checked too.
    let e = admin
        .add_member(pb::AddMemberRequest {
            id: "ID/GOV".into(),
            name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    admin
        .add_member(pb::AddMemberRequest {
            id: "ID/GOV/KEMENKES".into(),
            name: "Kementerian Kesehatan".into(),
        })
        .await
        .unwrap();
    let e = admin
        .add_member(pb::AddMemberRequest {
            id: "ID/GOV/KEMENKES".into(),
            name: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = admin
        .add_subsystem(pb::AddSubsystemRequest {
            id: "ID/GOV/NOBODY/X".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    admin
        .add_group(pb::AddGroupRequest {
            code: "health".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let e = admin
        .add_group_member(pb::GroupMemberRequest {
            code: "health".into(),
            client: "ID/GOV/KEMENKES/UNKNOWN".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = admin
        .create_enrolment_token(pb::CreateEnrolmentTokenRequest {
            server_id: "ID/GOV/KEMENKES".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn registry_restart_keeps_all_state() {
    let mut inst = Instance::start().await;
    let node = inst.node(PROVIDER, &[PROVIDER_CLIENT]);
    inst.enrol(&node).await;
    let pending = inst.node(CONSUMER, &[CONSUMER_CLIENT]);
    let pending_id = pending.register(None).await.unwrap().request_id;
    let mut admin = inst.admin();
    admin
        .add_group(pb::AddGroupRequest {
            code: "bansos".into(),
            description: "social assistance".into(),
        })
        .await
        .unwrap();
    admin
        .add_group_member(pb::GroupMemberRequest {
            code: "bansos".into(),
            client: PROVIDER_CLIENT.into(),
        })
        .await
        .unwrap();
    let token = admin
        .create_enrolment_token(pb::CreateEnrolmentTokenRequest {
            server_id: "ID/GOV/KEMENSOS/SS2".into(),
            ttl_seconds: 600,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let before = inst.conf_client(&node).fetch().await.unwrap();

    inst.restart().await;

    let mut admin = inst.admin();
    let servers = admin
        .list_servers(pb::ListServersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .servers;
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].certificates.len(), 2);
    let pending_now = inst.pending().await;
    assert_eq!(pending_now.len(), 1);
    assert_eq!(pending_now[0].request_id, pending_id);

    // The restarted registry continues the serial and serves the same contents.
    let after = inst.conf_client(&node).fetch().await.unwrap();
    assert!(after.serial() > before.serial());
    assert_eq!(after.conf.members, before.conf.members);
    assert_eq!(after.conf.servers, before.conf.servers);
    assert_eq!(after.conf.groups, before.conf.groups);
    node.check_listed(&after).unwrap();

    // The pending request can still be approved; the unused token still works once.
    admin
        .approve(pb::DecisionRequest {
            request_id: pending_id,
            reason: String::new(),
        })
        .await
        .unwrap();
    assert!(matches!(
        pending.poll().await.unwrap(),
        Enrolment::Approved(_)
    ));
    let late = inst.node("ID/GOV/KEMENSOS/SS2", &[]);
    assert_eq!(
        late.register(Some(&token)).await.unwrap().state(),
        pb::RegistrationState::Approved
    );
}

/// Asks the gRPC health service behind `health` about `service`; it must be SERVING.
async fn assert_serving(
    mut health: tonic_health::pb::health_client::HealthClient<Channel>,
    service: &str,
) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let status = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving, "{service}");
}

/// Asks gRPC server reflection (v1) at `channel` one question as `client`.
async fn reflect(
    channel: Channel,
    client: &str,
    request: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> tonic_reflection::pb::v1::ServerReflectionResponse {
    use tonic_reflection::pb::v1 as refl;
    let mut r = tonic::Request::new(tokio_stream::iter([refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]));
    r.metadata_mut()
        .insert("lintas-client", client.parse().unwrap());
    refl::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(r)
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap()
}

/// The services reflection at `channel` lists for `client`.
async fn reflected_services(channel: Channel, client: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let answer = reflect(channel, client, MessageRequest::ListServices(String::new())).await;
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// A child process of a test, stopped with SIGTERM when dropped (also when the test
/// fails), so no server outlives its test.
struct Daemon(Option<std::process::Child>);

impl Daemon {
    /// The process id.
    fn pid(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` and waits for the process to end.
    fn stop_with(&mut self, signal: &str) {
        if let Some(mut child) = self.0.take() {
            let _ = std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_with("-TERM");
    }
}

/// Runs a command and returns stdout, failing the test with stderr if it fails.
fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn openssl_accepts_the_issued_chains_and_key_usages() {
    let inst = Instance::start().await;
    let node = inst.node(PROVIDER, &[PROVIDER_CLIENT]);
    inst.enrol(&node).await;
    let reg = inst.root.join("registry");
    let ca = reg.join("ca.crt.pem");
    let certs = [
        (
            node.paths.tls_cert(),
            vec![
                "TLS Web Server Authentication",
                "TLS Web Client Authentication",
            ],
        ),
        (
            node.paths.sign_cert(),
            vec!["Non Repudiation", "URI:lintas:member:ID/GOV/KEMENDAGRI"],
        ),
        (
            reg.join("tsa.crt.pem"),
            vec!["X509v3 Extended Key Usage: critical", "Time Stamping"],
        ),
        (
            reg.join("admin/admin.crt.pem"),
            vec!["TLS Web Client Authentication", "URI:lintas:admin:ID/admin"],
        ),
        (reg.join("globalconf.crt.pem"), vec!["Non Repudiation"]),
    ];
    for (cert, expected) in certs {
        let out = run(std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca)
            .arg(&cert));
        assert!(out.contains(": OK"), "{out}");
        let text = run(std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert));
        for e in expected {
            assert!(text.contains(e), "{} lacks '{e}':\n{text}", cert.display());
        }
    }
    let text = run(std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&ca));
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign"), "{text}");
}

#[test]
fn example_configs_load_and_refuse_a_bogus_key() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let dir = tempfile::tempdir().unwrap();
    for (name, check) in [
        (
            "registry.toml",
            (|p: &Path| {
                RegistryConfig::load(p, std::iter::empty())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }) as fn(&Path) -> Result<(), String>,
        ),
        ("ss.toml", |p: &Path| {
            SsConfig::load(p, std::iter::empty())
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    ] {
        let text = std::fs::read_to_string(examples.join(name)).unwrap();
        let good = dir.path().join(name);
        std::fs::write(&good, &text).unwrap();
        check(&good).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bogus = dir.path().join(format!("bogus-{name}"));
        std::fs::write(&bogus, format!("{text}\nbogus_key = true\n")).unwrap();
        let err = check(&bogus).unwrap_err();
        assert!(err.contains("bogus_key"), "{name}: {err}");
    }
}

#[test]
fn the_binary_inits_checks_serves_and_stops_on_sigterm() {
    use std::io::BufRead;
    let bin = env!("CARGO_BIN_EXE_lintas");
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    let init = |grpc: &str, http: &str| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["registry", "init", "--instance", "ID"])
            .args(["--grpc-listen", grpc, "--http-listen", http, "--dir"])
            .arg(&reg);
        cmd
    };
    // Port 0 would put an unreachable address into the trust anchor.
    let out = init("127.0.0.1:0", "127.0.0.1:0").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 0"));
    assert!(
        !reg.join("ca.key.pem").exists(),
        "nothing is created on refusal"
    );
    // Ports the OS chose a moment ago are free for the registry to bind.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let out = run(&mut init(&free(), &free()));
    assert!(out.contains("anchor SHA-256"), "{out}");
    let config = reg.join("registry.toml");
    let check = || {
        run(std::process::Command::new(bin)
            .args(["registry", "serve", "--check-config", "--config"])
            .arg(&config))
    };
    let out = check();
    assert!(out.contains("are valid"), "{out}");
    // Checking changes nothing: the same serial twice.
    assert_eq!(check(), out);

    // An unknown environment override is refused by --check-config.
    let out = std::process::Command::new(bin)
        .args(["registry", "serve", "--check-config", "--config"])
        .arg(&config)
        .env("LINTAS_REGISTRY_LISTEN_EVERYWHERE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_everywhere"));

    // Its log goes to a file, as under a service manager: plain text, no colour codes.
    let log_path = dir.path().join("registry.log");
    let mut child = std::process::Command::new(bin)
        .args(["registry", "serve", "--config"])
        .arg(&config)
        .env("LINTAS_REGISTRY_OPS_LISTEN", "127.0.0.1:0")
        .env("LINTAS_REGISTRY_MANAGEMENT_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("lintas registry listening: grpc=127.0.0.1:"),
        "{line}"
    );
    run(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let status = child.wait().unwrap();
    assert!(status.success(), "registry exited with {status}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("operations listener"), "{log}");
    assert!(!log.contains('\x1b'), "ANSI codes in a log file:\n{log}");
    assert!(!log.contains("PRIVATE KEY"), "a key in the log:\n{log}");
}

#[test]
fn the_dev_pki_commands_issue_certificates_that_verify() {
    let bin = env!("CARGO_BIN_EXE_lintas");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lintas = |args: &[&str]| {
        let mut cmd = std::process::Command::new(bin);
        cmd.current_dir(d).args(args);
        cmd
    };
    run(&mut lintas(&[
        "certs",
        "ca",
        "--out",
        "ca",
        "--instance",
        "DEV",
    ]));
    run(&mut lintas(&[
        "certs",
        "csr",
        "--key-out",
        "m.key",
        "--csr-out",
        "m.csr",
    ]));
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.join("m.key")).unwrap().permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    run(&mut lintas(&[
        "certs",
        "issue",
        "--ca",
        "ca",
        "--csr",
        "m.csr",
        "--role",
        "member",
        "--id",
        "DEV/GOV/DINAS",
        "--out",
        "m.crt",
    ]));
    let shown = run(&mut lintas(&["certs", "show", "m.crt"]));
    assert!(shown.contains("lintas:member:DEV/GOV/DINAS"), "{shown}");
    assert!(shown.contains("nonRepudiation"), "{shown}");
    let ok = run(&mut lintas(&[
        "certs",
        "verify",
        "--ca",
        "ca/ca.crt.pem",
        "--role",
        "member",
        "m.crt",
    ]));
    assert!(ok.starts_with("OK"), "{ok}");

    // The wrong role, another instance's id, or an absurd validity are refused.
    let wrong = lintas(&[
        "certs",
        "verify",
        "--ca",
        "ca/ca.crt.pem",
        "--role",
        "server",
        "m.crt",
    ])
    .output()
    .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("expected a security server"));
    run(&mut lintas(&[
        "certs",
        "csr",
        "--key-out",
        "x.key",
        "--csr-out",
        "x.csr",
    ]));
    let foreign = lintas(&[
        "certs", "issue", "--ca", "ca", "--csr", "x.csr", "--role", "member", "--id", "ID/GOV/X",
        "--out", "x.crt",
    ])
    .output()
    .unwrap();
    assert!(!foreign.status.success());
    assert!(String::from_utf8_lossy(&foreign.stderr).contains("not of instance"));
    let absurd = lintas(&[
        "certs",
        "issue",
        "--ca",
        "ca",
        "--csr",
        "x.csr",
        "--role",
        "member",
        "--id",
        "DEV/GOV/X",
        "--days",
        "99999999999",
        "--out",
        "x.crt",
    ])
    .output()
    .unwrap();
    assert!(!absurd.status.success());
    assert!(String::from_utf8_lossy(&absurd.stderr).contains("out of range"));
}

#[test]
fn the_demo_runs_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lintas"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{out}\n{err}");
    // Refusals are part of the story, not errors: nothing is logged.
    assert!(err.trim().is_empty(), "the demo logged:\n{err}");
    for expected in [
        "approved at once",
        "already been used",
        "signature does not verify",
        "not an administrator",
        "not a DER PKCS#10",
        "Siti Rahayu",
        "PKH asks the same: refused by the provider-server",
        "refused: Unauthenticated: request signature does not verify",
        "PKH's application claims to be ID/GOV/KEMENSOS/DTKS: refused by the consumer-server",
        "lists certificate",
        "asks again: refused by the provider-server: request signing certificate refused",
        "methods CekPeserta",
        "Dewi Rahayu (3174014107120003): no JKN membership; pupil at SMP Negeri 109 Jakarta, grade 8",
        "PKH: eligible; education components: 1",
        "ID/GOV/KEMENSOS/DTKS hears: WAFAT for NIK 3174012305870001 (event 1)",
        "ID/GOV/BPJSKES/JKN hears: WAFAT for NIK 3174012305870001 (event 1)",
        "it sends the same payment again, as after a lost answer: the same NTPN",
        "another amount under the same key: refused: FailedPrecondition",
        "the treasury's register holds one payment",
        "evidence-kemensos.pb): verified",
        "evidence-kemendagri.pb): verified",
        "hold the same signed request and the same signed response",
        "Demo finished",
    ] {
        assert!(
            out.contains(expected),
            "demo output lacks '{expected}':\n{out}"
        );
    }

    // The bundles it wrote verify from the command line too, as an auditor would run it.
    let bundles = [
        dir.path().join("evidence-kemensos.pb"),
        dir.path().join("evidence-kemendagri.pb"),
    ];
    let anchor = dir.path().join("registry/anchor.toml");
    let verify = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lintas"))
            .args(["audit", "verify"])
            .args(&bundles)
            .arg("--anchor")
            .arg(&anchor)
            .args(extra)
            .output()
            .unwrap()
    };
    let run = verify(&[]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{out}");
    assert!(out.contains("Result: the evidence verifies."), "{out}");
    let run = verify(&["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["bundles"][0]["origin"], "ID/GOV/KEMENSOS/SS1");
    assert_eq!(json["bundles"][1]["exchanges"][0]["status"][0], 0);

    // One changed byte in a record, and the command fails saying where.
    let mut bytes = std::fs::read(&bundles[1]).unwrap();
    let at = bytes
        .windows(DUKCAPIL_BYTES.len())
        .position(|w| w == DUKCAPIL_BYTES)
        .unwrap();
    bytes[at + DUKCAPIL_BYTES.len() - 1] ^= 0x20;
    std::fs::write(&bundles[1], &bytes).unwrap();
    let run = verify(&[]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(!run.status.success(), "{out}");
    assert!(out.contains("FAILED: entry"), "{out}");
    assert!(
        out.contains("Result: the evidence does NOT verify."),
        "{out}"
    );
}

const DUKCAPIL_BYTES: &[u8] = b"ID/GOV/KEMENDAGRI/DUKCAPIL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_keeps_running_when_asked_and_can_be_called() {
    use lintas_examples::kependudukan::v1::{CariNikRequest, penduduk_client::PendudukClient};
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lintas"))
        .args(["demo", "--keep-running", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut demo = Daemon(Some(child));
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let stop = line.starts_with("Stop with Ctrl-C");
        printed.push(line);
        if stop {
            break;
        }
    }
    // The grpcurl command it printed: -cacert C -cert C -key K … ADDRESS SERVICE/METHOD
    let words: Vec<&str> = printed.iter().flat_map(|l| l.split_whitespace()).collect();
    let after = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).expect(flag);
        words[i + 1].to_owned()
    };
    let (ca, cert, key) = (after("-cacert"), after("-cert"), after("-key"));
    let address = words[words.len()
        - 1
        - words
            .iter()
            .rev()
            .position(|w| w.ends_with("/CariNik"))
            .unwrap()
        - 1];
    let read = |p: &str| std::fs::read_to_string(p).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&ca)))
        .identity(tonic::transport::Identity::from_pem(
            read(&cert),
            read(&key),
        ))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = tonic::Request::new(CariNikRequest {
        nik: "5171011201850003".into(),
    });
    req.metadata_mut()
        .insert("lintas-client", "ID/GOV/KEMENSOS/DTKS".parse().unwrap());
    req.metadata_mut().insert(
        "lintas-service",
        "ID/GOV/KEMENDAGRI/DUKCAPIL".parse().unwrap(),
    );
    let answer = PendudukClient::new(channel.clone())
        .cari_nik(req)
        .await
        .unwrap();
    assert_eq!(answer.into_inner().nama, "Ni Made Ayu");

    // Reflection, as grpcurl's `list` uses it: the legacy services DTKS may call.
    let names = reflected_services(channel, "ID/GOV/KEMENSOS/DTKS").await;
    assert_eq!(
        names,
        [
            "bpjs.v1.Kepesertaan",
            "dukcapil.v1.Kependudukan",
            "dapodik.v1.Sekolah"
        ]
    );
    run(std::process::Command::new("kill")
        .args(["-TERM", &demo.0.as_ref().unwrap().id().to_string()]));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(demo.0.take().unwrap().wait().unwrap().success());
    assert!(rest.iter().any(|l| l.contains("Demo finished")), "{rest:?}");
}
