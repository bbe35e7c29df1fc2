//! The global configuration: one signed document from the central registry that tells
//! every security server who belongs to the instance and which certificates to trust.
//!
//! - [`anchor`]: the trust anchor file an operator installs on each server.
//! - [`sign`] / [`verify`]: the registry signs the exact encoded bytes; a verifier checks
//!   the signer against the anchor and the signature over those bytes before decoding.
//! - [`client`]: what a security server runs: download, verify, refuse tampered, expired
//!   and rolled-back documents, cache on disk, keep working from the cache until expiry.
#![forbid(unsafe_code)]

pub mod anchor;
pub mod client;
pub mod descriptors;
mod fetch;
pub mod openapi;
pub mod publish;

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lintas_certs::{CertError, CertInfo, Role, TrustStore};
use lintas_identifiers::{ClientId, MemberId, ServerId, SubsystemId};
use lintas_proto::globalconf::v1::{GlobalConf, SecurityServer, SignedGlobalConf};
use prost::Message;

pub use anchor::Anchor;
pub use client::ConfClient;

/// Domain-separation prefix of global configuration signatures.
pub const SIGNATURE_DOMAIN: &str = "lintas/globalconf/v1";

/// Largest signed document accepted (27,000 applications fit in a few MiB).
pub const MAX_CONF_LEN: usize = 64 * 1024 * 1024;

/// Tolerated clock difference between the registry and a server for `generated_at`.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why a global configuration was refused or is unavailable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    #[error("global configuration is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("global configuration is malformed: {0}")]
    Malformed(String),
    #[error("global configuration is signed by a certificate the trust anchor does not list")]
    UnknownSigner,
    #[error("global configuration signer certificate refused: {0}")]
    Signer(#[source] CertError),
    #[error("global configuration signature does not verify (tampered or corrupted)")]
    BadSignature,
    #[error("global configuration is for instance '{found}', the anchor is for '{expected}'")]
    WrongInstance { expected: String, found: String },
    #[error(
        "global configuration serial {serial} expired at {expired_at}; the registry has not published a newer one that this server could fetch"
    )]
    Expired { serial: u64, expired_at: String },
    #[error(
        "global configuration serial {serial} claims generation at {generated_at}, in the future; check the clocks"
    )]
    FromTheFuture { serial: u64, generated_at: String },
    #[error(
        "global configuration serial {offered} is older than serial {held} already held (rollback refused)"
    )]
    Rollback { held: u64, offered: u64 },
    #[error("two different global configurations carry serial {serial} (refused)")]
    Equivocation { serial: u64 },
    #[error("no global configuration yet: none cached and none fetched")]
    NotLoaded,
    #[error("fetching {url}: {detail}")]
    Fetch { url: String, detail: String },
    #[error("global configuration cache {path}: {detail}")]
    Cache { path: String, detail: String },
    #[error("trust anchor {path}: {detail}")]
    Anchor { path: String, detail: String },
}

/// Source of the current time, injectable so tests can move it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// Whether `entry` lists a TLS certificate with SHA-256 `hash` (its current one, or
/// another still valid after a renewal).
pub fn lists_tls(entry: &SecurityServer, hash: &[u8]) -> bool {
    hash.len() == 32
        && (entry.tls_cert_sha256 == hash || entry.other_tls_cert_sha256.iter().any(|h| h == hash))
}

/// Every TLS certificate hash `entry` lists, its current one first: what a peer pins.
pub fn tls_pins(entry: &SecurityServer) -> Vec<[u8; 32]> {
    std::iter::once(&entry.tls_cert_sha256)
        .chain(&entry.other_tls_cert_sha256)
        .filter_map(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
        .collect()
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until told to move (for tests and simulations).
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new(at: SystemTime) -> Self {
        ManualClock(Mutex::new(at))
    }
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
    /// Moves the clock forward to `at` if it is behind it; never back.
    pub fn catch_up(&self, at: SystemTime) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t = (*t).max(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub use lintas_certs::unix_secs;

/// ISO 8601 UTC rendering of Unix seconds, for messages people read.
pub fn iso8601(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// Signs `conf` with the configuration-signing key. Returns the encoded
/// [`SignedGlobalConf`] blob that is served and cached as is.
pub fn sign(
    conf: &GlobalConf,
    key: &dyn lintas_certs::Signer,
    signer_cert: &[u8],
) -> Result<Vec<u8>, CertError> {
    let conf_bytes = conf.encode_to_vec();
    let signature = lintas_certs::sig::sign(key, SIGNATURE_DOMAIN, &conf_bytes)?;
    Ok(SignedGlobalConf {
        conf: conf_bytes,
        signature,
        signer_cert: signer_cert.to_vec(),
    }
    .encode_to_vec())
}

/// A global configuration whose signature, signer, instance and identifiers have been
/// checked. Freshness is checked at [`verify`] time and again by [`VerifiedConf::check_fresh`].
#[derive(Debug, Clone)]
pub struct VerifiedConf {
    /// The signed blob exactly as received.
    pub blob: Vec<u8>,
    pub conf: GlobalConf,
    trust: TrustStore,
    /// The blob's `ETag` (see `publish`), computed once.
    etag: String,
    /// "provider service" of every service declared with large messages, gathered once
    /// (usually none), so that unary calls need not scan the catalogue.
    large_messages: std::collections::HashSet<String>,
}

impl VerifiedConf {
    /// The `ETag` a poller holding this document names (its SHA-256, quoted).
    pub fn etag(&self) -> &str {
        &self.etag
    }

    pub fn serial(&self) -> u64 {
        self.conf.serial
    }

    /// Errors once the document has expired at `now`.
    pub fn check_fresh(&self, now: SystemTime) -> Result<(), ConfError> {
        if unix_secs(now) >= self.conf.expires_at {
            return Err(ConfError::Expired {
                serial: self.conf.serial,
                expired_at: iso8601(self.conf.expires_at),
            });
        }
        Ok(())
    }

    /// The approved CAs with this configuration's revocations applied.
    pub fn trust_store(&self) -> &TrustStore {
        &self.trust
    }

    pub fn server(&self, id: &ServerId) -> Option<&SecurityServer> {
        let id = id.to_string();
        self.conf.servers.iter().find(|s| s.id == id)
    }

    /// The server whose TLS certificate (current, or another still listed after a
    /// renewal) has SHA-256 `hash`.
    pub fn server_by_tls(&self, hash: &[u8]) -> Option<&SecurityServer> {
        self.conf.servers.iter().find(|s| lists_tls(s, hash))
    }

    /// Whether `member` (or one of its subsystems, when `subsystem` is given) is registered.
    pub fn has_client(&self, client: &ClientId) -> bool {
        let member = client.member().to_string();
        let Some(m) = self.conf.members.iter().find(|m| m.id == member) else {
            return false;
        };
        match client {
            ClientId::Member(_) => true,
            ClientId::Subsystem(s) => m.subsystems.iter().any(|c| c == s.subsystem.as_str()),
        }
    }

    /// Whether `provider` declared its `service`'s messages large
    /// (`ServiceRef.large_messages`).
    pub fn large_messages(&self, provider: &str, service: &str) -> bool {
        !self.large_messages.is_empty()
            && self
                .large_messages
                .contains(&format!("{provider} {service}"))
    }

    /// Servers that host `client`.
    pub fn servers_hosting<'a>(
        &'a self,
        client: &SubsystemId,
    ) -> impl Iterator<Item = &'a SecurityServer> + 'a {
        let id = client.to_string();
        self.conf
            .servers
            .iter()
            .filter(move |s| s.clients.contains(&id))
    }
}

/// When a signed blob says it expires (Unix seconds), read without verifying it: for a
/// publisher's own monitoring, never for trust.
pub fn expiry_of(blob: &[u8]) -> Option<i64> {
    let signed = SignedGlobalConf::decode(blob).ok()?;
    Some(GlobalConf::decode(signed.conf.as_slice()).ok()?.expires_at)
}

/// Verifies a signed blob against `anchor` at `now`: size, signer listed in the anchor and
/// chaining to an anchor CA, signature over the exact bytes, instance, identifiers,
/// generation time and expiry.
pub fn verify(blob: &[u8], anchor: &Anchor, now: SystemTime) -> Result<VerifiedConf, ConfError> {
    let verified = verify_signed(blob, anchor, now, SignerTime::Now)?;
    verified.check_fresh(now)?;
    Ok(verified)
}

/// Fetches the configuration once from the first of `urls` that serves one `anchor`
/// verifies at `now`, for a tool that needs the current one without keeping a cache.
pub async fn fetch_once(
    urls: &[String],
    anchor: &Anchor,
    now: SystemTime,
) -> Result<VerifiedConf, ConfError> {
    let mut last = ConfError::NotLoaded;
    for url in urls {
        match fetch::get(url, None, Duration::from_secs(10)).await {
            Ok(fetch::Fetched::Document(blob)) => match verify(&blob, anchor, now) {
                Ok(conf) => return Ok(conf),
                Err(e) => last = e,
            },
            // Not asked for: the request names no document.
            Ok(fetch::Fetched::NotModified) => {}
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// [`verify`] without the expiry check, for a cached document, whose serial still counts
/// for rollback protection after it expired. The signer certificate is judged at the
/// document's generation time, so a cache outlives the signing certificate's expiry.
pub fn verify_ignoring_expiry(
    blob: &[u8],
    anchor: &Anchor,
    now: SystemTime,
) -> Result<VerifiedConf, ConfError> {
    verify_signed(blob, anchor, now, SignerTime::Generation)
}

/// When the configuration-signing certificate must have been valid.
enum SignerTime {
    Now,
    /// At the document's `generated_at` (for cached documents).
    Generation,
}

/// Checks everything but expiry.
fn verify_signed(
    blob: &[u8],
    anchor: &Anchor,
    now: SystemTime,
    signer_time: SignerTime,
) -> Result<VerifiedConf, ConfError> {
    if blob.len() > MAX_CONF_LEN {
        return Err(ConfError::TooLarge {
            len: blob.len(),
            max: MAX_CONF_LEN,
        });
    }
    let signed = SignedGlobalConf::decode(blob)
        .map_err(|e| ConfError::Malformed(format!("signed envelope: {e}")))?;
    if !anchor.signing_certs.contains(&signed.signer_cert) {
        return Err(ConfError::UnknownSigner);
    }
    let signer = CertInfo::parse(&signed.signer_cert).map_err(ConfError::Signer)?;
    lintas_certs::sig::verify(
        &signer.public_key,
        SIGNATURE_DOMAIN,
        &signed.conf,
        &signed.signature,
    )
    .map_err(|_| ConfError::BadSignature)?;
    let conf = GlobalConf::decode(signed.conf.as_slice())
        .map_err(|e| ConfError::Malformed(format!("document: {e}")))?;
    let signer_at = match signer_time {
        SignerTime::Now => now,
        SignerTime::Generation => {
            UNIX_EPOCH + Duration::from_secs(conf.generated_at.max(0).unsigned_abs())
        }
    };
    anchor
        .trust_store()
        .verify(&signed.signer_cert, Role::GlobalConf, signer_at)
        .map_err(ConfError::Signer)?;
    if conf.instance != anchor.instance.as_str() {
        return Err(ConfError::WrongInstance {
            expected: anchor.instance.to_string(),
            found: conf.instance.clone(),
        });
    }
    check_contents(&conf)?;
    let skew = MAX_CLOCK_SKEW.as_secs() as i64;
    if conf.generated_at > unix_secs(now).saturating_add(skew) {
        return Err(ConfError::FromTheFuture {
            serial: conf.serial,
            generated_at: iso8601(conf.generated_at),
        });
    }
    let cas: Vec<&[u8]> = conf.approved_cas.iter().map(Vec::as_slice).collect();
    let trust = TrustStore::new(cas)
        .map_err(|e| ConfError::Malformed(format!("approved CA: {e}")))?
        .with_revoked(conf.revoked.iter().map(|r| r.serial.clone()));
    let large_messages = conf
        .services
        .iter()
        .filter(|s| s.large_messages)
        .map(|s| format!("{} {}", s.provider, s.service))
        .collect();
    Ok(VerifiedConf {
        etag: publish::etag_of(blob),
        blob: blob.to_vec(),
        conf,
        trust,
        large_messages,
    })
}

/// Every identifier in the document must parse and belong to the document's instance;
/// servers host only their owner's subsystems. Later lookups compare canonical text.
fn check_contents(conf: &GlobalConf) -> Result<(), ConfError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| ConfError::Malformed(format!("{what}: {e}"));
    let instance = |id: &MemberId, what: &str| {
        if id.instance.as_str() == conf.instance {
            Ok(())
        } else {
            Err(bad(
                what,
                &format!("{id} is not of instance {}", conf.instance),
            ))
        }
    };
    for m in &conf.members {
        let id: MemberId = m.id.parse().map_err(|e| bad("member", &e))?;
        instance(&id, "member")?;
        for s in &m.subsystems {
            lintas_identifiers::Code::parse_part(s, "subsystem code")
                .map_err(|e| bad(&format!("member {id}"), &e))?;
        }
    }
    for s in &conf.servers {
        let id: ServerId = s.id.parse().map_err(|e| bad("server", &e))?;
        instance(&id.owner, "server")?;
        for c in &s.clients {
            let c: SubsystemId = c
                .parse()
                .map_err(|e| bad(&format!("server {}", s.id), &e))?;
            if c.member != id.owner {
                return Err(bad(
                    &format!("server {id}"),
                    &format!("hosts {c}, which its owner does not own"),
                ));
            }
        }
        for cert in &s.signing_certs {
            CertInfo::parse(cert).map_err(|e| bad(&format!("server {}", s.id), &e))?;
        }
        if s.other_tls_cert_sha256.iter().any(|h| h.len() != 32) {
            return Err(bad(
                &format!("server {}", s.id),
                &"lists a TLS certificate hash that is not 32 bytes",
            ));
        }
    }
    for g in &conf.groups {
        lintas_identifiers::Code::parse_part(&g.code, "group code")
            .map_err(|e| bad("group", &e))?;
        for m in &g.members {
            let c: ClientId = m
                .parse()
                .map_err(|e| bad(&format!("group {}", g.code), &e))?;
            instance(c.member(), &format!("group {}", g.code))?;
        }
    }
    // Which server hosts which subsystem, once: the catalogue is checked against it in
    // time that grows with its length, not with its length times the servers'.
    let hosting: std::collections::HashSet<(&str, &str)> = conf
        .servers
        .iter()
        .flat_map(|s| s.clients.iter().map(move |c| (s.id.as_str(), c.as_str())))
        .collect();
    for r in &conf.services {
        let provider: SubsystemId = r
            .provider
            .parse()
            .map_err(|e| bad("service catalogue", &e))?;
        r.service
            .parse::<lintas_identifiers::ServiceName>()
            .map_err(|e| bad("service catalogue", &e))?;
        if !hosting.contains(&(r.server.as_str(), r.provider.as_str())) {
            return Err(bad(
                "service catalogue",
                &format!("{} lists {provider}, which it does not host", r.server),
            ));
        }
    }
    if conf.expires_at <= conf.generated_at {
        return Err(ConfError::Malformed(
            "expires before it was generated".into(),
        ));
    }
    Ok(())
}
