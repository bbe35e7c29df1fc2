//! Opening a security server: from an enrolled node, `SecurityServer::open` builds the
//! parts (its own identity and signer, the configuration view, the record pipeline, the
//! evidence, the access rules, the consumer and provider sides of exchanges, the
//! catalogue, health and metrics) and hands each only what it uses. `serve` (in
//! `serve`) wires them to the listeners and the background tasks. No part reaches back
//! here.
//!
//! - The consumer side (`consumer`) takes ordinary gRPC calls from local applications
//!   for any `/package.Service/Method`, signs a request header, records it, and relays
//!   the bytes to the provider's security server.
//! - The provider side (`provider`) serves `lintas.exchange.v1.Exchange` to peer
//!   servers over mutual TLS 1.3, runs the checks in order, records, calls the
//!   application, and signs a response bound to the request.
//!
//! Nothing is answered before its record is durable (see `lintas-log`).

use std::sync::Arc;
use std::time::Duration;

use lintas_globalconf::{Clock, ConfClient};
use lintas_identifiers::ServerId;
use lintas_log::RecordLog;

use crate::access::Access;
use crate::bodies::Bodies;
use crate::catalogue::Catalogue;
use crate::checkpoints::Checkpoints;
use crate::conf_view::ConfView;
use crate::config::Settings;
use crate::consumer::Consumer;
use crate::envelope::Verifier;
use crate::evidence::Evidence;
use crate::local::{LocalApps, LocalAuth};
use crate::maintenance::Maintenance;
use crate::material::Material;
use crate::opmon::OpMon;
use crate::outcome::Outcomes;
use crate::own::Own;
use crate::pools::AppPool;
use crate::provider::Provider;
use crate::recorder::Recorder;
use crate::registry_link::RegistryLink;
use crate::reporter::ServiceReporter;
use crate::timestamps::Timestamps;
use crate::{Node, SsConfig, SsError};

pub use crate::envelope::{REQUEST_DOMAIN, RESPONSE_DOMAIN};
pub use crate::errors::{ERROR_SOURCE, ErrorSource, error, now_ms};

/// Signs `header` (with its body hash and length filled in from `body`) as a consumer
/// server does, returning the envelope sent to the provider server.
pub fn sign_request(
    mut header: lintas_proto::exchange::v1::RequestHeader,
    body: Vec<u8>,
    key: &dyn lintas_certs::Signer,
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
        ..Default::default()
    })
}

/// An opened security server: its parts, built once and shared with the endpoints,
/// the admin socket and the background tasks that `serve` starts.
pub struct SecurityServer {
    pub id: ServerId,
    pub(crate) data_dir: std::path::PathBuf,
    pub log: RecordLog,
    /// The log's signed checkpoints.
    pub checkpoints: Arc<Checkpoints>,
    /// RFC 3161 tokens over checkpoints.
    pub timestamps: Arc<Timestamps>,
    /// Message bodies, kept for `body_retention_days`.
    pub bodies: Arc<Bodies>,
    pub access: Arc<Access>,
    /// Checkpoints, time-stamps, the witness, log status and exports.
    pub evidence: Arc<Evidence>,
    pub(crate) own: Arc<Own>,
    pub(crate) conf: Arc<ConfView>,
    pub(crate) local: Arc<LocalApps>,
    pub(crate) consumer: Arc<Consumer>,
    pub(crate) provider: Arc<Provider>,
    pub(crate) catalogue: Arc<Catalogue>,
    pub(crate) reporter: Arc<ServiceReporter>,
    pub(crate) outcomes: Arc<Outcomes>,
    pub(crate) settings: Settings,
    pub(crate) intervals: Intervals,
    pub(crate) clock: Arc<dyn Clock>,
    /// Health components and metrics, served by the operations listener.
    pub(crate) ops: lintas_ops::Ops,
    /// What the health probes and state metrics read (they hold it weakly).
    _watched: Arc<crate::ops::Watched>,
    /// Whether the log matches what the witness holds, and the witness answers.
    pub(crate) witness_health: lintas_ops::Handle,
    /// Whether the registry's catalogue has this server's newest service report.
    pub(crate) catalogue_health: lintas_ops::Handle,
    /// Where renewing the certificates stands (`renew_before_days`).
    pub(crate) renewal_health: lintas_ops::Handle,
    /// Renews the certificates before they expire (`renew_before_days`).
    pub(crate) renewer: crate::renewal::Renewer,
    /// Switches to renewed certificates while serving.
    pub(crate) switch: Arc<crate::switch::Switch>,
    /// Administration as typed operations (the admin socket, the management API and the
    /// console are edges over it).
    pub(crate) manage: Arc<crate::manage::Manage>,
    /// The management listener's TLS configuration.
    pub(crate) management_tls: Arc<rustls::ServerConfig>,
}

/// How often the background tasks run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Intervals {
    pub conf_poll: Duration,
    /// Days before expiry the certificates are renewed (0: never).
    pub renew_before_days: u64,
    pub checkpoint: Duration,
    pub witness: Duration,
    pub timestamp: Duration,
    /// How long acknowledged events are kept.
    pub event_retention: Duration,
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
        let conf_client: ConfClient = node.conf_client(clock.clone())?;
        let records = node.paths.0.join("records");
        let c: &SsConfig = &node.config;
        let (plane, management_tls) =
            crate::manage::plane::management_plane(&node, &crate::manage::console::SITE)?;
        // The checkpoints first: the records they cover were durable, so damage among
        // them is refused as damage, never cut off as a crash's unfinished write.
        std::fs::create_dir_all(&records)
            .map_err(|e| crate::state_error_at("creating", &records, e))?;
        tracing::info!(
            signing = %node.sign_key()?.held_in(),
            log = %node.log_key()?.held_in(),
            "signing keys loaded"
        );
        let checkpoints = Checkpoints::read(
            &records.join("checkpoints"),
            c.server_id.to_string(),
            node.log_key()?.clone(),
        )?;
        let log = RecordLog::open_after(&records, c.log_segment_kib * 1024, checkpoints.covered())?;
        checkpoints.check(&log)?;
        let checkpoints = Arc::new(checkpoints);
        let db = lintas_log::open_sled(&node.paths.0.join("state")).map_err(crate::state_error)?;
        let access = Arc::new(Access::open(&db)?);
        let events = Arc::new(crate::events::Events::open(
            &db,
            crate::events::Retry {
                base: Duration::from_millis(c.event_retry_base_ms),
                most: Duration::from_secs(c.event_retry_max_secs),
                max_attempts: c.event_max_attempts,
            },
        )?);
        let idempotency = Arc::new(crate::idempotency::Idempotency::open(
            &db,
            Duration::from_secs(c.idempotency_window_secs),
            crate::consumer::random_id().map_err(|e| SsError::State(e.message().into()))?,
        )?);
        let bodies = Arc::new(Bodies::open(
            &records.join("bodies"),
            (c.body_retention_days > 0).then_some(c.body_retention_days),
        )?);
        let replay = crate::replay::ReplayWindow::rebuild(
            &log,
            now_ms(&*clock),
            2 * i64::try_from(Duration::from_secs(c.clock_skew_secs).as_millis())
                .unwrap_or(i64::MAX / 4),
        )?;
        let local_auth = if c.dev_plaintext_loopback {
            LocalAuth::DevPlaintextLoopback
        } else {
            let (cert, key) = crate::self_signed::local_identity(
                &node.paths.consumer_cert(),
                &node.paths.consumer_key(),
                &c.consumer_hostnames,
                &format!("{} consumer endpoint", c.server_id),
            )?;
            LocalAuth::Tls { cert, key }
        };
        let material = Arc::new(Material::open(&records.join("evidence"))?);
        let timestamps = Arc::new(Timestamps::open(&records.join("timestamps"))?);
        // Records written before a restart and not yet covered keep their age.
        timestamps.recount(&log)?;
        material.remember_cert(&sign_cert)?;

        let ops = lintas_ops::Ops {
            health: lintas_ops::Health::new(),
            metrics: lintas_ops::Metrics::new("security_server"),
        };
        let maintenance = Arc::new(Maintenance::open(
            node.paths.0.join("maintenance"),
            ops.health
                .component("maintenance", lintas_ops::Condition::Ready),
        )?);
        let witness_health = ops.health.component(
            "witness",
            lintas_ops::Condition::Warning(
                "the log has not been checked against the witness yet".into(),
            ),
        );
        let catalogue_health = ops
            .health
            .component("catalogue", lintas_ops::Condition::Ready);
        let renewal_health = ops
            .health
            .component("renewal", lintas_ops::Condition::Ready);
        let renewer = crate::renewal::Renewer {
            paths: node.paths.clone(),
            config: node.config.clone(),
        };

        let own = Arc::new(Own::new(
            c.server_id.clone(),
            c.clients.clone(),
            crate::own::OwnKeys::new(
                crate::batch::BatchSigner::new(node.sign_key()?.clone()),
                sign_cert,
                tls_cert,
                node.tls_key,
            ),
        ));
        let switch = Arc::new(crate::switch::Switch::new(
            node.paths.clone(),
            c.pkcs11.clone(),
            own.clone(),
            material.clone(),
            conf_client.clone(),
            c.renewal_switch_delay_secs,
        ));
        let registry = RegistryLink::new(conf_client.clone(), own.clone());
        let conf = Arc::new(ConfView::new(conf_client.clone(), material.clone()));
        let recorder = Arc::new(Recorder::new(
            log.clone(),
            timestamps.clone(),
            bodies.clone(),
            clock.clone(),
            c.timestamp_fail_closed_secs,
        ));
        let evidence = Arc::new(Evidence {
            id: c.server_id.clone(),
            log: log.clone(),
            records_dir: records.clone(),
            checkpoints: checkpoints.clone(),
            timestamps: timestamps.clone(),
            bodies: bodies.clone(),
            material: material.clone(),
            conf: conf_client,
            registry: registry.clone(),
            clock: clock.clone(),
            timestamping_authority: c.timestamping_authority.clone(),
            timestamp_fail_closed: c.timestamp_fail_closed_secs,
        });
        let verifier = Arc::new(Verifier::new(material, clock.clone()));
        let opmon = Arc::new(OpMon::open(
            &node.paths.0.join("opmon"),
            crate::opmon::Retention {
                days: c.opmon_retention_days,
                max_bytes: c.opmon_max_mib * 1024 * 1024,
            },
        )?);
        let outcomes = Arc::new(Outcomes {
            server: c.server_id.to_string(),
            exchanges: Default::default(),
            opmon,
            user_key: if c.opmon_plain_user_ids {
                None
            } else {
                Some(crate::opmon::user_id_key(&node.paths.0.join("opmon.key"))?)
            },
            otlp: (!c.otlp_endpoint.is_empty()).then(|| {
                Arc::new(crate::otlp::Exporter::new(
                    &c.otlp_endpoint,
                    &c.server_id.to_string(),
                ))
            }),
        });
        let settings = Settings::of(c);
        let local = Arc::new(LocalApps {
            auth: local_auth,
            access: access.clone(),
            own: own.clone(),
        });
        let apps = Arc::new(AppPool::default());
        let catalogue = Arc::new(Catalogue::new(conf.clone(), registry.clone()));
        let consumer = Arc::new(Consumer {
            catalogue: catalogue.clone(),
            own: own.clone(),
            conf: conf.clone(),
            recorder: recorder.clone(),
            verifier: verifier.clone(),
            local: local.clone(),
            maintenance: maintenance.clone(),
            settings: settings.clone(),
            requests: lintas_transport::Admission::requests(
                "consumer-requests",
                c.connection_limits,
            ),
            peers: Default::default(),
            selector: Default::default(),
            outcomes: outcomes.clone(),
        });
        let provider = Arc::new(Provider {
            own: own.clone(),
            conf: conf.clone(),
            recorder,
            verifier,
            access: access.clone(),
            replay,
            maintenance: maintenance.clone(),
            settings: settings.clone(),
            requests: lintas_transport::Admission::requests(
                "provider-requests",
                c.connection_limits,
            ),
            apps: apps.clone(),
            backends: crate::backend::Backends::default(),
            outcomes: outcomes.clone(),
            idempotency,
            events,
        });
        let watched = Arc::new(crate::ops::Watched {
            own: own.clone(),
            evidence: evidence.clone(),
            maintenance: maintenance.clone(),
            outcomes: outcomes.clone(),
            events: provider.events.clone(),
            warnings: crate::ops::Warnings {
                cert_expiry: Duration::from_secs(c.warn_cert_expiry_days * 86400),
                conf_expiry: Duration::from_secs(c.warn_conf_expiry_secs),
            },
        });
        crate::ops::install(&watched, &ops);
        let manage = Arc::new(crate::manage::Manage {
            own: own.clone(),
            access: access.clone(),
            apps: apps.clone(),
            evidence: evidence.clone(),
            health: ops.health.clone(),
            maintenance: maintenance.clone(),
            opmon: outcomes.opmon.clone(),
            plane,
            switch: switch.clone(),
            events: provider.events.clone(),
            idempotency: provider.idempotency.clone(),
        });
        Ok(Arc::new(SecurityServer {
            id: c.server_id.clone(),
            data_dir: node.paths.0.clone(),
            log,
            checkpoints,
            timestamps,
            bodies,
            reporter: Arc::new(ServiceReporter::new(
                access.clone(),
                maintenance.clone(),
                registry.clone(),
            )),
            catalogue,
            access,
            evidence,
            own,
            conf,
            local,
            consumer,
            provider,
            outcomes,
            settings,
            intervals: Intervals {
                conf_poll: Duration::from_secs(c.conf_poll_secs),
                renew_before_days: c.renew_before_days,
                checkpoint: Duration::from_millis(c.checkpoint_interval_ms),
                witness: Duration::from_secs(c.witness_interval_secs),
                timestamp: Duration::from_secs(c.timestamp_interval_secs),
                event_retention: Duration::from_secs(c.event_retention_secs),
            },
            clock,
            ops,
            _watched: watched,
            witness_health,
            catalogue_health,
            renewal_health,
            renewer,
            switch,
            manage,
            management_tls,
        }))
    }

    /// Batch signatures made and the headers they covered, since the start.
    pub fn signing_stats(&self) -> (u64, u64) {
        self.own.signing_stats()
    }

    /// The operational monitoring records.
    /// The events of the publishers hosted here, and their subscriptions.
    pub fn events(&self) -> &Arc<crate::events::Events> {
        &self.provider.events
    }

    pub fn opmon(&self) -> &OpMon {
        &self.outcomes.opmon
    }

    /// The configuration client (tests and tools fetch through it).
    pub fn conf(&self) -> &ConfClient {
        self.conf.client()
    }

    /// The admin socket's service over this server's typed operations.
    pub fn admin(&self) -> crate::admin::AdminService {
        crate::admin::AdminService(self.manage.clone())
    }

    /// Administration as typed operations.
    pub fn manage(&self) -> &Arc<crate::manage::Manage> {
        &self.manage
    }

    /// Reports the services this server provides to the registry's catalogue (see
    /// `reporter`). Returns the configuration serial listing them.
    pub async fn report_services(&self) -> Result<u64, SsError> {
        self.reporter.report().await
    }
}

/// Opens an enrolled server from its configuration file.
/// What `serve --check-config` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Everything, the stored state included, by opening the server as `serve` would.
    Everything,
    /// A server runs from this directory and holds its state: the configuration, the
    /// keys, the anchor, both certificates and the cached global configuration were
    /// checked; the state is the running server's to check.
    BesideRunningServer,
    /// The configuration, the keys and the anchor; there are no certificates yet
    /// (`serve` would run the enrolment console).
    NotEnrolled,
}

/// Checks a server's configuration, keys, certificates and state as `serve` would find
/// them, without serving, and also while a server runs from the same directory.
pub fn check(config: SsConfig, clock: Arc<dyn Clock>) -> Result<Checked, SsError> {
    let node = Node::open(config)?;
    // The keys that sign, from their files or token (a login and a test signature).
    node.sign_key()?;
    node.log_key()?;
    if !lintas_log::file::in_use(&node.paths.0.join("records")) {
        return match SecurityServer::open(node, clock) {
            Ok(_) => Ok(Checked::Everything),
            Err(SsError::NotEnrolled) => Ok(Checked::NotEnrolled),
            Err(e) => Err(e),
        };
    }
    for path in [node.paths.tls_cert(), node.paths.sign_cert()] {
        lintas_certs::files::read_cert(&path)?;
    }
    node.conf_client(clock)?;
    Ok(Checked::BesideRunningServer)
}

pub fn open_from_config(
    config: SsConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<SecurityServer>, SsError> {
    // A renewal whose certificates are ready takes effect as the server starts.
    crate::renewal::finish_switch(&crate::Paths(config.data_dir.clone()))?;
    SecurityServer::open(Node::open(config)?, clock)
}
