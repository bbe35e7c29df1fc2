//! What the registry's management API takes and returns.

use serde::{Deserialize, Serialize};

use crate::registry::{RegState, RegistrationRec};

/// A registration request, with the key fingerprints to compare with the server's
/// operator before approving.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    pub request_id: String,
    pub server_id: String,
    pub address: String,
    pub clients: Vec<String>,
    pub member_name: String,
    pub tls_key_fingerprint: String,
    pub signing_key_fingerprint: String,
    /// `pending`, `approved` or `rejected`.
    pub state: String,
    pub reason: String,
    /// Unix seconds.
    pub submitted_at: i64,
    pub decided_at: i64,
    pub decided_by: String,
    /// The server was registered already (new keys or certificates).
    pub renewal: bool,
    /// Where the request came from.
    pub source: String,
}

impl From<RegistrationRec> for Registration {
    fn from(r: RegistrationRec) -> Self {
        Registration {
            request_id: r.request_id,
            server_id: r.server_id.to_string(),
            address: r.address.to_string(),
            clients: r.clients.iter().map(ToString::to_string).collect(),
            member_name: r.member_name,
            tls_key_fingerprint: r.tls_key_fingerprint,
            signing_key_fingerprint: r.signing_key_fingerprint,
            state: match r.state {
                RegState::Pending => "pending",
                RegState::Approved => "approved",
                RegState::Rejected => "rejected",
            }
            .into(),
            reason: r.reason,
            submitted_at: r.submitted_at,
            decided_at: r.decided_at,
            decided_by: r.decided_by,
            renewal: r.renewal,
            source: r.source,
        }
    }
}

/// Why a request is rejected (the server's operator sees it).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    pub reason: String,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RegistrationQuery {
    /// `pending`, `approved` or `rejected`; absent for all.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub filter: String,
    #[serde(default)]
    pub page_size: u32,
    #[serde(default)]
    pub page_token: String,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub filter: String,
    #[serde(default)]
    pub page_size: u32,
    #[serde(default)]
    pub page_token: String,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// INSTANCE/CLASS/MEMBER
    pub id: String,
    pub name: String,
    pub subsystems: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubsystem {
    /// INSTANCE/CLASS/MEMBER/SUBSYSTEM
    pub id: String,
}

/// A change published in the global configuration.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Published {
    /// The serial of the configuration that includes it.
    pub conf_serial: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Certificate {
    /// `tls`, `signing` or `admin`.
    pub role: String,
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revoked_reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Server {
    pub id: String,
    pub address: String,
    pub clients: Vec<String>,
    pub maintenance: bool,
    pub certificates: Vec<Certificate>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Group {
    pub code: String,
    pub description: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    pub code: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    /// INSTANCE/CLASS/MEMBER[/SUBSYSTEM]
    pub client: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRevocation {
    /// The certificate's serial, hex.
    pub serial: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// INSTANCE/CLASS/MEMBER/SERVERCODE the token may enrol.
    pub server_id: String,
    /// How long it is valid (default: token_ttl_secs of registry.toml).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A one-time enrolment token (shown once).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Token {
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tsa {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTsa {
    pub name: String,
    pub url: String,
    /// The TSA's certificate, PEM.
    pub certificate_pem: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminCertRequest {
    pub name: String,
    /// PKCS#10 request, PEM.
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdminCert {
    pub certificate_pem: String,
}

/// The configuration being published and what it holds.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Generation {
    pub serial: u64,
    pub members: usize,
    pub servers: usize,
    pub pending_registrations: usize,
    pub groups: usize,
    pub services: usize,
    pub ready: bool,
    pub components: Vec<Component>,
}

/// One published generation of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfGeneration {
    pub serial: u64,
    /// When it was signed and until when it holds (Unix seconds).
    pub generated_at: i64,
    pub expires_at: i64,
    /// Who caused it and why (`registry` for the periodic re-signing).
    pub actor: String,
    pub action: String,
    /// SHA-256 of the signed document (hex), to compare with what a server fetched.
    pub sha256: String,
    pub bytes: u64,
}

impl From<crate::registry::GenerationRec> for ConfGeneration {
    fn from(g: crate::registry::GenerationRec) -> Self {
        ConfGeneration {
            serial: g.serial,
            generated_at: g.generated_at,
            expires_at: g.expires_at,
            actor: g.actor,
            action: g.action,
            sha256: g.sha256,
            bytes: g.bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Component {
    pub name: String,
    pub state: String,
    pub reason: String,
}
