//! The gRPC edge: translates between protobuf messages and [`Registry`] calls, and maps
//! registry errors to gRPC status codes in one place. Every registry call, including
//! the administrator check, runs on the blocking pool: the registry's lock is held
//! across signing and flushing to disk.

use std::sync::Arc;
use std::time::Duration;

use lintas_proto::globalconf::v1::SignedGlobalConf;
use lintas_proto::registry::v1 as pb;
use pb::registration_server::Registration;
use pb::registry_admin_server::RegistryAdmin;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::registry::{RegState, RegistrationRec, Registry, RegistryError, Submission};

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::InvalidArgument(_) => Status::invalid_argument(msg),
            RegistryError::NotFound(_) => Status::not_found(msg),
            RegistryError::AlreadyExists(_) => Status::already_exists(msg),
            RegistryError::FailedPrecondition(_) => Status::failed_precondition(msg),
            RegistryError::PermissionDenied(_) => Status::permission_denied(msg),
            RegistryError::ResourceExhausted(_) => Status::resource_exhausted(msg),
            RegistryError::Unavailable(_) => Status::unavailable(msg),
            RegistryError::Internal(_) => {
                tracing::error!(error = %msg, "registry internal error");
                Status::internal(msg)
            }
        }
    }
}

/// Runs a registry call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("registry task failed: {e}")))?
        .map_err(Status::from)
}

fn state_to_pb(s: RegState) -> pb::RegistrationState {
    match s {
        RegState::Pending => pb::RegistrationState::Pending,
        RegState::Approved => pb::RegistrationState::Approved,
        RegState::Rejected => pb::RegistrationState::Rejected,
    }
}

fn status_to_pb(r: RegistrationRec) -> pb::RegistrationStatus {
    pb::RegistrationStatus {
        request_id: r.request_id,
        state: state_to_pb(r.state) as i32,
        reason: r.reason,
        server_id: r.server_id.to_string(),
        address: r.address.to_string(),
        clients: r.clients.iter().map(ToString::to_string).collect(),
        submitted_at: r.submitted_at,
        decided_at: r.decided_at,
        tls_cert: lintas_certs::unhex(&r.tls_cert_hex).unwrap_or_default(),
        signing_cert: lintas_certs::unhex(&r.signing_cert_hex).unwrap_or_default(),
        tls_key_fingerprint: r.tls_key_fingerprint,
        signing_key_fingerprint: r.signing_key_fingerprint,
        decided_by: r.decided_by,
        member_name: r.member_name,
        renewal: r.renewal,
        source: r.source,
    }
}

/// The open `Registration` service.
pub struct RegistrationService(pub Arc<Registry>);

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn submit(
        &self,
        request: Request<pb::RegistrationRequest>,
    ) -> Result<Response<pb::RegistrationStatus>, Status> {
        let source = request
            .remote_addr()
            .map(|a| lintas_transport::admission::source_of(a.ip()).to_string())
            .unwrap_or_default();
        let peer_cert = lintas_transport::peer_cert(&request);
        let r = request.into_inner();
        let sub = Submission {
            peer_cert,
            source,
            server_id: r.server_id,
            address: r.address,
            tls_csr: r.tls_csr,
            signing_csr: r.signing_csr,
            log_csr: r.log_csr,
            clients: r.clients,
            member_name: r.member_name,
            enrolment_token: r.enrolment_token,
        };
        let reg = self.0.clone();
        let rec = blocking(move || reg.submit(sub)).await?;
        Ok(Response::new(status_to_pb(rec)))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::RegistrationStatus>, Status> {
        let id = request.into_inner().request_id;
        let reg = self.0.clone();
        let rec = blocking(move || reg.status(&id)).await?;
        Ok(Response::new(status_to_pb(rec)))
    }

    async fn report_services(
        &self,
        request: Request<pb::ServiceReport>,
    ) -> Result<Response<pb::ServiceReportReply>, Status> {
        let cert = lintas_transport::peer_cert(&request);
        let report = request.into_inner();
        let reg = self.0.clone();
        let outcome = blocking(move || {
            reg.report_services(cert.as_deref(), report.services, report.maintenance)
        })
        .await?;
        Ok(Response::new(pb::ServiceReportReply {
            conf_serial: outcome.conf_serial,
            missing_descriptors: outcome.missing,
        }))
    }

    async fn get_service_descriptor(
        &self,
        request: Request<pb::ServiceDescriptorRequest>,
    ) -> Result<Response<pb::ServiceDescriptor>, Status> {
        let sha256 = request.into_inner().sha256;
        let descriptor = self.0.descriptor(&sha256)?;
        Ok(Response::new(pb::ServiceDescriptor {
            descriptor_set: descriptor.as_ref().clone(),
        }))
    }

    async fn add_checkpoint(
        &self,
        request: Request<pb::AddCheckpointRequest>,
    ) -> Result<Response<lintas_proto::log::v1::Cosignature>, Status> {
        let cert = lintas_transport::peer_cert(&request);
        let req = request.into_inner();
        let reg = self.0.clone();
        let cosignature = blocking(move || reg.add_checkpoint(cert.as_deref(), req)).await?;
        Ok(Response::new(cosignature))
    }

    async fn witnessed_checkpoint(
        &self,
        request: Request<pb::WitnessedCheckpointRequest>,
    ) -> Result<Response<lintas_proto::log::v1::SignedCheckpoint>, Status> {
        let origin = request.into_inner().origin;
        let reg = self.0.clone();
        Ok(Response::new(
            blocking(move || reg.witnessed(&origin)).await?,
        ))
    }

    async fn get_global_conf(
        &self,
        _: Request<pb::GetGlobalConfRequest>,
    ) -> Result<Response<SignedGlobalConf>, Status> {
        let blob = self.0.latest_conf();
        let signed = SignedGlobalConf::decode(blob.as_slice())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(signed))
    }
}

/// The `RegistryAdmin` service: every call first checks the administrator certificate;
/// every change is recorded in the admin audit log (actor `admin-cert:NAME`, via
/// `grpc`).
pub struct AdminService {
    pub registry: Arc<Registry>,
    pub audit: Arc<lintas_manage::AuditLog>,
}

impl AdminService {
    /// Authorizes the caller and runs `f` with the administrator's name, on the blocking
    /// pool. A change (`change`: its action and target) is recorded with its outcome.
    async fn admin<Req, T: Send + 'static>(
        &self,
        request: Request<Req>,
        change: Option<(&'static str, String)>,
        f: impl FnOnce(&Registry, &str, Req) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, Status>
    where
        Req: Send + 'static,
    {
        let cert = lintas_transport::peer_cert(&request);
        let from = request
            .remote_addr()
            .map_or_else(|| "unknown".into(), |a| a.to_string());
        let body = request.into_inner();
        let reg = self.registry.clone();
        let audit = self.audit.clone();
        blocking(move || {
            let admin = reg.authorize_admin(cert.as_deref())?;
            let result = f(&reg, &admin, body);
            if let Some((action, target)) = change {
                let outcome = match &result {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("failed: {e}"),
                };
                audit
                    .record(lintas_manage::Action {
                        actor: format!("admin-cert:{admin}"),
                        via: "grpc".into(),
                        from,
                        action: action.into(),
                        target,
                        outcome,
                    })
                    .map_err(|e| RegistryError::Internal(e.to_string()))?;
            }
            result
        })
        .await
    }
}

fn serial(conf_serial: u64) -> Response<pb::AdminResponse> {
    Response::new(pb::AdminResponse { conf_serial })
}

#[tonic::async_trait]
impl RegistryAdmin for AdminService {
    async fn list_registrations(
        &self,
        request: Request<pb::ListRegistrationsRequest>,
    ) -> Result<Response<pb::ListRegistrationsResponse>, Status> {
        let (registrations, next_page_token) = self
            .admin(request, None, |reg, _, r| {
                let state = match r.state() {
                    pb::RegistrationState::Unspecified => None,
                    pb::RegistrationState::Pending => Some(RegState::Pending),
                    pb::RegistrationState::Approved => Some(RegState::Approved),
                    pb::RegistrationState::Rejected => Some(RegState::Rejected),
                };
                reg.registrations_page(
                    state,
                    &r.filter,
                    &r.page_token,
                    lintas_proto::paging::size(r.page_size),
                )
            })
            .await?;
        Ok(Response::new(pb::ListRegistrationsResponse {
            registrations: registrations.into_iter().map(status_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn approve(
        &self,
        request: Request<pb::DecisionRequest>,
    ) -> Result<Response<pb::RegistrationStatus>, Status> {
        let change = Some((
            "registration.approve",
            format!("registration {}", request.get_ref().request_id),
        ));
        self.admin(request, change, |reg, admin, r| {
            reg.approve(admin, &r.request_id)
        })
        .await
        .map(|rec| Response::new(status_to_pb(rec)))
    }

    async fn reject(
        &self,
        request: Request<pb::DecisionRequest>,
    ) -> Result<Response<pb::RegistrationStatus>, Status> {
        let change = Some((
            "registration.reject",
            format!(
                "registration {}: {}",
                request.get_ref().request_id,
                request.get_ref().reason
            ),
        ));
        self.admin(request, change, |reg, admin, r| {
            reg.reject(admin, &r.request_id, &r.reason)
        })
        .await
        .map(|rec| Response::new(status_to_pb(rec)))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let change = Some((
            "member.add",
            format!(
                "member {} ({})",
                request.get_ref().id,
                request.get_ref().name
            ),
        ));
        self.admin(request, change, |reg, admin, r| {
            reg.add_member(admin, &r.id, &r.name)
        })
        .await
        .map(serial)
    }

    async fn add_subsystem(
        &self,
        request: Request<pb::AddSubsystemRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let change = Some((
            "subsystem.add",
            format!("subsystem {}", request.get_ref().id),
        ));
        self.admin(request, change, |reg, admin, r| {
            reg.add_subsystem(admin, &r.id)
        })
        .await
        .map(serial)
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let (members, next_page_token) = self
            .admin(request, None, |reg, _, r| {
                reg.members_page(
                    &r.filter,
                    &r.page_token,
                    lintas_proto::paging::size(r.page_size),
                )
            })
            .await?;
        Ok(Response::new(pb::ListMembersResponse {
            next_page_token,
            members: members
                .into_iter()
                .map(|m| lintas_proto::globalconf::v1::Member {
                    id: m.id.to_string(),
                    name: m.name,
                    subsystems: m.subsystems.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        }))
    }

    async fn add_timestamping_authority(
        &self,
        request: Request<pb::TimestampingAuthorityRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let change = Some((
            "tsa.add",
            format!(
                "time-stamping authority {} at {}",
                request.get_ref().name,
                request.get_ref().url
            ),
        ));
        self.admin(request, change, |reg, admin, r| {
            reg.add_tsa(admin, &r.name, &r.url, &r.cert)
        })
        .await
        .map(serial)
    }

    async fn remove_timestamping_authority(
        &self,
        request: Request<pb::TimestampingAuthorityRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let change = Some((
            "tsa.remove",
            format!("time-stamping authority {}", request.get_ref().name),
        ));
        self.admin(request, change, |reg, admin, r| {
            reg.remove_tsa(admin, &r.name)
        })
        .await
        .map(serial)
    }

    async fn add_group(
        &self,
        request: Request<pb::AddGroupRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let change = Some(("group.add", format!("group {}", request.get_ref().code)));
        self.admin(request, change, |reg, admin, r| {
            reg.add_group(admin, &r.code, &r.description)
        })
        .await
        .map(serial)
    }

    async fn add_group_member(
        &self,
        request: Request<pb::GroupMemberRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let change = Some((
            "group.member.add",
            format!(
                "group {} + {}",
                request.get_ref().code,
                request.get_ref().client
            ),
        ));
        self.admin(request, change, |reg, admin, r| {
            reg.set_group_member(admin, &r.code, &r.client, true)
        })
        .await
        .map(serial)
    }

    async fn remove_group_member(
        &self,
        request: Request<pb::GroupMemberRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let change = Some((
            "group.member.remove",
            format!(
                "group {} - {}",
                request.get_ref().code,
                request.get_ref().client
            ),
        ));
        self.admin(request, change, |reg, admin, r| {
            reg.set_group_member(admin, &r.code, &r.client, false)
        })
        .await
        .map(serial)
    }

    async fn list_servers(
        &self,
        request: Request<pb::ListServersRequest>,
    ) -> Result<Response<pb::ListServersResponse>, Status> {
        let (servers, next_page_token) = self
            .admin(request, None, |reg, _, r| {
                reg.servers_page(
                    &r.filter,
                    &r.page_token,
                    lintas_proto::paging::size(r.page_size),
                )
            })
            .await?;
        Ok(Response::new(pb::ListServersResponse {
            next_page_token,
            servers: servers
                .into_iter()
                .map(|s| pb::ServerInfo {
                    id: s.id.to_string(),
                    address: s.address.to_string(),
                    clients: s.clients.iter().map(ToString::to_string).collect(),
                    certificates: s
                        .certs
                        .iter()
                        .map(|c| pb::IssuedCertificate {
                            role: c.kind.as_str().into(),
                            serial: c.serial.clone(),
                            revoked: c.revoked.is_some(),
                            not_after: c.not_after,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let change = Some((
            "certificate.revoke",
            format!(
                "certificate {}: {}",
                request.get_ref().serial,
                request.get_ref().reason
            ),
        ));
        self.admin(request, change, |reg, admin, r| {
            reg.revoke(admin, &r.serial, &r.reason)
        })
        .await
        .map(serial)
    }

    async fn create_enrolment_token(
        &self,
        request: Request<pb::CreateEnrolmentTokenRequest>,
    ) -> Result<Response<pb::CreateEnrolmentTokenResponse>, Status> {
        let change = Some((
            "token.add",
            format!("enrolment token for {}", request.get_ref().server_id),
        ));
        let (token, expires_at) = self
            .admin(request, change, |reg, admin, r| {
                let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
                reg.create_token(admin, &r.server_id, ttl)
            })
            .await?;
        Ok(Response::new(pb::CreateEnrolmentTokenResponse {
            token,
            expires_at,
        }))
    }

    async fn issue_admin_certificate(
        &self,
        request: Request<pb::IssueAdminCertificateRequest>,
    ) -> Result<Response<pb::IssueAdminCertificateResponse>, Status> {
        let change = Some((
            "admin-cert.add",
            format!("administrator certificate for {}", request.get_ref().name),
        ));
        let certificate = self
            .admin(request, change, |reg, admin, r| {
                reg.issue_admin_cert(admin, &r.name, &r.csr)
            })
            .await?;
        Ok(Response::new(pb::IssueAdminCertificateResponse {
            certificate,
        }))
    }

    type ExportStateStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::StoreRecords, Status>>>;

    async fn export_state(
        &self,
        request: Request<pb::ExportStateRequest>,
    ) -> Result<Response<Self::ExportStateStream>, Status> {
        let change = Some(("backup", "the registry's store".to_owned()));
        let records = self
            .admin(request, change, |reg, _, _| reg.export_records())
            .await?;
        let batches = crate::backup::batches(records)
            .into_iter()
            .map(Ok)
            .collect::<Vec<_>>();
        Ok(Response::new(tokio_stream::iter(batches)))
    }
}

pub struct CatalogueService(pub Arc<Registry>);

#[tonic::async_trait]
impl pb::catalogue_server::Catalogue for CatalogueService {
    async fn upload_descriptor(
        &self,
        request: Request<pb::ServiceDescriptor>,
    ) -> Result<Response<pb::UploadDescriptorReply>, Status> {
        let cert = lintas_transport::peer_cert(&request);
        let set = request.into_inner().descriptor_set;
        let reg = self.0.clone();
        let sha256 = blocking(move || reg.upload_descriptor(cert.as_deref(), set)).await?;
        Ok(Response::new(pb::UploadDescriptorReply {
            sha256: sha256.to_vec(),
        }))
    }
}
