//! Local administration of a running server over a Unix socket (`admin.sock` in the data
//! directory, mode 0600): a thin gRPC edge over the typed operations of `manage`. Whoever
//! can use the socket administers the server; each change is recorded in the admin audit
//! log under the socket peer's user id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use lintas_manage::{Action, Role};
use lintas_proto::ss::v1 as pb;
use pb::security_server_admin_client::SecurityServerAdminClient;
use pb::security_server_admin_server::SecurityServerAdmin;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::SsError;
use crate::manage::model::{
    self, GrantSpec, ListQuery, MaintenanceState, QuotaKey, QuotaSpec, ServiceSpec,
};
use crate::manage::{Manage, ManageError};

/// The socket's file name inside the data directory.
pub const SOCKET: &str = "admin.sock";

/// Largest answer on the admin socket (an evidence bundle of many exchanges).
pub const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

/// The admin socket's service.
pub struct AdminService(pub Arc<Manage>);

/// Who is on the other end of the socket, for the audit log.
fn socket_actor<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map_or_else(
            || "socket".into(),
            |cred| format!("socket:uid {}", cred.uid()),
        )
}

impl AdminService {
    /// Redelivers or discards dead letters, audited.
    async fn dead_letters_changed(
        &self,
        request: Request<pb::DeadLetterSelection>,
        redeliver: bool,
    ) -> Result<Response<pb::DeadLetterCount>, Status> {
        let actor = socket_actor(&request);
        let selection = crate::manage::model::DeadLetterSelection::from(request.into_inner());
        let target = crate::manage::dead_letters_target(&selection);
        let result = self.0.change_dead_letters(selection, redeliver).await;
        let action = if redeliver {
            "dead-letters.redeliver"
        } else {
            "dead-letters.discard"
        };
        let changed = self.audited(&actor, action, &target, result)?;
        Ok(Response::new(pb::DeadLetterCount {
            count: changed.count,
        }))
    }

    /// Records a change made through the socket and passes its result on.
    fn audited<T>(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        result: Result<T, ManageError>,
    ) -> Result<T, Status> {
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("failed: {e}"),
        };
        self.0
            .plane
            .audit
            .record(Action {
                actor: actor.into(),
                via: "socket".into(),
                from: "local".into(),
                action: action.into(),
                target: target.into(),
                outcome,
            })
            .map_err(|e| Status::internal(e.to_string()))?;
        result.map_err(Status::from)
    }
}

fn list_query(r: &pb::ListRequest) -> ListQuery {
    ListQuery {
        filter: r.filter.clone(),
        page_size: r.page_size,
        page_token: r.page_token.clone(),
    }
}

fn service_to_pb(s: model::ServiceInfo) -> pb::Service {
    pb::Service {
        provider: s.provider,
        service: s.service,
        endpoint: s.endpoint,
        ca_pem: s.ca_pem.unwrap_or_default(),
        methods: s.methods,
        rest: s.rest,
        large_messages: s.large_messages,
        topic: s.topic,
        described: s.described,
        ..Default::default()
    }
}

fn grant_to_pb(g: GrantSpec) -> pb::Grant {
    pb::Grant {
        provider: g.provider,
        service: g.service,
        method: g.method.unwrap_or_default(),
        subject: g.subject,
        path: g.path.unwrap_or_default(),
    }
}

fn cert_to_pb(c: model::ClientCertInfo) -> pb::ClientCert {
    pb::ClientCert {
        client: c.client,
        certificate: Vec::new(),
        fingerprint: c.fingerprint,
        not_after: c.not_after,
    }
}

fn user_to_pb(u: lintas_manage::users::UserInfo) -> pb::User {
    pb::User {
        name: u.name,
        roles: u.roles.iter().map(ToString::to_string).collect(),
        created: u.created,
    }
}

fn key_to_pb(k: lintas_manage::users::ApiKeyInfo, key: String) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id,
        name: k.name,
        roles: k.roles.iter().map(ToString::to_string).collect(),
        created: k.created,
        created_by: k.created_by,
        key,
    }
}

fn roles(names: &[String]) -> Result<Vec<Role>, ManageError> {
    names
        .iter()
        .map(|r| r.parse::<Role>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ManageError::Invalid(format!("roles: {e}")))
}

fn users_error(e: lintas_manage::users::UsersError) -> ManageError {
    use lintas_manage::users::UsersError as E;
    match e {
        E::Invalid { .. } => ManageError::Invalid(e.to_string()),
        E::Exists(_) => ManageError::Exists(e.to_string()),
        E::NotFound(_) => ManageError::NotFound(e.to_string()),
        E::LastAdministrator(_) => ManageError::Precondition(e.to_string()),
        _ => ManageError::Internal(e.to_string()),
    }
}

/// Runs a users change (slow: password hashing) on the blocking pool.
async fn users_change<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, lintas_manage::users::UsersError> + Send + 'static,
) -> Result<T, ManageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ManageError::Internal(format!("users task failed: {e}")))?
        .map_err(users_error)
}

#[tonic::async_trait]
impl SecurityServerAdmin for AdminService {
    async fn add_service(
        &self,
        request: Request<pb::Service>,
    ) -> Result<Response<pb::ServiceAdded>, Status> {
        let actor = socket_actor(&request);
        let s = request.into_inner();
        let target = format!("{} {}", s.provider, s.service);
        let openapi = match String::from_utf8(s.openapi) {
            Ok(text) => Ok(Some(text)),
            Err(_) => Err(ManageError::Invalid(
                "openapi: the document is not UTF-8 text".into(),
            )),
        };
        let result = match openapi {
            Ok(openapi) => {
                self.0
                    .add_service(ServiceSpec {
                        provider: s.provider,
                        service: s.service,
                        endpoint: s.endpoint,
                        ca_pem: Some(s.ca_pem),
                        rest: s.rest,
                        descriptor_set: Some(s.descriptor_set),
                        openapi,
                        openapi_path: Some(s.openapi_path),
                        large_messages: s.large_messages,
                        topic: s.topic,
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        let added = self.audited(&actor, "service.add", &target, result)?;
        Ok(Response::new(pb::ServiceAdded {
            service: Some(service_to_pb(added.service)),
            no_descriptors: added.no_descriptors.unwrap_or_default(),
        }))
    }

    async fn remove_service(
        &self,
        request: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::Service>, Status> {
        let actor = socket_actor(&request);
        let r = request.into_inner();
        let target = format!("{} {}", r.provider, r.service);
        let result = self.0.remove_service(&r.provider, &r.service).await;
        let removed = self.audited(&actor, "service.remove", &target, result)?;
        Ok(Response::new(service_to_pb(removed)))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ServiceList>, Status> {
        let page = self.0.services(&list_query(request.get_ref()))?;
        Ok(Response::new(pb::ServiceList {
            services: page.items.into_iter().map(service_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn grant(&self, request: Request<pb::Grant>) -> Result<Response<pb::Grant>, Status> {
        let actor = socket_actor(&request);
        let g = GrantSpec::from(request.into_inner());
        let target = crate::manage::api::grant_target(&g);
        let result = self.0.grant(g).await;
        let g = self.audited(&actor, "grant.add", &target, result)?;
        Ok(Response::new(grant_to_pb(g)))
    }

    async fn revoke(&self, request: Request<pb::Grant>) -> Result<Response<pb::Grant>, Status> {
        let actor = socket_actor(&request);
        let g = GrantSpec::from(request.into_inner());
        let target = crate::manage::api::grant_target(&g);
        let result = self.0.revoke(g).await;
        let g = self.audited(&actor, "grant.remove", &target, result)?;
        Ok(Response::new(grant_to_pb(g)))
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::GrantList>, Status> {
        let page = self.0.grants(&list_query(request.get_ref()))?;
        Ok(Response::new(pb::GrantList {
            grants: page.items.into_iter().map(grant_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn set_quota(&self, request: Request<pb::Quota>) -> Result<Response<pb::Quota>, Status> {
        let actor = socket_actor(&request);
        let q = QuotaSpec::from(request.into_inner());
        let target = crate::manage::api::quota_target(&q.clone().into());
        let result = self.0.set_quota(q).await;
        let q = self.audited(&actor, "quota.set", &target, result)?;
        Ok(Response::new(q.into()))
    }

    async fn remove_quota(
        &self,
        request: Request<pb::Quota>,
    ) -> Result<Response<pb::Quota>, Status> {
        let actor = socket_actor(&request);
        let key = QuotaKey::from(QuotaSpec::from(request.into_inner()));
        let target = crate::manage::api::quota_target(&key);
        let result = self.0.remove_quota(key).await;
        let q = self.audited(&actor, "quota.remove", &target, result)?;
        Ok(Response::new(q.into()))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::SubscriptionList>, Status> {
        let page = self.0.subscriptions(&list_query(request.get_ref()))?;
        Ok(Response::new(pb::SubscriptionList {
            subscriptions: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::DeadLetterSelection>,
    ) -> Result<Response<pb::DeadLetterList>, Status> {
        let letters = self.0.dead_letters(&request.into_inner().into())?;
        Ok(Response::new(pb::DeadLetterList {
            dead_letters: letters.into_iter().map(Into::into).collect(),
        }))
    }

    async fn end_subscription(
        &self,
        request: Request<pb::SubscriptionRef>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let actor = socket_actor(&request);
        let s = crate::manage::model::SubscriptionRef::from(request.into_inner());
        let target = crate::manage::subscription_target(&s);
        let result = self.0.end_subscription(s).await;
        let ended = self.audited(&actor, "subscription.end", &target, result)?;
        Ok(Response::new(ended.into()))
    }

    async fn redeliver_dead_letters(
        &self,
        request: Request<pb::DeadLetterSelection>,
    ) -> Result<Response<pb::DeadLetterCount>, Status> {
        self.dead_letters_changed(request, true).await
    }

    async fn discard_dead_letters(
        &self,
        request: Request<pb::DeadLetterSelection>,
    ) -> Result<Response<pb::DeadLetterCount>, Status> {
        self.dead_letters_changed(request, false).await
    }

    async fn list_quotas(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::QuotaList>, Status> {
        let page = self.0.quotas(&list_query(request.get_ref()))?;
        Ok(Response::new(pb::QuotaList {
            quotas: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn add_client_cert(
        &self,
        request: Request<pb::ClientCert>,
    ) -> Result<Response<pb::ClientCert>, Status> {
        let actor = socket_actor(&request);
        let c = request.into_inner();
        let target = format!("client certificate for {}", c.client);
        let result = self.0.add_client_cert(&c.client, c.certificate).await;
        let cert = self.audited(&actor, "client-cert.add", &target, result)?;
        Ok(Response::new(cert_to_pb(cert)))
    }

    async fn remove_client_cert(
        &self,
        request: Request<pb::ClientCertRef>,
    ) -> Result<Response<pb::ClientCert>, Status> {
        let actor = socket_actor(&request);
        let fingerprint = request.into_inner().fingerprint;
        let target = format!("client certificate {fingerprint}");
        let result = self.0.remove_client_cert(&fingerprint).await;
        let cert = self.audited(&actor, "client-cert.remove", &target, result)?;
        Ok(Response::new(cert_to_pb(cert)))
    }

    async fn list_client_certs(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ClientCertList>, Status> {
        let page = self.0.client_certs(&list_query(request.get_ref()))?;
        Ok(Response::new(pb::ClientCertList {
            certs: page.items.into_iter().map(cert_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn export_evidence(
        &self,
        request: Request<pb::EvidenceQuery>,
    ) -> Result<Response<lintas_proto::audit::v1::EvidenceBundle>, Status> {
        Ok(Response::new(
            self.0.export_evidence(request.get_ref()).await?,
        ))
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
        let bundles = self.0.export_bundles(&q, q.exchanges_per_bundle).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(bundles)
            .map(|b| b.map_err(|e| Status::failed_precondition(e.to_string())));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn archive_manifest(
        &self,
        _: Request<pb::ArchiveRequest>,
    ) -> Result<Response<lintas_proto::audit::v1::Archive>, Status> {
        self.0
            .evidence
            .archive_manifest()
            .await
            .map(Response::new)
            .map_err(|e| Status::failed_precondition(e.to_string()))
    }

    type ExportStateStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::StateExport, Status>> + Send>>;

    async fn export_state(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ExportStateStream>, Status> {
        let actor = socket_actor(&request);
        let m = self.0.clone();
        let result = tokio::task::spawn_blocking(move || {
            crate::state_export::exported(&m.access, &m.idempotency, &m.events)
        })
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))
        .and_then(|r| r.map_err(|e| ManageError::Internal(e.to_string())));
        let parts = crate::state_export::in_parts(self.audited(
            &actor,
            "backup",
            "the state store",
            result,
        )?);
        Ok(Response::new(Box::pin(tokio_stream::iter(
            parts.into_iter().map(Ok),
        ))))
    }

    async fn log_status(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::LogStatusReply>, Status> {
        Ok(Response::new(self.0.evidence.log_status()))
    }

    async fn health(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::HealthReply>, Status> {
        let h = self.0.health();
        Ok(Response::new(pb::HealthReply {
            ready: h.ready,
            components: h
                .components
                .into_iter()
                .map(|c| pb::HealthComponent {
                    name: c.name,
                    state: c.state,
                    reason: c.reason,
                })
                .collect(),
            maintenance: h.maintenance.on,
            maintenance_reason: h.maintenance.reason,
        }))
    }

    async fn set_maintenance(
        &self,
        request: Request<pb::MaintenanceRequest>,
    ) -> Result<Response<pb::MaintenanceRequest>, Status> {
        let actor = socket_actor(&request);
        let r = request.into_inner();
        let action = if r.on {
            "maintenance.on"
        } else {
            "maintenance.off"
        };
        let result = self.0.set_maintenance(MaintenanceState {
            on: r.on,
            reason: r.reason.clone(),
        });
        let state = self.audited(&actor, action, &r.reason, result)?;
        Ok(Response::new(pb::MaintenanceRequest {
            on: state.on,
            reason: state.reason,
        }))
    }

    async fn switch_certificates(
        &self,
        request: Request<pb::SwitchRequest>,
    ) -> Result<Response<pb::SwitchReply>, Status> {
        use crate::switch::Switched;
        let actor = socket_actor(&request);
        let now = request.into_inner().now;
        let at = crate::errors::now_ms(&*self.0.evidence.clock) / 1000;
        let run = || {
            let switch = self.0.switch.clone();
            async move {
                tokio::task::spawn_blocking(move || switch.run(at, now))
                    .await
                    .map_err(|e| ManageError::Internal(e.to_string()))
                    .and_then(|r| r.map_err(|e| ManageError::Internal(e.to_string())))
            }
        };
        let mut result = run().await;
        if let Ok(Switched::Later { at: None }) = result {
            // The registry publishes the configuration that lists renewed certificates
            // as it approves them: fetch it rather than wait for the next poll.
            let fetched =
                tokio::time::timeout(crate::tasks::REGISTRY_TIMEOUT, self.0.switch.conf.fetch())
                    .await;
            if matches!(fetched, Ok(Ok(_))) {
                result = run().await;
            }
        }
        let target = if now {
            "renewed certificates, now"
        } else {
            "renewed certificates, when due"
        };
        let reply = match self.audited(&actor, "certificates.switch", target, result)? {
            Switched::Done => pb::SwitchReply {
                switched: true,
                switch_at: 0,
            },
            Switched::Later { at } => pb::SwitchReply {
                switched: false,
                switch_at: at.unwrap_or(0),
            },
            Switched::Nothing => pb::SwitchReply::default(),
        };
        Ok(Response::new(reply))
    }

    async fn operational_data(
        &self,
        request: Request<lintas_proto::opmon::v1::OpQuery>,
    ) -> Result<Response<lintas_proto::opmon::v1::OpPage>, Status> {
        Ok(Response::new(
            self.0.operational_data(request.into_inner()).await?,
        ))
    }

    async fn add_user(
        &self,
        request: Request<pb::UserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = socket_actor(&request);
        let r = request.into_inner();
        let target = format!("user {} as {}", r.name, r.roles.join(","));
        let result = match roles(&r.roles) {
            Ok(roles) => {
                let users = self.0.plane.users.clone();
                users_change(move || users.add_user(&r.name, &r.password, &roles)).await
            }
            Err(e) => Err(e),
        };
        Ok(Response::new(user_to_pb(
            self.audited(&actor, "user.add", &target, result)?,
        )))
    }

    async fn set_user_password(
        &self,
        request: Request<pb::UserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = socket_actor(&request);
        let r = request.into_inner();
        let target = format!("user {}", r.name);
        let (users, name) = (self.0.plane.users.clone(), r.name.clone());
        let result = users_change(move || users.set_password(&name, &r.password)).await;
        let user = self.audited(&actor, "user.password", &target, result)?;
        self.0.plane.sessions.end_user(&user.name);
        Ok(Response::new(user_to_pb(user)))
    }

    async fn set_user_roles(
        &self,
        request: Request<pb::UserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = socket_actor(&request);
        let r = request.into_inner();
        let target = format!("user {} as {}", r.name, r.roles.join(","));
        let result = roles(&r.roles).and_then(|roles| {
            self.0
                .plane
                .users
                .set_roles(&r.name, &roles)
                .map_err(users_error)
        });
        let user = self.audited(&actor, "user.roles", &target, result)?;
        self.0.plane.sessions.end_user(&user.name);
        Ok(Response::new(user_to_pb(user)))
    }

    async fn remove_user(
        &self,
        request: Request<pb::UserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = socket_actor(&request);
        let r = request.into_inner();
        let target = format!("user {}", r.name);
        let result = self.0.plane.users.remove_user(&r.name).map_err(users_error);
        let user = self.audited(&actor, "user.remove", &target, result)?;
        self.0.plane.sessions.end_user(&user.name);
        Ok(Response::new(user_to_pb(user)))
    }

    async fn list_users(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::UserList>, Status> {
        Ok(Response::new(pb::UserList {
            users: self
                .0
                .plane
                .users
                .users()
                .into_iter()
                .map(user_to_pb)
                .collect(),
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::ApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let actor = socket_actor(&request);
        let r = request.into_inner();
        let target = format!("API key '{}' as {}", r.name, r.roles.join(","));
        let result = roles(&r.roles).and_then(|roles| {
            self.0
                .plane
                .users
                .create_api_key(&r.name, &roles, &actor)
                .map_err(users_error)
        });
        let (info, key) = self.audited(&actor, "api-key.add", &target, result)?;
        Ok(Response::new(key_to_pb(info, key)))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::ApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let actor = socket_actor(&request);
        let id = request.into_inner().id;
        let target = format!("API key {id}");
        let result = self.0.plane.users.revoke_api_key(&id).map_err(users_error);
        let info = self.audited(&actor, "api-key.remove", &target, result)?;
        Ok(Response::new(key_to_pb(info, String::new())))
    }

    async fn list_api_keys(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ApiKeyList>, Status> {
        Ok(Response::new(pb::ApiKeyList {
            keys: self
                .0
                .plane
                .users
                .api_keys()
                .into_iter()
                .map(|k| key_to_pb(k, String::new()))
                .collect(),
        }))
    }

    async fn export_admin_audit_log(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::AdminAuditLog>, Status> {
        let jsonl = self
            .0
            .plane
            .audit
            .export()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::AdminAuditLog { jsonl }))
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
            SsError::NotRunning(format!(
                "cannot reach the running server at {shown}: {e} (is `lintas ss serve` running?)"
            ))
        })?;
    Ok(SecurityServerAdminClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES))
}
