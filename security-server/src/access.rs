//! What this server provides and who may call it: services (a provider subsystem's gRPC
//! service mapped to the application endpoint that implements it, or a REST service
//! code mapped to the base URL of its backend) and access grants (a client or a global
//! group may call a whole service, one method, or for a REST service one HTTP method
//! and path pattern). Kept in memory for every call, written through to sled, changed
//! without a restart.

use std::collections::BTreeMap;
use std::sync::RwLock;

use lintas_globalconf::VerifiedConf;
use lintas_identifiers::{ClientId, Code, MethodPath, ServiceName, SubsystemId};
use serde::{Deserialize, Serialize};

use crate::SsError;
use crate::quotas::{Limiter, Quota};

/// A provided service and where its application listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub provider: SubsystemId,
    pub service: ServiceName,
    /// `http://host:port`, or `https://host:port` with `ca_pem`; for a REST service the
    /// base URL of its backend, which may have a path (`http://host:port/api/v1`).
    pub endpoint: String,
    /// A REST service: calls are passed through to the backend as HTTP requests.
    #[serde(default)]
    pub rest: bool,
    /// A gRPC service whose messages may be larger than `max_message_bytes`: published,
    /// so that consumers' servers carry every unary call to it framed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub large_messages: bool,
    /// A topic this provider publishes events on (see the events module), not a service
    /// called: it has no endpoint, and its grants say who may subscribe.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub topic: bool,
    /// PEM certificates trusted for an `https://` endpoint (the application's own
    /// certificate or its CA).
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// The service's descriptors (an encoded `FileDescriptorSet`), published in the
    /// catalogue; `None` when the application gave none. Stored as base64.
    #[serde(default, with = "base64_bytes")]
    pub descriptor_set: Option<Vec<u8>>,
    /// A REST service's OpenAPI document, as the administrator gave it (its
    /// descriptors are generated from it), published in the catalogue. Stored as base64.
    #[serde(
        default,
        with = "base64_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub openapi: Option<Vec<u8>>,
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    /// A member (all its subsystems) or one subsystem.
    Client(ClientId),
    /// Every member of a global group of the instance.
    Group(Code),
}

impl Subject {
    /// As written in grants on the wire: a client identifier, or `group:CODE`.
    pub fn wire(&self) -> String {
        match self {
            Subject::Client(c) => c.to_string(),
            Subject::Group(code) => format!("group:{code}"),
        }
    }

    pub fn parse_wire(text: &str) -> Result<Subject, String> {
        match text.strip_prefix("group:") {
            Some(code) => Ok(Subject::Group(
                Code::parse_part(code, "group code").map_err(|e| e.to_string())?,
            )),
            None => Ok(Subject::Client(
                text.parse::<ClientId>().map_err(|e| e.to_string())?,
            )),
        }
    }

    /// Whether this subject covers `client`: the subsystem itself, its member, or a global
    /// group of `conf` that lists either.
    pub fn covers(&self, conf: &VerifiedConf, client: &ClientId) -> bool {
        match self {
            Subject::Client(ClientId::Subsystem(s)) => {
                matches!(client, ClientId::Subsystem(c) if c == s)
            }
            Subject::Client(ClientId::Member(m)) => m == client.member(),
            Subject::Group(code) => {
                let as_client = client.to_string();
                let as_member = client.member().to_string();
                conf.conf.groups.iter().any(|g| {
                    g.code == code.as_str()
                        && g.members.iter().any(|m| *m == as_client || *m == as_member)
                })
            }
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Client(c) => write!(f, "{c}"),
            Subject::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// The right to call a service (every method, or one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub provider: SubsystemId,
    pub service: ServiceName,
    /// `None`: every method of the service. For a REST service an HTTP method.
    pub method: Option<String>,
    pub subject: Subject,
    /// For a REST service, the path pattern the grant is limited to (see
    /// [`crate::endpoints`]); `None`: any path.
    #[serde(default)]
    pub path: Option<String>,
}

/// A local application's TLS client certificate, registered for one client (a hosted
/// subsystem, or the member that owns the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCert {
    pub client: ClientId,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
    /// Unix seconds.
    pub not_after: i64,
}

type ServiceKey = (SubsystemId, ServiceName);

pub struct Access {
    tree: sled::Tree,
    /// Serialises changes, so memory and disk see them in the same order; readers only
    /// take the short in-memory locks and never wait for a disk flush.
    writing: std::sync::Mutex<()>,
    services: RwLock<BTreeMap<ServiceKey, ServiceEntry>>,
    grants: RwLock<Vec<Grant>>,
    client_certs: RwLock<BTreeMap<[u8; 32], ClientCert>>,
    /// How often clients may call, and their buckets.
    quotas: RwLock<Vec<Quota>>,
    limiter: Limiter,
    /// Woken whenever services or grants change (both are reported to the registry's
    /// catalogue).
    pub services_changed: tokio::sync::Notify,
}

/// `http://host:port` without a CA, or `https://host:port` with parseable CA certificates;
/// a REST service's base URL may go on with a path (no query or fragment).
pub(crate) fn check_endpoint(entry: &ServiceEntry) -> Result<(), SsError> {
    let bad = |why: &str| SsError::InvalidInput(format!("endpoint '{}': {why}", entry.endpoint));
    if entry.topic {
        return match (
            entry.endpoint.is_empty(),
            entry.rest || entry.large_messages,
        ) {
            (_, true) => Err(SsError::InvalidInput(
                "a topic is neither a REST service nor one with large messages".into(),
            )),
            (false, _) => Err(bad(
                "a topic has no endpoint: its events are published to it",
            )),
            (true, false) => Ok(()),
        };
    }
    let (tls, rest) = if let Some(rest) = entry.endpoint.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = entry.endpoint.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, p),
        None => (rest, ""),
    };
    if !path.is_empty() && !entry.rest {
        return Err(bad(
            "only a REST service's base URL may have a path; a gRPC application is host:port",
        ));
    }
    if path.contains(['?', '#']) || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(bad(
            "the path may not have a query, a fragment, spaces or control characters",
        ));
    }
    authority
        .parse::<lintas_identifiers::HostPort>()
        .map_err(|e| bad(&e.to_string()))?;
    match (&entry.ca_pem, tls) {
        (Some(pem), true) => {
            lintas_certs::pem::certs_from_pem(pem, "CA certificates")
                .map_err(|e| bad(&e.to_string()))?;
        }
        (None, true) => return Err(bad("an https endpoint needs the CA certificates to trust")),
        (Some(_), false) => return Err(bad("CA certificates are only for https endpoints")),
        (None, false) => {}
    }
    Ok(())
}

fn fingerprint_bytes(hex: &str) -> Result<[u8; 32], SsError> {
    lintas_certs::unhex(hex)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| SsError::InvalidInput(format!("'{hex}' is not a SHA-256 fingerprint")))
}

/// A key of the state store and its value.
pub type StoredEntry = (Vec<u8>, Vec<u8>);

impl Access {
    pub fn open(db: &sled::Db) -> Result<Self, SsError> {
        let tree = db.open_tree(Self::TREE).map_err(crate::state_error)?;
        let mut services = BTreeMap::new();
        let mut grants = Vec::new();
        let mut client_certs = BTreeMap::new();
        let mut quotas = Vec::new();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(crate::state_error)?;
            if k.starts_with(b"service/") {
                let s: ServiceEntry = serde_json::from_slice(&v).map_err(crate::state_error)?;
                services.insert((s.provider.clone(), s.service.clone()), s);
            } else if k.starts_with(b"grant/") {
                grants.push(serde_json::from_slice(&v).map_err(crate::state_error)?);
            } else if k.starts_with(b"clientcert/") {
                let c: ClientCert = serde_json::from_slice(&v).map_err(crate::state_error)?;
                client_certs.insert(fingerprint_bytes(&c.fingerprint)?, c);
            } else if k.starts_with(b"quota/") {
                let q: Quota = serde_json::from_slice(&v).map_err(crate::state_error)?;
                q.check().map_err(|why| {
                    crate::state_error(format!("quota {} is unusable: {why}", q.key()))
                })?;
                quotas.push(q);
            }
        }
        grants.sort();
        quotas.sort();
        Ok(Access {
            tree,
            writing: std::sync::Mutex::new(()),
            services: RwLock::new(services),
            grants: RwLock::new(grants),
            client_certs: RwLock::new(client_certs),
            quotas: RwLock::new(quotas),
            limiter: Limiter::default(),
            services_changed: tokio::sync::Notify::new(),
        })
    }

    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every stored entry (key, value), read under the write lock so the copy is one
    /// state, for a backup.
    pub fn export(&self) -> Result<Vec<StoredEntry>, SsError> {
        let _writing = self.write_lock();
        self.tree
            .iter()
            .map(|kv| {
                kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(crate::state_error)
            })
            .collect()
    }

    /// The state store's tree.
    pub const TREE: &'static str = "access";

    fn persist(&self, key: String, value: Option<Vec<u8>>) -> Result<(), SsError> {
        match value {
            Some(v) => self
                .tree
                .insert(key.as_bytes(), v)
                .map_err(crate::state_error)?,
            None => self
                .tree
                .remove(key.as_bytes())
                .map_err(crate::state_error)?,
        };
        self.tree.flush().map_err(crate::state_error)?;
        Ok(())
    }

    /// Adds or replaces a service mapping.
    pub fn add_service(&self, entry: ServiceEntry) -> Result<(), SsError> {
        check_endpoint(&entry)?;
        let _writing = self.write_lock();
        let key = format!("service/{}/{}", entry.provider, entry.service);
        self.persist(
            key,
            Some(serde_json::to_vec(&entry).map_err(crate::state_error)?),
        )?;
        self.services
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((entry.provider.clone(), entry.service.clone()), entry);
        self.services_changed.notify_one();
        Ok(())
    }

    pub fn remove_service(
        &self,
        provider: &SubsystemId,
        service: &ServiceName,
    ) -> Result<bool, SsError> {
        let _writing = self.write_lock();
        let key = (provider.clone(), service.clone());
        if !self
            .services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key)
        {
            return Ok(false);
        }
        self.persist(format!("service/{provider}/{service}"), None)?;
        self.services
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        self.services_changed.notify_one();
        Ok(true)
    }

    pub fn services(&self) -> Vec<ServiceEntry> {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn service(&self, provider: &SubsystemId, service: &ServiceName) -> Option<ServiceEntry> {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(provider.clone(), service.clone()))
            .cloned()
    }

    fn grant_key(g: &Grant) -> String {
        let path = match &g.path {
            Some(p) => format!(" {p}"),
            None => String::new(),
        };
        format!(
            "grant/{}/{}/{}/{}{path}",
            g.provider,
            g.service,
            g.method.as_deref().unwrap_or("*"),
            g.subject
        )
    }

    /// Adds a grant; false if it already existed.
    pub fn grant(&self, grant: Grant) -> Result<bool, SsError> {
        let _writing = self.write_lock();
        if self.grants().contains(&grant) {
            return Ok(false);
        }
        self.persist(
            Self::grant_key(&grant),
            Some(serde_json::to_vec(&grant).map_err(crate::state_error)?),
        )?;
        let mut grants = self.grants.write().unwrap_or_else(|p| p.into_inner());
        grants.push(grant);
        grants.sort();
        self.services_changed.notify_one();
        Ok(true)
    }

    /// Removes a grant; false if there was none.
    pub fn revoke(&self, grant: &Grant) -> Result<bool, SsError> {
        let _writing = self.write_lock();
        if !self.grants().contains(grant) {
            return Ok(false);
        }
        self.persist(Self::grant_key(grant), None)?;
        self.grants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g| g != grant);
        self.services_changed.notify_one();
        Ok(true)
    }

    pub fn grants(&self) -> Vec<Grant> {
        self.grants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets a quota, replacing the one for the same service, method and client; answers
    /// with the one it replaced.
    pub fn set_quota(&self, quota: Quota) -> Result<Option<Quota>, SsError> {
        quota.check().map_err(SsError::InvalidInput)?;
        let _writing = self.write_lock();
        let key = quota.key();
        self.persist(
            key.clone(),
            Some(serde_json::to_vec(&quota).map_err(crate::state_error)?),
        )?;
        let mut quotas = self.quotas.write().unwrap_or_else(|p| p.into_inner());
        let before = quotas
            .iter()
            .position(|q| q.key() == key)
            .map(|i| quotas.remove(i));
        quotas.push(quota);
        quotas.sort();
        self.services_changed.notify_one();
        Ok(before)
    }

    /// Removes the quota with `key` ([`Quota::key`]); answers with it, if there was one.
    pub fn remove_quota(&self, key: &str) -> Result<Option<Quota>, SsError> {
        let _writing = self.write_lock();
        let Some(found) = self.quotas().into_iter().find(|q| q.key() == key) else {
            return Ok(None);
        };
        self.persist(key.to_owned(), None)?;
        self.quotas
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|q| q.key() != key);
        self.limiter.forget(key);
        self.services_changed.notify_one();
        Ok(Some(found))
    }

    pub fn quotas(&self) -> Vec<Quota> {
        self.quotas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes one call of `client` to `method` of `provider` from the quotas it is held
    /// to, or refuses: how long until it may call again.
    pub fn take_quota(
        &self,
        client: &ClientId,
        provider: &SubsystemId,
        method: &MethodPath,
        now: std::time::Instant,
    ) -> Result<(), crate::quotas::Over> {
        let quotas = self.quotas.read().unwrap_or_else(|p| p.into_inner());
        let held =
            crate::quotas::applicable(&quotas, client, provider, &method.service, &method.method);
        self.limiter.take(&held, client, now)
    }

    /// Gives back a call [`Access::take_quota`] took for a request refused afterwards.
    pub fn give_back_quota(&self, client: &ClientId, provider: &SubsystemId, method: &MethodPath) {
        let quotas = self.quotas.read().unwrap_or_else(|p| p.into_inner());
        let held =
            crate::quotas::applicable(&quotas, client, provider, &method.service, &method.method);
        self.limiter.give_back(&held, client);
    }

    /// Registers a local application's certificate for `client`. A certificate acts for
    /// one subsystem only.
    pub fn add_client_cert(&self, client: ClientId, der: &[u8]) -> Result<ClientCert, SsError> {
        let (_, not_after) = lintas_certs::verify::certificate_validity(der)
            .map_err(|e| SsError::InvalidInput(e.to_string()))?;
        let hash = lintas_certs::sha256(der);
        let _writing = self.write_lock();
        if let Some(existing) = self
            .client_certs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
        {
            return Err(SsError::InvalidInput(format!(
                "this certificate is already registered for {}",
                existing.client
            )));
        }
        let cert = ClientCert {
            client,
            fingerprint: lintas_certs::hex(&hash),
            not_after: lintas_certs::unix_secs(not_after),
        };
        self.persist(
            format!("clientcert/{}", cert.fingerprint),
            Some(serde_json::to_vec(&cert).map_err(crate::state_error)?),
        )?;
        self.client_certs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, cert.clone());
        Ok(cert)
    }

    /// Removes a registered certificate by its fingerprint; false if unknown.
    pub fn remove_client_cert(&self, fingerprint: &str) -> Result<bool, SsError> {
        let hash = fingerprint_bytes(fingerprint)?;
        let _writing = self.write_lock();
        if self.client_for_cert_at(&hash, i64::MIN).is_none() {
            return Ok(false);
        }
        self.persist(format!("clientcert/{}", lintas_certs::hex(&hash)), None)?;
        self.client_certs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash);
        Ok(true)
    }

    pub fn client_certs(&self) -> Vec<ClientCert> {
        self.client_certs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The subsystem a certificate (by SHA-256) is registered for, if any and if the
    /// certificate has not expired.
    pub fn client_for_cert(&self, hash: &[u8; 32]) -> Option<ClientId> {
        self.client_for_cert_at(hash, lintas_certs::unix_secs(std::time::SystemTime::now()))
    }

    fn client_for_cert_at(&self, hash: &[u8; 32], now: i64) -> Option<ClientId> {
        self.client_certs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .filter(|c| c.not_after > now)
            .map(|c| c.client.clone())
    }

    /// Whether `client` may call `method` of `provider`, directly or through a global
    /// group of `conf` that lists the client or its member. A REST call names its path
    /// (`rest_path`), which a grant's path pattern must match.
    pub fn allowed(
        &self,
        conf: &VerifiedConf,
        client: &ClientId,
        provider: &SubsystemId,
        method: &MethodPath,
        rest_path: Option<&str>,
    ) -> bool {
        self.grants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|g| &g.provider == provider && g.service == method.service)
            .filter(|g| match rest_path {
                Some(path) => crate::endpoints::matches(
                    g.method.as_deref(),
                    g.path.as_deref(),
                    &method.method,
                    path,
                ),
                None => g.path.is_none() && g.method.as_ref().is_none_or(|m| *m == method.method),
            })
            .any(|g| g.subject.covers(conf, client))
    }
}

#[cfg(test)]
mod tests;
