//! Registry configuration: TOML with unknown keys refused, `LINTAS_REGISTRY_<KEY>`
//! environment overrides, and a validation pass that reports every bad field at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lintas_identifiers::Code;
use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "LINTAS_REGISTRY_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Instance code, e.g. "ID".
    pub instance: Code,
    /// Where the gRPC API (TLS) listens; port 0 lets the OS choose.
    pub grpc_listen: SocketAddr,
    /// Where the signed global configuration is served over plain HTTP.
    pub http_listen: SocketAddr,
    /// How security servers reach the gRPC API (goes into the anchor).
    pub public_url: String,
    /// The gRPC API of the other registry nodes sharing `database` (into the anchor,
    /// after `public_url`; servers and administrators fail over to them in order).
    #[serde(default)]
    pub other_node_urls: Vec<String>,
    /// Where security servers fetch the global configuration (goes into the anchor).
    pub globalconf_urls: Vec<String>,
    /// Directory with keys, certificates and the database; relative to the config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where the registry's state is kept: empty (the default) for the embedded
    /// database in `data_dir`, or a `postgres://` URL for a PostgreSQL database that
    /// several registry nodes share.
    #[serde(default)]
    pub database: String,
    /// How long a published global configuration stays valid.
    #[serde(default = "default_conf_validity")]
    pub conf_validity_secs: u64,
    /// How often the configuration is re-signed with a new expiry when nothing changed.
    #[serde(default = "default_conf_refresh")]
    pub conf_refresh_secs: u64,
    /// Validity of issued security server and member signing certificates.
    #[serde(default = "default_cert_validity")]
    pub cert_validity_days: u64,
    /// Default validity of enrolment tokens.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
    /// Largest gRPC request accepted.
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
    /// Where security servers send RFC 3161 time-stamp requests (served on
    /// `http_listen` at `/tsa`); empty: the host of the first `globalconf_urls` entry.
    #[serde(default)]
    pub tsa_url: String,
    /// The policy OID named in issued time-stamp tokens; an instance in production sets
    /// one under its own arc.
    #[serde(default = "default_tsa_policy")]
    pub tsa_policy: String,
    /// Limits the gRPC and HTTP listeners apply (see the README, "Operating a node").
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
    /// Names (DNS or IP) in the management listener's own certificate, made at first
    /// start (`management.crt.pem`; replace the pair with your own CA's).
    #[serde(default = "default_management_hostnames")]
    pub management_hostnames: Vec<String>,
    /// Warn (log, health, metrics) when one of the registry's own certificates expires
    /// within this many days.
    #[serde(default = "default_warn_cert_expiry_days")]
    pub warn_cert_expiry_days: u64,
    /// Registration requests without an enrolment token waiting for an administrator,
    /// in all and from one source address (IPv4, or IPv6 /64).
    #[serde(default = "default_max_pending")]
    pub max_pending_registrations: usize,
    #[serde(default = "default_max_pending_per_source")]
    pub max_pending_per_source: usize,
    /// Seconds an undecided registration request is kept before it expires.
    #[serde(default = "default_registration_ttl")]
    pub registration_ttl_secs: u64,
    /// Time-stamp requests one source address may make per minute (registered servers
    /// ask about once a minute each).
    #[serde(default = "default_tsa_per_source")]
    pub tsa_requests_per_minute_per_source: u32,
    /// Approve a registered server's request for certificates for new keys at once when
    /// its current TLS certificate authenticates it (address, subsystems and log key
    /// unchanged); otherwise such renewals wait for an administrator.
    #[serde(default = "default_true")]
    pub auto_approve_renewals: bool,
    /// Days certificates superseded by a renewal stay valid (listed beside the new ones)
    /// before they are revoked.
    #[serde(default = "default_renewal_grace_days")]
    pub renewal_grace_days: u64,
    /// Keep the configuration-signing and time-stamping keys in a PKCS#11 token instead
    /// of key files (set by `lintas registry init --pkcs11-*`; the keys are made in the
    /// token then). Absent (the default): key files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<lintas_pkcs11::Pkcs11Config>,
}

fn default_true() -> bool {
    true
}
fn default_renewal_grace_days() -> u64 {
    7
}

fn default_max_pending() -> usize {
    10_000
}
fn default_max_pending_per_source() -> usize {
    20
}
fn default_registration_ttl() -> u64 {
    7 * 86400
}
fn default_tsa_per_source() -> u32 {
    120
}
pub(crate) fn default_management_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4543))
}
pub(crate) fn default_management_hostnames() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
pub(crate) fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4490))
}
fn default_warn_cert_expiry_days() -> u64 {
    30
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".")
}
fn default_conf_validity() -> u64 {
    3600
}
fn default_conf_refresh() -> u64 {
    600
}
fn default_cert_validity() -> u64 {
    730
}
fn default_token_ttl() -> u64 {
    86400
}
fn default_max_request() -> usize {
    64 * 1024
}
fn default_tsa_policy() -> String {
    lintas_timestamp::DEFAULT_POLICY.into()
}

pub use lintas_settings::SettingsError as ConfigError;

impl RegistryConfig {
    /// Reads `path`, applies environment overrides from `env`, and validates.
    /// `data_dir` is made absolute relative to the file's directory.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut config: RegistryConfig = lintas_settings::load(path, env, ENV_PREFIX)?;
        config.validate(&path.display().to_string())?;
        config.data_dir = lintas_settings::relative_to(path, &config.data_dir);
        if let Some(token) = &mut config.pkcs11 {
            token.resolve(path);
        }
        Ok(config)
    }

    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        shown: &str,
    ) -> Result<Self, ConfigError> {
        let config: RegistryConfig = lintas_settings::parse(text, env, ENV_PREFIX, shown)?;
        config.validate(shown)?;
        Ok(config)
    }

    fn validate(&self, shown: &str) -> Result<(), ConfigError> {
        let mut p = lintas_settings::Problems::default();
        p.check(self.public_url.starts_with("https://"), || {
            format!("public_url '{}' must start with https://", self.public_url)
        });
        for u in &self.other_node_urls {
            p.check(u.starts_with("https://"), || {
                format!("other_node_urls entry '{u}' must start with https://")
            });
        }
        p.check(
            self.other_node_urls.is_empty() || !self.database.is_empty(),
            || {
                "other_node_urls needs database: registry nodes share one PostgreSQL database"
                    .into()
            },
        );
        p.check(!self.globalconf_urls.is_empty(), || {
            "globalconf_urls must list at least one URL".into()
        });
        for u in &self.globalconf_urls {
            p.check(u.starts_with("http://"), || {
                format!("globalconf_urls entry '{u}' must start with http://")
            });
        }
        p.check((60..=30 * 86400).contains(&self.conf_validity_secs), || {
            "conf_validity_secs must be between 60 and 2592000 (30 days)".into()
        });
        p.check(
            self.conf_refresh_secs > 0
                && self.conf_refresh_secs.saturating_mul(2) <= self.conf_validity_secs,
            || "conf_refresh_secs must be above 0 and at most half of conf_validity_secs, so servers always have time to fetch the next document".into(),
        );
        p.check((1..=3650).contains(&self.cert_validity_days), || {
            "cert_validity_days must be between 1 and 3650".into()
        });
        p.check((60..=30 * 86400).contains(&self.token_ttl_secs), || {
            "token_ttl_secs must be between 60 and 2592000 (30 days)".into()
        });
        p.check((1..=3650).contains(&self.warn_cert_expiry_days), || {
            "warn_cert_expiry_days must be between 1 and 3650".into()
        });
        p.check(
            (1..=1_000_000).contains(&self.max_pending_registrations),
            || "max_pending_registrations must be between 1 and 1000000".into(),
        );
        p.check(
            (1..=self.max_pending_registrations).contains(&self.max_pending_per_source),
            || "max_pending_per_source must be between 1 and max_pending_registrations".into(),
        );
        p.check(
            (60..=365 * 86400).contains(&self.registration_ttl_secs),
            || "registration_ttl_secs must be between 60 and 31536000 (a year)".into(),
        );
        p.check(
            (1..=self.cert_validity_days / 2).contains(&self.renewal_grace_days),
            || "renewal_grace_days must be between 1 and half of cert_validity_days".into(),
        );
        p.check(
            (1..=60_000).contains(&self.tsa_requests_per_minute_per_source),
            || "tsa_requests_per_minute_per_source must be between 1 and 60000".into(),
        );
        for problem in self.connection_limits.problems() {
            p.check(false, || problem);
        }
        p.check(
            self.database.is_empty()
                || self.database.starts_with("postgres://")
                || self.database.starts_with("postgresql://"),
            || {
                format!(
                    "database '{}' must be empty (the embedded database) or a postgres:// URL",
                    lintas_settings::redact_url(&self.database)
                )
            },
        );
        p.check(self.max_request_bytes >= 4096, || {
            "max_request_bytes must be at least 4096".into()
        });
        p.check(
            self.tsa_url.is_empty() || self.tsa_url.starts_with("http://"),
            || format!("tsa_url '{}' must start with http://", self.tsa_url),
        );
        p.check(
            lintas_timestamp::check_policy(&self.tsa_policy).is_ok(),
            || {
                format!(
                    "tsa_policy '{}' is not a dotted object identifier",
                    self.tsa_policy
                )
            },
        );
        p.into_result(shown)
    }

    /// Where the TSA is reached: `tsa_url`, or `/tsa` on the host of each
    /// `globalconf_urls` entry (every registry node serves it), the first first.
    pub fn effective_tsa_urls(&self) -> Vec<String> {
        if !self.tsa_url.is_empty() {
            return vec![self.tsa_url.clone()];
        }
        self.globalconf_urls
            .iter()
            .map(|u| {
                let rest = u.strip_prefix("http://").unwrap_or(u);
                let host = rest.split('/').next().unwrap_or(rest);
                format!("http://{host}/tsa")
            })
            .collect()
    }

    /// The gRPC URLs of every registry node: this configuration's, then the others.
    pub fn node_urls(&self) -> Vec<&str> {
        std::iter::once(self.public_url.as_str())
            .chain(self.other_node_urls.iter().map(String::as_str))
            .collect()
    }

    /// The TOML text written by `lintas registry init`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
instance = "ID"
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
public_url = "https://127.0.0.1:4400"
globalconf_urls = ["http://127.0.0.1:4401/globalconf"]
"#;

    #[test]
    fn defaults_and_env_overrides() {
        let c = RegistryConfig::parse(
            BASE,
            [
                ("LINTAS_REGISTRY_CONF_VALIDITY_SECS".into(), "7200".into()),
                (
                    "LINTAS_REGISTRY_PUBLIC_URL".into(),
                    "https://reg.example:1".into(),
                ),
                ("OTHER".into(), "ignored".into()),
            ],
            "t",
        )
        .unwrap();
        assert_eq!(c.conf_validity_secs, 7200);
        assert_eq!(c.public_url, "https://reg.example:1");
        assert_eq!(c.cert_validity_days, 730);
    }

    #[test]
    fn unknown_keys_are_refused_from_file_and_env() {
        let err = RegistryConfig::parse(&format!("{BASE}bogus = 1\n"), [], "t").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = RegistryConfig::parse(BASE, [("LINTAS_REGISTRY_BOGUS".into(), "1".into())], "t")
            .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = BASE.replace("https://127.0.0.1:4400", "http://x") + "conf_validity_secs = 10\n";
        let err = RegistryConfig::parse(&text, [], "registry.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("public_url") && msg.contains("conf_validity_secs"),
            "{msg}"
        );
        let bad_instance = BASE.replace("\"ID\"", "\"I D\"");
        assert!(RegistryConfig::parse(&bad_instance, [], "t").is_err());
    }
}
