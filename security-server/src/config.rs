//! Security server configuration (`ss.toml`): TOML, unknown keys refused,
//! `LINTAS_SS_<KEY>` environment overrides.

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
    /// Subsystems of the owning member that this server hosts.
    #[serde(default)]
    pub clients: Vec<SubsystemId>,
    /// Name of the owning member, shown to the registry administrator.
    #[serde(default)]
    pub member_name: String,
    /// Directory with keys, certificates, anchor and caches; relative to the config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".")
}

impl SsConfig {
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut c: SsConfig = lintas_settings::load(path, env, ENV_PREFIX)?;
        c.validate(&path.display().to_string())?;
        if c.data_dir.is_relative() {
            c.data_dir = path.parent().unwrap_or(Path::new(".")).join(&c.data_dir);
        }
        Ok(c)
    }

    pub fn validate(&self, shown: &str) -> Result<(), ConfigError> {
        let mut p = lintas_settings::Problems::default();
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
