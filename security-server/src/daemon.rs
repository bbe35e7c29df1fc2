//! The running security server: its state, the two endpoints, and their lifecycle.
//!
//! - The consumer endpoint (`consumer` module) takes ordinary gRPC calls from local
//!   applications for any `/package.Service/Method`, signs a request header, records it,
//!   and relays the bytes to the provider's security server.
//! - The provider endpoint (`provider` module) serves `lintas.exchange.v1.Exchange` to
//!   peer servers over mutual TLS 1.3, runs the checks in order, records, calls the
//!   application, and signs a response bound to the request.
//!
//! Nothing is answered before its record is durable (see `lintas-log`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lintas_certs::{CertInfo, KeyPair, Role};
use lintas_globalconf::{Clock, ConfClient, VerifiedConf};
use lintas_identifiers::{ServerId, SubsystemId};
use lintas_log::{Record, RecordLog};
use lintas_proto::exchange::v1::exchange_server::ExchangeServer;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::access::Access;
use crate::batch::{BatchSigner, VerifiedRoots};
use crate::bodies::Bodies;
use crate::checkpoints::Checkpoints;
use crate::evidence::Material;
use crate::timestamps::Timestamps;
use crate::{Node, SsConfig, SsError};

pub use crate::envelope::{REQUEST_DOMAIN, RESPONSE_DOMAIN};
/// Metadata key telling the caller which part of the bus produced an error.
pub const ERROR_SOURCE: &str = "lintas-error-source";

/// Who produced an error the calling application sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The caller's own security server (bad call, configuration, provider unreachable).
    ConsumerServer,
    /// The provider's security server (a check refused the request, application down).
    ProviderServer,
    /// The provider application answered with this error itself.
    ProviderApp,
}

impl ErrorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::ConsumerServer => "consumer-server",
            ErrorSource::ProviderServer => "provider-server",
            ErrorSource::ProviderApp => "provider-app",
        }
    }
}

/// A gRPC status tagged with where it came from.
pub fn error(code: Code, source: ErrorSource, message: impl Into<String>) -> Status {
    let mut status = Status::new(code, message);
    if let Ok(v) = source.as_str().parse() {
        status.metadata_mut().insert(ERROR_SOURCE, v);
    }
    status
}

pub fn now_ms(clock: &dyn Clock) -> i64 {
    clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Signs `header` (with its body hash and length filled in from `body`) as a consumer
/// server does, returning the envelope sent to the provider server.
pub fn sign_request(
    mut header: lintas_proto::exchange::v1::RequestHeader,
    body: Vec<u8>,
    key: &KeyPair,
    signer_cert: Vec<u8>,
) -> Result<lintas_proto::exchange::v1::SignedRequest, lintas_certs::CertError> {
    use prost::Message;
    header.body_sha256 = lintas_certs::sha256(&body).to_vec();
    header.body_len = body.len() as u64;
    let header = header.encode_to_vec();
    Ok(lintas_proto::exchange::v1::SignedRequest {
        signature: Some(
            crate::batch::sign_one(key, REQUEST_DOMAIN, &header)
                .map_err(lintas_certs::CertError::Signing)?,
        ),
        header,
        signer_cert,
        body,
    })
}

/// A running security server's shared state.
pub struct SecurityServer {
    pub id: ServerId,
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) clients: Vec<SubsystemId>,
    pub(crate) conf: ConfClient,
    pub log: RecordLog,
    /// The log's signed checkpoints.
    pub checkpoints: Checkpoints,
    /// Certificates and configurations kept as evidence.
    pub(crate) material: Material,
    /// RFC 3161 tokens over checkpoints.
    pub timestamps: Timestamps,
    /// Message bodies, kept for `body_retention_days`.
    pub bodies: Bodies,
    pub(crate) timestamp_interval: Duration,
    pub(crate) timestamp_fail_closed: u64,
    /// The configuration's name of the TSA to use.
    timestamping_authority: String,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) witness_interval: Duration,
    pub access: Access,
    /// Message ids used within the replay window, by "client/id", with their time.
    seen: Mutex<Seen>,
    /// Signs headers with the member signing key, in batches under load.
    pub(crate) signer: BatchSigner,
    pub(crate) sign_cert: Vec<u8>,
    pub(crate) tls_key: KeyPair,
    pub(crate) tls_cert: Vec<u8>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: Settings,
    /// How local applications are authenticated.
    pub(crate) local_auth: LocalAuth,
    peers: Mutex<HashMap<PeerKey, Channel>>,
    apps: Mutex<HashMap<String, Channel>>,
    /// Descriptors of catalogue services, fetched from the registry.
    pub(crate) descriptors: crate::catalogue::DescriptorCache,
    /// Held across a service report, from reading the services to the registry's
    /// answer: a report can then never land after a newer one.
    reporting: tokio::sync::Mutex<()>,
    pub(crate) conf_poll: Duration,
    /// When warnings are raised ahead of failures.
    pub(crate) warnings: crate::ops::Warnings,
    /// Exchange counts and latencies.
    pub(crate) exchanges: crate::outcome::ExchangeMetrics,
    /// One record per exchange (operational monitoring).
    pub(crate) opmon: crate::opmon::OpMon,
    /// Keep end users' ids as given in the monitoring records (else their SHA-256).
    pub(crate) opmon_plain_user_ids: bool,
    /// Where spans go, when a collector is configured.
    pub(crate) otlp: Option<crate::otlp::Exporter>,
    /// Health components and metrics, served by the operations listener.
    pub(crate) ops: lintas_ops::Ops,
    /// Maintenance mode (on: new exchanges refused, readiness fails).
    pub(crate) maintenance: crate::maintenance::Maintenance,
    /// Whether the log matches what the witness holds, and the witness answers.
    pub(crate) witness_health: lintas_ops::Handle,
    /// Whether the registry's catalogue has this server's newest service report.
    pub(crate) catalogue_health: lintas_ops::Handle,
    /// When the configuration was last fetched out of turn (see `refresh_conf_now`);
    /// held across the fetch so concurrent callers wait for it instead of failing.
    last_refresh: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// Member signing certificates already verified under a configuration serial.
    signers: Mutex<HashMap<[u8; 32], VerifiedSigner>>,
    /// Batch roots whose signatures were verified.
    pub(crate) verified_roots: VerifiedRoots,
}

/// A signing certificate checked under configuration `.0`.
type VerifiedSigner = (u64, Arc<CertInfo>);

/// Replay protection: every message id used within the window. Requests older than the
/// clock skew are refused by the time check, so ids older than twice the skew are
/// forgotten. At start the set is rebuilt from the durable `REQUEST_RECEIVED` records,
/// so a crash does not reopen the window for requests already delivered.
#[derive(Default)]
struct Seen {
    ids: HashMap<String, i64>,
    last_prune_ms: i64,
}

/// Most application channels kept; beyond it the pool starts over.
const MAX_APP_CHANNELS: usize = 256;

/// Most signing certificates remembered as verified (one or two per peer member).
const MAX_CACHED_SIGNERS: usize = 10_000;

/// Least time between out-of-turn configuration fetches, so unknown peers cannot make
/// this server hammer the registry.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// How the consumer endpoint knows which subsystem is calling.
pub enum LocalAuth {
    /// Plaintext on loopback; the caller's `lintas-client` is believed (development).
    DevPlaintextLoopback,
    /// TLS 1.3 with a client certificate registered for the calling subsystem; the
    /// endpoint presents its own certificate.
    Tls { cert: Vec<u8>, key: KeyPair },
}

/// Loads the consumer endpoint's certificate, creating a self-signed one at first start.
fn consumer_identity(node: &Node) -> Result<(Vec<u8>, KeyPair), SsError> {
    let (cert_path, key_path) = (node.paths.consumer_cert(), node.paths.consumer_key());
    if !cert_path.exists() {
        let validity = lintas_certs::ca::Validity::starting(
            std::time::SystemTime::now(),
            Duration::from_secs(5 * 365 * 86400),
        )?;
        let (key, cert) = lintas_certs::ca::self_signed(
            &node.config.consumer_hostnames,
            &format!("{} consumer endpoint", node.config.server_id),
            validity,
        )?;
        // Key first, certificate last and both replaced atomically: a crash in between
        // leaves no certificate, so the next start makes a new pair.
        lintas_certs::files::write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        lintas_certs::files::write_atomic(
            &cert_path,
            lintas_certs::pem::cert_to_pem(&cert).as_bytes(),
            0o644,
        )?;
    }
    Ok((
        lintas_certs::files::read_cert(&cert_path)?,
        lintas_certs::keys::read(&key_path)?,
    ))
}

/// Exchange settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_message_bytes: usize,
    pub clock_skew: Duration,
    pub app_timeout: Duration,
    pub connection_limits: lintas_transport::Limits,
}

/// A pooled connection is for one address, one pinned certificate, and the trust of one
/// configuration serial (revocations change trust).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PeerKey {
    address: String,
    pin: [u8; 32],
    serial: u64,
}

impl SecurityServer {
    /// Opens an enrolled server's state: certificates, configuration client, record log,
    /// services and grants.
    pub fn open(node: Node, clock: Arc<dyn Clock>) -> Result<Arc<Self>, SsError> {
        let read = |path: std::path::PathBuf| match lintas_certs::files::read_cert(&path) {
            Err(lintas_certs::CertError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(SsError::NotEnrolled)
            }
            other => Ok(other?),
        };
        let tls_cert = read(node.paths.tls_cert())?;
        let sign_cert = read(node.paths.sign_cert())?;
        let conf = node.conf_client(clock.clone())?;
        let records = node.paths.0.join("records");
        let log = RecordLog::open_with_segments_of(&records, node.config.log_segment_kib * 1024)?;
        let db = lintas_log::open_sled(&node.paths.0.join("state")).map_err(crate::state_error)?;
        let access = Access::open(&db)?;
        let bodies = Bodies::open(
            &records.join("bodies"),
            (node.config.body_retention_days > 0).then_some(node.config.body_retention_days),
        )?;
        let seen = Mutex::new(recent_requests(
            &log,
            now_ms(&*clock),
            2 * i64::try_from(Duration::from_secs(node.config.clock_skew_secs).as_millis())
                .unwrap_or(i64::MAX / 4),
        )?);
        let local_auth = if node.config.dev_plaintext_loopback {
            LocalAuth::DevPlaintextLoopback
        } else {
            let (cert, key) = consumer_identity(&node)?;
            LocalAuth::Tls { cert, key }
        };
        let checkpoints = Checkpoints::open(
            &records.join("checkpoints"),
            node.config.server_id.to_string(),
            node.log_key,
            &log,
        )?;
        let material = Material::open(&records.join("evidence"))?;
        let timestamps = Timestamps::open(&records.join("timestamps"))?;
        // Records written before a restart and not yet covered keep their age.
        timestamps.recount(&log)?;
        material.remember_cert(&sign_cert)?;
        let health = lintas_ops::Health::new();
        let maintenance = crate::maintenance::Maintenance::open(
            node.paths.0.join("maintenance"),
            health.component("maintenance", lintas_ops::Condition::Ready),
        )?;
        let witness_health = health.component(
            "witness",
            lintas_ops::Condition::Warning(
                "the log has not been checked against the witness yet".into(),
            ),
        );
        let catalogue_health = health.component("catalogue", lintas_ops::Condition::Ready);
        let c = &node.config;
        let server = Arc::new(SecurityServer {
            id: c.server_id.clone(),
            data_dir: node.paths.0.clone(),
            clients: c.clients.clone(),
            settings: Settings {
                max_message_bytes: c.max_message_bytes,
                clock_skew: Duration::from_secs(c.clock_skew_secs),
                app_timeout: Duration::from_secs(c.app_timeout_secs),
                connection_limits: c.connection_limits,
            },
            conf_poll: Duration::from_secs(c.conf_poll_secs),
            exchanges: Default::default(),
            opmon: crate::opmon::OpMon::open(
                &node.paths.0.join("opmon"),
                crate::opmon::Retention {
                    days: c.opmon_retention_days,
                    max_bytes: c.opmon_max_mib * 1024 * 1024,
                },
            )?,
            opmon_plain_user_ids: c.opmon_plain_user_ids,
            otlp: (!c.otlp_endpoint.is_empty())
                .then(|| crate::otlp::Exporter::new(&c.otlp_endpoint, &c.server_id.to_string())),
            ops: lintas_ops::Ops {
                health,
                metrics: lintas_ops::Metrics::new("security_server"),
            },
            maintenance,
            witness_health,
            catalogue_health,
            warnings: crate::ops::Warnings {
                cert_expiry: Duration::from_secs(c.warn_cert_expiry_days * 86400),
                conf_expiry: Duration::from_secs(c.warn_conf_expiry_secs),
            },
            checkpoint_interval: Duration::from_millis(c.checkpoint_interval_ms),
            witness_interval: Duration::from_secs(c.witness_interval_secs),
            checkpoints,
            bodies,
            timestamps,
            timestamp_interval: Duration::from_secs(c.timestamp_interval_secs),
            timestamp_fail_closed: c.timestamp_fail_closed_secs,
            timestamping_authority: c.timestamping_authority.clone(),
            material,
            local_auth,
            conf,
            log,
            access,
            seen,
            signer: BatchSigner::new(node.sign_key),
            sign_cert,
            tls_key: node.tls_key,
            tls_cert,
            clock,
            peers: Mutex::new(HashMap::new()),
            apps: Mutex::new(HashMap::new()),
            descriptors: Default::default(),
            reporting: tokio::sync::Mutex::new(()),
            last_refresh: tokio::sync::Mutex::new(None),
            signers: Mutex::new(HashMap::new()),
            verified_roots: VerifiedRoots::default(),
        });
        crate::ops::install(&server);
        Ok(server)
    }

    /// Batch signatures made and the headers they covered, since the start.
    pub fn signing_stats(&self) -> (u64, u64) {
        self.signer.stats()
    }

    /// The operational monitoring records.
    pub fn opmon(&self) -> &crate::opmon::OpMon {
        &self.opmon
    }

    /// The configuration client (tests and tools fetch through it).
    pub fn conf(&self) -> &ConfClient {
        &self.conf
    }

    /// The current global configuration, or the error callers see.
    pub(crate) fn current_conf(&self, side: ErrorSource) -> Result<Arc<VerifiedConf>, Status> {
        let conf = self
            .conf
            .current()
            .map_err(|e| error(Code::Unavailable, side, e.to_string()))?;
        // Evidence: the configuration every exchange was checked under.
        self.material.remember_conf(&conf).map_err(|e| {
            error(
                Code::Unavailable,
                side,
                format!("the security server could not keep the configuration as evidence: {e}"),
            )
        })?;
        Ok(conf)
    }

    /// Appends a record durably; a record that cannot be stored fails the call.
    pub(crate) async fn record(&self, record: Record, side: ErrorSource) -> Result<u64, Status> {
        self.record_soon(record, side)?.await
    }

    /// Hands a record to the log at once and returns a future that resolves when it is
    /// durable. Records are written in the order they are handed over, so a later
    /// record being durable means this one is too.
    pub(crate) fn record_soon(
        &self,
        record: Record,
        side: ErrorSource,
    ) -> Result<impl Future<Output = Result<u64, Status>> + use<>, Status> {
        let failed = move |e: lintas_log::LogError| {
            tracing::error!(error = %e, "record not stored; call refused");
            error(
                Code::Unavailable,
                side,
                format!("the security server could not record the exchange: {e}"),
            )
        };
        let mut record = record;
        self.timestamps.note_record(record.time_unix_ms);
        record.timestamp_sha256 = self
            .timestamps
            .latest_sha256()
            .map(|h| h.to_vec())
            .unwrap_or_default();
        let durable = self.log.submit(record).map_err(failed)?;
        Ok(async move { durable.await.map_err(failed) })
    }

    /// A pooled mutual-TLS channel to a peer security server, pinned to the certificate
    /// the configuration lists for it.
    pub(crate) fn peer_channel(
        &self,
        conf: &VerifiedConf,
        address: &str,
        pin: [u8; 32],
    ) -> Result<Channel, Status> {
        let key = PeerKey {
            address: address.to_owned(),
            pin,
            serial: conf.serial(),
        };
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = peers.get(&key) {
            return Ok(c.clone());
        }
        let internal = |e: &dyn std::fmt::Display| {
            error(Code::Internal, ErrorSource::ConsumerServer, e.to_string())
        };
        let tls = lintas_transport::pinned_client_config(
            conf.trust_store(),
            Role::Server,
            Some(pin),
            Some((&self.tls_cert, &self.tls_key)),
        )
        .map_err(|e| internal(&e))?;
        let channel = lintas_transport::channel(&format!("https://{address}"), tls)
            .map_err(|e| internal(&e))?;
        // Connections for older serials are dropped once a newer configuration is used.
        peers.retain(|k, _| k.serial >= key.serial);
        peers.insert(key, channel.clone());
        Ok(channel)
    }

    /// A pooled plaintext channel to a provider application.
    /// A pooled channel to a provider application (TLS when the endpoint is https).
    pub(crate) fn app_channel(
        &self,
        service: &crate::access::ServiceEntry,
    ) -> Result<Channel, Status> {
        let key = format!(
            "{} {}",
            service.endpoint,
            service
                .ca_pem
                .as_deref()
                .map(|p| lintas_certs::hex(&lintas_certs::sha256(p.as_bytes())))
                .unwrap_or_default()
        );
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = apps.get(&key) {
            return Ok(c.clone());
        }
        let bad = |e: &dyn std::fmt::Display| {
            error(
                Code::Internal,
                ErrorSource::ProviderServer,
                format!("service endpoint '{}': {e}", service.endpoint),
            )
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(service.endpoint.clone())
            .map_err(|e| bad(&e))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(ca) = &service.ca_pem {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
        }
        let channel = endpoint.connect_lazy();
        if apps.len() >= MAX_APP_CHANNELS {
            apps.clear();
        }
        apps.insert(key, channel.clone());
        Ok(channel)
    }

    /// Verifies a member signing certificate against `conf` (chain to an approved CA,
    /// role, key usages, not revoked) at `now`. The same certificate signs every message
    /// of its member, so a result is remembered for the configuration serial it was
    /// checked under: a new serial (which may revoke it) checks again, and validity
    /// dates are checked every time.
    pub(crate) fn verify_signer(
        &self,
        conf: &VerifiedConf,
        der: &[u8],
        now: std::time::SystemTime,
    ) -> Result<Arc<CertInfo>, lintas_certs::CertError> {
        let hash = lintas_certs::sha256(der);
        let cached = self
            .signers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .filter(|(serial, _)| *serial == conf.serial())
            .map(|(_, info)| info.clone());
        if let Some(info) = cached
            && info.not_before <= now
            && now < info.not_after
        {
            return Ok(info);
        }
        let info = Arc::new(conf.trust_store().verify(der, Role::Member, now)?);
        // Evidence: records name signing certificates by hash.
        if let Err(e) = self.material.remember_cert(der) {
            return Err(lintas_certs::CertError::Signing(format!(
                "keeping the signing certificate as evidence: {e}"
            )));
        }
        let mut signers = self.signers.lock().unwrap_or_else(|p| p.into_inner());
        if signers.len() >= MAX_CACHED_SIGNERS {
            signers.clear();
        }
        signers.insert(hash, (conf.serial(), info.clone()));
        Ok(info)
    }

    /// A client of the registry that authenticates as this server.
    pub(crate) fn registry(
        &self,
    ) -> Result<lintas_proto::registry::v1::registration_client::RegistrationClient<Channel>, SsError>
    {
        Ok(
            lintas_proto::registry::v1::registration_client::RegistrationClient::new(
                self.registry_channel()?,
            ),
        )
    }

    /// A mutual-TLS channel to the registry, as this server.
    fn registry_channel(&self) -> Result<Channel, SsError> {
        let anchor = self.conf.anchor();
        let tls = lintas_transport::client_config(
            anchor.trust_store(),
            Role::Registry,
            Some((&self.tls_cert, &self.tls_key)),
        )?;
        Ok(lintas_transport::channel(&anchor.registry_url, tls)?)
    }

    /// Signs a checkpoint of the log if it grew since the last one.
    pub fn checkpoint_now(
        &self,
    ) -> Result<Option<lintas_log::checkpoint::SignedCheckpoint>, SsError> {
        self.checkpoints
            .checkpoint_now(&self.log, now_ms(&*self.clock))
    }

    /// Has the newest checkpoint time-stamped if it is newer than the last one stamped;
    /// returns the stamped time, or `None` when there was nothing new.
    pub async fn timestamp_now(&self) -> Result<Option<i64>, SsError> {
        let Some((latest, stated)) = self.checkpoints.latest_stated() else {
            return Ok(None);
        };
        if stated.size <= self.timestamps.latest_size() {
            // Nothing new: every record up to the newest checkpoint is covered.
            self.timestamps.recount(&self.log)?;
            return Ok(None);
        }
        let conf = self.conf.current()?;
        let stamped = self
            .timestamps
            .stamp(latest, stated.size, &conf, &self.timestamping_authority)
            .await?;
        self.timestamps.recount(&self.log)?;
        Ok(Some(stamped))
    }

    /// Keeps message bodies beside their records; a failure loses no evidence the
    /// records hold (they carry each body's hash), so it is logged, not fatal.
    pub(crate) fn keep_bodies(&self, bodies: &[(u64, &[u8])]) {
        let now = now_ms(&*self.clock);
        for (index, body) in bodies {
            if let Err(e) = self.bodies.put(*index, now, body) {
                tracing::warn!(error = %e, record = index, "message body not kept");
            }
        }
    }

    /// The log's state, for `lintas ss log-status`.
    pub fn log_status(&self) -> lintas_proto::ss::v1::LogStatusReply {
        let now = lintas_certs::unix_secs(self.clock.now());
        let (checkpoint_size, checkpoint_unix_ms) = self
            .checkpoints
            .latest_stated()
            .map(|(_, c)| (c.size, c.time_unix_ms))
            .unwrap_or_default();
        lintas_proto::ss::v1::LogStatusReply {
            records: self.log.len(),
            checkpoint_size,
            checkpoint_unix_ms,
            witnessed_size: self.checkpoints.witnessed_size(),
            timestamped_size: self.timestamps.latest_size(),
            seconds_without_timestamp: self.timestamps.age(now),
            timestamp_failures: self.timestamps.failures(),
            failing_closed: self.timestamps.age(now) > self.timestamp_fail_closed as i64,
            timestamp_fail_closed_secs: self.timestamp_fail_closed as i64,
        }
    }

    /// Refuses calls once no time-stamp could be had for `timestamp_fail_closed_secs`.
    pub(crate) fn check_trusted_time(&self, side: ErrorSource) -> Result<(), Status> {
        let age = self
            .timestamps
            .age(lintas_certs::unix_secs(self.clock.now()));
        if age > self.timestamp_fail_closed as i64 {
            return Err(error(
                Code::Unavailable,
                side,
                format!(
                    "the oldest record without a trusted time-stamp has waited {age} s (timestamp_fail_closed_secs is {}): calls are refused until the time-stamping authority answers",
                    self.timestamp_fail_closed
                ),
            ));
        }
        Ok(())
    }

    /// Learns the checkpoint the witness holds and checks the log against it.
    pub async fn sync_with_witness(&self) -> Result<u64, SsError> {
        self.checkpoints
            .sync_with_witness(&self.log, &mut self.registry()?)
            .await
    }

    /// Hands the newest checkpoint to the witness; returns the size now witnessed.
    pub async fn witness_now(&self) -> Result<u64, SsError> {
        self.checkpoints
            .witness(&self.log, self.conf.anchor(), &mut self.registry()?)
            .await
    }

    /// Reports the services this server provides to the registry's catalogue, over mutual
    /// TLS with this server's certificate. Returns the configuration serial listing them.
    pub async fn report_services(&self) -> Result<u64, SsError> {
        use lintas_proto::registry::v1 as reg;
        let _one_at_a_time = self.reporting.lock().await;
        let grants = self.access.grants();
        // The sets the report names, from the same snapshot, by hash.
        let mut sets = std::collections::HashMap::new();
        let services = self
            .access
            .services()
            .into_iter()
            .map(|s| reg::ReportedService {
                grants: grants
                    .iter()
                    .filter(|g| g.provider == s.provider && g.service == s.service)
                    .map(|g| lintas_proto::globalconf::v1::AccessGrant {
                        method: g.method.clone().unwrap_or_default(),
                        subject: g.subject.wire(),
                    })
                    .collect(),
                provider: s.provider.to_string(),
                service: s.service.to_string(),
                descriptor_sha256: match s.descriptor_set {
                    Some(set) => {
                        let hash = lintas_certs::sha256(&set).to_vec();
                        sets.insert(hash.clone(), set);
                        hash
                    }
                    None => Vec::new(),
                },
            })
            .collect();
        let report = reg::ServiceReport {
            services,
            maintenance: self.maintenance.reason().is_some(),
        };
        let mut registry = self.registry()?;
        let reply = registry.report_services(report.clone()).await?.into_inner();
        if reply.missing_descriptors.is_empty() {
            return Ok(reply.conf_serial);
        }
        // The registry lacks some descriptor sets: upload them, then report again.
        let mut catalogue = reg::catalogue_client::CatalogueClient::new(self.registry_channel()?)
            .max_encoding_message_size(crate::descriptors::MAX_DESCRIPTOR_BYTES + 1024);
        for hash in &reply.missing_descriptors {
            let set = sets.remove(hash).ok_or_else(|| {
                SsError::InvalidInput(format!(
                    "the registry asked for descriptor set {}, which this report does not name",
                    lintas_certs::hex(hash)
                ))
            })?;
            catalogue
                .upload_descriptor(reg::ServiceDescriptor {
                    descriptor_set: set,
                })
                .await?;
        }
        let reply = registry.report_services(report).await?.into_inner();
        if !reply.missing_descriptors.is_empty() {
            return Err(SsError::InvalidInput(format!(
                "the registry still lacks {} descriptor set(s) after they were uploaded",
                reply.missing_descriptors.len()
            )));
        }
        Ok(reply.conf_serial)
    }

    /// Marks `id` of `client` as used at `time_ms`; false if it was used before.
    pub(crate) fn first_use(&self, client: &str, id: &str, time_ms: i64) -> bool {
        let now = now_ms(&*self.clock);
        let window =
            2 * i64::try_from(self.settings.clock_skew.as_millis()).unwrap_or(i64::MAX / 4);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what the time check already refuses, at most once a second.
        if now - seen.last_prune_ms > 1000 {
            seen.ids.retain(|_, t| *t >= now - window);
            seen.last_prune_ms = now;
        }
        match seen.ids.entry(format!("{client}/{id}")) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(time_ms);
                true
            }
        }
    }

    /// Fetches the global configuration out of turn, at most once per
    /// [`MIN_REFRESH_INTERVAL`]: a peer or client admitted since the last poll would
    /// otherwise be refused until the next one. True when a newer serial than the caller
    /// saw is now held (fetched by this call or by one it waited for).
    pub(crate) async fn refresh_conf_now(&self) -> bool {
        let before = self.conf.held_serial();
        let mut last = self.last_refresh.lock().await;
        if self.conf.held_serial() != before {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        match self.conf.fetch().await {
            Ok(c) => Some(c.serial()) != before,
            Err(e) => {
                tracing::warn!(error = %e, "out-of-turn configuration fetch failed");
                false
            }
        }
    }

    pub(crate) fn hosts(&self, client: &SubsystemId) -> bool {
        self.clients.contains(client)
    }
}

/// The listeners a security server serves on, already bound.
pub struct Listeners {
    /// Local applications (the consumer endpoint and the REST entry).
    pub consumer: TcpListener,
    /// Peer security servers (mutual TLS).
    pub provider: TcpListener,
    /// `/metrics`, `/healthz` and `/readyz`.
    pub ops: TcpListener,
}

/// Serves the consumer endpoint (TLS with registered client certificates, or plaintext
/// loopback in development), the provider endpoint (mutual TLS 1.3) and the operations
/// listener until `shutdown` completes, with the background tasks (see `tasks`). A
/// fatal finding of a task stops the server with its error. On shutdown the endpoints stop accepting and in-flight
/// calls finish; every answered call's records were durable before it was answered.
pub async fn serve(
    server: Arc<SecurityServer>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SsError> {
    // The data directory holds keys, records and the admin socket: owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&server.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SsError::Serve(format!("{}: {e}", server.data_dir.display())))?;
    }
    let admin_socket = crate::admin::bind(&server.data_dir.join(crate::admin::SOCKET))?;
    let local = listeners
        .consumer
        .local_addr()
        .map_err(|e| SsError::Serve(e.to_string()))?;
    if matches!(server.local_auth, LocalAuth::DevPlaintextLoopback) && !local.ip().is_loopback() {
        return Err(SsError::Serve(format!(
            "with dev_plaintext_loopback the consumer endpoint must listen on loopback (got {local})"
        )));
    }
    if server.conf.current().is_err() {
        server.conf.fetch().await?;
    }
    let conf = server.conf.current()?;
    // Peers are trusted per the configuration in force when they connect: a CA added
    // later is trusted from its configuration serial on, without a restart.
    let peer_tls = {
        let server = server.clone();
        let first = lintas_transport::server_config(
            &server.tls_cert,
            &server.tls_key,
            conf.trust_store(),
            lintas_transport::ClientAuth::Required,
        )?;
        let cache = Mutex::new((conf.serial(), first));
        move || {
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Ok(current) = server.conf.current()
                && current.serial() != cache.0
            {
                match lintas_transport::server_config(
                    &server.tls_cert,
                    &server.tls_key,
                    current.trust_store(),
                    lintas_transport::ClientAuth::Required,
                ) {
                    Ok(config) => *cache = (current.serial(), config),
                    Err(e) => tracing::error!(error = %e, "peer TLS configuration not rebuilt"),
                }
            }
            cache.1.clone()
        }
    };
    match conf.server(&server.id) {
        Some(e) if e.tls_cert_sha256 == lintas_certs::sha256(&server.tls_cert) => {}
        _ => tracing::warn!(
            server = %server.id,
            serial = conf.serial(),
            "this server is not listed with its TLS certificate in the global configuration; peers will refuse it until it is"
        ),
    }

    // A log the witness saw longer, or with another head, was cut back or rewritten.
    // If the registry cannot be reached, the server starts (a registry outage must not
    // stop every ministry's services) and checks as soon as it answers.
    let synced = match tokio::time::timeout(
        crate::tasks::REGISTRY_TIMEOUT,
        server.sync_with_witness(),
    )
    .await
    {
        Ok(Ok(_)) => true,
        Ok(Err(e @ SsError::State(_))) => return Err(e),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not ask the witness about this log; will retry");
            false
        }
        Err(_) => {
            tracing::warn!("the witness did not answer; will retry");
            false
        }
    };
    let stop = lintas_transport::Stop::on(shutdown);

    // Operations: the listener serving health and metrics.
    let ops = server.ops.clone();
    if synced {
        server.witness_health.ready();
    }
    let limits = &server.settings.connection_limits;
    let provider_admission = lintas_transport::Admission::new("provider", *limits);
    let consumer_admission = lintas_transport::Admission::new("consumer", *limits);
    let ops_admission = lintas_transport::Admission::new("ops", *limits);
    ops.metrics.listeners(vec![
        consumer_admission.clone(),
        provider_admission.clone(),
        ops_admission.clone(),
    ]);

    // gRPC health follows readiness on both endpoints.
    let (grpc_health, health_service) = tonic_health::server::health_reporter();
    let health_watcher = lintas_ops::grpc::follow_health(
        ops.health.clone(),
        grpc_health,
        vec![
            <ExchangeServer<crate::provider::ProviderService> as tonic::server::NamedService>::NAME,
        ],
        stop.stopped(),
    );
    let ops_server = lintas_ops::serve(listeners.ops, ops_admission, ops, stop.stopped());

    // Room for the signed envelope around a maximal body.
    let envelope = server.settings.max_message_bytes + crate::envelope::ENVELOPE_MARGIN;
    let provider_server = lintas_transport::grpc_server(limits)
        .add_service(health_service.clone())
        .add_service(
            ExchangeServer::new(crate::provider::ProviderService(server.clone()))
                .max_decoding_message_size(envelope)
                .max_encoding_message_size(envelope),
        )
        .serve_with_incoming_shutdown(
            lintas_transport::incoming(listeners.provider, peer_tls, provider_admission),
            stop.stopped(),
        );

    let routes = tonic::service::Routes::new(health_service)
        .add_service(
            lintas_proto::discovery::v1::discovery_server::DiscoveryServer::new(
                crate::discovery::Discovery(server.clone()),
            ),
        )
        .add_service(
            tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer::new(
                crate::discovery::Reflection(server.clone()),
            ),
        )
        .add_service(
            tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer::new(
                crate::discovery::Reflection(server.clone()),
            ),
        )
        .prepare()
        .into_axum_router()
        .merge(crate::rest::routes(server.clone()))
        .fallback_service(crate::consumer::ConsumerEndpoint(server.clone()));
    let consumer_routes = tonic::service::Routes::from(routes);
    let consumer = listeners.consumer;
    let consumer_server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match &server.local_auth {
        LocalAuth::DevPlaintextLoopback => Box::pin(
            lintas_transport::grpc_server(limits)
                .accept_http1(true)
                .add_routes(consumer_routes)
                .serve_with_incoming_shutdown(
                    lintas_transport::incoming_plain(consumer, consumer_admission),
                    stop.stopped(),
                ),
        ),
        LocalAuth::Tls { cert, key } => {
            let registry = server.clone();
            let tls = lintas_transport::server_config_registered_clients(
                cert,
                key,
                Arc::new(move |hash| registry.access.client_for_cert(hash).is_some()),
            )?;
            // The REST entry also serves HTTP/1.1 clients.
            let mut tls = (*tls).clone();
            tls.alpn_protocols.push(b"http/1.1".to_vec());
            Box::pin(
                lintas_transport::grpc_server(limits)
                    .accept_http1(true)
                    .add_routes(consumer_routes)
                    .serve_with_incoming_shutdown(
                        lintas_transport::incoming(consumer, Arc::new(tls), consumer_admission),
                        stop.stopped(),
                    ),
            )
        }
    };

    let admin_server = tonic::transport::Server::builder()
        .add_service(
            lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdminServer::new(
                crate::admin::AdminService(server.clone()),
            )
            .max_encoding_message_size(crate::admin::MAX_REPLY_BYTES),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(admin_socket),
            stop.stopped(),
        );

    // Monitoring records are written until every exchange has ended, after the
    // endpoints have drained.
    let (opmon_done, opmon_stop) = tokio::sync::oneshot::channel::<()>();
    let opmon_server = server.clone();
    let opmon_writer = tokio::spawn(async move {
        let clock = opmon_server.clock.clone();
        let stopped = lintas_transport::Stop::on(async {
            let _ = opmon_stop.await;
        });
        let write = opmon_server.opmon.write(
            move || lintas_certs::unix_secs(clock.now()),
            stopped.stopped(),
        );
        match &opmon_server.otlp {
            Some(exporter) => {
                tokio::join!(write, exporter.run(stopped.stopped()));
            }
            None => write.await,
        }
    });
    let (p, c, a, (), (), (), (), (), checkpointed) = tokio::join!(
        stop.part(provider_server),
        stop.part(consumer_server),
        stop.part(admin_server),
        stop.part(ops_server),
        health_watcher,
        crate::tasks::poll_configuration(server.clone(), stop.clone()),
        crate::tasks::report_services(server.clone(), stop.clone()),
        crate::tasks::timestamp(server.clone(), stop.clone()),
        stop.part(crate::tasks::checkpoint(
            server.clone(),
            synced,
            stop.clone()
        )),
    );
    let _ = opmon_done.send(());
    let _ = opmon_writer.await;
    // Every call has drained: the last checkpoint covers every record.
    if let Err(e) = server.checkpoint_now() {
        tracing::error!(error = %e, "signing the final log checkpoint failed");
    }
    let _ = std::fs::remove_file(server.data_dir.join(crate::admin::SOCKET));
    if let Err(crate::tasks::Fatal(e)) = checkpointed {
        return Err(SsError::State(e));
    }
    p.map_err(|e| SsError::Serve(format!("provider endpoint: {e}")))?;
    c.map_err(|e| SsError::Serve(format!("consumer endpoint: {e}")))?;
    a.map_err(|e| SsError::Serve(format!("admin socket: {e}")))?;
    tracing::info!(server = %server.id, "security server stopped");
    Ok(())
}

/// Opens an enrolled server from its configuration file.
pub fn open_from_config(
    config: SsConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<SecurityServer>, SsError> {
    SecurityServer::open(Node::open(config)?, clock)
}

/// Message ids of requests this server accepted within the last `window_ms`, from the
/// record log (newest first until older than the window).
fn recent_requests(log: &RecordLog, now: i64, window_ms: i64) -> Result<Seen, SsError> {
    let mut seen = Seen {
        last_prune_ms: now,
        ..Seen::default()
    };
    for index in (0..log.len()).rev() {
        let Some(r) = log.get(index)? else { continue };
        if r.time_unix_ms < now.saturating_sub(window_ms) {
            break;
        }
        if r.kind == lintas_log::RecordKind::RequestReceived as i32 {
            seen.ids
                .insert(format!("{}/{}", r.client, r.message_id), r.time_unix_ms);
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lintas_log::RecordKind;

    #[tokio::test]
    async fn the_replay_window_is_rebuilt_from_durable_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        let now = 1_000_000_000;
        let record = |kind: RecordKind, id: &str, time: i64| lintas_log::Record {
            kind: kind as i32,
            client: "ID/GOV/A/B".into(),
            message_id: id.into(),
            time_unix_ms: time,
            ..Default::default()
        };
        log.append(record(RecordKind::RequestReceived, "old", now - 200_000))
            .await
            .unwrap();
        log.append(record(RecordKind::RequestReceived, "recent", now - 1_000))
            .await
            .unwrap();
        log.append(record(RecordKind::Rejection, "refused", now - 500))
            .await
            .unwrap();
        let seen = recent_requests(&log, now, 120_000).unwrap();
        assert!(seen.ids.contains_key("ID/GOV/A/B/recent"));
        assert!(
            !seen.ids.contains_key("ID/GOV/A/B/old"),
            "outside the window"
        );
        assert!(
            !seen.ids.contains_key("ID/GOV/A/B/refused"),
            "never delivered"
        );
    }
}
