//! The registry's management plane: its administration as operations that return the
//! structs of [`model`], served as a REST API ([`api`]) and a web console ([`console`])
//! on the management listener, with users, roles and the admin audit log of
//! `lintas-manage`. The certificate-authenticated gRPC admin API stays beside it.

pub mod api;
pub mod console;
pub mod model;
mod words;

use std::sync::Arc;

use axum::http::StatusCode;
use lintas_manage::{ApiError, Plane};

use crate::registry::{RegState, Registry, RegistryError};
use model::*;

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::AlreadyExists(_) => StatusCode::CONFLICT,
            RegistryError::FailedPrecondition(_) => StatusCode::PRECONDITION_FAILED,
            RegistryError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            RegistryError::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            RegistryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// What the registry's administration reads and changes.
pub struct Manage {
    pub registry: Arc<Registry>,
    pub health: lintas_ops::Health,
    pub plane: Arc<Plane>,
}

fn page<T, U: From<T>>((items, next): (Vec<T>, String)) -> Page<U> {
    Page {
        items: items.into_iter().map(U::from).collect(),
        next_page_token: (!next.is_empty()).then_some(next),
    }
}

fn pem(der: &[u8]) -> String {
    lintas_certs::pem::cert_to_pem(der)
}

impl From<crate::registry::MemberRec> for Member {
    fn from(m: crate::registry::MemberRec) -> Self {
        Member {
            id: m.id.to_string(),
            name: m.name,
            subsystems: m
                .subsystems
                .iter()
                .map(|s| format!("{}/{s}", m.id))
                .collect(),
        }
    }
}

impl From<crate::registry::ServerRec> for Server {
    fn from(s: crate::registry::ServerRec) -> Self {
        Server {
            id: s.id.to_string(),
            address: s.address.to_string(),
            clients: s.clients.iter().map(ToString::to_string).collect(),
            maintenance: s.maintenance,
            certificates: s
                .certs
                .iter()
                .map(|c| Certificate {
                    role: c.kind.as_str().into(),
                    serial: c.serial.clone(),
                    not_after: c.not_after,
                    revoked: c.revoked.is_some(),
                    revoked_reason: c
                        .revoked
                        .as_ref()
                        .map(|r| r.reason.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }
}

impl Manage {
    /// Runs a registry operation on the blocking pool (it writes to the store).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || f(&registry))
            .await
            .map_err(|e| ApiError::internal(format!("registry task failed: {e}")))?
            .map_err(ApiError::from)
    }

    pub async fn registrations(
        &self,
        q: RegistrationQuery,
    ) -> Result<Page<Registration>, ApiError> {
        let state = match q.state.as_deref() {
            None | Some("") => None,
            Some("pending") => Some(RegState::Pending),
            Some("approved") => Some(RegState::Approved),
            Some("rejected") => Some(RegState::Rejected),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "state: '{other}' is none of pending, approved, rejected"
                )));
            }
        };
        self.blocking(move |r| {
            r.registrations_page(
                state,
                &q.filter,
                &q.page_token,
                lintas_proto::paging::size(q.page_size),
            )
        })
        .await
        .map(page)
    }

    pub async fn approve(&self, actor: &str, request_id: &str) -> Result<Registration, ApiError> {
        let (actor, id) = (actor.to_owned(), request_id.to_owned());
        self.blocking(move |r| r.approve(&actor, &id))
            .await
            .map(Registration::from)
    }

    pub async fn reject(
        &self,
        actor: &str,
        request_id: &str,
        reason: &str,
    ) -> Result<Registration, ApiError> {
        let (actor, id, reason) = (actor.to_owned(), request_id.to_owned(), reason.to_owned());
        self.blocking(move |r| r.reject(&actor, &id, &reason))
            .await
            .map(Registration::from)
    }

    pub async fn members(&self, q: ListQuery) -> Result<Page<Member>, ApiError> {
        self.blocking(move |r| {
            r.members_page(
                &q.filter,
                &q.page_token,
                lintas_proto::paging::size(q.page_size),
            )
        })
        .await
        .map(page)
    }

    pub async fn add_member(&self, actor: &str, m: NewMember) -> Result<Published, ApiError> {
        let actor = actor.to_owned();
        self.blocking(move |r| r.add_member(&actor, &m.id, &m.name))
            .await
            .map(|conf_serial| Published { conf_serial })
    }

    pub async fn add_subsystem(&self, actor: &str, s: NewSubsystem) -> Result<Published, ApiError> {
        let actor = actor.to_owned();
        self.blocking(move |r| r.add_subsystem(&actor, &s.id))
            .await
            .map(|conf_serial| Published { conf_serial })
    }

    pub async fn servers(&self, q: ListQuery) -> Result<Page<Server>, ApiError> {
        self.blocking(move |r| {
            r.servers_page(
                &q.filter,
                &q.page_token,
                lintas_proto::paging::size(q.page_size),
            )
        })
        .await
        .map(page)
    }

    pub fn groups(&self) -> Vec<Group> {
        self.registry
            .groups()
            .into_iter()
            .map(|g| Group {
                code: g.code.to_string(),
                description: g.description,
                members: g.members.iter().map(ToString::to_string).collect(),
            })
            .collect()
    }

    pub async fn add_group(&self, actor: &str, g: NewGroup) -> Result<Published, ApiError> {
        let actor = actor.to_owned();
        self.blocking(move |r| r.add_group(&actor, &g.code, &g.description))
            .await
            .map(|conf_serial| Published { conf_serial })
    }

    pub async fn set_group_member(
        &self,
        actor: &str,
        code: &str,
        client: &str,
        member: bool,
    ) -> Result<Published, ApiError> {
        let (actor, code, client) = (actor.to_owned(), code.to_owned(), client.to_owned());
        self.blocking(move |r| r.set_group_member(&actor, &code, &client, member))
            .await
            .map(|conf_serial| Published { conf_serial })
    }

    pub async fn revoke(&self, actor: &str, v: NewRevocation) -> Result<Published, ApiError> {
        let actor = actor.to_owned();
        self.blocking(move |r| r.revoke(&actor, &v.serial, &v.reason))
            .await
            .map(|conf_serial| Published { conf_serial })
    }

    pub async fn create_token(&self, actor: &str, t: NewToken) -> Result<Token, ApiError> {
        let actor = actor.to_owned();
        let ttl = t
            .ttl_seconds
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs);
        self.blocking(move |r| r.create_token(&actor, &t.server_id, ttl))
            .await
            .map(|(token, expires_at)| Token { token, expires_at })
    }

    pub fn tsas(&self) -> Vec<Tsa> {
        self.registry
            .tsas()
            .into_iter()
            .map(|t| Tsa {
                name: t.name.to_string(),
                url: t.url,
            })
            .collect()
    }

    pub async fn add_tsa(&self, actor: &str, t: NewTsa) -> Result<Published, ApiError> {
        let der = lintas_certs::pem::cert_from_pem(&t.certificate_pem, "certificate_pem")
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let actor = actor.to_owned();
        self.blocking(move |r| r.add_tsa(&actor, &t.name, &t.url, &der))
            .await
            .map(|conf_serial| Published { conf_serial })
    }

    pub async fn remove_tsa(&self, actor: &str, name: &str) -> Result<Published, ApiError> {
        let (actor, name) = (actor.to_owned(), name.to_owned());
        self.blocking(move |r| r.remove_tsa(&actor, &name))
            .await
            .map(|conf_serial| Published { conf_serial })
    }

    pub async fn issue_admin_cert(
        &self,
        actor: &str,
        req: AdminCertRequest,
    ) -> Result<AdminCert, ApiError> {
        let csr = lintas_certs::pem::csr_from_pem_or_der(req.csr_pem.as_bytes(), "csr_pem")
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let actor = actor.to_owned();
        self.blocking(move |r| r.issue_admin_cert(&actor, &req.name, &csr))
            .await
            .map(|der| AdminCert {
                certificate_pem: pem(&der),
            })
    }

    /// The published generations, newest first (`filter` is not used).
    pub async fn generations(&self, q: ListQuery) -> Result<Page<ConfGeneration>, ApiError> {
        self.blocking(move |r| {
            r.generations_page(&q.page_token, lintas_proto::paging::size(q.page_size))
        })
        .await
        .map(page)
    }

    pub fn generation(&self) -> Generation {
        let g = self.registry.generation();
        let report = self.health.report();
        Generation {
            serial: g.serial,
            members: g.members,
            servers: g.servers,
            pending_registrations: g.pending_registrations,
            groups: g.groups,
            services: g.services,
            ready: report.ready,
            components: report
                .components
                .into_iter()
                .map(|c| Component {
                    state: c.condition.state().into(),
                    reason: c.condition.reason().unwrap_or_default().into(),
                    name: c.name,
                })
                .collect(),
        }
    }
}
