//! Administration as typed operations: functions over the server's parts that take and
//! return the plain structs of [`model`]. The admin socket (`admin.rs`), the management
//! REST API ([`api`]) and the console are thin edges over them; none decides anything
//! on its own.

pub mod api;
mod chart;
pub mod console;
pub mod enrolment;
mod grants;
pub mod model;
pub mod plane;
mod quotas;
mod services;
mod subscriptions;
pub use subscriptions::{dead_letters_target, subscription_target};
mod words;

use std::sync::Arc;

use lintas_identifiers::SubsystemId;

use crate::SsError;
use crate::access::Access;
use crate::evidence::Evidence;
use crate::maintenance::Maintenance;
use crate::opmon::OpMon;
use crate::own::Own;
use crate::pools::AppPool;
use model::{
    ConfStatus, HealthComponent, HealthInfo, ListQuery, LogStatus, MaintenanceState, Page,
};

/// Why an operation was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManageError {
    /// The input is wrong (the field is named in the message).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    /// The input is fine but the server's state does not allow it.
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Internal(String),
}

fn invalid(what: &str, e: impl std::fmt::Display) -> ManageError {
    ManageError::Invalid(format!("{what}: {e}"))
}

impl From<SsError> for ManageError {
    fn from(e: SsError) -> Self {
        match e {
            SsError::InvalidInput(m) => ManageError::Invalid(m),
            other => ManageError::Internal(other.to_string()),
        }
    }
}

impl From<ManageError> for tonic::Status {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Invalid(m) => tonic::Status::invalid_argument(m),
            ManageError::NotFound(m) => tonic::Status::not_found(m),
            ManageError::Exists(m) => tonic::Status::already_exists(m),
            ManageError::Precondition(m) => tonic::Status::failed_precondition(m),
            ManageError::Internal(m) => tonic::Status::internal(m),
        }
    }
}

impl From<ManageError> for lintas_manage::ApiError {
    fn from(e: ManageError) -> Self {
        use axum::http::StatusCode;
        let status = match &e {
            ManageError::Invalid(_) => StatusCode::BAD_REQUEST,
            ManageError::NotFound(_) => StatusCode::NOT_FOUND,
            ManageError::Exists(_) => StatusCode::CONFLICT,
            ManageError::Precondition(_) => StatusCode::PRECONDITION_FAILED,
            ManageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        lintas_manage::ApiError::new(status, e.to_string())
    }
}

/// What administration reads and changes.
pub struct Manage {
    pub own: Arc<Own>,
    pub access: Arc<Access>,
    pub apps: Arc<AppPool>,
    pub evidence: Arc<Evidence>,
    pub health: lintas_ops::Health,
    pub maintenance: Arc<Maintenance>,
    pub opmon: Arc<OpMon>,
    /// Users, API keys, sessions and the admin audit log.
    pub plane: Arc<lintas_manage::Plane>,
    /// Switches to renewed certificates (`lintas ss certs renew` asks over the socket).
    pub switch: Arc<crate::switch::Switch>,
    /// The events of the publishers hosted here, and their subscriptions.
    pub events: Arc<crate::events::Events>,
    /// The idempotency keys of the services provided here.
    pub idempotency: Arc<crate::idempotency::Idempotency>,
}

/// One page of `items` (each with the text it is ordered and filtered by), as `q` asks.
fn paged<T: Clone>(items: Vec<(String, T)>, q: &ListQuery) -> Result<Page<T>, ManageError> {
    let kept = items
        .iter()
        .filter(|(key, _)| key.contains(&q.filter))
        .map(|(key, item)| (key.clone(), item));
    let (items, next) =
        lintas_proto::paging::page(kept, &q.page_token, lintas_proto::paging::size(q.page_size))
            .map_err(ManageError::Invalid)?;
    Ok(Page {
        items,
        next_page_token: (!next.is_empty()).then_some(next),
    })
}

impl Manage {
    /// Runs a change to services, grants or client certificates on the blocking pool:
    /// each change is flushed to disk before it is answered.
    async fn change<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Access) -> Result<T, SsError> + Send + 'static,
    ) -> Result<T, ManageError> {
        let access = self.access.clone();
        tokio::task::spawn_blocking(move || f(&access))
            .await
            .map_err(|e| ManageError::Internal(format!("admin task failed: {e}")))?
            .map_err(ManageError::from)
    }

    /// A subsystem hosted here (provider of a service).
    fn hosted(&self, text: &str) -> Result<SubsystemId, ManageError> {
        let provider: SubsystemId = text.parse().map_err(|e| invalid("provider", e))?;
        if !self.own.hosts(&provider) {
            return Err(ManageError::Precondition(format!(
                "{provider} is not hosted on this server (see `clients` in ss.toml)"
            )));
        }
        Ok(provider)
    }

    /// Readiness with each component's state and reason, and maintenance.
    pub fn health(&self) -> HealthInfo {
        let report = self.health.report();
        let reason = self.maintenance.reason();
        HealthInfo {
            ready: report.ready,
            components: report
                .components
                .into_iter()
                .map(|c| HealthComponent {
                    state: c.condition.state().into(),
                    reason: c.condition.reason().unwrap_or_default().into(),
                    name: c.name,
                })
                .collect(),
            maintenance: MaintenanceState {
                on: reason.is_some(),
                reason: reason.unwrap_or_default(),
            },
        }
    }

    /// Maintenance on (with the operator's one-line reason) or off. Readiness then fails,
    /// exchanges in flight finish, new ones are refused, and the registry publishes it
    /// with the next service report.
    pub fn set_maintenance(
        &self,
        state: MaintenanceState,
    ) -> Result<MaintenanceState, ManageError> {
        if state.reason.len() > 1024 || state.reason.contains(['\n', '\r']) {
            return Err(invalid(
                "reason",
                "the reason must be one line of at most 1024 bytes",
            ));
        }
        let reason = state.reason.trim().to_owned();
        self.maintenance
            .set(state.on.then(|| reason.clone()))
            .map_err(|e| ManageError::Precondition(e.to_string()))?;
        // The next service report publishes it in the global configuration.
        self.access.services_changed.notify_one();
        tracing::warn!(on = state.on, %reason, "maintenance mode changed by an administrator");
        Ok(MaintenanceState {
            on: state.on,
            reason: if state.on { reason } else { String::new() },
        })
    }

    /// The global configuration held now, if any.
    pub fn conf_status(&self) -> Option<ConfStatus> {
        let conf = self.evidence.conf.current().ok()?;
        Some(ConfStatus {
            serial: conf.serial(),
            generated_at: conf.conf.generated_at,
            expires_at: conf.conf.expires_at,
            members: conf.conf.members.len(),
            servers: conf.conf.servers.len(),
        })
    }

    pub fn log_status(&self) -> LogStatus {
        self.evidence.log_status().into()
    }

    /// Operational-monitoring records by time and filters.
    pub async fn operational_data(
        &self,
        q: lintas_proto::opmon::v1::OpQuery,
    ) -> Result<lintas_proto::opmon::v1::OpPage, ManageError> {
        let opmon = self.opmon.clone();
        opmon.settle().await;
        tokio::task::spawn_blocking(move || opmon.query(&q))
            .await
            .map_err(|e| ManageError::Internal(e.to_string()))?
            .map_err(ManageError::from)
    }

    /// Every exchange matching `q`, in bundles of at most `per_bundle` exchanges (0:
    /// the most one bundle holds), all proven against one checkpoint, made one at a time.
    pub async fn export_bundles(
        &self,
        q: &lintas_proto::ss::v1::EvidenceQuery,
        per_bundle: u32,
    ) -> Result<
        tokio::sync::mpsc::Receiver<Result<lintas_proto::audit::v1::EvidenceBundle, SsError>>,
        ManageError,
    > {
        crate::evidence::check_query(q).map_err(ManageError::Invalid)?;
        let per_bundle = match per_bundle {
            0 => crate::evidence::MAX_EXCHANGES,
            n => (n as usize).min(crate::evidence::MAX_EXCHANGES),
        };
        self.evidence
            .export_bundles(q, per_bundle)
            .await
            .map_err(|e| ManageError::Precondition(e.to_string()))
    }

    /// One evidence bundle of the exchanges matching `q`.
    pub async fn export_evidence(
        &self,
        q: &lintas_proto::ss::v1::EvidenceQuery,
    ) -> Result<lintas_proto::audit::v1::EvidenceBundle, ManageError> {
        crate::evidence::check_query(q).map_err(ManageError::Invalid)?;
        self.evidence
            .export(q)
            .await
            .map_err(|e| ManageError::Precondition(e.to_string()))
    }
}
