//! Local administration of a running server over a Unix socket (`admin.sock` in the data
//! directory, mode 0600): services and access grants, applied at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use lintas_identifiers::{ClientId, MethodPath, ServiceName, SubsystemId};
use lintas_proto::ss::v1 as pb;
use pb::security_server_admin_client::SecurityServerAdminClient;
use pb::security_server_admin_server::SecurityServerAdmin;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::SsError;
use crate::access::{Access, Grant, ServiceEntry, Subject};
use crate::evidence::Evidence;
use crate::maintenance::Maintenance;
use crate::opmon::OpMon;
use crate::own::Own;
use crate::pools::AppPool;

/// How long an application may take to describe its service by reflection.
const REFLECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The socket's file name inside the data directory.
pub const SOCKET: &str = "admin.sock";

/// What administration reads and changes.
pub struct AdminService {
    pub own: Arc<Own>,
    pub access: Arc<Access>,
    pub apps: Arc<AppPool>,
    pub evidence: Arc<Evidence>,
    pub health: lintas_ops::Health,
    pub maintenance: Arc<Maintenance>,
    pub opmon: Arc<OpMon>,
}

/// How long the backend may take to hand over its OpenAPI document.
const OPENAPI_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The OpenAPI document a REST service's backend serves at `path` under its base URL,
/// fetched with the client the service's calls use (its CA certificates for https).
async fn fetch_openapi(entry: &ServiceEntry, path: &str) -> Result<Vec<u8>, Status> {
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
        Status::failed_precondition(format!(
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

fn invalid(what: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{what}: {e}"))
}

impl AdminService {
    /// Runs a change to services, grants or client certificates on the blocking pool:
    /// each change is flushed to disk before it is answered.
    async fn change<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Access) -> Result<T, SsError> + Send + 'static,
    ) -> Result<T, Status> {
        let access = self.access.clone();
        tokio::task::spawn_blocking(move || f(&access))
            .await
            .map_err(|e| Status::internal(format!("admin task failed: {e}")))?
            .map_err(|e| match e {
                SsError::InvalidInput(m) => Status::invalid_argument(m),
                other => state(other),
            })
    }

    /// A subsystem hosted here (provider of a service, or owner of a client certificate).
    fn provider(&self, text: &str) -> Result<SubsystemId, Status> {
        let provider: SubsystemId = text.parse().map_err(|e| invalid("subsystem", e))?;
        if !self.own.hosts(&provider) {
            return Err(Status::failed_precondition(format!(
                "{provider} is not hosted on this server (see `clients` in ss.toml)"
            )));
        }
        Ok(provider)
    }

    fn grant(&self, g: pb::Grant) -> Result<Grant, Status> {
        let provider = self.provider(&g.provider)?;
        let service: ServiceName = g.service.parse().map_err(|e| invalid("service", e))?;
        let rest = self
            .access
            .service(&provider, &service)
            .is_some_and(|s| s.rest);
        let method = if g.method.is_empty() {
            None
        } else if rest {
            crate::endpoints::check_method(&g.method).map_err(|e| invalid("method", e))?;
            Some(g.method)
        } else {
            format!("/{service}/{}", g.method)
                .parse::<MethodPath>()
                .map_err(|e| invalid("method", e))?;
            Some(g.method)
        };
        let path = match (g.path.is_empty(), rest) {
            (true, _) => None,
            (false, true) => {
                crate::endpoints::check_pattern(&g.path).map_err(|e| invalid("path", e))?;
                Some(g.path)
            }
            (false, false) => {
                return Err(invalid(
                    "path",
                    format!(
                        "{service} of {provider} is not a REST service provided here; only REST grants have paths"
                    ),
                ));
            }
        };
        let subject = Subject::parse_wire(&g.subject).map_err(|e| invalid("subject", e))?;
        Ok(Grant {
            provider,
            service,
            method,
            subject,
            path,
        })
    }
}

/// Largest answer on the admin socket (an evidence bundle of many exchanges).
pub const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

fn state(e: SsError) -> Status {
    Status::internal(e.to_string())
}

fn reply(message: String) -> Response<pb::AdminReply> {
    Response::new(pb::AdminReply { message })
}

/// One page of `items` (each with the text it is ordered and filtered by), as `r` asks.
fn paged<T: Clone>(
    items: Vec<(String, T)>,
    r: &pb::ListRequest,
) -> Result<(Vec<T>, String), Status> {
    let kept = items
        .iter()
        .filter(|(key, _)| key.contains(&r.filter))
        .map(|(key, item)| (key.clone(), item));
    lintas_proto::paging::page(kept, &r.page_token, lintas_proto::paging::size(r.page_size))
        .map_err(Status::invalid_argument)
}

fn grant_to_pb(g: Grant) -> pb::Grant {
    pb::Grant {
        provider: g.provider.to_string(),
        service: g.service.to_string(),
        method: g.method.unwrap_or_default(),
        subject: g.subject.wire(),
        path: g.path.unwrap_or_default(),
    }
}

fn describe(g: &Grant) -> String {
    let what = match (&g.method, &g.path) {
        (None, None) => format!("every method of {}", g.service),
        (Some(m), None) => format!("{}/{m}", g.service),
        (m, Some(path)) => format!(
            "{} {path} of {}",
            m.as_deref().unwrap_or("any method"),
            g.service
        ),
    };
    format!("{} may call {what} of {}", g.subject, g.provider)
}

#[tonic::async_trait]
impl SecurityServerAdmin for AdminService {
    async fn add_service(
        &self,
        request: Request<pb::Service>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let s = request.into_inner();
        let mut entry = ServiceEntry {
            provider: self.provider(&s.provider)?,
            service: s.service.parse().map_err(|e| invalid("service", e))?,
            endpoint: s.endpoint,
            ca_pem: (!s.ca_pem.is_empty()).then_some(s.ca_pem),
            descriptor_set: None,
            rest: s.rest,
            large_messages: s.large_messages,
            openapi: None,
        };
        crate::access::check_endpoint(&entry).map_err(|e| invalid("service", e))?;
        if entry.rest && entry.large_messages {
            return Err(invalid(
                "large_messages",
                "a REST service's bodies travel in chunks whatever their size; --large-messages is for gRPC services",
            ));
        }
        if !entry.rest && !s.openapi.is_empty() {
            return Err(invalid(
                "openapi",
                "an OpenAPI document describes a REST service (--rest)",
            ));
        }
        if entry.rest {
            if !s.descriptor_set.is_empty() {
                return Err(invalid(
                    "descriptor_set",
                    "a REST service has no .proto descriptors; give its OpenAPI document instead",
                ));
            }
            let mut text = format!(
                "REST service {} of {} passes calls to {}; consumers call /r1/{}/{}/PATH",
                entry.service, entry.provider, entry.endpoint, entry.provider, entry.service
            );
            let document = match (s.openapi.is_empty(), s.openapi_path.is_empty()) {
                (false, true) => Some(s.openapi),
                (true, false) => Some(fetch_openapi(&entry, &s.openapi_path).await?),
                (true, true) => None,
                (false, false) => {
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
                let methods: Vec<&str> = described
                    .operations
                    .iter()
                    .map(|o| o.method.as_str())
                    .collect();
                text.push_str(&format!(
                    ", and gRPC consumers call service {code} (methods generated from its OpenAPI document: {})",
                    methods.join(", ")
                ));
                entry.descriptor_set = Some(described.descriptor_set);
                entry.openapi = Some(document);
            }
            self.change(move |a| a.add_service(entry)).await?;
            return Ok(reply(text));
        }
        let name = entry.service.to_string();
        // The descriptors the administrator gave, else those the application serves by
        // reflection. Without any, the service is provided but not discoverable.
        let described = if s.descriptor_set.is_empty() {
            let channel = self.apps.channel(&entry)?;
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
        } else {
            crate::descriptors::methods(&s.descriptor_set, &name)
                .map_err(|e| invalid("descriptor_set", e))?;
            Ok(s.descriptor_set)
        };
        let mut text = format!(
            "{} of {} is served by {}",
            entry.service, entry.provider, entry.endpoint
        );
        match described {
            Ok(set) => {
                let methods = crate::descriptors::methods(&set, &name).unwrap_or_default();
                text.push_str(&format!(
                    "; its descriptors are published (methods: {})",
                    methods.join(", ")
                ));
                entry.descriptor_set = Some(set);
            }
            Err(why) => text.push_str(&format!(
                "; no descriptors are published ({why}), so consumers cannot discover its methods or call it by REST"
            )),
        }
        self.change(move |a| a.add_service(entry)).await?;
        Ok(reply(text))
    }

    async fn remove_service(
        &self,
        request: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let r = request.into_inner();
        let provider = self.provider(&r.provider)?;
        let service: ServiceName = r.service.parse().map_err(|e| invalid("service", e))?;
        let (p, sv) = (provider.clone(), service.clone());
        if !self.change(move |a| a.remove_service(&p, &sv)).await? {
            return Err(Status::not_found(format!(
                "{provider} provides no service {service}"
            )));
        }
        Ok(reply(format!("{service} of {provider} removed")))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ServiceList>, Status> {
        let all = self
            .access
            .services()
            .into_iter()
            .map(|s| {
                let key = format!("{} {}", s.provider, s.service);
                let service = pb::Service {
                    methods: s
                        .descriptor_set
                        .as_deref()
                        .and_then(|d| crate::descriptors::methods(d, &s.service.to_string()).ok())
                        .unwrap_or_default(),
                    provider: s.provider.to_string(),
                    service: s.service.to_string(),
                    endpoint: s.endpoint,
                    ca_pem: s.ca_pem.unwrap_or_default(),
                    descriptor_set: Vec::new(),
                    rest: s.rest,
                    large_messages: s.large_messages,
                    openapi: Vec::new(),
                    openapi_path: String::new(),
                };
                (key, service)
            })
            .collect();
        let (services, next_page_token) = paged(all, request.get_ref())?;
        Ok(Response::new(pb::ServiceList {
            services,
            next_page_token,
        }))
    }

    async fn grant(&self, request: Request<pb::Grant>) -> Result<Response<pb::AdminReply>, Status> {
        let g = self.grant(request.into_inner())?;
        let text = describe(&g);
        if !self.change(move |a| a.grant(g)).await? {
            return Err(Status::already_exists(format!("already granted: {text}")));
        }
        Ok(reply(format!("granted: {text}")))
    }

    async fn revoke(
        &self,
        request: Request<pb::Grant>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let g = self.grant(request.into_inner())?;
        let text = describe(&g);
        if !self.change(move |a| a.revoke(&g)).await? {
            return Err(Status::not_found(format!("no such grant: {text}")));
        }
        Ok(reply(format!("revoked: {text}")))
    }

    async fn add_client_cert(
        &self,
        request: Request<pb::ClientCert>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let c = request.into_inner();
        let client: ClientId = c.client.parse().map_err(|e| invalid("client", e))?;
        if !self.own.serves(&client) {
            return Err(Status::failed_precondition(format!(
                "{client} does not call through this server: a client is a subsystem in `clients` of ss.toml, or the member that owns the server"
            )));
        }
        let cert = self
            .change(move |a| a.add_client_cert(client, &c.certificate))
            .await?;
        Ok(reply(format!(
            "certificate {} may now act for {}",
            cert.fingerprint, cert.client
        )))
    }

    async fn remove_client_cert(
        &self,
        request: Request<pb::ClientCertRef>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let fingerprint = request.into_inner().fingerprint;
        let fp = fingerprint.clone();
        let removed = self.change(move |a| a.remove_client_cert(&fp)).await?;
        if !removed {
            return Err(Status::not_found(format!(
                "no client certificate {fingerprint}"
            )));
        }
        Ok(reply(format!("certificate {fingerprint} removed")))
    }

    async fn list_client_certs(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ClientCertList>, Status> {
        let all = self
            .access
            .client_certs()
            .into_iter()
            .map(|c| {
                let key = format!("{} {}", c.client, c.fingerprint);
                let cert = pb::ClientCert {
                    client: c.client.to_string(),
                    certificate: Vec::new(),
                    fingerprint: c.fingerprint,
                    not_after: c.not_after,
                };
                (key, cert)
            })
            .collect();
        let (certs, next_page_token) = paged(all, request.get_ref())?;
        Ok(Response::new(pb::ClientCertList {
            certs,
            next_page_token,
        }))
    }

    async fn export_evidence(
        &self,
        request: Request<pb::EvidenceQuery>,
    ) -> Result<Response<lintas_proto::audit::v1::EvidenceBundle>, Status> {
        let q = request.into_inner();
        crate::evidence::check_query(&q).map_err(Status::invalid_argument)?;
        self.evidence
            .export(&q)
            .await
            .map(Response::new)
            .map_err(|e| Status::failed_precondition(e.to_string()))
    }

    type ExportEvidenceBundlesStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<lintas_proto::audit::v1::EvidenceBundle, Status>>
                + Send,
        >,
    >;

    async fn export_evidence_bundles(
        &self,
        request: Request<pb::EvidenceQuery>,
    ) -> Result<Response<Self::ExportEvidenceBundlesStream>, Status> {
        let q = request.into_inner();
        crate::evidence::check_query(&q).map_err(Status::invalid_argument)?;
        let per_bundle = match q.exchanges_per_bundle {
            0 => crate::evidence::MAX_EXCHANGES,
            n => (n as usize).min(crate::evidence::MAX_EXCHANGES),
        };
        let bundles = self
            .evidence
            .export_bundles(&q, per_bundle)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(bundles)
            .map(|b| b.map_err(|e| Status::failed_precondition(e.to_string())));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn log_status(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::LogStatusReply>, Status> {
        Ok(Response::new(self.evidence.log_status()))
    }

    async fn health(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::HealthReply>, Status> {
        let report = self.health.report();
        let reason = self.maintenance.reason();
        Ok(Response::new(pb::HealthReply {
            ready: report.ready,
            components: report
                .components
                .into_iter()
                .map(|c| pb::HealthComponent {
                    state: c.condition.state().into(),
                    reason: c.condition.reason().unwrap_or_default().into(),
                    name: c.name,
                })
                .collect(),
            maintenance: reason.is_some(),
            maintenance_reason: reason.unwrap_or_default(),
        }))
    }

    async fn set_maintenance(
        &self,
        request: Request<pb::MaintenanceRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let r = request.into_inner();
        if r.reason.len() > 1024 || r.reason.contains(['\n', '\r']) {
            return Err(Status::invalid_argument(
                "the reason must be one line of at most 1024 bytes",
            ));
        }
        let on = r.on.then(|| r.reason.trim().to_owned());
        self.maintenance
            .set(on)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        // The next service report publishes it in the global configuration.
        self.access.services_changed.notify_one();
        let message = if r.on {
            "maintenance on: readiness fails, exchanges in flight finish, new ones are refused; the registry publishes it with the next service report"
        } else {
            "maintenance off: new exchanges are accepted"
        };
        tracing::warn!(on = r.on, reason = %r.reason, "maintenance mode changed by the administrator");
        Ok(Response::new(pb::AdminReply {
            message: message.into(),
        }))
    }

    async fn operational_data(
        &self,
        request: Request<lintas_proto::opmon::v1::OpQuery>,
    ) -> Result<Response<lintas_proto::opmon::v1::OpPage>, Status> {
        let q = request.into_inner();
        let opmon = self.opmon.clone();
        opmon.settle().await;
        tokio::task::spawn_blocking(move || opmon.query(&q))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(Response::new)
            .map_err(|e| match e {
                SsError::InvalidInput(m) => Status::invalid_argument(m),
                e => Status::internal(e.to_string()),
            })
    }

    async fn archive_manifest(
        &self,
        _: Request<pb::ArchiveRequest>,
    ) -> Result<Response<lintas_proto::audit::v1::Archive>, Status> {
        self.evidence
            .archive_manifest()
            .await
            .map(Response::new)
            .map_err(|e| Status::failed_precondition(e.to_string()))
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::GrantList>, Status> {
        let all = self
            .access
            .grants()
            .into_iter()
            .map(grant_to_pb)
            .map(|g| {
                let key = format!("{} {} {} {}", g.provider, g.service, g.method, g.subject);
                (key, g)
            })
            .collect();
        let (grants, next_page_token) = paged(all, request.get_ref())?;
        Ok(Response::new(pb::GrantList {
            grants,
            next_page_token,
        }))
    }
}

/// Binds the admin socket at `path` (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, SsError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| SsError::Serve(format!("admin socket {}: {e}", path.display()));
    if path.exists() {
        // A socket nobody answers on is left over from a stopped server.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SsError::Serve(format!(
                "admin socket {} is in use: is this server already running?",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// A client for the admin socket of the server whose data directory is `dir`.
pub async fn connect(dir: &Path) -> Result<SecurityServerAdminClient<Channel>, SsError> {
    let path: PathBuf = dir.join(SOCKET);
    let shown = path.display().to_string();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| {
            SsError::Serve(format!(
                "cannot reach the running server at {shown}: {e} (is `lintas ss serve` running?)"
            ))
        })?;
    Ok(SecurityServerAdminClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES))
}
