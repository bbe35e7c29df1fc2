//! Security server configuration (`ss.toml`): TOML, unknown keys refused,
//! `LINTAS_SS_<KEY>` environment overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lintas_identifiers::{HostPort, ServerId, SubsystemId};
use serde::{Deserialize, Serialize};

pub use lintas_settings::SettingsError as ConfigError;

pub const ENV_PREFIX: &str = "LINTAS_SS_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsConfig {
    /// This server's identifier, INSTANCE/CLASS/MEMBER/SERVERCODE.
    pub server_id: ServerId,
    /// host:port where peer security servers reach this server's provider endpoint.
    pub address: HostPort,
    /// Where to fetch the global configuration first (a regional mirror,
    /// `http://host:port/globalconf`); the anchor's URLs are tried after these. Empty
    /// (the default): the anchor's only.
    #[serde(default)]
    pub globalconf_urls: Vec<String>,
    /// Subsystems of the owning member that this server hosts.
    #[serde(default)]
    pub clients: Vec<SubsystemId>,
    /// Name of the owning member, shown to the registry administrator.
    #[serde(default)]
    pub member_name: String,
    /// Directory with keys, certificates, anchor and caches; relative to the config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where local applications call this server (the consumer endpoint).
    #[serde(default = "default_consumer_listen")]
    pub consumer_listen: SocketAddr,
    /// Where peer security servers call this server (mutual TLS). Peers use `address`.
    #[serde(default = "default_provider_listen")]
    pub provider_listen: SocketAddr,
    /// Accept local applications over plaintext loopback, trusting the `lintas-client`
    /// they name. For development only. When false (production), the consumer endpoint
    /// speaks TLS 1.3 and each application presents a client certificate registered for
    /// its subsystem (`lintas ss client-cert`).
    #[serde(default)]
    pub dev_plaintext_loopback: bool,
    /// Names (DNS or IP) in the consumer endpoint's own TLS certificate.
    #[serde(default = "default_consumer_hostnames")]
    pub consumer_hostnames: Vec<String>,
    /// How often the global configuration is fetched.
    #[serde(default = "default_poll")]
    pub conf_poll_secs: u64,
    /// Ask for certificates for new keys this many days before the TLS or signing
    /// certificate expires (0: never; renew by hand with `lintas ss certs renew`).
    #[serde(default = "default_renew_before_days")]
    pub renew_before_days: u64,
    /// How long after the global configuration first lists renewed certificates the
    /// running server switches to them. Absent (the default): a configuration's whole
    /// validity, so that every peer still serving has learnt them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_switch_delay_secs: Option<u64>,
    /// Largest gRPC message carried whole between the servers; a unary call with a
    /// larger request message, or to a service declared with large messages, travels
    /// framed in signed chunks instead.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Largest body of a REST call or a framed gRPC call, each way: bodies over one
    /// chunk travel in signed chunks, never whole in memory.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Largest difference between a request's signing time and this server's clock.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// How long a provider application may take to answer.
    #[serde(default = "default_app_timeout")]
    pub app_timeout_secs: u64,
    /// How long this provider server keeps an idempotency key's first answer for its
    /// repeats.
    #[serde(default = "default_idempotency_window")]
    pub idempotency_window_secs: u64,
    /// The wait before an event's first redelivery, doubled after each failure up to
    /// `event_retry_max_secs`.
    #[serde(default = "default_event_retry_base")]
    pub event_retry_base_ms: u64,
    #[serde(default = "default_event_retry_max")]
    pub event_retry_max_secs: u64,
    /// Deliveries of an event a subscriber refuses (answers with its own error) before
    /// it goes to the dead-letter store; one it cannot be reached for is retried until
    /// it can.
    #[serde(default = "default_event_max_attempts")]
    pub event_max_attempts: u32,
    /// How long an event every subscriber has acknowledged is kept before it is purged
    /// (for subscribers that join from the start, and restores).
    #[serde(default = "default_event_retention")]
    pub event_retention_secs: u64,
    /// How often the log is checkpointed while it grows.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
    /// How often the newest checkpoint is handed to the registry to witness.
    #[serde(default = "default_witness_interval")]
    pub witness_interval_secs: u64,
    /// How often the newest checkpoint is time-stamped (RFC 3161).
    #[serde(default = "default_timestamp_interval")]
    pub timestamp_interval_secs: u64,
    /// How long without a time-stamp before the server refuses calls.
    #[serde(default = "default_timestamp_fail_closed")]
    pub timestamp_fail_closed_secs: u64,
    /// Which time-stamping authority of the global configuration to use, by name
    /// ("registry": the registry's own).
    #[serde(default = "default_tsa")]
    pub timestamping_authority: String,
    /// Days message bodies are kept beside the records (0: bodies are not kept).
    #[serde(default = "default_body_retention")]
    pub body_retention_days: u32,
    /// Size of the record log's segment files; a full one is sealed and can be archived.
    #[serde(default = "default_log_segment_kib")]
    pub log_segment_kib: u64,
    /// Limits every listener of this server applies (see the README, "Operating a node").
    #[serde(default)]
    pub connection_limits: lintas_transport::Limits,
    /// Where the operations listener serves `/metrics`, `/healthz` and `/readyz`
    /// (plain HTTP: keep it on loopback or a management network).
    #[serde(default = "default_ops_listen")]
    pub ops_listen: SocketAddr,
    /// Where the management API and console are served (HTTPS, users and roles). Keep it
    /// on loopback or a management network.
    #[serde(default = "default_management_listen")]
    pub management_listen: SocketAddr,
    /// Names (DNS or IP) in the management listener's own TLS certificate (made at first
    /// start; replace `management.crt.pem` and `management.key.pem` with a certificate
    /// of your own CA to have browsers trust it).
    #[serde(default = "default_consumer_hostnames")]
    pub management_hostnames: Vec<String>,
    /// Warn (log, health, metrics) when one of the server's own certificates expires
    /// within this many days.
    #[serde(default = "default_warn_cert_expiry_days")]
    pub warn_cert_expiry_days: u64,
    /// Warn when the held global configuration expires within this many seconds (newer
    /// ones could not be fetched).
    #[serde(default = "default_warn_conf_expiry")]
    pub warn_conf_expiry_secs: u64,
    /// Days operational monitoring records are kept (one per exchange, no bodies).
    #[serde(default = "default_opmon_days")]
    pub opmon_retention_days: u32,
    /// Most space operational monitoring records may take, in MiB (the oldest hours go
    /// first).
    #[serde(default = "default_opmon_mib")]
    pub opmon_max_mib: u64,
    /// Keep end users' ids (lintas-user-id) as given in monitoring records; by default
    /// only an HMAC-SHA-256 of each under this server's key (`opmon.key`) is kept.
    #[serde(default)]
    pub opmon_plain_user_ids: bool,
    /// An OpenTelemetry collector (`http://host:4318`) to send one span per exchange to,
    /// over OTLP/HTTP with JSON; empty (the default): none.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// Keep the signing and log keys in a PKCS#11 token instead of key files (set by
    /// `lintas ss init --pkcs11-*`; the keys are made in the token then). Absent (the
    /// default): key files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<lintas_pkcs11::Pkcs11Config>,
}

/// The exchange settings both endpoints apply, taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_message_bytes: usize,
    pub max_body_bytes: u64,
    pub clock_skew: std::time::Duration,
    pub app_timeout: std::time::Duration,
    pub connection_limits: lintas_transport::Limits,
}

impl Settings {
    pub fn of(c: &SsConfig) -> Self {
        Settings {
            max_message_bytes: c.max_message_bytes,
            max_body_bytes: c.max_body_bytes,
            clock_skew: std::time::Duration::from_secs(c.clock_skew_secs),
            app_timeout: std::time::Duration::from_secs(c.app_timeout_secs),
            connection_limits: c.connection_limits,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".")
}
fn default_consumer_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_provider_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 5500))
}
fn default_consumer_hostnames() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
fn default_poll() -> u64 {
    60
}
fn default_renew_before_days() -> u64 {
    30
}
fn default_max_message() -> usize {
    4 * 1024 * 1024
}
fn default_max_body() -> u64 {
    1 << 30
}
fn default_skew() -> u64 {
    60
}
fn default_app_timeout() -> u64 {
    30
}
fn default_idempotency_window() -> u64 {
    86_400
}
fn default_event_retry_base() -> u64 {
    1000
}
fn default_event_retry_max() -> u64 {
    300
}
fn default_event_max_attempts() -> u32 {
    10
}
fn default_event_retention() -> u64 {
    7 * 86_400
}
fn default_checkpoint_interval() -> u64 {
    1000
}
fn default_witness_interval() -> u64 {
    10
}
fn default_timestamp_interval() -> u64 {
    60
}
fn default_timestamp_fail_closed() -> u64 {
    3600
}
fn default_tsa() -> String {
    "registry".into()
}
fn default_body_retention() -> u32 {
    30
}
fn default_log_segment_kib() -> u64 {
    64 * 1024
}
fn default_opmon_days() -> u32 {
    7
}
fn default_opmon_mib() -> u64 {
    1024
}
fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5590))
}
fn default_management_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5543))
}
fn default_warn_cert_expiry_days() -> u64 {
    30
}
fn default_warn_conf_expiry() -> u64 {
    1800
}

impl SsConfig {
    /// A configuration with every optional key at its default; the provider endpoint
    /// listens on all interfaces at the port `address` gives peers.
    pub fn new(server_id: ServerId, address: HostPort) -> Self {
        let provider_listen = SocketAddr::from(([0, 0, 0, 0], address.port()));
        SsConfig {
            server_id,
            address,
            globalconf_urls: Vec::new(),
            clients: Vec::new(),
            member_name: String::new(),
            data_dir: default_data_dir(),
            consumer_listen: default_consumer_listen(),
            provider_listen,
            dev_plaintext_loopback: false,
            consumer_hostnames: default_consumer_hostnames(),
            conf_poll_secs: default_poll(),
            renew_before_days: default_renew_before_days(),
            renewal_switch_delay_secs: None,
            max_message_bytes: default_max_message(),
            max_body_bytes: default_max_body(),
            clock_skew_secs: default_skew(),
            app_timeout_secs: default_app_timeout(),
            idempotency_window_secs: default_idempotency_window(),
            event_retry_base_ms: default_event_retry_base(),
            event_retry_max_secs: default_event_retry_max(),
            event_max_attempts: default_event_max_attempts(),
            event_retention_secs: default_event_retention(),
            checkpoint_interval_ms: default_checkpoint_interval(),
            witness_interval_secs: default_witness_interval(),
            timestamp_interval_secs: default_timestamp_interval(),
            timestamp_fail_closed_secs: default_timestamp_fail_closed(),
            body_retention_days: default_body_retention(),
            timestamping_authority: default_tsa(),
            log_segment_kib: default_log_segment_kib(),
            connection_limits: Default::default(),
            ops_listen: default_ops_listen(),
            management_listen: default_management_listen(),
            management_hostnames: default_consumer_hostnames(),
            warn_cert_expiry_days: default_warn_cert_expiry_days(),
            warn_conf_expiry_secs: default_warn_conf_expiry(),
            opmon_retention_days: default_opmon_days(),
            opmon_max_mib: default_opmon_mib(),
            opmon_plain_user_ids: false,
            otlp_endpoint: String::new(),
            pkcs11: None,
        }
    }

    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut c: SsConfig = lintas_settings::load(path, env, ENV_PREFIX)?;
        c.validate(&path.display().to_string())?;
        c.data_dir = lintas_settings::relative_to(path, &c.data_dir);
        if let Some(token) = &mut c.pkcs11 {
            token.resolve(path);
        }
        Ok(c)
    }

    pub fn validate(&self, shown: &str) -> Result<(), ConfigError> {
        let mut p = lintas_settings::Problems::default();
        p.check(
            !self.dev_plaintext_loopback || self.consumer_listen.ip().is_loopback(),
            || {
                format!(
                    "consumer_listen {} must be a loopback address with dev_plaintext_loopback = true",
                    self.consumer_listen
                )
            },
        );
        p.check(!self.consumer_hostnames.is_empty(), || {
            "consumer_hostnames must name at least one host".into()
        });
        for u in &self.globalconf_urls {
            p.check(u.starts_with("http://"), || {
                format!("globalconf_urls entry '{u}' must start with http://")
            });
        }
        p.check((5..=86400).contains(&self.conf_poll_secs), || {
            "conf_poll_secs must be between 5 and 86400".into()
        });
        p.check(self.renew_before_days <= 3650, || {
            "renew_before_days must be between 0 (never) and 3650".into()
        });
        p.check(
            self.renewal_switch_delay_secs
                .is_none_or(|d| d <= 30 * 86400),
            || "renewal_switch_delay_secs must be between 0 and 2592000 (30 days)".into(),
        );
        p.check(
            (1024..=64 * 1024 * 1024).contains(&self.max_message_bytes),
            || "max_message_bytes must be between 1024 and 67108864".into(),
        );
        p.check((1024..=1 << 40).contains(&self.max_body_bytes), || {
            "max_body_bytes must be between 1024 and 1099511627776 (1 TiB)".into()
        });
        p.check((1..=3600).contains(&self.clock_skew_secs), || {
            "clock_skew_secs must be between 1 and 3600".into()
        });
        p.check(
            (60..=31 * 86_400).contains(&self.idempotency_window_secs),
            || "idempotency_window_secs must be between 60 and 2678400 (31 days)".into(),
        );
        p.check((10..=60_000).contains(&self.event_retry_base_ms), || {
            "event_retry_base_ms must be between 10 and 60000".into()
        });
        p.check(
            (1..=86_400).contains(&self.event_retry_max_secs)
                && self.event_retry_max_secs * 1000 >= self.event_retry_base_ms,
            || {
                "event_retry_max_secs must be between 1 and 86400, and at least event_retry_base_ms"
                    .into()
            },
        );
        p.check((1..=1000).contains(&self.event_max_attempts), || {
            "event_max_attempts must be between 1 and 1000".into()
        });
        p.check(self.event_retention_secs <= 366 * 86_400, || {
            "event_retention_secs must be at most 31622400 (a year)".into()
        });
        p.check((1..=3600).contains(&self.app_timeout_secs), || {
            "app_timeout_secs must be between 1 and 3600".into()
        });
        p.check(
            (100..=60_000).contains(&self.checkpoint_interval_ms),
            || "checkpoint_interval_ms must be between 100 and 60000".into(),
        );
        p.check((1..=3600).contains(&self.witness_interval_secs), || {
            "witness_interval_secs must be between 1 and 3600".into()
        });
        p.check((1..=86400).contains(&self.timestamp_interval_secs), || {
            "timestamp_interval_secs must be between 1 and 86400".into()
        });
        p.check(
            self.timestamp_fail_closed_secs >= 2 * self.timestamp_interval_secs
                && self.timestamp_fail_closed_secs <= 30 * 86400,
            || "timestamp_fail_closed_secs must be at least twice timestamp_interval_secs and at most 2592000 (30 days)".into(),
        );
        p.check((4..=1024 * 1024).contains(&self.log_segment_kib), || {
            "log_segment_kib must be between 4 and 1048576 (1 GiB)".into()
        });
        p.check(self.body_retention_days <= 3650, || {
            "body_retention_days must be at most 3650 (0 keeps no bodies)".into()
        });
        p.check((1..=3650).contains(&self.warn_cert_expiry_days), || {
            "warn_cert_expiry_days must be between 1 and 3650".into()
        });
        p.check((1..=3650).contains(&self.opmon_retention_days), || {
            "opmon_retention_days must be between 1 and 3650".into()
        });
        p.check((1..=1024 * 1024).contains(&self.opmon_max_mib), || {
            "opmon_max_mib must be between 1 and 1048576 (1 TiB)".into()
        });
        p.check(
            self.otlp_endpoint.is_empty()
                || (self.otlp_endpoint.starts_with("http://")
                    && self.otlp_endpoint.parse::<hyper::Uri>().is_ok()),
            || {
                format!(
                    "otlp_endpoint '{}' must be empty or an http:// URL of an OTLP/HTTP collector",
                    self.otlp_endpoint
                )
            },
        );
        p.check(self.warn_conf_expiry_secs <= 30 * 86400, || {
            "warn_conf_expiry_secs must be at most 2592000 (30 days)".into()
        });
        p.check(
            self.connection_limits.idle_timeout_secs > self.app_timeout_secs,
            || "connection_limits.idle_timeout_secs must be longer than app_timeout_secs: a connection waiting for an application's answer is idle".into(),
        );
        for problem in self.connection_limits.problems() {
            p.check(false, || problem);
        }
        for c in &self.clients {
            p.check(c.member == self.server_id.owner, || {
                format!(
                    "client {c} is not a subsystem of {}, the owner of this server",
                    self.server_id.owner
                )
            });
        }
        p.into_result(shown)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
