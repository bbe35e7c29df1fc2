//! The lintas central registry: one per instance. It is the certification authority for
//! member and server certificates, runs the registration workflow, and signs and serves
//! the global configuration (over gRPC and as a plain HTTP GET of the signed blob).
//!
//! - [`init`] creates an instance: CA, configuration-signing key, TSA key, the registry's
//!   TLS key, a first administrator certificate, the database and the trust anchor.
//! - [`open`] loads it; [`serve`] runs it on listeners the caller has bound.
//! - [`registry`] holds the logic, [`grpc`] the wire edge, [`store`] the persistence trait.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backup;
pub mod config;
pub mod grpc;
pub mod manage;
pub mod mirror;
mod ops;
mod published;
pub mod registry;
pub mod rotation;
pub mod store;
mod tsa_http;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lintas_certs::ca::Validity;
use lintas_certs::pem::cert_to_pem;
use lintas_certs::{Ca, CertError, CertInfo, KeyPair, Profile, TrustStore, keys};
use lintas_globalconf::{Anchor, Clock, ConfError};
use lintas_identifiers::{Code, HostPort};
use lintas_proto::registry::v1::registration_server::RegistrationServer;
use lintas_proto::registry::v1::registry_admin_server::RegistryAdminServer;
use tokio::net::TcpListener;

pub use config::RegistryConfig;
use registry::{Keys, Policy, Registry, RegistryError};

const YEAR: Duration = Duration::from_secs(365 * 86400);

/// Errors starting or running the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Transport(#[from] lintas_transport::TransportError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("init: {0}")]
    Init(String),
    /// The registry's keys, certificates and anchor do not fit together.
    #[error("{0}")]
    Keys(String),
    /// A rotation step that may not be taken now.
    #[error("{0}")]
    Refused(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegistryServeError {
    let what = what.into();
    move |source| RegistryServeError::Io { what, source }
}

/// Where everything lives inside the registry's data directory.
#[derive(Debug, Clone)]
pub struct Paths(pub PathBuf);

impl Paths {
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.crt.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key.pem")
    }
    pub fn conf_cert(&self) -> PathBuf {
        self.0.join("globalconf.crt.pem")
    }
    pub fn conf_key(&self) -> PathBuf {
        self.0.join("globalconf.key.pem")
    }
    pub fn tls_cert(&self) -> PathBuf {
        self.0.join("tls.crt.pem")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.0.join("tls.key.pem")
    }
    pub fn tsa_cert(&self) -> PathBuf {
        self.0.join("tsa.crt.pem")
    }
    pub fn tsa_key(&self) -> PathBuf {
        self.0.join("tsa.key.pem")
    }
    pub fn anchor(&self) -> PathBuf {
        self.0.join("anchor.toml")
    }
    pub fn db(&self) -> PathBuf {
        self.0.join("db")
    }
    /// The first administrator's credentials (move them to the administrator's machine).
    pub fn admin_dir(&self) -> PathBuf {
        self.0.join("admin")
    }
    /// Users and API keys of the management API and console.
    pub fn users(&self) -> PathBuf {
        self.0.join("users.json")
    }
    /// The admin audit log of the management API, console and certificate admin API.
    pub fn admin_audit_log(&self) -> PathBuf {
        self.0.join("admin-audit.jsonl")
    }
    /// The management listener's own TLS certificate and key (made at first start).
    pub fn management_cert(&self) -> PathBuf {
        self.0.join("management.crt.pem")
    }
    pub fn management_key(&self) -> PathBuf {
        self.0.join("management.key.pem")
    }
}

/// Parameters of `lintas registry init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub instance: Code,
    pub dir: PathBuf,
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// Host name or IP address security servers use to reach the registry.
    pub public_host: String,
    pub admin_name: Code,
    /// Where the state is kept: empty for the embedded database, or a `postgres://` URL
    /// that several registry nodes share.
    pub database: String,
    /// The other registry nodes over `database`, listed in the anchor after this one.
    pub other_nodes: Vec<NodeUrls>,
    /// The token to make the configuration-signing and time-stamping keys in (key files
    /// when absent).
    pub pkcs11: Option<lintas_pkcs11::Pkcs11Config>,
}

/// Where security servers reach one registry node.
#[derive(Debug, Clone)]
pub struct NodeUrls {
    /// Its gRPC API, `https://host:port`.
    pub grpc_url: String,
    /// Its signed configuration, `http://host:port/globalconf`.
    pub globalconf_url: String,
}

/// What `init` created.
#[derive(Debug)]
pub struct InitReport {
    pub config_path: PathBuf,
    pub anchor_path: PathBuf,
    pub anchor_fingerprint: String,
    pub admin_dir: PathBuf,
}

fn write_cert(path: &Path, der: &[u8]) -> Result<(), RegistryServeError> {
    Ok(lintas_certs::files::write_new(
        path,
        cert_to_pem(der).as_bytes(),
        0o644,
    )?)
}

/// The hosts security servers reach the registry nodes at: this one's, then the other
/// nodes' (from their gRPC URLs), each once.
fn node_hosts(opts: &InitOptions) -> Result<Vec<String>, RegistryServeError> {
    let mut hosts = vec![opts.public_host.clone()];
    for node in &opts.other_nodes {
        let uri: tonic::codegen::http::Uri = node.grpc_url.parse().map_err(|_| {
            RegistryServeError::Init(format!("--other-node {}: not a URL", node.grpc_url))
        })?;
        let host = uri
            .host()
            .ok_or_else(|| {
                RegistryServeError::Init(format!("--other-node {}: no host", node.grpc_url))
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// Creates a new instance in `opts.dir` (which must not already hold one).
pub fn init(opts: &InitOptions, clock: Arc<dyn Clock>) -> Result<InitReport, RegistryServeError> {
    if !opts.other_nodes.is_empty() && opts.database.is_empty() {
        return Err(RegistryServeError::Init(
            "other registry nodes need --database: nodes share one PostgreSQL database".into(),
        ));
    }
    // What goes into the anchor must be reachable: a real host and real ports.
    let public = |port| {
        HostPort::new(&opts.public_host, port).map_err(|e| {
            RegistryServeError::Init(format!(
                "{e} (give --public-host and listen addresses with fixed ports)"
            ))
        })
    };
    let grpc_public = public(opts.grpc_listen.port())?;
    let http_public = public(opts.http_listen.port())?;
    let paths = Paths(opts.dir.clone());
    std::fs::create_dir_all(&opts.dir).map_err(io(opts.dir.display().to_string()))?;
    let config_path = opts.dir.join("registry.toml");
    if config_path.exists() {
        return Err(RegistryServeError::Cert(CertError::AlreadyExists {
            path: config_path,
        }));
    }
    let now = clock.now();
    let instance = &opts.instance;
    let ca = Ca::create(instance, Validity::starting(now, 20 * YEAR)?)?;
    keys::write(&paths.ca_key(), ca.key())?;
    write_cert(&paths.ca_cert(), ca.cert_der())?;

    // The signing keys of the instance (configuration, time-stamps) are made in the
    // token when one is given; TLS and admin keys are always files.
    let issue_own = |profile: Profile,
                     key_path: PathBuf,
                     cert_path: PathBuf,
                     years: u32,
                     token: Option<&lintas_pkcs11::Pkcs11Config>| {
        let label = format!("lintas {instance} {}", profile.identity());
        let key = lintas_pkcs11::generate(&key_path, token, &label)?;
        let cert = ca.issue_for_key(&*key, &profile, Validity::starting(now, years * YEAR)?)?;
        write_cert(&cert_path, &cert)?;
        Ok::<_, RegistryServeError>(cert)
    };
    let token = opts.pkcs11.as_ref();
    let conf_cert = issue_own(
        Profile::GlobalConf {
            instance: instance.clone(),
        },
        paths.conf_key(),
        paths.conf_cert(),
        5,
        token,
    )?;
    issue_own(
        Profile::Registry {
            instance: instance.clone(),
            // Every node presents this certificate: it names each node's host.
            hosts: node_hosts(opts)?,
        },
        paths.tls_key(),
        paths.tls_cert(),
        2,
        None,
    )?;
    issue_own(
        Profile::Tsa {
            instance: instance.clone(),
            name: Code::parse_part("tsa", "name").map_err(|e| CertError::Issue(e.to_string()))?,
        },
        paths.tsa_key(),
        paths.tsa_cert(),
        10,
        token,
    )?;
    std::fs::create_dir_all(paths.admin_dir()).map_err(io("admin directory"))?;
    let admin_cert = issue_own(
        Profile::Admin {
            instance: instance.clone(),
            name: opts.admin_name.clone(),
        },
        paths.admin_dir().join("admin.key.pem"),
        paths.admin_dir().join("admin.crt.pem"),
        1,
        None,
    )?;
    std::fs::copy(paths.ca_cert(), paths.admin_dir().join("ca.crt.pem"))
        .map_err(io("copying CA certificate"))?;

    let config = RegistryConfig {
        instance: instance.clone(),
        grpc_listen: opts.grpc_listen,
        http_listen: opts.http_listen,
        public_url: format!("https://{grpc_public}"),
        other_node_urls: opts
            .other_nodes
            .iter()
            .map(|n| n.grpc_url.clone())
            .collect(),
        globalconf_urls: std::iter::once(format!("http://{http_public}/globalconf"))
            .chain(opts.other_nodes.iter().map(|n| n.globalconf_url.clone()))
            .collect(),
        data_dir: PathBuf::from("."),
        database: opts.database.clone(),
        conf_validity_secs: 3600,
        conf_refresh_secs: 600,
        cert_validity_days: 730,
        token_ttl_secs: 86400,
        max_request_bytes: 64 * 1024,
        tsa_url: format!("http://{http_public}/tsa"),
        tsa_policy: lintas_timestamp::DEFAULT_POLICY.into(),
        connection_limits: Default::default(),
        ops_listen: config::default_ops_listen(),
        management_listen: config::default_management_listen(),
        management_hostnames: {
            let mut names = config::default_management_hostnames();
            if !names.contains(&opts.public_host) {
                names.push(opts.public_host.clone());
            }
            names
        },
        warn_cert_expiry_days: 30,
        max_pending_registrations: 10_000,
        max_pending_per_source: 20,
        registration_ttl_secs: 7 * 86400,
        tsa_requests_per_minute_per_source: 120,
        auto_approve_renewals: true,
        renewal_grace_days: 7,
        pkcs11: opts.pkcs11.clone(),
    };
    let anchor = Anchor::new(
        instance.clone(),
        config.node_urls().into_iter().map(str::to_owned).collect(),
        config.globalconf_urls.clone(),
        &[ca.cert_der().to_vec()],
        &[conf_cert],
    )?;
    lintas_certs::files::write_new(&paths.anchor(), anchor.text.as_bytes(), 0o644)?;
    let header = "# lintas central registry. Keys and database live beside this file.\n\
                  # Environment variables LINTAS_REGISTRY_<KEY> override any key below.\n";
    // A database URL may carry a password: then only the owner reads the file.
    let mode = if lintas_settings::redact_url(&config.database) == config.database {
        0o644
    } else {
        0o600
    };
    lintas_certs::files::write_new(
        &config_path,
        format!("{header}{}", config.to_toml()).as_bytes(),
        mode,
    )?;
    // Opening the registry creates the database; recording the first administrator
    // certificate publishes configuration serial 1.
    let registry = open(
        &RegistryConfig {
            data_dir: opts.dir.clone(),
            ..config
        },
        clock,
    )?;
    registry.record_admin_cert("init", &admin_cert)?;
    // The management listener's certificate, for its names (replaceable later).
    management_identity(&paths, &config_names(&config_path)?)?;
    Ok(InitReport {
        config_path,
        anchor_path: paths.anchor(),
        anchor_fingerprint: anchor.fingerprint,
        admin_dir: paths.admin_dir(),
    })
}

fn read_cert(path: &Path) -> Result<Vec<u8>, RegistryServeError> {
    Ok(lintas_certs::files::read_cert(path)?)
}

/// Checks the registry's configuration, keys and database as `serve` would find them,
/// without serving. Beside a running registry that holds the embedded database, the
/// keys and certificates are checked and the database is the running registry's:
/// then `None`; otherwise the registry as opened.
pub fn check(
    config: &RegistryConfig,
    clock: Arc<dyn Clock>,
) -> Result<Option<Arc<Registry>>, RegistryServeError> {
    let paths = Paths(config.data_dir.clone());
    if config.database.is_empty() && lintas_log::sled_in_use(&paths.db()) {
        load_keys(config, &paths)?;
        return Ok(None);
    }
    open(config, clock).map(Some)
}

fn load_keys(config: &RegistryConfig, paths: &Paths) -> Result<Keys, RegistryServeError> {
    let ca = Ca::load(read_cert(&paths.ca_cert())?, keys::read(&paths.ca_key())?)?;
    if ca.instance() != &config.instance {
        return Err(RegistryServeError::Cert(CertError::Issue(format!(
            "the CA in {} is for instance {}, the configuration says {}",
            paths.ca_cert().display(),
            ca.instance(),
            config.instance
        ))));
    }
    let anchor = Anchor::load(&paths.anchor())?;
    if !anchor.ca_certs.iter().any(|c| c[..] == *ca.cert_der()) {
        return Err(RegistryServeError::Keys(format!(
            "the CA in {} is not one {} lists",
            paths.ca_cert().display(),
            paths.anchor().display()
        )));
    }
    let conf_cert = read_cert(&paths.conf_cert())?;
    if !anchor.signing_certs.contains(&conf_cert) {
        return Err(RegistryServeError::Keys(format!(
            "the configuration-signing certificate {} is not one {} lists: servers would refuse what it signs",
            paths.conf_cert().display(),
            paths.anchor().display()
        )));
    }
    let conf_key = lintas_pkcs11::load(&paths.conf_key(), config.pkcs11.as_ref())?;
    if !lintas_certs::signer::holds(&conf_cert, &*conf_key)? {
        return Err(RegistryServeError::Keys(format!(
            "{} does not hold the key in {} (a `lintas registry keys activate conf-signing` cut short? run it again)",
            paths.conf_cert().display(),
            paths.conf_key().display()
        )));
    }
    Ok(Keys {
        conf_key,
        conf_cert,
        tsa_cert: read_cert(&paths.tsa_cert())?,
        cas: anchor.ca_certs.clone(),
        anchor_signature: lintas_certs::sig::sign(
            ca.key(),
            lintas_globalconf::anchor::ANCHOR_DOMAIN,
            anchor.text.as_bytes(),
        )?,
        anchor_text: anchor.text,
        ca,
    })
}

/// Loads the registry's keys and database. Used by `serve`.
pub fn open(
    config: &RegistryConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<Registry>, RegistryServeError> {
    let paths = Paths(config.data_dir.clone());
    let keys = load_keys(config, &paths)?;
    let store: Arc<dyn store::RegistryStore> = if config.database.is_empty() {
        Arc::new(store::SledStore::open(&paths.db())?)
    } else {
        Arc::new(store::PostgresStore::open(&config.database)?)
    };
    let policy = Policy {
        instance: config.instance.clone(),
        registration: registry::PendingLimits {
            max_total: config.max_pending_registrations,
            max_per_source: config.max_pending_per_source,
            ttl_secs: i64::try_from(config.registration_ttl_secs).unwrap_or(i64::MAX),
        },
        conf_validity: Duration::from_secs(config.conf_validity_secs),
        cert_validity: Duration::from_secs(config.cert_validity_days * 86400),
        token_ttl: Duration::from_secs(config.token_ttl_secs),
        tsa_urls: config.effective_tsa_urls(),
        auto_approve_renewals: config.auto_approve_renewals,
        renewal_grace: Duration::from_secs(config.renewal_grace_days * 86400),
    };
    Ok(Arc::new(Registry::open(store, keys, policy, clock)?))
}

/// How often a registry node looks for changes other nodes stored.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The listeners a registry serves on, already bound.
pub struct Listeners {
    /// The gRPC API (TLS 1.3).
    pub grpc: TcpListener,
    /// The signed global configuration and the TSA (plain HTTP).
    pub http: TcpListener,
    /// `/metrics`, `/healthz` and `/readyz`.
    pub ops: TcpListener,
    /// The management API and console (HTTPS), if served.
    pub management: Option<TcpListener>,
}

/// Serves `registry` on already-bound listeners until `shutdown` completes: the gRPC API
/// over TLS 1.3, the signed global configuration and the TSA over HTTP, the operations
/// listener, a periodic re-signing of the configuration before it expires (which also
/// expires undecided registration requests).
pub async fn serve(
    registry: Arc<Registry>,
    config: &RegistryConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RegistryServeError> {
    let Listeners {
        grpc,
        http,
        ops,
        management,
    } = listeners;
    let paths = Paths(config.data_dir.clone());
    // A fresh serial and expiry at every start: the stored document may have expired.
    let started = registry.clone();
    tokio::task::spawn_blocking(move || started.republish("registry", "started"))
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()))??;
    // A new certificate waiting in a rotation is announced from now on.
    rotation::note_announced(&paths, registry.clock_now())?;
    // `keys activate ca` issued the administrator certificate kept in admin/ again.
    if let Some(der) = rotation::reissued_admin(&paths, registry.clock_now())?
        && !registry.knows_admin_cert(&CertInfo::parse(&der)?.serial_hex())
    {
        registry.record_admin_cert("registry keys activate ca", &der)?;
    }
    let tls_key: KeyPair = keys::read(&paths.tls_key())?;
    let tls_cert = read_cert(&paths.tls_cert())?;
    // Clients (servers, administrators) may hold certificates of every CA the anchor
    // lists: during a rotation of the CA, of the old one and of the new.
    let cas = Anchor::load(&paths.anchor())?.ca_certs;
    let clients = TrustStore::new(cas.iter().map(Vec::as_slice))?;
    let tls = lintas_transport::server_config(
        &tls_cert,
        &tls_key,
        &clients,
        lintas_transport::ClientAuth::Optional,
    )?;

    let stop = lintas_transport::Stop::on(shutdown);
    // Users and the admin audit log: the management listener's and the gRPC admin API's.
    let plane = plane(&paths)?;

    let limits = &config.connection_limits;
    let grpc_admission = lintas_transport::Admission::new("grpc", *limits);
    let http_admission = lintas_transport::Admission::new("http", *limits);
    let ops_admission = lintas_transport::Admission::new("ops", *limits);
    let operations = ops::install(
        &registry,
        &paths,
        Duration::from_secs(config.warn_cert_expiry_days * 86400),
    )?;
    operations.metrics.listeners(vec![
        grpc_admission.clone(),
        http_admission.clone(),
        ops_admission.clone(),
    ]);
    let http_metrics = ops::HttpMetrics::register(&operations.metrics);

    // gRPC health follows readiness.
    let (grpc_health, health_service) = tonic_health::server::health_reporter();
    let health_watcher = lintas_ops::grpc::follow_health(
        operations.health.clone(),
        grpc_health,
        vec![
            <RegistrationServer<grpc::RegistrationService> as tonic::server::NamedService>::NAME,
            <RegistryAdminServer<grpc::AdminService> as tonic::server::NamedService>::NAME,
        ],
        stop.stopped(),
    );
    let ops_server = lintas_ops::serve(ops, ops_admission, operations.clone(), stop.stopped());

    let max = config.max_request_bytes;
    let grpc_server = lintas_transport::grpc_server(limits)
        .timeout(Duration::from_secs(30))
        .layer(lintas_ops::grpc::GrpcMetricsLayer::new(
            &operations.metrics,
            &[
                <RegistrationServer<grpc::RegistrationService> as tonic::server::NamedService>::NAME,
                <RegistryAdminServer<grpc::AdminService> as tonic::server::NamedService>::NAME,
                <lintas_proto::registry::v1::catalogue_server::CatalogueServer<grpc::CatalogueService> as tonic::server::NamedService>::NAME,
                "grpc.health.v1.Health",
            ],
        ))
        .add_service(health_service)
        .add_service(
            RegistrationServer::new(grpc::RegistrationService(registry.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            RegistryAdminServer::new(grpc::AdminService {
                registry: registry.clone(),
                audit: plane.audit.clone(),
            })
                .max_decoding_message_size(max),
        )
        .add_service(
            lintas_proto::registry::v1::catalogue_server::CatalogueServer::new(
                grpc::CatalogueService(registry.clone()),
            )
            .max_decoding_message_size(registry::MAX_DESCRIPTOR_BYTES + 1024),
        )
        .serve_with_incoming_shutdown(
            lintas_transport::incoming(grpc, tls, grpc_admission.clone()),
            stop.stopped(),
        );

    let http_registry = registry.clone();
    let served = Arc::new(lintas_globalconf::publish::PublishedCache::default());
    let warm = served.clone();
    let (tsa_key, tsa_cert) = (
        lintas_pkcs11::load(&paths.tsa_key(), config.pkcs11.as_ref())?,
        read_cert(&paths.tsa_cert())?,
    );
    if !lintas_certs::signer::holds(&tsa_cert, &*tsa_key)? {
        return Err(RegistryServeError::Keys(format!(
            "{} does not hold the key in {} (a `lintas registry keys activate tsa` cut short? run it again)",
            paths.tsa_cert().display(),
            paths.tsa_key().display()
        )));
    }
    let tsa = tsa_http::TsaEndpoint::new(
        lintas_timestamp::Tsa::new(tsa_key, tsa_cert, &config.tsa_policy)
            .map_err(|e| RegistryServeError::Cert(CertError::Issue(e.to_string())))?,
        registry.clone(),
        config.tsa_requests_per_minute_per_source,
        http_metrics.tsa_requests.clone(),
    );
    let public_health = operations.health.clone();
    let app = axum::Router::new()
        .route(
            "/globalconf",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let published = served.get(http_registry.latest_conf());
                let answer = published.answer(
                    headers
                        .get(axum::http::header::IF_NONE_MATCH)
                        .and_then(|v| v.to_str().ok()),
                    headers
                        .get(axum::http::header::ACCEPT_ENCODING)
                        .and_then(|v| v.to_str().ok()),
                );
                let metrics = http_metrics.clone();
                async move { published::response(&published, answer, &metrics) }
            }),
        )
        .route(
            "/tsa",
            axum::routing::post(
                move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                    std::net::SocketAddr,
                >,
                      body: axum::body::Bytes| { tsa.clone().answer(peer, body) },
            ),
        )
        .route(
            "/healthz",
            axum::routing::get(move || {
                // Load balancers in front of the registry see its readiness here too.
                let report = public_health.report();
                async move {
                    // The reasons stay on the operations listener's /readyz.
                    if report.ready {
                        (axum::http::StatusCode::OK, "ok\n")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    let http_server = async {
        lintas_transport::serve_http(http, http_admission.clone(), app, stop.stopped()).await;
        Ok::<(), std::io::Error>(())
    };

    let refresh_registry = registry.clone();
    let refresh_every = Duration::from_secs(config.conf_refresh_secs);
    let refresh_stop = stop.clone();
    let refresher = async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(refresh_every) => {}
                _ = refresh_stop.stopped() => return,
            }
            let reg = refresh_registry.clone();
            // Undecided registration requests past their time go too.
            match tokio::task::spawn_blocking(move || {
                if let Err(e) = reg.expire_registrations() {
                    tracing::error!(error = %e, "expiring registration requests failed");
                }
                match reg.retire_due() {
                    Ok(serials) if !serials.is_empty() => {
                        tracing::info!(?serials, "revoked certificates superseded by renewals")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "revoking superseded certificates failed")
                    }
                }
                reg.refresh(refresh_every)
            })
            .await
            {
                Ok(Ok(Some(serial))) => tracing::debug!(serial, "global configuration re-signed"),
                Ok(Ok(None)) => tracing::debug!("re-signed lately by another registry node"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "re-signing the global configuration failed")
                }
                Err(e) => tracing::error!(error = %e, "re-signing task failed"),
            }
        }
    };

    // Changes other registry nodes made to a shared database are taken in within
    // about a second (changes made here see them at once: a stale write is refused).
    let sync_registry = registry.clone();
    let sync_stop = stop.clone();
    let syncer = async move {
        let mut tick = tokio::time::interval(SYNC_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = sync_stop.stopped() => return,
            }
            let (reg, warm) = (sync_registry.clone(), warm.clone());
            // The newest document is hashed and compressed here, off the pollers' path.
            let synced = move || {
                let synced = reg.sync();
                warm.get(reg.latest_conf());
                synced
            };
            match tokio::task::spawn_blocking(synced).await {
                Ok(Ok(true)) => tracing::debug!("took in changes of other registry nodes"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "reading the registry database failed"),
                Err(e) => tracing::error!(error = %e, "registry sync task failed"),
            }
        }
    };

    let management_server = management_server(
        management,
        &paths,
        config,
        Arc::new(manage::Manage {
            registry: registry.clone(),
            health: operations.health.clone(),
            plane: plane.clone(),
        }),
        stop.stopped(),
    )?;

    let (grpc_result, http_result, (), (), (), (), ()) = tokio::join!(
        stop.part(grpc_server),
        stop.part(http_server),
        stop.part(ops_server),
        stop.part(management_server),
        health_watcher,
        refresher,
        syncer
    );
    grpc_result?;
    http_result.map_err(io("HTTP server"))?;
    tracing::info!("registry stopped");
    Ok(())
}

/// The management plane of the registry in `paths`: its users and admin audit log.
pub fn plane(paths: &Paths) -> Result<Arc<lintas_manage::Plane>, RegistryServeError> {
    let users = lintas_manage::Users::open(&paths.users())
        .map_err(|e| RegistryServeError::Init(e.to_string()))?;
    let audit = lintas_manage::AuditLog::open(&paths.admin_audit_log())
        .map_err(|e| RegistryServeError::Init(e.to_string()))?;
    Ok(lintas_manage::Plane::new(
        Arc::new(users),
        Arc::new(audit),
        &manage::console::SITE,
    ))
}

/// Serves the management API and console on `listener` (HTTPS with the registry's own
/// management certificate, made at first start), or waits for `stopped` when there is
/// no listener.
fn management_server(
    listener: Option<TcpListener>,
    paths: &Paths,
    config: &RegistryConfig,
    manage: Arc<manage::Manage>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = ()> + Send + 'static, RegistryServeError> {
    let served = match listener {
        Some(listener) => {
            let (cert, key) = management_identity(paths, &config.management_hostnames)?;
            let tls = lintas_transport::web_server_config(&cert, &key)?;
            let admission =
                lintas_transport::Admission::new("management", config.connection_limits);
            Some((listener, tls, admission))
        }
        None => None,
    };
    Ok(async move {
        match served {
            Some((listener, tls, admission)) => {
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "management API and console (HTTPS)");
                }
                let router = manage::api::router(manage);
                lintas_transport::serve_https(listener, tls, admission, router, stopped).await;
            }
            None => stopped.await,
        }
    })
}

/// The management listener's names in the configuration file just written.
fn config_names(path: &Path) -> Result<Vec<String>, RegistryServeError> {
    Ok(RegistryConfig::load(path, std::iter::empty())?.management_hostnames)
}

/// The management listener's certificate and key, self-signed for `names` at first
/// start (replace the pair with one from your own CA for browsers to trust it).
fn management_identity(
    paths: &Paths,
    names: &[String],
) -> Result<(Vec<u8>, KeyPair), RegistryServeError> {
    let (cert_path, key_path) = (paths.management_cert(), paths.management_key());
    if !cert_path.exists() {
        let validity = Validity::starting(std::time::SystemTime::now(), 5 * YEAR)?;
        let (key, cert) =
            lintas_certs::ca::self_signed(names, "lintas registry management", validity)?;
        lintas_certs::files::write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        lintas_certs::files::write_atomic(&cert_path, cert_to_pem(&cert).as_bytes(), 0o644)?;
    }
    Ok((read_cert(&cert_path)?, keys::read(&key_path)?))
}
