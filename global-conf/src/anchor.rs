//! The trust anchor: the one file an operator copies from the registry to every security
//! server. It names the instance, where to reach the registry and fetch the global
//! configuration, and which certificates may sign it. Its SHA-256 fingerprint is printed
//! at `lintas registry init` so operators can compare it out of band.

use std::path::Path;

use lintas_certs::pem::{cert_to_pem, certs_from_pem};
use lintas_certs::{Role, TrustStore};
use lintas_identifiers::Code;
use serde::{Deserialize, Serialize};

use crate::ConfError;

/// Anchor file contents (TOML, unknown keys refused).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorFile {
    instance: Code,
    /// Raised by every change the registry announces; a server adopts only a higher one.
    #[serde(default, skip_serializing_if = "is_zero")]
    version: u64,
    /// gRPC endpoint of the registry, e.g. `https://registry.example:4400`.
    registry_url: String,
    /// The gRPC endpoints of further registry nodes of the instance, tried in order when
    /// the first does not answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    other_registry_urls: Vec<String>,
    /// Where the signed global configuration can be fetched with HTTP GET.
    globalconf_urls: Vec<String>,
    /// PEM certificates of the instance certification authorities.
    ca_certs: String,
    /// PEM certificates whose keys may sign the global configuration.
    signing_certs: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Signature domain of an anchor announced in a configuration (by a CA key).
pub const ANCHOR_DOMAIN: &str = "lintas/anchor/v1";

/// A parsed, checked trust anchor.
#[derive(Debug, Clone)]
pub struct Anchor {
    pub instance: Code,
    /// 0 as the registry made it; one more at every announced change.
    pub version: u64,
    /// The registry's gRPC endpoints: its first node, then any others.
    pub registry_urls: Vec<String>,
    pub globalconf_urls: Vec<String>,
    pub ca_certs: Vec<Vec<u8>>,
    pub signing_certs: Vec<Vec<u8>>,
    trust: TrustStore,
    /// The file text exactly as read or written.
    pub text: String,
    /// SHA-256 of the anchor file bytes, hex.
    pub fingerprint: String,
}

impl Anchor {
    /// Builds an anchor (at registry init).
    pub fn new(
        instance: Code,
        registry_urls: Vec<String>,
        globalconf_urls: Vec<String>,
        ca_certs: &[Vec<u8>],
        signing_certs: &[Vec<u8>],
    ) -> Result<Self, ConfError> {
        Self::build(
            0,
            instance,
            registry_urls,
            globalconf_urls,
            ca_certs,
            signing_certs,
        )
    }

    /// This anchor's successor, listing `ca_certs` and `signing_certs` (a rotation of
    /// the registry's keys).
    pub fn next(&self, ca_certs: &[Vec<u8>], signing_certs: &[Vec<u8>]) -> Result<Self, ConfError> {
        Self::build(
            self.version
                .checked_add(1)
                .ok_or_else(|| ConfError::Anchor {
                    path: "(next)".into(),
                    detail: "version is at its maximum".into(),
                })?,
            self.instance.clone(),
            self.registry_urls.clone(),
            self.globalconf_urls.clone(),
            ca_certs,
            signing_certs,
        )
    }

    fn build(
        version: u64,
        instance: Code,
        registry_urls: Vec<String>,
        globalconf_urls: Vec<String>,
        ca_certs: &[Vec<u8>],
        signing_certs: &[Vec<u8>],
    ) -> Result<Self, ConfError> {
        let mut registry_urls = registry_urls.into_iter();
        let file = AnchorFile {
            version,
            instance,
            registry_url: registry_urls.next().unwrap_or_default(),
            other_registry_urls: registry_urls.collect(),
            globalconf_urls,
            ca_certs: ca_certs.iter().map(|c| cert_to_pem(c)).collect(),
            signing_certs: signing_certs.iter().map(|c| cert_to_pem(c)).collect(),
        };
        let body = toml::to_string(&file).map_err(|e| ConfError::Anchor {
            path: "(new)".into(),
            detail: e.to_string(),
        })?;
        let header = "# lintas trust anchor. Copy this file to every security server of the\n\
                      # instance and compare its SHA-256 with the one the registry operator\n\
                      # announced (`sha256sum anchor.toml`).\n";
        Self::parse(&format!("{header}{body}"), "(new)")
    }

    pub fn load(path: &Path) -> Result<Self, ConfError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfError::Anchor {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, what: &str) -> Result<Self, ConfError> {
        let err = |detail: String| ConfError::Anchor {
            path: what.to_owned(),
            detail,
        };
        let file: AnchorFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let ca_certs =
            certs_from_pem(&file.ca_certs, "ca_certs").map_err(|e| err(e.to_string()))?;
        let signing_certs =
            certs_from_pem(&file.signing_certs, "signing_certs").map_err(|e| err(e.to_string()))?;
        let trust = TrustStore::new(ca_certs.iter().map(Vec::as_slice))
            .map_err(|e| err(format!("ca_certs: {e}")))?;
        for (i, c) in ca_certs.iter().enumerate() {
            let info = lintas_certs::CertInfo::parse(c).map_err(|e| err(e.to_string()))?;
            if info.identity.instance() != &file.instance {
                return Err(err(format!(
                    "ca_certs[{i}] belongs to instance {}, not {}",
                    info.identity.instance(),
                    file.instance
                )));
            }
        }
        for (i, c) in signing_certs.iter().enumerate() {
            // Chain and role only; expiry is checked when a document is verified.
            let info = lintas_certs::CertInfo::parse(c).map_err(|e| err(e.to_string()))?;
            trust
                .verify(c, Role::GlobalConf, info.not_before)
                .map_err(|e| err(format!("signing_certs[{i}]: {e}")))?;
        }
        if file.globalconf_urls.is_empty() {
            return Err(err("globalconf_urls is empty".into()));
        }
        let registry_urls: Vec<String> = std::iter::once(file.registry_url)
            .chain(file.other_registry_urls)
            .collect();
        if let Some(u) = registry_urls.iter().find(|u| !u.starts_with("https://")) {
            return Err(err(format!("registry URL '{u}' must start with https://")));
        }
        Ok(Anchor {
            instance: file.instance,
            version: file.version,
            registry_urls,
            globalconf_urls: file.globalconf_urls,
            ca_certs,
            signing_certs,
            trust,
            fingerprint: lintas_certs::hex(&lintas_certs::sha256(text.as_bytes())),
            text: text.to_owned(),
        })
    }

    /// The registry's gRPC endpoints, as `&str`.
    pub fn registry_urls(&self) -> Vec<&str> {
        self.registry_urls.iter().map(String::as_str).collect()
    }

    /// The instance CAs (without revocations: those come with each configuration).
    pub fn trust_store(&self) -> &TrustStore {
        &self.trust
    }
}

/// The anchor `text` that `conf` (verified with `held`) announces, if it may replace
/// `held`: `signature` over it verifies with the key of a CA `held` lists (a stolen
/// configuration-signing key alone cannot change what servers trust), it is for the
/// same instance, its version is higher (no anchor comes back), and it still trusts
/// `conf`'s signer at `now`, so the configurations that follow keep verifying. The
/// reason otherwise.
pub fn announced(
    text: &str,
    signature: &[u8],
    held: &Anchor,
    conf: &crate::VerifiedConf,
    now: std::time::SystemTime,
) -> Result<Anchor, String> {
    use prost::Message;
    let signed_by_held_ca = held.ca_certs.iter().any(|ca| {
        lintas_certs::CertInfo::parse(ca).is_ok_and(|ca| {
            lintas_certs::sig::verify(&ca.public_key, ANCHOR_DOMAIN, text.as_bytes(), signature)
                .is_ok()
        })
    });
    if !signed_by_held_ca {
        return Err("it is not signed by a CA of the anchor held".into());
    }
    let anchor = Anchor::parse(text, "the announced anchor").map_err(|e| e.to_string())?;
    if anchor.instance != held.instance {
        return Err(format!(
            "it is for instance {}, not {}",
            anchor.instance, held.instance
        ));
    }
    if anchor.version <= held.version {
        return Err(format!(
            "its version {} is not above the held {}",
            anchor.version, held.version
        ));
    }
    let signer = lintas_proto::globalconf::v1::SignedGlobalConf::decode(conf.blob.as_slice())
        .map_err(|e| e.to_string())?
        .signer_cert;
    if !anchor.signing_certs.contains(&signer) {
        return Err(
            "it does not list the certificate that signed the configuration announcing it".into(),
        );
    }
    anchor
        .trust_store()
        .verify(&signer, Role::GlobalConf, now)
        .map_err(|e| format!("its CAs do not vouch for the configuration's signer: {e}"))?;
    Ok(anchor)
}
