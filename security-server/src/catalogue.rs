//! The service catalogue as a consumer sees it: which providers offer which services,
//! who may call them, and their descriptors (fetched from the registry by the hash the
//! signed configuration lists, and kept in memory).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use lintas_globalconf::VerifiedConf;
use lintas_identifiers::{ClientId, MemberId, SubsystemId};
use lintas_proto::globalconf::v1 as gc;
use prost_reflect::{DescriptorPool, ServiceDescriptor};
use tonic::{Code, Status};

use crate::access::Subject;
use crate::conf_view::ConfView;
use crate::errors::{ErrorSource, error};
use crate::registry_link::RegistryLink;

/// The catalogue of the configuration in force, described with descriptor pools fetched
/// from the registry and kept by the SHA-256 of their encoded set.
pub struct Catalogue {
    conf: Arc<ConfView>,
    registry: RegistryLink,
    descriptors: Mutex<HashMap<[u8; 32], DescriptorPool>>,
    /// Descriptor sets whose fetch failed lately, and when: calls do not wait on them
    /// again for [`SHAPE_RETRY`].
    unfetched: Mutex<HashMap<[u8; 32], std::time::Instant>>,
}

/// How long a call does not wait again for descriptors whose fetch failed.
const SHAPE_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a call waits for the descriptors that say whether it streams.
const SHAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Descriptor sets kept in memory, at most; beyond, one is dropped for each new one.
const MAX_CACHED: usize = 4096;

/// How long the registry may take to hand out one descriptor set.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn unavailable(message: String) -> Status {
    error(Code::Unavailable, ErrorSource::ConsumerServer, message)
}

/// A service in the catalogue with its descriptor, if one was published.
pub struct Described {
    pub entry: gc::ServiceRef,
    pub service: Option<ServiceDescriptor>,
}

impl Described {
    pub fn methods(&self) -> Vec<String> {
        self.service
            .iter()
            .flat_map(|s| s.methods().map(|m| m.name().to_owned()))
            .collect()
    }
}

/// Whether `grant` lets `client` call `method` (None: any method of the service).
fn grant_covers(
    conf: &VerifiedConf,
    grant: &gc::AccessGrant,
    client: &ClientId,
    method: Option<&str>,
) -> bool {
    let method_ok = grant.method.is_empty() || method.is_none_or(|m| m == grant.method);
    method_ok
        && Subject::parse_wire(&grant.subject).is_ok_and(|subject| subject.covers(conf, client))
}

/// The endpoints (HTTP method or `*`, path pattern or `**`) of a REST service's grants,
/// of those that cover `client` when one is named, each once.
pub fn rest_endpoints(
    conf: &VerifiedConf,
    entry: &gc::ServiceRef,
    client: Option<&ClientId>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = entry
        .grants
        .iter()
        .filter(|g| client.is_none_or(|c| grant_covers(conf, g, c, None)))
        .map(|g| {
            let method = if g.method.is_empty() { "*" } else { &g.method };
            let path = if g.path.is_empty() { "**" } else { &g.path };
            (method.to_owned(), path.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether any grant of `entry` lets `client` call something.
pub fn may_call_any(conf: &VerifiedConf, entry: &gc::ServiceRef, client: &ClientId) -> bool {
    entry
        .grants
        .iter()
        .any(|g| grant_covers(conf, g, client, None))
}

/// The methods of a described service that `client` may call, by the catalogue's
/// grants; `None` when it may call none. Without descriptors only the methods granted by
/// name are known, so a grant of the whole service gives an empty list.
pub fn allowed_methods(
    conf: &VerifiedConf,
    d: &Described,
    client: &ClientId,
) -> Option<Vec<String>> {
    if !may_call_any(conf, &d.entry, client) {
        return None;
    }
    let known = d.methods();
    if known.is_empty() {
        let mut named: Vec<String> = d
            .entry
            .grants
            .iter()
            .filter(|g| !g.method.is_empty() && grant_covers(conf, g, client, None))
            .map(|g| g.method.clone())
            .collect();
        named.sort();
        named.dedup();
        let whole = d
            .entry
            .grants
            .iter()
            .any(|g| g.method.is_empty() && grant_covers(conf, g, client, None));
        return Some(if whole { Vec::new() } else { named });
    }
    // A REST service's grants name HTTP methods: each generated method is allowed by
    // the grants of its own (the path is the provider's to check).
    let verb_of = |m: &str| -> Option<String> {
        let method = d.service.as_ref()?.methods().find(|x| x.name() == m)?;
        crate::openapi_descriptors::rule(&method)
            .ok()
            .map(|r| r.verb)
    };
    let allowed: Vec<String> = known
        .into_iter()
        .filter(|m| {
            let granted = if d.entry.rest {
                verb_of(m)
            } else {
                Some(m.clone())
            };
            granted.is_some_and(|g_method| {
                d.entry
                    .grants
                    .iter()
                    .any(|g| grant_covers(conf, g, client, Some(&g_method)))
            })
        })
        .collect();
    (!allowed.is_empty()).then_some(allowed)
}

/// The quotas of `entry` that hold `client`: for each scope (the service, a method),
/// the client's own quota if there is one, else the one for every client. `None`:
/// every quota, as published.
pub fn quotas_for(entry: &gc::ServiceRef, client: Option<&ClientId>) -> Vec<gc::Quota> {
    let Some(client) = client.map(ToString::to_string) else {
        return entry.quotas.clone();
    };
    let own = |q: &gc::Quota| q.client == client;
    entry
        .quotas
        .iter()
        .filter(|q| {
            own(q)
                || (q.client.is_empty()
                    && !entry
                        .quotas
                        .iter()
                        .any(|other| other.method == q.method && own(other)))
        })
        .cloned()
        .collect()
}

/// The members of the instance and their subsystems, with the member's name.
pub fn clients(conf: &VerifiedConf) -> Vec<(ClientId, String)> {
    let mut out = Vec::new();
    for m in &conf.conf.members {
        let Ok(member) = m.id.parse::<MemberId>() else {
            continue;
        };
        out.push((ClientId::Member(member.clone()), m.name.clone()));
        for code in &m.subsystems {
            if let Ok(sub) = format!("{member}/{code}").parse::<SubsystemId>() {
                out.push((ClientId::Subsystem(sub), m.name.clone()));
            }
        }
    }
    out
}

impl Catalogue {
    pub fn new(conf: Arc<ConfView>, registry: RegistryLink) -> Self {
        Catalogue {
            conf,
            registry,
            descriptors: Mutex::default(),
            unfetched: Mutex::default(),
        }
    }

    /// Whether `method` of `provider` streams (in either direction), by the descriptors
    /// the catalogue lists for its service; false when none were published or they
    /// cannot be had now (a failed fetch is not waited on again for a while).
    pub(crate) async fn streams(
        &self,
        conf: &VerifiedConf,
        provider: &SubsystemId,
        method: &lintas_identifiers::MethodPath,
    ) -> bool {
        let provider = provider.to_string();
        let Some(entry) = conf
            .conf
            .services
            .iter()
            .find(|s| s.provider == provider && s.service == method.service.as_str())
        else {
            return false;
        };
        let Ok(key) = <[u8; 32]>::try_from(entry.descriptor_sha256.as_slice()) else {
            return false;
        };
        let pool = match self.cached_pool(&key) {
            Some(p) => p,
            None => {
                let recently_failed = self
                    .unfetched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                    .is_some_and(|t| t.elapsed() < SHAPE_RETRY);
                if recently_failed {
                    return false;
                }
                match tokio::time::timeout(SHAPE_TIMEOUT, self.descriptor_pool(&key)).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        let mut failed = self.unfetched.lock().unwrap_or_else(|p| p.into_inner());
                        if failed.len() >= MAX_CACHED {
                            failed.clear();
                        }
                        failed.insert(key, std::time::Instant::now());
                        return false;
                    }
                }
            }
        };
        pool.get_service_by_name(method.service.as_str())
            .and_then(|s| s.methods().find(|m| m.name() == method.method))
            .is_some_and(|m| m.is_client_streaming() || m.is_server_streaming())
    }

    /// The linked descriptors published under `hash`, if held in memory.
    fn cached_pool(&self, hash: &[u8]) -> Option<DescriptorPool> {
        let key: [u8; 32] = hash.try_into().ok()?;
        self.descriptors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }

    /// The linked descriptors published under `hash`, from memory or the registry.
    pub(crate) async fn descriptor_pool(&self, hash: &[u8]) -> Result<DescriptorPool, Status> {
        let key: [u8; 32] = hash
            .try_into()
            .map_err(|_| unavailable("the catalogue lists a malformed descriptor hash".into()))?;
        if let Some(p) = self.cached_pool(hash) {
            return Ok(p);
        }
        let set = self.fetch(key).await?;
        let pool = crate::descriptors::pool(&set).map_err(unavailable)?;
        let mut cache = self.descriptors.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED
            && let Some(evicted) = cache.keys().next().copied()
        {
            cache.remove(&evicted);
        }
        cache.insert(key, pool.clone());
        Ok(pool)
    }

    /// The bytes the catalogue lists under `key` (a descriptor set or an OpenAPI
    /// document), from the registry, checked against the hash.
    async fn fetch(&self, key: [u8; 32]) -> Result<Vec<u8>, Status> {
        let mut registry = self
            .registry
            .registration()
            .map_err(|e| unavailable(format!("registry: {e}")))?
            .max_decoding_message_size(crate::descriptors::MAX_DESCRIPTOR_BYTES + 1024);
        let fetch =
            registry.get_service_descriptor(lintas_proto::registry::v1::ServiceDescriptorRequest {
                sha256: key.to_vec(),
            });
        let bytes = tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "the registry did not answer within {} s",
                    FETCH_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|s| unavailable(format!("fetching from the registry: {}", s.message())))?
            .into_inner()
            .descriptor_set;
        if lintas_certs::sha256(&bytes) != key {
            return Err(unavailable(
                "the registry answered with bytes that do not match the catalogue's hash".into(),
            ));
        }
        Ok(bytes)
    }

    /// A REST service's OpenAPI document, as its provider published it.
    pub(crate) async fn openapi_document(&self, entry: &gc::ServiceRef) -> Result<Vec<u8>, Status> {
        let key: [u8; 32] = entry.openapi_sha256.as_slice().try_into().map_err(|_| {
            error(
                Code::NotFound,
                ErrorSource::ConsumerServer,
                format!(
                    "service {} was published without an OpenAPI document",
                    entry.service
                ),
            )
        })?;
        self.fetch(key).await
    }

    /// The configuration a discovery answer is made from: fetched out of turn first
    /// (at most every few seconds), so a service or grant published since the last
    /// poll shows at once rather than a poll interval later.
    pub(crate) async fn discovery_conf(&self) -> Result<Arc<VerifiedConf>, Status> {
        self.conf.freshest(ErrorSource::ConsumerServer).await
    }

    /// `service` of `provider` as the catalogue lists it, with its descriptor.
    pub(crate) async fn described(
        &self,
        conf: &VerifiedConf,
        provider: &SubsystemId,
        service: &str,
    ) -> Result<Described, Status> {
        let provider_text = provider.to_string();
        let entry = conf
            .conf
            .services
            .iter()
            .find(|s| s.provider == provider_text && s.service == service)
            .cloned()
            .ok_or_else(|| {
                error(
                    Code::NotFound,
                    ErrorSource::ConsumerServer,
                    format!("the catalogue lists no service {service} of {provider}"),
                )
            })?;
        self.describe(entry).await
    }

    pub(crate) async fn describe(&self, entry: gc::ServiceRef) -> Result<Described, Status> {
        if entry.descriptor_sha256.is_empty() {
            return Ok(Described {
                entry,
                service: None,
            });
        }
        let pool = self.descriptor_pool(&entry.descriptor_sha256).await?;
        let service = pool.get_service_by_name(&entry.service);
        Ok(Described { entry, service })
    }

    /// Every service of the catalogue (of one provider, if given; only those `caller`
    /// may call, if given), described. A service whose descriptors cannot be had now is
    /// listed without them rather than failing the whole list.
    pub(crate) async fn list(
        &self,
        conf: &VerifiedConf,
        provider: Option<&SubsystemId>,
        caller: Option<&ClientId>,
    ) -> Vec<Described> {
        self.describe_all(entries(conf, provider, caller).into_values())
            .await
    }

    /// One page of [`Catalogue::list`], by provider and service, and the next page's
    /// token: only the services on the page are described.
    pub(crate) async fn list_page(
        &self,
        conf: &VerifiedConf,
        provider: Option<&SubsystemId>,
        caller: Option<&ClientId>,
        token: &str,
        size: usize,
    ) -> Result<(Vec<Described>, String), Status> {
        let all = entries(conf, provider, caller);
        let keyed = all
            .iter()
            .map(|((p, s), entry)| (format!("{p} {s}"), entry));
        let (page, next) = lintas_proto::paging::page(keyed, token, size)
            .map_err(|e| error(Code::InvalidArgument, ErrorSource::ConsumerServer, e))?;
        Ok((self.describe_all(page.into_iter()).await, next))
    }

    async fn describe_all(&self, entries: impl Iterator<Item = gc::ServiceRef>) -> Vec<Described> {
        let mut out = Vec::new();
        // After one failed fetch the registry is not asked again for this list: the rest
        // come from memory or are listed without descriptors.
        let mut registry_failed = false;
        for entry in entries {
            let described = if registry_failed {
                let service = self
                    .cached_pool(&entry.descriptor_sha256)
                    .and_then(|p| p.get_service_by_name(&entry.service));
                Ok(Described {
                    entry: entry.clone(),
                    service,
                })
            } else {
                self.describe(entry.clone()).await
            };
            match described {
                Ok(d) => out.push(d),
                Err(e) => {
                    registry_failed = true;
                    tracing::warn!(service = %entry.service, provider = %entry.provider, error = %e.message(), "descriptors unavailable; listed without them");
                    out.push(Described {
                        entry,
                        service: None,
                    });
                }
            }
        }
        out
    }
}

/// The catalogue's services (of one provider, if given; only those `caller` may call,
/// if given), one entry per provider and service (the first server listing it: the
/// servers of one provider publish the same services).
fn entries(
    conf: &VerifiedConf,
    provider: Option<&SubsystemId>,
    caller: Option<&ClientId>,
) -> BTreeMap<(String, String), gc::ServiceRef> {
    let provider = provider.map(ToString::to_string);
    let mut entries = BTreeMap::new();
    for s in &conf.conf.services {
        if provider.as_ref().is_some_and(|p| *p != s.provider)
            || caller.is_some_and(|c| !may_call_any(conf, s, c))
        {
            continue;
        }
        entries
            .entry((s.provider.clone(), s.service.clone()))
            .or_insert_with(|| s.clone());
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_sees_its_own_quotas_in_place_of_those_for_every_client() {
        let quota = |method: &str, client: &str, calls| gc::Quota {
            method: method.into(),
            client: client.into(),
            calls,
            per_secs: 60,
            burst: calls,
        };
        let bansos = "ID/GOV/KEMENSOS/BANSOS";
        let every = quota("", "", 100);
        let get_every = quota("Get", "", 10);
        let get_bansos = quota("Get", bansos, 50);
        let other_own = quota("", "ID/GOV/BPJS/KESEHATAN", 7);
        let entry = gc::ServiceRef {
            quotas: vec![
                every.clone(),
                get_every.clone(),
                get_bansos.clone(),
                other_own.clone(),
            ],
            ..Default::default()
        };
        let cases: &[(Option<&str>, Vec<&gc::Quota>)] = &[
            (Some(bansos), vec![&every, &get_bansos]),
            (Some("ID/GOV/BPJS/KESEHATAN"), vec![&get_every, &other_own]),
            (Some("ID/GOV/OTHER/X"), vec![&every, &get_every]),
            (None, vec![&every, &get_every, &get_bansos, &other_own]),
        ];
        for (client, want) in cases {
            let client = client.map(|c| c.parse::<ClientId>().unwrap());
            let got = quotas_for(&entry, client.as_ref());
            let want: Vec<gc::Quota> = want.iter().map(|q| (*q).clone()).collect();
            assert_eq!(got, want, "{client:?}");
        }
    }
}
