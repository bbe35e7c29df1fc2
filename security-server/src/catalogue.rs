//! The service catalogue as a consumer sees it: which providers offer which services,
//! who may call them, and their descriptors (fetched from the registry by the hash the
//! signed configuration lists, and kept in memory).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use lintas_globalconf::VerifiedConf;
use lintas_identifiers::SubsystemId;
use lintas_proto::globalconf::v1 as gc;
use prost_reflect::{DescriptorPool, ServiceDescriptor};
use tonic::{Code, Status};

use crate::access::Subject;
use crate::daemon::{ErrorSource, SecurityServer, error};

/// Descriptor pools by the SHA-256 of their encoded set.
#[derive(Default)]
pub struct DescriptorCache(Mutex<HashMap<[u8; 32], DescriptorPool>>);

/// Descriptor sets kept in memory, at most; beyond, the cache starts again.
const MAX_CACHED: usize = 4096;

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
    client: &SubsystemId,
    method: Option<&str>,
) -> bool {
    let method_ok = grant.method.is_empty() || method.is_none_or(|m| m == grant.method);
    method_ok
        && Subject::parse_wire(&grant.subject).is_ok_and(|subject| subject.covers(conf, client))
}

/// The methods of a described service that `client` may call, by the catalogue's
/// grants. Without descriptors, only the method names granted one by one are known.
pub fn allowed_methods(conf: &VerifiedConf, d: &Described, client: &SubsystemId) -> Vec<String> {
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
        return named;
    }
    known
        .into_iter()
        .filter(|m| {
            d.entry
                .grants
                .iter()
                .any(|g| grant_covers(conf, g, client, Some(m)))
        })
        .collect()
}

impl SecurityServer {
    /// The linked descriptors published under `hash`, from memory or the registry.
    pub(crate) async fn descriptor_pool(&self, hash: &[u8]) -> Result<DescriptorPool, Status> {
        let key: [u8; 32] = hash
            .try_into()
            .map_err(|_| unavailable("the catalogue lists a malformed descriptor hash".into()))?;
        if let Some(p) = self
            .descriptors
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let mut registry = self
            .registry()
            .map_err(|e| unavailable(format!("registry: {e}")))?
            .max_decoding_message_size(crate::descriptors::MAX_DESCRIPTOR_BYTES + 1024);
        let set = registry
            .get_service_descriptor(lintas_proto::registry::v1::ServiceDescriptorRequest {
                sha256: key.to_vec(),
            })
            .await
            .map_err(|s| {
                unavailable(format!(
                    "fetching descriptors from the registry: {}",
                    s.message()
                ))
            })?
            .into_inner()
            .descriptor_set;
        if lintas_certs::sha256(&set) != key {
            return Err(unavailable(
                "the registry answered with descriptors that do not match the catalogue's hash"
                    .into(),
            ));
        }
        let pool = crate::descriptors::pool(&set).map_err(unavailable)?;
        let mut cache = self.descriptors.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, pool.clone());
        Ok(pool)
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

    /// Every service of the catalogue (of one provider, if given), described.
    pub(crate) async fn catalogue(
        &self,
        conf: &VerifiedConf,
        provider: Option<&SubsystemId>,
    ) -> Result<Vec<Described>, Status> {
        let provider = provider.map(ToString::to_string);
        // One entry per provider and service, whichever servers host it.
        let entries: BTreeMap<(String, String), gc::ServiceRef> = conf
            .conf
            .services
            .iter()
            .filter(|s| provider.as_ref().is_none_or(|p| *p == s.provider))
            .map(|s| ((s.provider.clone(), s.service.clone()), s.clone()))
            .collect();
        let mut out = Vec::new();
        for entry in entries.into_values() {
            out.push(self.describe(entry).await?);
        }
        Ok(out)
    }
}
