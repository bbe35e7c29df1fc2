//! Providing services: adding (with their descriptors, by reflection or from an OpenAPI
//! document), removing and listing them.

use lintas_identifiers::ServiceName;

use super::model::{ListQuery, Page, ServiceAdded, ServiceInfo, ServiceSpec};
use super::{Manage, ManageError, invalid, paged};
use crate::access::ServiceEntry;

/// How long an application may take to describe its service by reflection.
const REFLECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the backend may take to hand over its OpenAPI document.
const OPENAPI_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The OpenAPI document a REST service's backend serves at `path` under its base URL,
/// fetched with the client the service's calls use (its CA certificates for https).
async fn fetch_openapi(entry: &ServiceEntry, path: &str) -> Result<Vec<u8>, ManageError> {
    use http_body_util::BodyExt;
    crate::endpoints::check_path(path).map_err(|why| invalid("openapi_path", why))?;
    if path.is_empty() {
        return Err(invalid("openapi_path", "the path starts with /"));
    }
    let request = lintas_proto::exchange::v1::RestRequest {
        verb: "GET".into(),
        path: path.into(),
        ..Default::default()
    };
    let failed = |why: String| {
        ManageError::Precondition(format!(
            "fetching the OpenAPI document of {} from {}{path}: {why}",
            entry.service,
            entry.endpoint.trim_end_matches('/')
        ))
    };
    let answered = crate::backend::Backends::default()
        .send(crate::backend::Send {
            service: entry,
            request: &request,
            headers: Default::default(),
            added: Vec::new(),
            body: http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
            timeout: OPENAPI_FETCH_TIMEOUT,
        })
        .await
        .map_err(|u| failed(u.message))?;
    if !(200..300).contains(&answered.head.status) {
        return Err(failed(format!(
            "the backend answered HTTP {}",
            answered.head.status
        )));
    }
    let max = crate::openapi_descriptors::MAX_DOCUMENT_BYTES;
    let body = tokio::time::timeout(
        OPENAPI_FETCH_TIMEOUT,
        http_body_util::Limited::new(answered.body, max).collect(),
    )
    .await
    .map_err(|_| failed("the document did not arrive in time".into()))?
    .map_err(|e| failed(format!("{e} (at most {max} bytes)")))?;
    Ok(body.to_bytes().to_vec())
}

/// A stored service as listed.
pub(crate) fn info(s: &ServiceEntry) -> ServiceInfo {
    let methods = s
        .descriptor_set
        .as_deref()
        .and_then(|d| crate::descriptors::methods(d, &s.service.to_string()).ok())
        .unwrap_or_default();
    ServiceInfo {
        provider: s.provider.to_string(),
        service: s.service.to_string(),
        endpoint: s.endpoint.clone(),
        ca_pem: s.ca_pem.clone(),
        rest: s.rest,
        large_messages: s.large_messages,
        topic: s.topic,
        described: s.descriptor_set.is_some(),
        methods,
    }
}

impl Manage {
    /// Provides a service. A gRPC service's descriptors are those given, else those the
    /// application serves by reflection (without any, it is provided but not
    /// discoverable: `no_descriptors` says why). A REST service's are generated from its
    /// OpenAPI document, when one is given or fetched from the backend.
    pub async fn add_service(&self, s: ServiceSpec) -> Result<ServiceAdded, ManageError> {
        let mut entry = ServiceEntry {
            provider: self.hosted(&s.provider)?,
            service: s.service.parse().map_err(|e| invalid("service", e))?,
            endpoint: s.endpoint,
            ca_pem: s.ca_pem.filter(|c| !c.is_empty()),
            descriptor_set: None,
            rest: s.rest,
            large_messages: s.large_messages,
            topic: s.topic,
            openapi: None,
        };
        crate::access::check_endpoint(&entry).map_err(|e| invalid("endpoint", e))?;
        let openapi = s.openapi.filter(|d| !d.is_empty());
        let openapi_path = s.openapi_path.filter(|p| !p.is_empty());
        let descriptor_set = s.descriptor_set.filter(|d| !d.is_empty());
        if entry.rest && entry.large_messages {
            return Err(invalid(
                "large_messages",
                "a REST service's bodies travel in chunks whatever their size; large messages are for gRPC services",
            ));
        }
        if !entry.rest && (openapi.is_some() || openapi_path.is_some()) {
            return Err(invalid(
                "openapi",
                "an OpenAPI document describes a REST service (rest: true)",
            ));
        }
        let mut no_descriptors = None;
        if entry.topic {
            // Its events' payloads are the publisher's; nothing to describe.
        } else if entry.rest {
            if descriptor_set.is_some() {
                return Err(invalid(
                    "descriptor_set",
                    "a REST service has no .proto descriptors; give its OpenAPI document instead",
                ));
            }
            let document = match (openapi, openapi_path) {
                (Some(doc), None) => Some(doc.into_bytes()),
                (None, Some(path)) => Some(fetch_openapi(&entry, &path).await?),
                (None, None) => None,
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "openapi",
                        "give the document or the path the backend serves it at, not both",
                    ));
                }
            };
            if let Some(document) = document {
                let code = entry.service.to_string();
                let described = crate::openapi_descriptors::read(&document)
                    .and_then(|doc| crate::openapi_descriptors::describe(&code, &doc))
                    .map_err(|e| invalid("openapi", e))?;
                entry.descriptor_set = Some(described.descriptor_set);
                entry.openapi = Some(document);
            }
        } else {
            let name = entry.service.to_string();
            let described = match descriptor_set {
                Some(set) => {
                    crate::descriptors::methods(&set, &name)
                        .map_err(|e| invalid("descriptor_set", e))?;
                    Ok(set)
                }
                None => {
                    let channel = self
                        .apps
                        .channel(&entry)
                        .map_err(|s| invalid("endpoint", s.message()))?;
                    match tokio::time::timeout(
                        REFLECTION_TIMEOUT,
                        crate::descriptors::fetch(channel, &name),
                    )
                    .await
                    {
                        Ok(Ok(set)) => Ok(set),
                        Ok(Err(why)) => Err(why),
                        Err(_) => Err(format!(
                            "the application did not answer reflection within {} s",
                            REFLECTION_TIMEOUT.as_secs()
                        )),
                    }
                }
            };
            match described {
                Ok(set) => entry.descriptor_set = Some(set),
                Err(why) => no_descriptors = Some(why),
            }
        }
        let service = info(&entry);
        self.change(move |a| a.add_service(entry)).await?;
        Ok(ServiceAdded {
            service,
            no_descriptors,
        })
    }

    /// Stops providing a service; answers with what was removed.
    pub async fn remove_service(
        &self,
        provider: &str,
        service: &str,
    ) -> Result<ServiceInfo, ManageError> {
        let provider = self.hosted(provider)?;
        let service: ServiceName = service.parse().map_err(|e| invalid("service", e))?;
        let existing = self.access.service(&provider, &service).ok_or_else(|| {
            ManageError::NotFound(format!("{provider} provides no service {service}"))
        })?;
        let (p, sv) = (provider.clone(), service.clone());
        if !self.change(move |a| a.remove_service(&p, &sv)).await? {
            return Err(ManageError::NotFound(format!(
                "{provider} provides no service {service}"
            )));
        }
        Ok(info(&existing))
    }

    pub fn services(&self, q: &ListQuery) -> Result<Page<ServiceInfo>, ManageError> {
        let all = self
            .access
            .services()
            .iter()
            .map(|s| (format!("{} {}", s.provider, s.service), info(s)))
            .collect();
        paged(all, q)
    }
}
