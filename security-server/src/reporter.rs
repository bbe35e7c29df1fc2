//! The service report: this server tells the registry's catalogue which services it
//! provides, who may call them, their descriptor sets and whether it is in maintenance.

use std::sync::Arc;

use lintas_proto::registry::v1 as reg;

use crate::SsError;
use crate::access::Access;
use crate::maintenance::Maintenance;
use crate::registry_link::RegistryLink;

pub struct ServiceReporter {
    access: Arc<Access>,
    maintenance: Arc<Maintenance>,
    registry: RegistryLink,
    /// Held across a report, from reading the services to the registry's answer: a
    /// report can then never land after a newer one.
    reporting: tokio::sync::Mutex<()>,
}

impl ServiceReporter {
    pub fn new(access: Arc<Access>, maintenance: Arc<Maintenance>, registry: RegistryLink) -> Self {
        ServiceReporter {
            access,
            maintenance,
            registry,
            reporting: tokio::sync::Mutex::new(()),
        }
    }

    /// Wakes when services, grants or maintenance changed and a report is due.
    pub async fn changed(&self) {
        self.access.services_changed.notified().await
    }

    /// Reports the services this server provides to the registry's catalogue, over
    /// mutual TLS with this server's certificate. Returns the configuration serial
    /// listing them.
    pub async fn report(&self) -> Result<u64, SsError> {
        let _one_at_a_time = self.reporting.lock().await;
        let grants = self.access.grants();
        let quotas = self.access.quotas();
        // The sets the report names, from the same snapshot, by hash.
        let mut sets = std::collections::HashMap::new();
        let services = self
            .access
            .services()
            .into_iter()
            .map(|s| reg::ReportedService {
                grants: grants
                    .iter()
                    .filter(|g| g.provider == s.provider && g.service == s.service)
                    .map(|g| lintas_proto::globalconf::v1::AccessGrant {
                        method: g.method.clone().unwrap_or_default(),
                        subject: g.subject.wire(),
                        path: g.path.clone().unwrap_or_default(),
                    })
                    .collect(),
                quotas: quotas
                    .iter()
                    .filter(|q| q.provider == s.provider && q.service == s.service)
                    .map(crate::quotas::Quota::published)
                    .collect(),
                provider: s.provider.to_string(),
                service: s.service.to_string(),
                rest: s.rest,
                large_messages: s.large_messages,
                topic: s.topic,
                openapi_sha256: match s.openapi {
                    Some(doc) => {
                        let hash = lintas_certs::sha256(&doc).to_vec();
                        sets.insert(hash.clone(), doc);
                        hash
                    }
                    None => Vec::new(),
                },
                descriptor_sha256: match s.descriptor_set {
                    Some(set) => {
                        let hash = lintas_certs::sha256(&set).to_vec();
                        sets.insert(hash.clone(), set);
                        hash
                    }
                    None => Vec::new(),
                },
            })
            .collect();
        let report = reg::ServiceReport {
            services,
            maintenance: self.maintenance.reason().is_some(),
        };
        let mut registry = self.registry.registration()?;
        let reply = registry.report_services(report.clone()).await?.into_inner();
        if reply.missing_descriptors.is_empty() {
            return Ok(reply.conf_serial);
        }
        // The registry lacks some descriptor sets: upload them, then report again.
        let mut catalogue = self
            .registry
            .catalogue()?
            .max_encoding_message_size(crate::descriptors::MAX_DESCRIPTOR_BYTES + 1024);
        for hash in &reply.missing_descriptors {
            let set = sets.remove(hash).ok_or_else(|| {
                SsError::InvalidInput(format!(
                    "the registry asked for descriptor set {}, which this report does not name",
                    lintas_certs::hex(hash)
                ))
            })?;
            catalogue
                .upload_descriptor(reg::ServiceDescriptor {
                    descriptor_set: set,
                })
                .await?;
        }
        let reply = registry.report_services(report).await?.into_inner();
        if !reply.missing_descriptors.is_empty() {
            return Err(SsError::InvalidInput(format!(
                "the registry still lacks {} descriptor set(s) after they were uploaded",
                reply.missing_descriptors.len()
            )));
        }
        Ok(reply.conf_serial)
    }
}
