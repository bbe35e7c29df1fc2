//! The lintas security server. This part covers joining an instance: generating the
//! server's own keys (they never leave it), asking the registry for certificates,
//! picking them up once approved, and keeping a verified global configuration.
//! The message exchange builds on this.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod backend;
pub mod backup;
pub mod batch;
pub mod bodies;
pub mod catalogue;
pub use lintas_wire::chain;
pub mod checkpoints;
pub mod chunks;
pub mod conf_view;
pub mod config;
mod consumer;
pub mod daemon;
pub mod descriptors;
pub mod discovery;
pub mod endpoints;
mod entries;
pub mod envelope;
pub mod errors;
pub mod events;
pub mod evidence;
pub mod http_headers;
pub mod idempotency;
mod local;
pub mod maintenance;
pub mod manage;
pub mod material;
mod messages;
pub use lintas_globalconf::openapi as openapi_descriptors;
pub mod opmon;
pub mod ops;
pub mod otlp;
pub mod outcome;
pub mod own;
mod pools;
mod provider;
pub mod quotas;
mod recorder;
mod registry_link;
pub mod renewal;
mod replay;
mod reporter;
pub mod rest;
mod select;
pub mod selection;
mod self_signed;
pub mod serve;
mod signers;
mod state_export;
pub mod switch;
mod tasks;
pub mod timestamps;
pub mod trace;
mod xroad_error;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lintas_certs::ca::make_csr;
use lintas_certs::pem::{cert_from_pem, cert_to_pem};
use lintas_certs::{CertError, KeyPair, SharedSigner, Signer, keys};
use lintas_globalconf::{Anchor, Clock, ConfClient, ConfError, VerifiedConf};
use lintas_proto::registry::v1 as pb;
use pb::registration_client::RegistrationClient;
use serde::{Deserialize, Serialize};

pub use config::SsConfig;

/// Errors of the security server's enrolment and configuration steps.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SsError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error(transparent)]
    Transport(#[from] lintas_transport::TransportError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("registry refused: {0}")]
    Registry(String),
    #[error("cannot reach the registry: {0}")]
    Unreachable(String),
    /// The admin socket does not answer.
    #[error("{0}")]
    NotRunning(String),
    #[error("registration was rejected by the registry administrator: {reason}")]
    Rejected { reason: String },
    #[error("no registration submitted yet; run `lintas ss register` first")]
    NotRegistered,
    #[error("the registry returned a certificate that does not match this server: {0}")]
    WrongCertificate(String),
    #[error("{0}")]
    NotInConfiguration(String),
    #[error("security server state: {0}")]
    State(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Log(#[from] lintas_log::LogError),
    #[error(
        "this server has no certificates yet: finish `lintas ss register` and `lintas ss status` first"
    )]
    NotEnrolled,
    #[error("server: {0}")]
    Serve(String),
    #[error(transparent)]
    Backup(#[from] lintas_backup::BackupError),
    /// Restoring would roll back what the instance has seen of this server.
    #[error("restore refused: {0}")]
    Rollback(String),
}

/// A failure of the server's own stored state (sled, records).
pub(crate) fn state_error(e: impl std::fmt::Display) -> SsError {
    SsError::State(e.to_string())
}

/// A failure of the server's own stored state at `path`: "{what} {path}: {e}".
pub(crate) fn state_error_at(
    what: &str,
    path: &std::path::Path,
    e: impl std::fmt::Display,
) -> SsError {
    SsError::State(format!("{what} {}: {e}", path.display()))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SsError {
    let what = what.into();
    move |source| SsError::Io { what, source }
}

impl From<tonic::Status> for SsError {
    fn from(s: tonic::Status) -> Self {
        // A status with a source is a connection failure, not the registry's answer.
        let mut cause = std::error::Error::source(&s);
        if cause.is_none() {
            return SsError::Registry(format!("{:?}: {}", s.code(), s.message()));
        }
        let mut chain = Vec::new();
        while let Some(c) = cause {
            chain.push(c.to_string());
            cause = c.source();
        }
        SsError::Unreachable(chain.join(": "))
    }
}

/// Files of a security server's data directory.
#[derive(Debug, Clone)]
pub struct Paths(pub PathBuf);

impl Paths {
    pub fn anchor(&self) -> PathBuf {
        self.0.join("anchor.toml")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.0.join("tls.key.pem")
    }
    pub fn tls_cert(&self) -> PathBuf {
        self.0.join("tls.crt.pem")
    }
    pub fn sign_key(&self) -> PathBuf {
        self.0.join("sign.key.pem")
    }
    pub fn sign_cert(&self) -> PathBuf {
        self.0.join("sign.crt.pem")
    }
    /// The key that signs this server's log checkpoints.
    pub fn log_key(&self) -> PathBuf {
        self.0.join("log.key.pem")
    }
    pub fn registration(&self) -> PathBuf {
        self.0.join("registration.toml")
    }
    pub fn conf_cache(&self) -> PathBuf {
        self.0.join("conf")
    }
    /// The consumer endpoint's own TLS certificate (self-signed, created at first start).
    pub fn consumer_cert(&self) -> PathBuf {
        self.0.join("consumer.crt.pem")
    }
    pub fn consumer_key(&self) -> PathBuf {
        self.0.join("consumer.key.pem")
    }
    /// The management listener's TLS certificate and key.
    pub fn management_cert(&self) -> PathBuf {
        self.0.join("management.crt.pem")
    }
    pub fn management_key(&self) -> PathBuf {
        self.0.join("management.key.pem")
    }
    /// Users and API keys of the management API.
    pub fn users(&self) -> PathBuf {
        self.0.join("users.json")
    }
    /// The admin audit log.
    pub fn admin_audit_log(&self) -> PathBuf {
        self.0.join("admin-audit.jsonl")
    }
}

/// Creates a server's directory: its config, a copy of the anchor, and new keys (0600).
pub fn init(dir: &Path, config: &SsConfig, anchor_path: &Path) -> Result<PathBuf, SsError> {
    config.validate("(arguments)")?;
    let anchor = Anchor::load(anchor_path)?;
    if config.server_id.owner.instance != anchor.instance {
        return Err(SsError::Registry(format!(
            "server {} is not of instance {}, which the anchor is for",
            config.server_id, anchor.instance
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
    let paths = Paths(dir.to_owned());
    let config_path = dir.join("ss.toml");
    let header = "# lintas security server. Environment variables LINTAS_SS_<KEY> override keys.\n";
    lintas_certs::files::write_new(
        &config_path,
        format!("{header}{}", config.to_toml()).as_bytes(),
        0o644,
    )?;
    lintas_certs::files::write_new(&paths.anchor(), anchor.text.as_bytes(), 0o644)?;
    keys::write(&paths.tls_key(), &keys::generate()?)?;
    let token = config.pkcs11.as_ref();
    let id = &config.server_id;
    lintas_pkcs11::generate(&paths.sign_key(), token, &format!("lintas {id} signing"))?;
    lintas_pkcs11::generate(&paths.log_key(), token, &format!("lintas {id} log"))?;
    Ok(config_path)
}

/// A request for certificates for `tls_key` and `sign_key` (the log key is sent too:
/// it identifies the server's log), at enrolment and at renewal.
pub(crate) fn registration_request(
    config: &SsConfig,
    tls_key: &KeyPair,
    sign_key: &dyn Signer,
    log_key: &dyn Signer,
    token: &str,
) -> Result<pb::RegistrationRequest, SsError> {
    let id = &config.server_id;
    Ok(pb::RegistrationRequest {
        server_id: id.to_string(),
        address: config.address.to_string(),
        tls_csr: make_csr(tls_key, &format!("{id} TLS"))?,
        signing_csr: make_csr(sign_key, &format!("{} signing", id.owner))?,
        log_csr: make_csr(log_key, &format!("{id} log"))?,
        clients: config.clients.iter().map(ToString::to_string).collect(),
        member_name: config.member_name.clone(),
        enrolment_token: token.to_owned(),
    })
}

/// A security server's enrolment and configuration state, loaded from its directory.
pub struct Node {
    pub config: SsConfig,
    pub paths: Paths,
    pub anchor: Anchor,
    tls_key: KeyPair,
    /// Loaded when first needed: a key in a token means logging in to it, which
    /// commands that do not sign should not need.
    sign_key: std::sync::OnceLock<SharedSigner>,
    log_key: std::sync::OnceLock<SharedSigner>,
}

/// What `registration.toml` remembers between `register` and `status`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pending {
    request_id: String,
}

/// Outcome of polling a registration.
#[derive(Debug)]
pub enum Enrolment {
    Pending(pb::RegistrationStatus),
    /// Certificates were verified and written.
    Approved(pb::RegistrationStatus),
}

impl Node {
    pub fn open(config: SsConfig) -> Result<Self, SsError> {
        let paths = Paths(config.data_dir.clone());
        Ok(Node {
            anchor: Anchor::load(&paths.anchor())?,
            tls_key: keys::read(&paths.tls_key())?,
            sign_key: Default::default(),
            log_key: Default::default(),
            config,
            paths,
        })
    }

    async fn registry(&self) -> Result<RegistrationClient<tonic::transport::Channel>, SsError> {
        let tls = lintas_transport::client_config(
            self.anchor.trust_store(),
            lintas_certs::Role::Registry,
            None,
        )?;
        let channel = lintas_transport::channel_to_any(&self.anchor.registry_urls(), tls)?;
        Ok(RegistrationClient::new(channel))
    }

    /// Sends certificate requests for this server's keys. Returns the registry's answer
    /// (approved at once when `token` is a valid enrolment token).
    pub async fn register(&self, token: Option<&str>) -> Result<pb::RegistrationStatus, SsError> {
        let request = registration_request(
            &self.config,
            &self.tls_key,
            &**self.sign_key()?,
            &**self.log_key()?,
            token.unwrap_or_default(),
        )?;
        let status = self.registry().await?.submit(request).await?.into_inner();
        let pending = toml::to_string(&Pending {
            request_id: status.request_id.clone(),
        })
        .unwrap_or_default();
        std::fs::write(self.paths.registration(), pending).map_err(io(self
            .paths
            .registration()
            .display()
            .to_string()))?;
        if status.state() == pb::RegistrationState::Approved {
            self.store_certificates(&status)?;
        }
        Ok(status)
    }

    /// SHA-256 fingerprints of this server's public keys (TLS, signing): what the
    /// registry administrator compares before approving.
    pub fn key_fingerprints(&self) -> Result<(String, String), SsError> {
        Ok((
            keys::fingerprint(&self.tls_key),
            keys::fingerprint(&**self.sign_key()?),
        ))
    }

    /// The member signing key (from its file or token, loaded once).
    pub fn sign_key(&self) -> Result<&SharedSigner, SsError> {
        self.signer(&self.sign_key, self.paths.sign_key())
    }

    /// The log key (from its file or token, loaded once).
    pub fn log_key(&self) -> Result<&SharedSigner, SsError> {
        self.signer(&self.log_key, self.paths.log_key())
    }

    fn signer<'a>(
        &self,
        cell: &'a std::sync::OnceLock<SharedSigner>,
        path: PathBuf,
    ) -> Result<&'a SharedSigner, SsError> {
        if let Some(key) = cell.get() {
            return Ok(key);
        }
        let key = lintas_pkcs11::load(&path, self.config.pkcs11.as_ref())?;
        Ok(cell.get_or_init(|| key))
    }

    /// Asks the registry about the submitted registration; once approved, checks and
    /// stores the certificates.
    pub async fn poll(&self) -> Result<Enrolment, SsError> {
        let text = match std::fs::read_to_string(self.paths.registration()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SsError::NotRegistered);
            }
            Err(e) => return Err(io("registration.toml")(e)),
        };
        let pending: Pending = toml::from_str(&text)
            .map_err(|e| SsError::Registry(format!("registration.toml is damaged: {e}")))?;
        let status = self
            .registry()
            .await?
            .status(pb::StatusRequest {
                request_id: pending.request_id,
            })
            .await?
            .into_inner();
        match status.state() {
            pb::RegistrationState::Approved => {
                self.store_certificates(&status)?;
                Ok(Enrolment::Approved(status))
            }
            pb::RegistrationState::Rejected => Err(SsError::Rejected {
                reason: status.reason,
            }),
            _ => Ok(Enrolment::Pending(status)),
        }
    }

    /// Verifies that the issued certificates chain to the anchor CA, carry this server's
    /// identities and hold this server's public keys, then writes them.
    fn store_certificates(&self, status: &pb::RegistrationStatus) -> Result<(), SsError> {
        renewal::check_issued(
            &self.anchor,
            &self.config.server_id,
            status,
            &self.tls_key,
            &**self.sign_key()?,
        )?;
        // The signing certificate first: a server with a TLS certificate is considered
        // enrolled, so after a crash between the two writes it simply polls again.
        for (path, der) in [
            (self.paths.sign_cert(), &status.signing_cert),
            (self.paths.tls_cert(), &status.tls_cert),
        ] {
            lintas_certs::files::write_atomic(&path, cert_to_pem(der).as_bytes(), 0o644)?;
        }
        Ok(())
    }

    /// The configuration client for this server (cache in the data directory).
    pub fn conf_client(&self, clock: Arc<dyn Clock>) -> Result<ConfClient, SsError> {
        let dir = self.paths.conf_cache();
        std::fs::create_dir_all(&dir).map_err(io(dir.display().to_string()))?;
        // An anchor a configuration announces (a rotation of the registry's keys)
        // replaces the file, so the next start uses it too.
        // The file, not the anchor read at open: a client may have adopted another since.
        let anchor = Anchor::load(&self.paths.anchor())?;
        let client = ConfClient::open(anchor, &dir, clock)?.adopting_anchors(self.paths.anchor());
        if self.config.globalconf_urls.is_empty() {
            return Ok(client);
        }
        // A regional mirror first, the registry's own after it: what either serves is
        // verified against the anchor alike.
        let urls = self
            .config
            .globalconf_urls
            .iter()
            .chain(&self.anchor.globalconf_urls)
            .cloned()
            .collect();
        Ok(client.with_urls(urls))
    }

    /// Checks that `conf` lists this server with its current TLS certificate and the
    /// clients it hosts.
    pub fn check_listed(&self, conf: &VerifiedConf) -> Result<(), SsError> {
        let id = &self.config.server_id;
        let entry = conf.server(id).ok_or_else(|| {
            SsError::NotInConfiguration(format!(
                "{id} is not in global configuration serial {} (not approved yet?)",
                conf.serial()
            ))
        })?;
        let pem = std::fs::read_to_string(self.paths.tls_cert()).map_err(io("tls.crt.pem"))?;
        let cert = cert_from_pem(&pem, "tls.crt.pem")?;
        if !lintas_globalconf::lists_tls(entry, &lintas_certs::sha256(&cert)) {
            return Err(SsError::NotInConfiguration(format!(
                "global configuration serial {} lists a different TLS certificate for {id} (revoked or renewed?)",
                conf.serial()
            )));
        }
        for c in &self.config.clients {
            if !entry.clients.iter().any(|h| *h == c.to_string()) {
                return Err(SsError::NotInConfiguration(format!(
                    "{c} is not listed as hosted by {id} in serial {}",
                    conf.serial()
                )));
            }
        }
        Ok(())
    }
}
