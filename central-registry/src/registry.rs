//! The registry's logic: registrations, members, groups, certificates, and publishing the
//! signed global configuration after every change.
//!
//! State lives in memory behind one mutex; every operation computes its change, persists
//! it through the [`RegistryStore`] as one durable batch together with the newly signed
//! configuration and an audit record, and only then updates memory and answers. Calls are
//! synchronous (the store flushes); the gRPC layer runs them on the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lintas_certs::ca::{CsrKey, Validity};
use lintas_certs::{Ca, CertInfo, Identity, Profile, Role, TrustStore};
use lintas_globalconf::{Clock, iso8601, unix_secs};
use lintas_identifiers::{ClientId, Code, HostPort, MemberId, ServerId, ServiceName, SubsystemId};
use lintas_proto::globalconf::v1 as gc;
use lintas_proto::registry::v1 as pb;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::store::{ApplyError, Expect, Put, RegistryStore, Stored};

mod catalogue;
use catalogue::CatalogueQuota;
mod generations;
mod keys;
mod pending;
mod persist;
mod reads;
mod renewal;
mod restore;
pub use generations::GenerationRec;
use keys::Key;
use persist::{Applied, MAX_CONFLICTS, load};
pub use reads::Generation;
pub use restore::conf_serial_of;
mod synthetic;
mod witness;

pub use pending::Limits as PendingLimits;

/// Whether a document expiring at `expires_at` (Unix seconds) was signed long enough ago
/// (half a `refresh` period, for documents valid `validity`) to be re-signed now.
fn resign_due(expires_at: Option<i64>, now: i64, validity: Duration, refresh: Duration) -> bool {
    let Some(expires_at) = expires_at else {
        return true;
    };
    let signed_ago = validity.as_secs() as i64 - (expires_at - now);
    signed_ago >= (refresh.as_secs() / 2) as i64
}

/// Longest free-text field (names, reasons, descriptions).
pub const MAX_TEXT: usize = 256;
/// Most subsystems one registration may ask to host.
pub const MAX_CLIENTS: usize = 1000;
/// Longest validity of an enrolment token.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 86400);
/// Validity of administrator certificates issued through the API.
pub const ADMIN_CERT_VALIDITY: Duration = Duration::from_secs(365 * 86400);

/// Errors of registry operations; each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// A passing condition (another registry node changed the same thing at once).
    #[error("{0}")]
    Unavailable(String),
    #[error("registry internal error: {0}")]
    Internal(String),
}

type Result<T> = std::result::Result<T, RegistryError>;

/// The name the registry's own TSA is listed under.
pub const REGISTRY_TSA: &str = "registry";

fn invalid(what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidArgument(format!("{what}: {e}"))
}

fn internal(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Internal(e.to_string())
}

fn check_text(what: &str, s: &str) -> Result<()> {
    if s.chars().count() > MAX_TEXT {
        return Err(invalid(what, format!("longer than {MAX_TEXT} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(what, "contains control characters"));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    Tls,
    Signing,
    Admin,
}

impl CertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Tls => "tls",
            CertKind::Signing => "signing",
            CertKind::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedCert {
    pub kind: CertKind,
    pub serial: String,
    pub der_hex: String,
    pub not_after: i64,
    pub revoked: Option<Revocation>,
    /// When a renewal superseded it: revoked at this time (Unix seconds), after the
    /// grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<i64>,
}

impl IssuedCert {
    fn new(kind: CertKind, der: &[u8]) -> Result<Self> {
        let info = CertInfo::parse(der).map_err(internal)?;
        Ok(IssuedCert {
            kind,
            serial: info.serial_hex(),
            der_hex: lintas_certs::hex(der),
            not_after: info.not_after_unix(),
            retire_at: None,
            revoked: None,
        })
    }

    pub fn der(&self) -> Vec<u8> {
        lintas_certs::unhex(&self.der_hex).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revocation {
    pub at: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRec {
    pub id: MemberId,
    pub name: String,
    pub subsystems: BTreeSet<Code>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRec {
    pub id: ServerId,
    pub address: HostPort,
    pub clients: BTreeSet<SubsystemId>,
    pub certs: Vec<IssuedCert>,
    /// The key that signs the server's log checkpoints (uncompressed P-256 point, hex).
    #[serde(default)]
    pub log_key_hex: String,
    /// The server reported that it is in maintenance.
    #[serde(default)]
    pub maintenance: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegState {
    Pending,
    Approved,
    Rejected,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationRec {
    pub request_id: String,
    pub server_id: ServerId,
    pub address: HostPort,
    pub clients: Vec<SubsystemId>,
    pub member_name: String,
    pub tls_csr_hex: String,
    pub signing_csr_hex: String,
    pub tls_key_fingerprint: String,
    pub signing_key_fingerprint: String,
    /// The requested log (checkpoint) key, uncompressed P-256 point in hex.
    #[serde(default)]
    pub log_key_hex: String,
    pub state: RegState,
    pub reason: String,
    pub submitted_at: i64,
    pub decided_at: i64,
    pub decided_by: String,
    pub tls_cert_hex: String,
    pub signing_cert_hex: String,
    /// The server was already registered when this request arrived.
    pub renewal: bool,
    /// Where the request came from (an IPv4 address or IPv6 /64); pending requests are
    /// limited per source.
    #[serde(default)]
    pub source: String,
}

/// A time-stamping authority an administrator listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TsaRec {
    pub name: Code,
    pub url: String,
    pub cert_hex: String,
    /// False once removed (records are never deleted).
    pub listed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRec {
    pub code: Code,
    pub description: String,
    pub members: BTreeSet<ClientId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRec {
    /// SHA-256 of the token, hex; the token itself is never stored.
    pub hash: String,
    pub server_id: ServerId,
    pub expires_at: i64,
    pub used: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CatalogueRec {
    server: ServerId,
    services: Vec<CatalogueService>,
}

/// One service in the catalogue, as its server reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct CatalogueService {
    provider: SubsystemId,
    service: ServiceName,
    /// SHA-256 of its descriptor set, hex; empty when none was published.
    #[serde(default)]
    descriptor_sha256: String,
    /// The grants as the provider server made them.
    #[serde(default)]
    grants: Vec<CatalogueGrant>,
    /// A REST service passed through to its backend.
    #[serde(default)]
    rest: bool,
    /// SHA-256 of a REST service's OpenAPI document, hex; empty when none was published.
    #[serde(default)]
    openapi_sha256: String,
    /// Its messages may be larger than `max_message_bytes`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    large_messages: bool,
    /// A topic events are published on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    topic: bool,
    /// The quotas as the provider server set them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    quotas: Vec<CatalogueQuota>,
}

/// One grant of a catalogue service. Written as an object; read also from the
/// `[method, subject]` pairs of earlier versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct CatalogueGrant {
    /// A method name, an HTTP method for a REST service, or empty for any.
    method: String,
    subject: String,
    /// A REST service's path pattern, or empty for any path.
    #[serde(default)]
    path: String,
}

pub use lintas_globalconf::descriptors::MAX_DESCRIPTOR_BYTES;

/// Most grants listed for one service.
const MAX_GRANTS: usize = 10_000;

/// Uploaded descriptor sets held per server until its next report.
const MAX_STAGED: usize = 64;

/// Bytes of uploaded, not yet reported descriptor sets held for all servers together.
const MAX_STAGED_BYTES: usize = 64 * 1024 * 1024;

/// Encoded descriptor sets by SHA-256 (hex).
type DescriptorSets = BTreeMap<String, Arc<Vec<u8>>>;

/// An uploaded descriptor set and its SHA-256 (hex), in upload order.
type Staged = (String, Arc<Vec<u8>>);

/// What a service report achieved.
pub struct ReportOutcome {
    /// The configuration serial listing the services; 0 when sets are missing.
    pub conf_serial: u64,
    /// SHA-256 of each named descriptor set the registry does not hold.
    pub missing: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRec {
    pub at: i64,
    pub actor: String,
    pub action: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConfMeta {
    serial: u64,
    blob_hex: String,
}

/// Everything the registry knows, in memory.
#[derive(Debug, Default, Clone)]
struct State {
    members: BTreeMap<MemberId, MemberRec>,
    servers: BTreeMap<ServerId, ServerRec>,
    registrations: BTreeMap<String, RegistrationRec>,
    groups: BTreeMap<Code, GroupRec>,
    tokens: BTreeMap<String, TokenRec>,
    admin_certs: BTreeMap<String, IssuedCert>,
    /// Services each security server reported, by server, sorted.
    catalogue: BTreeMap<ServerId, Vec<CatalogueService>>,
    /// Published descriptor sets.
    descriptors: DescriptorSets,
    /// Other time-stamping authorities listed besides the registry's own, by name.
    tsas: BTreeMap<Code, TsaRec>,
    audit_seq: u64,
    conf_serial: u64,
    /// The stored version of `meta/state` (`Key::State`) this state was loaded or last written
    /// at: every change expects it unchanged and raises it.
    version: u64,
}

/// A pending change: the records to write. Memory is updated only after it is durable.
#[derive(Default)]
struct Change {
    puts: Vec<Put>,
    /// Pending requests this change decides or removes: they leave the pending set
    /// once it is durable, under the same lock as the state it is swapped into.
    settle: Vec<String>,
}

impl Change {
    fn put_raw(&mut self, key: String, value: Vec<u8>) {
        self.puts.push(Put {
            key,
            value: Some(value),
        });
    }

    fn remove(&mut self, key: String) {
        self.puts.push(Put { key, value: None });
    }

    fn put<T: Serialize>(&mut self, key: String, value: &T) -> Result<()> {
        let value = serde_json::to_vec(value).map_err(internal)?;
        self.puts.push(Put {
            key,
            value: Some(value),
        });
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(key: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| internal(format!("stored record {key}: {e}")))
}

/// Keys and material the registry signs and issues with.
pub struct Keys {
    pub ca: Ca,
    pub conf_key: lintas_certs::SharedSigner,
    pub conf_cert: Vec<u8>,
    pub tsa_cert: Vec<u8>,
    /// The anchor file's text, published in every configuration (empty: none), and the
    /// CA's signature over it.
    pub anchor_text: String,
    pub anchor_signature: Vec<u8>,
    /// The CA certificates peers accept: the anchor's (the issuing CA and, during a
    /// rotation, the other).
    pub cas: Vec<Vec<u8>>,
}

/// Settings the registry logic needs from its configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub instance: Code,
    /// Limits on pending registration requests.
    pub registration: pending::Limits,
    pub conf_validity: Duration,
    pub cert_validity: Duration,
    pub token_ttl: Duration,
    /// Where the registry's TSA is reached (on each node), as published in the
    /// configuration.
    pub tsa_urls: Vec<String>,
    /// Approve a registered server's request for new keys at once when its current
    /// TLS certificate authenticates it.
    pub auto_approve_renewals: bool,
    /// How long certificates superseded by a renewal stay valid.
    pub renewal_grace: Duration,
}

/// Whether a change alters what the global configuration publishes (and so needs a new
/// signed document and serial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    Yes,
    No,
}

/// Most registration requests pending at once; beyond it anonymous submissions are
/// refused until an administrator decides some.
pub const MAX_PENDING: usize = 10_000;

/// The registry.
/// What the registry holds, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub members: usize,
    pub servers: usize,
    pub pending_registrations: usize,
    pub conf_serial: u64,
}

pub struct Registry {
    state: Mutex<State>,
    store: Arc<dyn RegistryStore>,
    keys: Keys,
    policy: Policy,
    clock: Arc<dyn Clock>,
    trust: TrustStore,
    /// The newest signed global configuration, served as is.
    latest: RwLock<Arc<Vec<u8>>>,
    /// Set when a store write failed: memory and disk may disagree until a restart.
    poisoned: AtomicBool,
    /// Held across a service report's comparison and commit.
    reports: Mutex<()>,
    /// Descriptor sets uploaded by each server and not yet named in a report, by hash.
    staged: Mutex<BTreeMap<ServerId, Vec<Staged>>>,
    /// Registration requests waiting for an administrator (decided ones are in `state`).
    pending: Mutex<pending::PendingSet>,
    /// Held while a checkpoint is checked and cosigned on this node (other nodes are
    /// kept out by the witness record's version).
    witnessing: Mutex<()>,
    /// (origin, held size) of every refusal stored as evidence.
    witness_refusals: Mutex<BTreeSet<(String, u64)>>,
    /// Every generation of the configuration published (see `generations`).
    generations: Mutex<Vec<GenerationRec>>,
}

impl Registry {
    /// Loads state from `store`. Nothing is written: `serve` re-signs at start, so a
    /// restart never serves an expired document, and `--check-config` changes nothing.
    pub fn open(
        store: Arc<dyn RegistryStore>,
        keys: Keys,
        policy: Policy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let loaded = load(&*store)?;
        let trust = TrustStore::new(keys.cas.iter().map(Vec::as_slice)).map_err(internal)?;
        Ok(Registry {
            state: Mutex::new(loaded.state),
            store,
            keys,
            policy,
            clock,
            trust,
            latest: RwLock::new(Arc::new(loaded.latest)),
            poisoned: AtomicBool::new(false),
            reports: Mutex::new(()),
            staged: Mutex::new(BTreeMap::new()),
            witnessing: Mutex::new(()),
            witness_refusals: Mutex::new(loaded.refusals),
            generations: Mutex::new(loaded.generations),
            pending: Mutex::new(loaded.pending),
        })
    }

    fn now(&self) -> i64 {
        unix_secs(self.clock.now())
    }

    /// The registry's clock, Unix seconds.
    pub fn unix_now(&self) -> i64 {
        self.now()
    }

    /// The registry's clock.
    pub fn clock_now(&self) -> std::time::SystemTime {
        self.clock.now()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Taken after `state` when both are held.
    fn pending_set(&self) -> std::sync::MutexGuard<'_, pending::PendingSet> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest signed global configuration blob.
    pub fn latest_conf(&self) -> Arc<Vec<u8>> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn instance(&self) -> &Code {
        &self.policy.instance
    }

    /// Whether an earlier write failed, so that changes are refused until a restart.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Whether a failed write is overcome by reloading once the store answers (see
    /// [`RegistryStore::reload_recovers`]), rather than by a restart.
    pub fn recovers_by_reloading(&self) -> bool {
        self.store.reload_recovers()
    }

    /// How much the registry holds, for metrics.
    pub fn counts(&self) -> Counts {
        let state = self.lock();
        Counts {
            members: state.members.len(),
            servers: state.servers.len(),
            pending_registrations: self.pending_set().len(),
            conf_serial: state.conf_serial,
        }
    }

    /// Re-signs the configuration with a new serial and expiry (at start and periodically).
    pub fn republish(&self, actor: &str, why: &str) -> Result<u64> {
        let ((), serial) = self.commit(actor, Publish::Yes, |_, _| Ok(((), why.to_owned())))?;
        Ok(serial)
    }

    /// The periodic re-signing, every `refresh`: skipped when the published document
    /// was signed less than half a period ago (by another registry node sharing the
    /// database), so several nodes do not each re-sign. The new serial, if re-signed.
    pub fn refresh(&self, refresh: Duration) -> Result<Option<u64>> {
        self.sync()?;
        let expires_at = lintas_globalconf::expiry_of(&self.latest_conf());
        if !resign_due(expires_at, self.now(), self.policy.conf_validity, refresh) {
            return Ok(None);
        }
        self.republish("registry", "periodic refresh").map(Some)
    }

    /// Signs the next generation of the configuration into `change`, with its record in
    /// the history (caused by `actor`'s `action`).
    fn publish_into(
        &self,
        state: &mut State,
        change: &mut Change,
        actor: &str,
        action: &str,
    ) -> Result<(Vec<u8>, GenerationRec)> {
        state.conf_serial += 1;
        let conf = self.build_conf(state);
        let blob = lintas_globalconf::sign(&conf, &*self.keys.conf_key, &self.keys.conf_cert)
            .map_err(internal)?;
        change.put(
            Key::ConfLatest.into(),
            &ConfMeta {
                serial: state.conf_serial,
                blob_hex: lintas_certs::hex(&blob),
            },
        )?;
        let generation = GenerationRec::of(&conf, &blob, actor, action);
        change.put(Key::Generation(conf.serial).into(), &generation)?;
        Ok((blob, generation))
    }

    fn build_conf(&self, state: &State) -> gc::GlobalConf {
        let now = self.now();
        let usable = |c: &&IssuedCert| c.revoked.is_none() && c.not_after > now;
        let mut revoked: Vec<gc::RevokedCertificate> = state
            .servers
            .values()
            .flat_map(|s| s.certs.iter())
            .chain(state.admin_certs.values())
            .filter_map(|c| {
                c.revoked.as_ref().map(|r| gc::RevokedCertificate {
                    serial: lintas_certs::unhex(&c.serial).unwrap_or_default(),
                    revoked_at: r.at,
                    reason: r.reason.clone(),
                })
            })
            .collect();
        revoked.sort_by(|a, b| a.serial.cmp(&b.serial));
        gc::GlobalConf {
            instance: self.policy.instance.to_string(),
            serial: state.conf_serial,
            generated_at: now,
            expires_at: now + self.policy.conf_validity.as_secs() as i64,
            members: state
                .members
                .values()
                .map(|m| gc::Member {
                    id: m.id.to_string(),
                    name: m.name.clone(),
                    subsystems: m.subsystems.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            servers: state
                .servers
                .values()
                .map(|s| {
                    // The newest usable TLS certificate identifies the server; peers
                    // accept its others too (the one before a renewal, until revoked).
                    let usable_tls: Vec<&IssuedCert> = s
                        .certs
                        .iter()
                        .filter(usable)
                        .filter(|c| c.kind == CertKind::Tls)
                        .collect();
                    let tls = usable_tls.iter().copied().max_by_key(|c| c.not_after);
                    let others = usable_tls
                        .iter()
                        .filter(|c| tls.is_some_and(|t| t.serial != c.serial))
                        .map(|c| lintas_certs::sha256(&c.der()).to_vec())
                        .collect();
                    gc::SecurityServer {
                        id: s.id.to_string(),
                        address: s.address.to_string(),
                        tls_cert_sha256: tls
                            .map(|c| lintas_certs::sha256(&c.der()).to_vec())
                            .unwrap_or_default(),
                        clients: s.clients.iter().map(ToString::to_string).collect(),
                        signing_certs: s
                            .certs
                            .iter()
                            .filter(usable)
                            .filter(|c| c.kind == CertKind::Signing)
                            .map(IssuedCert::der)
                            .collect(),
                        log_public_key: lintas_certs::unhex(&s.log_key_hex).unwrap_or_default(),
                        maintenance: s.maintenance,
                        other_tls_cert_sha256: others,
                    }
                })
                .collect(),
            anchor: self.keys.anchor_text.clone(),
            anchor_signature: self.keys.anchor_signature.clone(),
            approved_cas: self.keys.cas.clone(),
            timestamping_authorities: std::iter::once(gc::TimestampingAuthority {
                name: REGISTRY_TSA.into(),
                url: self.policy.tsa_urls.first().cloned().unwrap_or_default(),
                cert: self.keys.tsa_cert.clone(),
                other_urls: self.policy.tsa_urls.iter().skip(1).cloned().collect(),
            })
            .chain(
                state
                    .tsas
                    .values()
                    .filter(|t| t.listed)
                    .map(|t| gc::TimestampingAuthority {
                        name: t.name.to_string(),
                        url: t.url.clone(),
                        cert: lintas_certs::unhex(&t.cert_hex).unwrap_or_default(),
                        other_urls: Vec::new(),
                    }),
            )
            .collect(),
            groups: state
                .groups
                .values()
                .map(|g| gc::GlobalGroup {
                    code: g.code.to_string(),
                    description: g.description.clone(),
                    members: g.members.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            revoked,
            services: state
                .catalogue
                .iter()
                .flat_map(|(server, services)| {
                    services.iter().map(move |c| gc::ServiceRef {
                        provider: c.provider.to_string(),
                        service: c.service.to_string(),
                        server: server.to_string(),
                        descriptor_sha256: lintas_certs::unhex(&c.descriptor_sha256)
                            .unwrap_or_default(),
                        openapi_sha256: lintas_certs::unhex(&c.openapi_sha256).unwrap_or_default(),
                        rest: c.rest,
                        large_messages: c.large_messages,
                        topic: c.topic,
                        quotas: c.quotas.iter().map(CatalogueQuota::published).collect(),
                        grants: c
                            .grants
                            .iter()
                            .map(|g| gc::AccessGrant {
                                method: g.method.clone(),
                                subject: g.subject.clone(),
                                path: g.path.clone(),
                            })
                            .collect(),
                    })
                })
                .collect(),
        }
    }

    // ----- registration (open to any TLS client) -----

    /// Records a registration request. With a valid enrolment token it is approved at
    /// once. A pending request changes nothing published, so nothing is re-signed.
    pub fn submit(&self, req: Submission) -> Result<RegistrationRec> {
        let server_id: ServerId = req.server_id.parse().map_err(|e| invalid("server_id", e))?;
        server_id
            .owner
            .ensure_instance(&self.policy.instance)
            .map_err(|e| invalid("server_id", e))?;
        let address: HostPort = req.address.parse().map_err(|e| invalid("address", e))?;
        check_text("member_name", &req.member_name)?;
        if req.clients.len() > MAX_CLIENTS {
            return Err(invalid("clients", format!("more than {MAX_CLIENTS}")));
        }
        let mut clients = Vec::new();
        for c in &req.clients {
            let c: SubsystemId = c.parse().map_err(|e| invalid("clients", e))?;
            if c.member != server_id.owner {
                return Err(invalid(
                    "clients",
                    format!(
                        "{c} is not a subsystem of {}, the member that owns this server",
                        server_id.owner
                    ),
                ));
            }
            clients.push(c);
        }
        let tls_key = CsrKey::from_der(&req.tls_csr).map_err(|e| invalid("tls_csr", e))?;
        let signing_key =
            CsrKey::from_der(&req.signing_csr).map_err(|e| invalid("signing_csr", e))?;
        if tls_key.fingerprint() == signing_key.fingerprint() {
            return Err(invalid(
                "signing_csr",
                "uses the same key as tls_csr; the signing key must be separate",
            ));
        }
        let log_key = CsrKey::from_der(&req.log_csr).map_err(|e| invalid("log_csr", e))?;
        if log_key.fingerprint() == tls_key.fingerprint()
            || log_key.fingerprint() == signing_key.fingerprint()
        {
            return Err(invalid(
                "log_csr",
                "uses the same key as tls_csr or signing_csr; the log key must be separate",
            ));
        }
        let request_id = random_hex(16)?;
        let token_hash = (!req.enrolment_token.is_empty())
            .then(|| lintas_certs::hex(&lintas_certs::sha256(req.enrolment_token.as_bytes())));
        let now = self.now();
        let rec = RegistrationRec {
            request_id: request_id.clone(),
            server_id: server_id.clone(),
            address,
            clients,
            member_name: req.member_name.clone(),
            tls_csr_hex: lintas_certs::hex(&req.tls_csr),
            signing_csr_hex: lintas_certs::hex(&req.signing_csr),
            tls_key_fingerprint: tls_key.fingerprint(),
            signing_key_fingerprint: signing_key.fingerprint(),
            log_key_hex: lintas_certs::hex(&log_key.public_key_raw()),
            state: RegState::Pending,
            reason: String::new(),
            submitted_at: now,
            decided_at: 0,
            decided_by: String::new(),
            tls_cert_hex: String::new(),
            signing_cert_hex: String::new(),
            renewal: false,
            source: req.source.clone(),
        };
        if let Some(cert) = &req.peer_cert {
            // A server presenting a certificate is who it says or is refused; one
            // presenting its own asks for a renewal.
            let by = self.peer_server(Some(cert), "renewing")?;
            if by != server_id {
                return Err(RegistryError::PermissionDenied(format!(
                    "the TLS certificate of {by} cannot ask for certificates of {server_id}"
                )));
            }
            if self.policy.auto_approve_renewals && token_hash.is_none() {
                let serial = CertInfo::parse(cert).map_err(internal)?.serial_hex();
                return self.renew_authenticated(rec, &serial, &tls_key, &signing_key);
            }
        }
        let Some(hash) = token_hash else {
            return self.file_pending(rec);
        };
        let actor = format!("enrolment token for server {server_id}");
        // An enrolment token is checked before anything else, so nobody can block a
        // token holder by filing a pending request for the same server first.
        let (rec, _) = self.commit(&actor, Publish::Yes, |state, change| {
            let mut rec = rec.clone();
            let token = state.tokens.get_mut(&hash).ok_or_else(|| {
                RegistryError::PermissionDenied("enrolment token is not valid".into())
            })?;
            if token.used {
                return Err(RegistryError::PermissionDenied(
                    "enrolment token has already been used".into(),
                ));
            }
            if token.expires_at <= now {
                return Err(RegistryError::PermissionDenied(format!(
                    "enrolment token expired at {}",
                    iso8601(token.expires_at)
                )));
            }
            if token.server_id != server_id {
                return Err(RegistryError::PermissionDenied(format!(
                    "enrolment token is for {}, not {server_id}",
                    token.server_id
                )));
            }
            token.used = true;
            change.put(Key::Token(&hash).into(), &*token)?;
            self.supersede(
                state,
                change,
                &server_id,
                "superseded by a registration with an enrolment token",
                "enrolment-token",
            )?;
            rec.renewal = state.servers.contains_key(&server_id);
            self.approve_into(
                state,
                change,
                &mut rec,
                "enrolment-token",
                &tls_key,
                &signing_key,
            )?;
            change.put(Key::Registration(&request_id).into(), &rec)?;
            state.registrations.insert(request_id.clone(), rec.clone());
            let action = format!(
                "registration {request_id} for {server_id} at {} approved by enrolment token",
                rec.address
            );
            Ok((rec, action))
        })?;
        Ok(rec)
    }

    /// Files a request without a token for an administrator to decide: one record
    /// and an audit entry, written without copying the state, so the cost does not grow
    /// with the number pending. The claimed server id is only a claim until then.
    fn file_pending(&self, mut rec: RegistrationRec) -> Result<RegistrationRec> {
        let limits = self.policy.registration;
        let source = if rec.source.is_empty() {
            "an unknown address".to_owned()
        } else {
            rec.source.clone()
        };
        let actor = format!(
            "unverified requester from {source} claiming server {}",
            rec.server_id
        );
        self.refuse_if_poisoned()?;
        let full = self.pending_set().room_for(&rec.source, &limits);
        if matches!(full, Err(pending::Full::Total(_))) {
            // Full: requests past their time go first. (A source at its own limit waits
            // for the periodic sweep; it cannot make every submission scan.)
            self.expire_registrations()?;
        }
        let mut state = self.lock();
        for _ in 0..MAX_CONFLICTS {
            match self.pending_set().room_for(&rec.source, &limits) {
                Ok(()) => {}
                Err(pending::Full::Total(n)) => {
                    return Err(RegistryError::ResourceExhausted(format!(
                        "{n} registrations are pending; try again after the administrators have decided some"
                    )));
                }
                Err(pending::Full::Source(n)) => {
                    return Err(RegistryError::ResourceExhausted(format!(
                        "{n} registrations from {source} are pending, the most one address may have; ask the registry administrators to decide them"
                    )));
                }
            }
            rec.renewal = state.servers.contains_key(&rec.server_id);
            let action = format!(
                "submitted registration {} for {} at {} (tls key {}, signing key {})",
                rec.request_id,
                rec.server_id,
                rec.address,
                rec.tls_key_fingerprint,
                rec.signing_key_fingerprint
            );
            // Only the sequence and version change: the state is not copied, so the cost
            // does not grow with what the registry holds.
            let (seq, version) = (state.audit_seq, state.version);
            let mut change = Change::default();
            change.put(Key::Registration(&rec.request_id).into(), &rec)?;
            self.audit(&mut state, &mut change, &actor, &action)?;
            match self.apply_state(&mut state, change) {
                Ok(()) => {
                    self.pending_set().insert(rec.clone());
                    tracing::info!(actor, action = %action, "registry change");
                    return Ok(rec);
                }
                Err(Applied::Conflict) => {
                    (state.audit_seq, state.version) = (seq, version);
                    self.reload(&mut state)?;
                }
                Err(Applied::Failed(e)) => {
                    (state.audit_seq, state.version) = (seq, version);
                    return Err(e);
                }
            }
        }
        Err(RegistryError::Unavailable(
            "other registry nodes kept changing the state; try again".into(),
        ))
    }

    /// Removes pending requests filed `registration_ttl_secs` ago or earlier (records
    /// and memory; an audit entry says how many). Returns how many went.
    pub fn expire_registrations(&self) -> Result<usize> {
        let ttl = self.policy.registration.ttl_secs;
        let now = self.now();
        if self.pending_set().expired(now, ttl).is_empty() {
            return Ok(0);
        }
        let (expired, _) = self.commit("registry", Publish::No, |_, change| {
            let expired = self.pending_set().expired(now, ttl);
            for id in &expired {
                change.puts.push(crate::store::Put {
                    key: Key::Registration(id).into(),
                    value: None,
                });
            }
            change.settle.extend(expired.iter().cloned());
            let action = format!(
                "{} registration request(s) expired undecided after {ttl} s",
                expired.len()
            );
            Ok((expired.len(), action))
        })?;
        Ok(expired)
    }

    /// Closes every other pending request for `server` as rejected with `reason`.
    fn supersede(
        &self,
        state: &mut State,
        change: &mut Change,
        server: &ServerId,
        reason: &str,
        by: &str,
    ) -> Result<()> {
        let others: Vec<RegistrationRec> = {
            let pending = self.pending_set();
            pending
                .for_server(server)
                .iter()
                .filter(|id| !state.registrations.contains_key(*id))
                .filter_map(|id| pending.get(id).cloned())
                .collect()
        };
        for mut other in others {
            other.state = RegState::Rejected;
            other.reason = reason.into();
            other.decided_at = self.now();
            other.decided_by = by.into();
            change.put(Key::Registration(&other.request_id).into(), &other)?;
            change.settle.push(other.request_id.clone());
            state.registrations.insert(other.request_id.clone(), other);
        }
        Ok(())
    }

    pub fn status(&self, request_id: &str) -> Result<RegistrationRec> {
        let state = self.lock();
        if let Some(rec) = state.registrations.get(request_id) {
            return Ok(rec.clone());
        }
        self.pending_set().get(request_id).cloned().ok_or_else(|| {
            RegistryError::NotFound(format!(
                "no registration request with that id (undecided requests expire after {} s)",
                self.policy.registration.ttl_secs
            ))
        })
    }

    // ----- administration -----

    pub fn list_registrations(&self, state: Option<RegState>) -> Vec<RegistrationRec> {
        let decided = self.lock();
        let pending = self.pending_set();
        let mut out: Vec<_> = decided
            .registrations
            .values()
            .chain(pending.values())
            .filter(|r| state.is_none_or(|s| r.state == s))
            .cloned()
            .collect();
        out.sort_by_key(|r| r.submitted_at);
        out
    }

    /// One page of registration requests (in `state`, for servers whose id contains
    /// `filter`), oldest first, and the next page's token.
    pub fn registrations_page(
        &self,
        state: Option<RegState>,
        filter: &str,
        token: &str,
        size: usize,
    ) -> Result<(Vec<RegistrationRec>, String)> {
        let decided = self.lock();
        let pending = self.pending_set();
        let items = decided
            .registrations
            .values()
            .chain(pending.values())
            .filter(|r| state.is_none_or(|s| r.state == s))
            .filter(|r| filter.is_empty() || r.server_id.to_string().contains(filter))
            // Oldest first: the key sorts by submission time, then id.
            .map(|r| (format!("{:020}/{}", r.submitted_at.max(0), r.request_id), r));
        lintas_proto::paging::page(items, token, size).map_err(|e| invalid("page_token", e))
    }

    pub fn approve(&self, admin: &str, request_id: &str) -> Result<RegistrationRec> {
        let (rec, _) = self.commit(admin, Publish::Yes, |state, change| {
            let mut rec = self.pending_rec(state, request_id)?;
            let csr = |hex: &str| {
                CsrKey::from_der(&lintas_certs::unhex(hex).unwrap_or_default()).map_err(internal)
            };
            let (tls, sign) = (csr(&rec.tls_csr_hex)?, csr(&rec.signing_csr_hex)?);
            self.approve_into(state, change, &mut rec, admin, &tls, &sign)?;
            change.put(Key::Registration(request_id).into(), &rec)?;
            state
                .registrations
                .insert(request_id.to_owned(), rec.clone());
            self.supersede(
                state,
                change,
                &rec.server_id,
                &format!("superseded: registration {request_id} for this server was approved"),
                admin,
            )?;
            change.settle.push(request_id.to_owned());
            let action = format!(
                "approved registration {request_id} of {} (tls key {}, from {})",
                rec.server_id, rec.tls_key_fingerprint, rec.source
            );
            Ok((rec, action))
        })?;
        Ok(rec)
    }

    /// Issues the certificates, creates member, subsystems and server, marks approved.
    /// For a server that already exists (renewal, new address) the new certificates are
    /// added beside the old ones, which stay valid until revoked or expired.
    fn approve_into(
        &self,
        state: &mut State,
        change: &mut Change,
        rec: &mut RegistrationRec,
        by: &str,
        tls_key: &CsrKey,
        signing_key: &CsrKey,
    ) -> Result<()> {
        let validity =
            Validity::starting(self.clock.now(), self.policy.cert_validity).map_err(internal)?;
        let tls = self
            .keys
            .ca
            .issue(
                tls_key,
                &Profile::Server {
                    id: rec.server_id.clone(),
                    hosts: vec![rec.address.host().to_owned()],
                },
                validity,
            )
            .map_err(internal)?;
        let signing = self
            .keys
            .ca
            .issue(
                signing_key,
                &Profile::Member(rec.server_id.owner.clone()),
                validity,
            )
            .map_err(internal)?;

        let owner = rec.server_id.owner.clone();
        let member = state
            .members
            .entry(owner.clone())
            .or_insert_with(|| MemberRec {
                id: owner.clone(),
                name: if rec.member_name.is_empty() {
                    owner.member.to_string()
                } else {
                    rec.member_name.clone()
                },
                subsystems: BTreeSet::new(),
            });
        for c in &rec.clients {
            member.subsystems.insert(c.subsystem.clone());
        }
        change.put(Key::Member(&owner).into(), &*member)?;

        let server = state
            .servers
            .entry(rec.server_id.clone())
            .or_insert_with(|| ServerRec {
                id: rec.server_id.clone(),
                address: rec.address.clone(),
                clients: BTreeSet::new(),
                certs: Vec::new(),
                log_key_hex: String::new(),
                maintenance: false,
            });
        // A renewal: the certificates before it go after the grace period.
        self.retire_previous(server);
        server.address = rec.address.clone();
        server.log_key_hex = rec.log_key_hex.clone();
        server.clients.extend(rec.clients.iter().cloned());
        server.certs.push(IssuedCert::new(CertKind::Tls, &tls)?);
        server
            .certs
            .push(IssuedCert::new(CertKind::Signing, &signing)?);
        change.put(Key::Server(&server.id).into(), &*server)?;

        rec.state = RegState::Approved;
        rec.decided_at = self.now();
        rec.decided_by = by.to_owned();
        rec.tls_cert_hex = lintas_certs::hex(&tls);
        rec.signing_cert_hex = lintas_certs::hex(&signing);
        Ok(())
    }

    pub fn reject(&self, admin: &str, request_id: &str, reason: &str) -> Result<RegistrationRec> {
        if reason.trim().is_empty() {
            return Err(invalid(
                "reason",
                "a rejection needs a reason the requester will see",
            ));
        }
        check_text("reason", reason)?;
        let (rec, _) = self.commit(admin, Publish::No, |state, change| {
            let mut rec = self.pending_rec(state, request_id)?;
            rec.state = RegState::Rejected;
            rec.reason = reason.to_owned();
            rec.decided_at = self.now();
            rec.decided_by = admin.to_owned();
            change.put(Key::Registration(request_id).into(), &rec)?;
            state
                .registrations
                .insert(request_id.to_owned(), rec.clone());
            let action = format!("rejected registration of {}: {reason}", rec.server_id);
            change.settle.push(rec.request_id.clone());
            Ok((rec, action))
        })?;
        Ok(rec)
    }

    pub fn add_member(&self, admin: &str, id: &str, name: &str) -> Result<u64> {
        let id: MemberId = id.parse().map_err(|e| invalid("id", e))?;
        id.ensure_instance(&self.policy.instance)
            .map_err(|e| invalid("id", e))?;
        check_text("name", name)?;
        if name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let ((), serial) = self.commit(admin, Publish::Yes, |state, change| {
            if state.members.contains_key(&id) {
                return Err(RegistryError::AlreadyExists(format!("member {id} exists")));
            }
            let m = MemberRec {
                id: id.clone(),
                name: name.to_owned(),
                subsystems: BTreeSet::new(),
            };
            change.put(Key::Member(&id).into(), &m)?;
            state.members.insert(id.clone(), m);
            Ok(((), format!("added member {id} ({name})")))
        })?;
        Ok(serial)
    }

    pub fn add_subsystem(&self, admin: &str, id: &str) -> Result<u64> {
        let id: SubsystemId = id.parse().map_err(|e| invalid("id", e))?;
        let ((), serial) = self.commit(admin, Publish::Yes, |state, change| {
            let m = state.members.get_mut(&id.member).ok_or_else(|| {
                RegistryError::NotFound(format!("member {} is not registered", id.member))
            })?;
            if !m.subsystems.insert(id.subsystem.clone()) {
                return Err(RegistryError::AlreadyExists(format!(
                    "subsystem {id} exists"
                )));
            }
            change.put(Key::Member(&id.member).into(), &*m)?;
            Ok(((), format!("added subsystem {id}")))
        })?;
        Ok(serial)
    }

    pub fn members(&self) -> Vec<MemberRec> {
        self.lock().members.values().cloned().collect()
    }

    pub fn servers(&self) -> Vec<ServerRec> {
        self.lock().servers.values().cloned().collect()
    }

    /// One page of members whose id or name contains `filter`, by id.
    pub fn members_page(
        &self,
        filter: &str,
        token: &str,
        size: usize,
    ) -> Result<(Vec<MemberRec>, String)> {
        let state = self.lock();
        let items = state
            .members
            .values()
            .map(|m| (m.id.to_string(), m))
            .filter(|(id, m)| id.contains(filter) || m.name.contains(filter));
        lintas_proto::paging::page(items, token, size).map_err(|e| invalid("page_token", e))
    }

    /// One page of servers whose id contains `filter`, by id.
    pub fn servers_page(
        &self,
        filter: &str,
        token: &str,
        size: usize,
    ) -> Result<(Vec<ServerRec>, String)> {
        let state = self.lock();
        let items = state
            .servers
            .values()
            .map(|s| (s.id.to_string(), s))
            .filter(|(id, _)| id.contains(filter));
        lintas_proto::paging::page(items, token, size).map_err(|e| invalid("page_token", e))
    }

    /// Lists (or replaces) a time-stamping authority in the configuration.
    pub fn add_tsa(&self, admin: &str, name: &str, url: &str, cert: &[u8]) -> Result<u64> {
        let name = Code::parse_part(name, "TSA name").map_err(|e| invalid("name", e))?;
        if name.as_str() == REGISTRY_TSA {
            return Err(invalid("name", "\"registry\" is the registry's own TSA"));
        }
        if !url.starts_with("http://") || url.len() > 2048 {
            return Err(invalid(
                "url",
                "must be an http:// URL of at most 2048 characters",
            ));
        }
        check_text("url", url)?;
        lintas_timestamp::check_tsa_cert(cert, None).map_err(|e| invalid("cert", e))?;
        let rec = TsaRec {
            name: name.clone(),
            url: url.to_owned(),
            cert_hex: lintas_certs::hex(cert),
            listed: true,
        };
        let ((), serial) = self.commit(admin, Publish::Yes, |state, change| {
            change.put(Key::Tsa(&name).into(), &rec)?;
            state.tsas.insert(name.clone(), rec.clone());
            Ok((
                (),
                format!("listed time-stamping authority {name} at {url}"),
            ))
        })?;
        Ok(serial)
    }

    /// Removes a listed time-stamping authority from the configuration.
    pub fn remove_tsa(&self, admin: &str, name: &str) -> Result<u64> {
        let name = Code::parse_part(name, "TSA name").map_err(|e| invalid("name", e))?;
        let ((), serial) = self.commit(admin, Publish::Yes, |state, change| {
            let rec = state
                .tsas
                .get_mut(&name)
                .filter(|t| t.listed)
                .ok_or_else(|| {
                    RegistryError::NotFound(format!("no time-stamping authority {name} is listed"))
                })?;
            rec.listed = false;
            change.put(Key::Tsa(&name).into(), &*rec)?;
            Ok(((), format!("removed time-stamping authority {name}")))
        })?;
        Ok(serial)
    }

    pub fn add_group(&self, admin: &str, code: &str, description: &str) -> Result<u64> {
        let code = Code::parse_part(code, "group code").map_err(|e| invalid("code", e))?;
        check_text("description", description)?;
        let ((), serial) = self.commit(admin, Publish::Yes, |state, change| {
            if state.groups.contains_key(&code) {
                return Err(RegistryError::AlreadyExists(format!("group {code} exists")));
            }
            let g = GroupRec {
                code: code.clone(),
                description: description.to_owned(),
                members: BTreeSet::new(),
            };
            change.put(Key::Group(&code).into(), &g)?;
            state.groups.insert(code.clone(), g);
            Ok(((), format!("added global group {code}")))
        })?;
        Ok(serial)
    }

    pub fn set_group_member(
        &self,
        admin: &str,
        code: &str,
        client: &str,
        add: bool,
    ) -> Result<u64> {
        let code = Code::parse_part(code, "group code").map_err(|e| invalid("code", e))?;
        let client: ClientId = client.parse().map_err(|e| invalid("client", e))?;
        let ((), serial) = self.commit(admin, Publish::Yes, |state, change| {
            let known = match &client {
                ClientId::Member(m) => state.members.contains_key(m),
                ClientId::Subsystem(s) => state
                    .members
                    .get(&s.member)
                    .is_some_and(|m| m.subsystems.contains(&s.subsystem)),
            };
            let g = state
                .groups
                .get_mut(&code)
                .ok_or_else(|| RegistryError::NotFound(format!("no global group {code}")))?;
            let action = if add {
                if !known {
                    return Err(RegistryError::NotFound(format!(
                        "{client} is not registered"
                    )));
                }
                if !g.members.insert(client.clone()) {
                    return Err(RegistryError::AlreadyExists(format!(
                        "{client} is already in {code}"
                    )));
                }
                format!("added {client} to group {code}")
            } else {
                if !g.members.remove(&client) {
                    return Err(RegistryError::NotFound(format!(
                        "{client} is not in {code}"
                    )));
                }
                format!("removed {client} from group {code}")
            };
            change.put(Key::Group(&code).into(), &*g)?;
            Ok(((), action))
        })?;
        Ok(serial)
    }

    /// Revokes a certificate by hex serial; it disappears from the next configuration and
    /// its serial is listed as revoked.
    pub fn revoke(&self, admin: &str, serial: &str, reason: &str) -> Result<u64> {
        let serial = lintas_certs::unhex(serial)
            .map(|b| lintas_certs::hex(&b))
            .ok_or_else(|| invalid("serial", "not a hexadecimal serial number"))?;
        check_text("reason", reason)?;
        let at = self.now();
        let ((), conf_serial) = self.commit(admin, Publish::Yes, |state, change| {
            let revocation = Revocation {
                at,
                reason: reason.to_owned(),
            };
            let already = |c: &IssuedCert| {
                RegistryError::FailedPrecondition(format!(
                    "certificate {} is already revoked",
                    c.serial
                ))
            };
            for server in state.servers.values_mut() {
                if let Some(c) = server.certs.iter_mut().find(|c| c.serial == serial) {
                    if c.revoked.is_some() {
                        return Err(already(c));
                    }
                    c.revoked = Some(revocation);
                    let action = format!(
                        "revoked {} certificate {serial} of {}",
                        c.kind.as_str(),
                        server.id
                    );
                    change.put(Key::Server(&server.id).into(), &*server)?;
                    return Ok(((), action));
                }
            }
            if let Some(c) = state.admin_certs.get_mut(&serial) {
                if c.revoked.is_some() {
                    return Err(already(c));
                }
                c.revoked = Some(revocation);
                change.put(Key::AdminCert(&serial).into(), &*c)?;
                return Ok(((), format!("revoked admin certificate {serial}")));
            }
            Err(RegistryError::NotFound(format!(
                "no certificate with serial {serial} was issued by this registry"
            )))
        })?;
        Ok(conf_serial)
    }

    /// Creates a one-time enrolment token for `server_id`. Only its hash is stored.
    pub fn create_token(
        &self,
        admin: &str,
        server_id: &str,
        ttl: Option<Duration>,
    ) -> Result<(String, i64)> {
        let server_id: ServerId = server_id.parse().map_err(|e| invalid("server_id", e))?;
        server_id
            .owner
            .ensure_instance(&self.policy.instance)
            .map_err(|e| invalid("server_id", e))?;
        let ttl = ttl.unwrap_or(self.policy.token_ttl);
        if ttl > MAX_TOKEN_TTL {
            return Err(invalid("ttl_seconds", "at most 30 days"));
        }
        let token = random_hex(20)?;
        let hash = lintas_certs::hex(&lintas_certs::sha256(token.as_bytes()));
        let expires_at = self.now() + ttl.as_secs() as i64;
        let (out, _) = self.commit(admin, Publish::No, |state, change| {
            let rec = TokenRec {
                hash: hash.clone(),
                server_id: server_id.clone(),
                expires_at,
                used: false,
            };
            change.put(Key::Token(&hash).into(), &rec)?;
            state.tokens.insert(hash.clone(), rec);
            Ok((
                (token.clone(), expires_at),
                format!(
                    "created enrolment token for {server_id}, valid until {}",
                    iso8601(expires_at)
                ),
            ))
        })?;
        Ok(out)
    }

    /// Issues an administrator certificate for the key of `csr` and records it: only
    /// recorded administrator certificates are accepted, so every one can be revoked.
    pub fn issue_admin_cert(&self, actor: &str, name: &str, csr: &[u8]) -> Result<Vec<u8>> {
        let name = Code::parse_part(name, "administrator name").map_err(|e| invalid("name", e))?;
        let key = CsrKey::from_der(csr).map_err(|e| invalid("csr", e))?;
        let validity =
            Validity::starting(self.clock.now(), ADMIN_CERT_VALIDITY).map_err(internal)?;
        let der = self
            .keys
            .ca
            .issue(
                &key,
                &Profile::Admin {
                    instance: self.policy.instance.clone(),
                    name: name.clone(),
                },
                validity,
            )
            .map_err(internal)?;
        self.record_admin_cert(actor, &der)?;
        Ok(der)
    }

    /// Records an administrator certificate (the first one is issued at `init`).
    pub fn record_admin_cert(&self, actor: &str, der: &[u8]) -> Result<()> {
        let cert = IssuedCert::new(CertKind::Admin, der)?;
        self.commit(actor, Publish::Yes, |state, change| {
            change.put(Key::AdminCert(&cert.serial).into(), &cert)?;
            let action = format!("recorded admin certificate {}", cert.serial);
            state.admin_certs.insert(cert.serial.clone(), cert.clone());
            Ok(((), action))
        })?;
        Ok(())
    }

    /// Whether the administrator certificate with serial `serial_hex` is recorded.
    pub fn knows_admin_cert(&self, serial_hex: &str) -> bool {
        self.lock().admin_certs.contains_key(serial_hex)
    }

    /// The TLS client certificate of a caller, chained to the instance CA for `role`.
    fn verified_peer(
        &self,
        peer_cert: Option<&[u8]>,
        role: Role,
        missing: &str,
        not: &str,
    ) -> Result<CertInfo> {
        let der = peer_cert.ok_or_else(|| RegistryError::PermissionDenied(missing.into()))?;
        self.trust
            .verify(der, role, self.clock.now())
            .map_err(|e| RegistryError::PermissionDenied(format!("{not}: {e}")))
    }

    /// The registered security server whose unrevoked TLS certificate `peer_cert` is.
    fn peer_server(&self, peer_cert: Option<&[u8]>, doing: &str) -> Result<ServerId> {
        let info = self.verified_peer(
            peer_cert,
            Role::Server,
            &format!("{doing} needs the security server's TLS client certificate"),
            "not a security server",
        )?;
        let serial_hex = info.serial_hex();
        let Identity::Server(server_id) = info.identity else {
            return Err(RegistryError::PermissionDenied(
                "not a security server".into(),
            ));
        };
        let state = self.lock();
        let server = state.servers.get(&server_id).ok_or_else(|| {
            RegistryError::PermissionDenied(format!("{server_id} is not a registered server"))
        })?;
        if !server
            .certs
            .iter()
            .any(|c| c.kind == CertKind::Tls && c.serial == serial_hex && c.revoked.is_none())
        {
            return Err(RegistryError::PermissionDenied(
                "this TLS certificate is revoked or not registered for the server".into(),
            ));
        }
        Ok(server_id)
    }

    /// Checks a TLS client certificate presented for an administrative call: chain, role,
    /// issued through this registry, not revoked. Returns "administrator NAME".
    pub fn authorize_admin(&self, peer_cert: Option<&[u8]>) -> Result<String> {
        let info = self.verified_peer(
            peer_cert,
            Role::Admin,
            "administrative calls need an administrator client certificate",
            "not an administrator",
        )?;
        match self.lock().admin_certs.get(&info.serial_hex()) {
            None => {
                return Err(RegistryError::PermissionDenied(
                    "administrator certificate was not issued through this registry".into(),
                ));
            }
            Some(c) if c.revoked.is_some() => {
                return Err(RegistryError::PermissionDenied(
                    "administrator certificate has been revoked".into(),
                ));
            }
            Some(_) => {}
        }
        match info.identity {
            Identity::Admin { name, .. } => Ok(format!("administrator {name}")),
            _ => Err(RegistryError::PermissionDenied(
                "not an administrator".into(),
            )),
        }
    }
}

/// Fields of a registration request, as received.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub server_id: String,
    pub address: String,
    pub tls_csr: Vec<u8>,
    pub signing_csr: Vec<u8>,
    pub log_csr: Vec<u8>,
    pub clients: Vec<String>,
    pub member_name: String,
    pub enrolment_token: String,
    /// The requester's address as the connection showed it (empty: unknown).
    pub source: String,
    /// The TLS client certificate the request came with (DER), if any: a registered
    /// server's current one makes the request a renewal it authenticated.
    pub peer_cert: Option<Vec<u8>>,
}

impl Registry {
    /// A pending request, to be decided in a change; it leaves the pending set when the
    /// change is durable (`Change::settle`), under the state's lock, so it cannot be
    /// decided twice.
    fn pending_rec(&self, state: &State, request_id: &str) -> Result<RegistrationRec> {
        if let Some(rec) = state.registrations.get(request_id) {
            return Err(RegistryError::FailedPrecondition(format!(
                "registration {request_id} was already decided ({:?})",
                rec.state
            )));
        }
        let rec = self.pending_set().get(request_id).cloned().ok_or_else(|| {
            RegistryError::NotFound(format!("no registration request '{request_id}'"))
        })?;
        if rec.submitted_at + self.policy.registration.ttl_secs <= self.now() {
            return Err(RegistryError::FailedPrecondition(format!(
                "registration {request_id} expired undecided; the server must register again"
            )));
        }
        Ok(rec)
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    use aws_lc_rs::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| internal("random number generator failed"))?;
    Ok(lintas_certs::hex(&buf))
}

/// A grant names a method (or none) and a client or `group:CODE`.
fn check_grant(g: &gc::AccessGrant) -> std::result::Result<(), String> {
    let method_ok = g.method.len() <= 128
        && g.method.starts_with(|c: char| c.is_ascii_alphabetic())
        && g.method
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !g.method.is_empty() && !method_ok {
        return Err(format!("grant method '{}' is not a method name", g.method));
    }
    // Checked in full by the provider's server; here only bounded and printable.
    let path_ok = g.path.len() <= 1024
        && (g.path.is_empty() || g.path.starts_with('/'))
        && g.path.bytes().all(|b| b.is_ascii_graphic());
    if !path_ok {
        return Err(format!("grant path '{}' is not a path pattern", g.path));
    }
    match g.subject.strip_prefix("group:") {
        Some(code) => Code::parse_part(code, "group code")
            .map(|_| ())
            .map_err(|e| format!("grant subject: {e}")),
        None => g
            .subject
            .parse::<ClientId>()
            .map(|_| ())
            .map_err(|e| format!("grant subject: {e}")),
    }
}

#[cfg(test)]
mod tests;
