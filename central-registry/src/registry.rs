//! The registry's logic: registrations, members, groups, certificates, and publishing the
//! signed global configuration after every change.
//!
//! State lives in memory behind one mutex; every operation computes its change, persists
//! it through the [`RegistryStore`] as one durable batch together with the newly signed
//! configuration and an audit record, and only then updates memory and answers. Calls are
//! synchronous (the store flushes); the gRPC layer runs them on the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lintas_certs::ca::{CsrKey, Validity};
use lintas_certs::{Ca, CertInfo, Identity, KeyPair, Profile, Role, TrustStore};
use lintas_globalconf::{Clock, iso8601, unix_secs};
use lintas_identifiers::{ClientId, Code, MemberId, ServerId, SubsystemId};
use lintas_proto::globalconf::v1 as gc;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::store::{Put, RegistryStore};

/// Longest free-text field (names, reasons, descriptions).
pub const MAX_TEXT: usize = 256;
/// Most subsystems one registration may ask to host.
pub const MAX_CLIENTS: usize = 1000;

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
    #[error("registry internal error: {0}")]
    Internal(String),
}

type Result<T> = std::result::Result<T, RegistryError>;

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
}

impl IssuedCert {
    fn new(kind: CertKind, der: &[u8]) -> Result<Self> {
        let info = CertInfo::parse(der).map_err(internal)?;
        Ok(IssuedCert {
            kind,
            serial: info.serial_hex(),
            der_hex: lintas_certs::hex(der),
            not_after: info.not_after_unix(),
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
    pub address: String,
    pub clients: BTreeSet<SubsystemId>,
    pub certs: Vec<IssuedCert>,
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
    pub address: String,
    pub clients: Vec<SubsystemId>,
    pub member_name: String,
    pub tls_csr_hex: String,
    pub signing_csr_hex: String,
    pub tls_key_fingerprint: String,
    pub signing_key_fingerprint: String,
    pub state: RegState,
    pub reason: String,
    pub submitted_at: i64,
    pub decided_at: i64,
    pub decided_by: String,
    pub tls_cert_hex: String,
    pub signing_cert_hex: String,
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
    audit_seq: u64,
    conf_serial: u64,
}

/// A pending change: the records to write. Memory is updated only after it is durable.
#[derive(Default)]
struct Change {
    puts: Vec<Put>,
}

impl Change {
    fn put<T: Serialize>(&mut self, key: String, value: &T) -> Result<()> {
        let value = serde_json::to_vec(value).map_err(internal)?;
        self.puts.push(Put { key, value });
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(key: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| internal(format!("stored record {key}: {e}")))
}

/// Keys and material the registry signs and issues with.
pub struct Keys {
    pub ca: Ca,
    pub conf_key: KeyPair,
    pub conf_cert: Vec<u8>,
    pub tsa_cert: Vec<u8>,
}

/// Settings the registry logic needs from its configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub instance: Code,
    pub conf_validity: Duration,
    pub cert_validity: Duration,
    pub token_ttl: Duration,
}

/// The registry.
pub struct Registry {
    state: Mutex<State>,
    store: Arc<dyn RegistryStore>,
    keys: Keys,
    policy: Policy,
    clock: Arc<dyn Clock>,
    trust: TrustStore,
    /// The newest signed global configuration, served as is.
    latest: RwLock<Arc<Vec<u8>>>,
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
        let mut state = State::default();
        let mut latest = Vec::new();
        for (key, value) in store.load().map_err(internal)? {
            let (kind, id) = key.split_once('/').unwrap_or((key.as_str(), ""));
            match kind {
                "member" => {
                    let m: MemberRec = decode(&key, &value)?;
                    state.members.insert(m.id.clone(), m);
                }
                "server" => {
                    let s: ServerRec = decode(&key, &value)?;
                    state.servers.insert(s.id.clone(), s);
                }
                "registration" => {
                    let r: RegistrationRec = decode(&key, &value)?;
                    state.registrations.insert(r.request_id.clone(), r);
                }
                "group" => {
                    let g: GroupRec = decode(&key, &value)?;
                    state.groups.insert(g.code.clone(), g);
                }
                "token" => {
                    let t: TokenRec = decode(&key, &value)?;
                    state.tokens.insert(t.hash.clone(), t);
                }
                "admincert" => {
                    let c: IssuedCert = decode(&key, &value)?;
                    state.admin_certs.insert(c.serial.clone(), c);
                }
                "audit" => {
                    let seq = u64::from_str_radix(id, 16).unwrap_or(0);
                    state.audit_seq = state.audit_seq.max(seq + 1);
                }
                "conf" => {
                    let m: ConfMeta = decode(&key, &value)?;
                    state.conf_serial = m.serial;
                    latest = lintas_certs::unhex(&m.blob_hex).ok_or_else(|| {
                        internal("stored global configuration is not hexadecimal")
                    })?;
                }
                other => return Err(internal(format!("unknown record kind '{other}'"))),
            }
        }
        let trust = TrustStore::new([keys.ca.cert_der()]).map_err(internal)?;
        Ok(Registry {
            state: Mutex::new(state),
            store,
            keys,
            policy,
            clock,
            trust,
            latest: RwLock::new(Arc::new(latest)),
        })
    }

    fn now(&self) -> i64 {
        unix_secs(self.clock.now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Applies `mutate` to a copy of the state, signs the resulting configuration, writes
    /// records + configuration + audit entry in one durable batch, then swaps the state in.
    fn commit<T>(
        &self,
        actor: &str,
        mutate: impl FnOnce(&mut State, &mut Change) -> Result<(T, String)>,
    ) -> Result<T> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let mut change = Change::default();
        let (out, action) = mutate(&mut next, &mut change)?;
        let blob = self.publish_into(&mut next, &mut change)?;
        let seq = next.audit_seq;
        next.audit_seq += 1;
        change.put(
            format!("audit/{seq:016x}"),
            &AuditRec {
                at: self.now(),
                actor: actor.to_owned(),
                action: action.clone(),
            },
        )?;
        self.store.apply(change.puts).map_err(internal)?;
        *guard = next;
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(blob);
        tracing::info!(actor, action = %action, serial = guard.conf_serial, "registry change");
        Ok(out)
    }

    /// Re-signs the configuration with a new serial and expiry (periodic refresh).
    pub fn republish(&self, actor: &str, why: &str) -> Result<u64> {
        self.commit(actor, |state, _| {
            Ok((state.conf_serial + 1, why.to_owned()))
        })
    }

    fn publish_into(&self, state: &mut State, change: &mut Change) -> Result<Vec<u8>> {
        state.conf_serial += 1;
        let conf = self.build_conf(state);
        let blob = lintas_globalconf::sign(&conf, &self.keys.conf_key, &self.keys.conf_cert)
            .map_err(internal)?;
        change.put(
            "conf/latest".into(),
            &ConfMeta {
                serial: state.conf_serial,
                blob_hex: lintas_certs::hex(&blob),
            },
        )?;
        Ok(blob)
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
                    // The newest usable TLS certificate identifies the server.
                    let tls = s
                        .certs
                        .iter()
                        .filter(usable)
                        .filter(|c| c.kind == CertKind::Tls)
                        .max_by_key(|c| c.not_after);
                    gc::SecurityServer {
                        id: s.id.to_string(),
                        address: s.address.clone(),
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
                    }
                })
                .collect(),
            approved_cas: vec![self.keys.ca.cert_der().to_vec()],
            timestamping_authorities: vec![gc::TimestampingAuthority {
                name: format!("{} registry TSA", self.policy.instance),
                url: String::new(),
                cert: self.keys.tsa_cert.clone(),
            }],
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
        }
    }

    // ----- registration (open to any TLS client) -----

    /// Records a registration request. With a valid enrolment token it is approved at once.
    pub fn submit(&self, req: Submission) -> Result<RegistrationRec> {
        let server_id: ServerId = req.server_id.parse().map_err(|e| invalid("server_id", e))?;
        server_id
            .owner
            .ensure_instance(&self.policy.instance)
            .map_err(|e| invalid("server_id", e))?;
        check_address(&req.address)?;
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
        let request_id = random_hex(16)?;
        let token_hash = if req.enrolment_token.is_empty() {
            None
        } else {
            Some(lintas_certs::hex(&lintas_certs::sha256(
                req.enrolment_token.as_bytes(),
            )))
        };
        let now = self.now();
        let rec = RegistrationRec {
            request_id: request_id.clone(),
            server_id: server_id.clone(),
            address: req.address.clone(),
            clients,
            member_name: req.member_name.clone(),
            tls_csr_hex: lintas_certs::hex(&req.tls_csr),
            signing_csr_hex: lintas_certs::hex(&req.signing_csr),
            tls_key_fingerprint: tls_key.fingerprint(),
            signing_key_fingerprint: signing_key.fingerprint(),
            state: RegState::Pending,
            reason: String::new(),
            submitted_at: now,
            decided_at: 0,
            decided_by: String::new(),
            tls_cert_hex: String::new(),
            signing_cert_hex: String::new(),
        };
        let actor = format!("server {server_id}");
        self.commit(&actor, |state, change| {
            if let Some(p) = state
                .registrations
                .values()
                .find(|r| r.server_id == server_id && r.state == RegState::Pending)
            {
                return Err(RegistryError::AlreadyExists(format!(
                    "a registration for {server_id} is already pending since {}; an administrator must approve or reject it first",
                    iso8601(p.submitted_at)
                )));
            }
            let mut rec = rec;
            if let Some(hash) = &token_hash {
                let token = state.tokens.get_mut(hash).ok_or_else(|| {
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
                change.put(format!("token/{hash}"), &*token)?;
                self.approve_into(state, change, &mut rec, "enrolment-token", &tls_key, &signing_key)?;
            }
            change.put(format!("registration/{request_id}"), &rec)?;
            state.registrations.insert(request_id.clone(), rec.clone());
            let action = format!(
                "submitted registration {} for {server_id} at {} ({})",
                &request_id[..8],
                rec.address,
                if token_hash.is_some() { "approved by enrolment token" } else { "pending" }
            );
            Ok((rec, action))
        })
    }

    pub fn status(&self, request_id: &str) -> Result<RegistrationRec> {
        self.lock()
            .registrations
            .get(request_id)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound("no registration request with that id".into()))
    }

    // ----- administration -----

    pub fn list_registrations(&self, state: Option<RegState>) -> Vec<RegistrationRec> {
        let mut out: Vec<_> = self
            .lock()
            .registrations
            .values()
            .filter(|r| state.is_none_or(|s| r.state == s))
            .cloned()
            .collect();
        out.sort_by_key(|r| r.submitted_at);
        out
    }

    pub fn approve(&self, admin: &str, request_id: &str) -> Result<RegistrationRec> {
        self.commit(admin, |state, change| {
            let mut rec = pending(state, request_id)?;
            let tls = CsrKey::from_der(&lintas_certs::unhex(&rec.tls_csr_hex).unwrap_or_default())
                .map_err(internal)?;
            let sign =
                CsrKey::from_der(&lintas_certs::unhex(&rec.signing_csr_hex).unwrap_or_default())
                    .map_err(internal)?;
            self.approve_into(state, change, &mut rec, admin, &tls, &sign)?;
            change.put(format!("registration/{request_id}"), &rec)?;
            state
                .registrations
                .insert(request_id.to_owned(), rec.clone());
            let action = format!(
                "approved registration {} of {}",
                &request_id[..8.min(request_id.len())],
                rec.server_id
            );
            Ok((rec, action))
        })
    }

    /// Issues the certificates, creates member, subsystems and server, marks approved.
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
        let host = check_address(&rec.address)?;
        let tls = self
            .keys
            .ca
            .issue(
                tls_key,
                &Profile::Server {
                    id: rec.server_id.clone(),
                    hosts: vec![host],
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
        change.put(format!("member/{owner}"), &*member)?;

        let server = state
            .servers
            .entry(rec.server_id.clone())
            .or_insert_with(|| ServerRec {
                id: rec.server_id.clone(),
                address: rec.address.clone(),
                clients: BTreeSet::new(),
                certs: Vec::new(),
            });
        server.address = rec.address.clone();
        server.clients.extend(rec.clients.iter().cloned());
        server.certs.push(IssuedCert::new(CertKind::Tls, &tls)?);
        server
            .certs
            .push(IssuedCert::new(CertKind::Signing, &signing)?);
        change.put(format!("server/{}", server.id), &*server)?;

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
        self.commit(admin, |state, change| {
            let mut rec = pending(state, request_id)?;
            rec.state = RegState::Rejected;
            rec.reason = reason.to_owned();
            rec.decided_at = self.now();
            rec.decided_by = admin.to_owned();
            change.put(format!("registration/{request_id}"), &rec)?;
            state
                .registrations
                .insert(request_id.to_owned(), rec.clone());
            let action = format!("rejected registration of {}: {reason}", rec.server_id);
            Ok((rec, action))
        })
    }

    pub fn add_member(&self, admin: &str, id: &str, name: &str) -> Result<u64> {
        let id: MemberId = id.parse().map_err(|e| invalid("id", e))?;
        id.ensure_instance(&self.policy.instance)
            .map_err(|e| invalid("id", e))?;
        check_text("name", name)?;
        if name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        self.commit(admin, |state, change| {
            if state.members.contains_key(&id) {
                return Err(RegistryError::AlreadyExists(format!("member {id} exists")));
            }
            let m = MemberRec {
                id: id.clone(),
                name: name.to_owned(),
                subsystems: BTreeSet::new(),
            };
            change.put(format!("member/{id}"), &m)?;
            state.members.insert(id.clone(), m);
            Ok((state.conf_serial + 1, format!("added member {id} ({name})")))
        })
    }

    pub fn add_subsystem(&self, admin: &str, id: &str) -> Result<u64> {
        let id: SubsystemId = id.parse().map_err(|e| invalid("id", e))?;
        self.commit(admin, |state, change| {
            let m = state.members.get_mut(&id.member).ok_or_else(|| {
                RegistryError::NotFound(format!("member {} is not registered", id.member))
            })?;
            if !m.subsystems.insert(id.subsystem.clone()) {
                return Err(RegistryError::AlreadyExists(format!(
                    "subsystem {id} exists"
                )));
            }
            change.put(format!("member/{}", id.member), &*m)?;
            Ok((state.conf_serial + 1, format!("added subsystem {id}")))
        })
    }

    pub fn members(&self) -> Vec<MemberRec> {
        self.lock().members.values().cloned().collect()
    }

    pub fn servers(&self) -> Vec<ServerRec> {
        self.lock().servers.values().cloned().collect()
    }

    pub fn add_group(&self, admin: &str, code: &str, description: &str) -> Result<u64> {
        let code = Code::parse_part(code, "group code").map_err(|e| invalid("code", e))?;
        check_text("description", description)?;
        self.commit(admin, |state, change| {
            if state.groups.contains_key(&code) {
                return Err(RegistryError::AlreadyExists(format!("group {code} exists")));
            }
            let g = GroupRec {
                code: code.clone(),
                description: description.to_owned(),
                members: BTreeSet::new(),
            };
            change.put(format!("group/{code}"), &g)?;
            state.groups.insert(code.clone(), g);
            Ok((state.conf_serial + 1, format!("added global group {code}")))
        })
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
        self.commit(admin, |state, change| {
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
            change.put(format!("group/{code}"), &*g)?;
            Ok((state.conf_serial + 1, action))
        })
    }

    /// Revokes a certificate by hex serial; it disappears from the next configuration and
    /// its serial is listed as revoked.
    pub fn revoke(&self, admin: &str, serial: &str, reason: &str) -> Result<u64> {
        let serial = lintas_certs::unhex(serial)
            .map(|b| lintas_certs::hex(&b))
            .ok_or_else(|| invalid("serial", "not a hexadecimal serial number"))?;
        check_text("reason", reason)?;
        let at = self.now();
        self.commit(admin, |state, change| {
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
                    change.put(format!("server/{}", server.id), &*server)?;
                    return Ok((state.conf_serial + 1, action));
                }
            }
            if let Some(c) = state.admin_certs.get_mut(&serial) {
                if c.revoked.is_some() {
                    return Err(already(c));
                }
                c.revoked = Some(revocation);
                change.put(format!("admincert/{serial}"), &*c)?;
                return Ok((
                    state.conf_serial + 1,
                    format!("revoked admin certificate {serial}"),
                ));
            }
            Err(RegistryError::NotFound(format!(
                "no certificate with serial {serial} was issued by this registry"
            )))
        })
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
        if ttl > Duration::from_secs(30 * 86400) {
            return Err(invalid("ttl_seconds", "at most 30 days"));
        }
        let token = random_hex(20)?;
        let hash = lintas_certs::hex(&lintas_certs::sha256(token.as_bytes()));
        let expires_at = self.now() + ttl.as_secs() as i64;
        self.commit(admin, |state, change| {
            let rec = TokenRec {
                hash: hash.clone(),
                server_id: server_id.clone(),
                expires_at,
                used: false,
            };
            change.put(format!("token/{hash}"), &rec)?;
            state.tokens.insert(hash.clone(), rec);
            Ok((
                (token.clone(), expires_at),
                format!(
                    "created enrolment token for {server_id}, valid until {}",
                    iso8601(expires_at)
                ),
            ))
        })
    }

    /// Records an administrator certificate issued outside the API (at `init`), so it can
    /// be revoked later.
    pub fn record_admin_cert(&self, actor: &str, der: &[u8]) -> Result<()> {
        let cert = IssuedCert::new(CertKind::Admin, der)?;
        self.commit(actor, |state, change| {
            change.put(format!("admincert/{}", cert.serial), &cert)?;
            let action = format!("recorded admin certificate {}", cert.serial);
            state.admin_certs.insert(cert.serial.clone(), cert);
            Ok(((), action))
        })
    }

    /// Checks a TLS client certificate presented for an administrative call. Returns the
    /// administrator's name.
    pub fn authorize_admin(&self, peer_cert: Option<&[u8]>) -> Result<String> {
        let der = peer_cert.ok_or_else(|| {
            RegistryError::PermissionDenied(
                "administrative calls need an administrator client certificate".into(),
            )
        })?;
        let info = self
            .trust
            .verify(der, Role::Admin, self.clock.now())
            .map_err(|e| RegistryError::PermissionDenied(format!("not an administrator: {e}")))?;
        if self
            .lock()
            .admin_certs
            .get(&info.serial_hex())
            .is_some_and(|c| c.revoked.is_some())
        {
            return Err(RegistryError::PermissionDenied(
                "administrator certificate has been revoked".into(),
            ));
        }
        match info.identity {
            Identity::Admin { name, .. } => Ok(name.to_string()),
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
    pub clients: Vec<String>,
    pub member_name: String,
    pub enrolment_token: String,
}

fn pending(state: &State, request_id: &str) -> Result<RegistrationRec> {
    let rec = state.registrations.get(request_id).ok_or_else(|| {
        RegistryError::NotFound(format!("no registration request '{request_id}'"))
    })?;
    if rec.state != RegState::Pending {
        return Err(RegistryError::FailedPrecondition(format!(
            "registration {request_id} was already decided ({:?})",
            rec.state
        )));
    }
    Ok(rec.clone())
}

/// `host:port` with a non-zero port; returns the host (brackets removed for IPv6).
pub fn check_address(address: &str) -> Result<String> {
    let bad = |why: &str| invalid("address", format!("'{address}' {why}; expected host:port"));
    if address.len() > 255 {
        return Err(bad("is too long"));
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("has an invalid port"))?;
    if port == 0 {
        return Err(bad("has port 0"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    if !valid {
        return Err(bad("has an invalid host"));
    }
    Ok(host.to_owned())
}

fn random_hex(bytes: usize) -> Result<String> {
    use aws_lc_rs::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| internal("random number generator failed"))?;
    Ok(lintas_certs::hex(&buf))
}
