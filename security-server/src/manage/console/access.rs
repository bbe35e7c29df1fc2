//! Access rights and quotas: the lists, granting and revoking, setting and removing.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::Response;
use lintas_manage::ApiError;
use lintas_manage::console::{Chrome, Done, Viewer, done, render};

use super::all;
use crate::manage::api::{Api, SERVICES};
use crate::manage::model::*;

#[derive(Template)]
#[template(path = "access.html")]
pub(super) struct AccessPage {
    c: Chrome,
    grants: Vec<GrantSpec>,
    quotas: Vec<QuotaSpec>,
    /// ("PROVIDER SERVICE", "SERVICE (PROVIDER)") of each service, for the form.
    services: Vec<(String, String)>,
    may_change: bool,
    needs: String,
}

pub(super) async fn access(
    State(api): State<Api>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Response {
    access_page(&api, &viewer, &d, None)
}

fn access_page(api: &Api, viewer: &Viewer, d: &Done, error: Option<ApiError>) -> Response {
    let m = &api.manage;
    let (mut c, mut status) = viewer.page("access", d, error);
    let mut failed = |e: ApiError| {
        status = e.status();
        c.error = Some(e.message);
    };
    let grants = all(|q| m.grants(q)).unwrap_or_else(|e| {
        failed(e);
        Vec::new()
    });
    let quotas = all(|q| m.quotas(q)).unwrap_or_else(|e| {
        failed(e);
        Vec::new()
    });
    let services = all(|q| m.services(q))
        .unwrap_or_else(|e| {
            failed(e);
            Vec::new()
        })
        .into_iter()
        .map(|s| {
            (
                format!("{} {}", s.provider, s.service),
                format!("{} ({})", s.service, s.provider),
            )
        })
        .collect();
    let (may_change, needs) = viewer.may(SERVICES);
    render(
        &AccessPage {
            c,
            grants,
            quotas,
            services,
            may_change,
            needs,
        },
        status,
    )
}

#[derive(serde::Deserialize)]
pub(super) struct GrantForm {
    csrf: String,
    /// "PROVIDER SERVICE" (the grant form), or the two fields (the revoke buttons).
    #[serde(default)]
    service_key: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    service: String,
    subject: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: String,
}

impl GrantForm {
    fn spec(self) -> GrantSpec {
        let (provider, service) = provider_service(self.service_key, self.provider, self.service);
        let some = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        GrantSpec {
            provider,
            service,
            subject: self.subject.trim().to_owned(),
            method: some(self.method),
            path: some(self.path),
        }
    }
}

/// The provider and service a form names: "PROVIDER SERVICE" from the form's list, or
/// the two fields (the buttons on each row).
fn provider_service(key: String, provider: String, service: String) -> (String, String) {
    match key.split_once(' ') {
        Some((p, s)) => (p.to_owned(), s.to_owned()),
        None => (provider, service),
    }
}

/// One change from the access page: checked against the viewer's roles and CSRF token,
/// audited as `action` on `target`, made; then the page with the `notice`, or again
/// with the refusal.
async fn changed<T>(
    api: &Api,
    viewer: &Viewer,
    csrf: &str,
    (action, notice): (&str, &str),
    target: String,
    op: impl std::future::Future<Output = Result<T, crate::manage::ManageError>>,
) -> Response {
    let made = viewer
        .change(csrf, SERVICES, action, &target, async {
            op.await.map_err(ApiError::from)
        })
        .await;
    match made {
        Ok(_) => done("/access", notice, &target),
        Err(e) => access_page(api, viewer, &Done::default(), Some(e)),
    }
}

pub(super) async fn grant(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<GrantForm>,
) -> Response {
    let csrf = f.csrf.clone();
    let spec = f.spec();
    let target = crate::manage::api::grant_target(&spec);
    let op = api.manage.grant(spec);
    changed(&api, &viewer, &csrf, ("grant.add", "granted"), target, op).await
}

pub(super) async fn revoke(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<GrantForm>,
) -> Response {
    let csrf = f.csrf.clone();
    let spec = f.spec();
    let target = crate::manage::api::grant_target(&spec);
    let op = api.manage.revoke(spec);
    changed(
        &api,
        &viewer,
        &csrf,
        ("grant.remove", "revoked"),
        target,
        op,
    )
    .await
}

#[derive(serde::Deserialize)]
pub(super) struct QuotaForm {
    csrf: String,
    /// "PROVIDER SERVICE" (the form), or the two fields (the remove buttons).
    #[serde(default)]
    service_key: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    rate: String,
    #[serde(default)]
    burst: String,
}

impl QuotaForm {
    fn spec(self) -> Result<QuotaSpec, ApiError> {
        let (provider, service) = provider_service(self.service_key, self.provider, self.service);
        let some = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let burst = match some(self.burst) {
            None => None,
            Some(b) => Some(b.parse().map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    format!("burst: '{b}' is not a whole number"),
                )
            })?),
        };
        Ok(QuotaSpec {
            provider,
            service,
            method: some(self.method),
            client: some(self.client),
            rate: self.rate.trim().to_owned(),
            burst,
        })
    }
}

pub(super) async fn set_quota(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<QuotaForm>,
) -> Response {
    let csrf = f.csrf.clone();
    let spec = match f.spec() {
        Ok(spec) => spec,
        Err(e) => return access_page(&api, &viewer, &Done::default(), Some(e)),
    };
    let target = crate::manage::api::quota_target(&spec.clone().into());
    let op = api.manage.set_quota(spec);
    changed(&api, &viewer, &csrf, ("quota.set", "quota_set"), target, op).await
}

pub(super) async fn remove_quota(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<QuotaForm>,
) -> Response {
    let csrf = f.csrf.clone();
    let key = match f.spec() {
        Ok(spec) => QuotaKey::from(spec),
        Err(e) => return access_page(&api, &viewer, &Done::default(), Some(e)),
    };
    let target = crate::manage::api::quota_target(&key);
    let op = api.manage.remove_quota(key);
    changed(
        &api,
        &viewer,
        &csrf,
        ("quota.remove", "quota_removed"),
        target,
        op,
    )
    .await
}
