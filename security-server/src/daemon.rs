//! The running security server's state: opened from an enrolled node, it holds the
//! parts the endpoints use (the signer, the record log, the access rules, the
//! configuration client, the channel pools in `pools`, the signer cache in `signers`,
//! the replay window in `replay`, health and metrics, the monitoring records), and
//! `serve` (in `serve`) wires them to the listeners and the background tasks.
//!
//! - The consumer endpoint (`consumer` module) takes ordinary gRPC calls from local
//!   applications for any `/package.Service/Method`, signs a request header, records it,
//!   and relays the bytes to the provider's security server.
//! - The provider endpoint (`provider` module) serves `lintas.exchange.v1.Exchange` to
//!   peer servers over mutual TLS 1.3, runs the checks in order, records, calls the
//!   application, and signs a response bound to the request.
//!
//! Nothing is answered before its record is durable (see `lintas-log`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lintas_certs::{KeyPair, Role};
use lintas_globalconf::{Clock, ConfClient, VerifiedConf};
use lintas_identifiers::{ServerId, SubsystemId};
use lintas_log::{Record, RecordLog};
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
pub use crate::errors::{ERROR_SOURCE, ErrorSource, error, now_ms};
pub use crate::serve::{Listeners, serve};

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
    /// Message ids used within the replay window.
    pub(crate) replay: crate::replay::ReplayWindow,
    /// Signs headers with the member signing key, in batches under load.
    pub(crate) signer: BatchSigner,
    pub(crate) sign_cert: Vec<u8>,
    pub(crate) tls_key: KeyPair,
    pub(crate) tls_cert: Vec<u8>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: Settings,
    /// How local applications are authenticated.
    pub(crate) local_auth: LocalAuth,
    /// Requests in progress at once on each endpoint, in all and per source.
    pub(crate) consumer_requests: Arc<lintas_transport::Admission>,
    pub(crate) provider_requests: Arc<lintas_transport::Admission>,
    /// Pooled channels to peer security servers.
    pub(crate) peers: crate::pools::PeerPool,
    /// Pooled channels to provider applications.
    pub(crate) apps: crate::pools::AppPool,
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
    /// The key end users' ids are kept under in monitoring records (none: as given).
    pub(crate) opmon_user_key: Option<[u8; 32]>,
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
    pub(crate) signers: crate::signers::SignerCache,
    /// Batch roots whose signatures were verified.
    pub(crate) verified_roots: VerifiedRoots,
}

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
        let replay = crate::replay::ReplayWindow::rebuild(
            &log,
            now_ms(&*clock),
            2 * i64::try_from(Duration::from_secs(node.config.clock_skew_secs).as_millis())
                .unwrap_or(i64::MAX / 4),
        )?;
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
            opmon_user_key: if c.opmon_plain_user_ids {
                None
            } else {
                Some(crate::opmon::user_id_key(&node.paths.0.join("opmon.key"))?)
            },
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
            replay,
            signer: BatchSigner::new(node.sign_key),
            sign_cert,
            tls_key: node.tls_key,
            tls_cert,
            clock,
            consumer_requests: lintas_transport::Admission::requests(
                "consumer-requests",
                c.connection_limits,
            ),
            provider_requests: lintas_transport::Admission::requests(
                "provider-requests",
                c.connection_limits,
            ),
            peers: crate::pools::PeerPool::default(),
            apps: crate::pools::AppPool::default(),
            descriptors: Default::default(),
            reporting: tokio::sync::Mutex::new(()),
            last_refresh: tokio::sync::Mutex::new(None),
            signers: crate::signers::SignerCache::default(),
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
        self.timestamps
            .succeeded(lintas_certs::unix_secs(self.clock.now()));
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

/// Opens an enrolled server from its configuration file.
pub fn open_from_config(
    config: SsConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<SecurityServer>, SsError> {
    SecurityServer::open(Node::open(config)?, clock)
}
