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
        let (provider, service) = match self.service_key.split_once(' ') {
            Some((p, s)) => (p.to_owned(), s.to_owned()),
            None => (self.provider, self.service),
        };
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

pub(super) async fn grant(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<GrantForm>,
) -> Response {
    let csrf = f.csrf.clone();
    let spec = f.spec();
    let target = crate::manage::api::grant_target(&spec);
    let m = api.manage.clone();
    let result = viewer
        .change(&csrf, SERVICES, "grant.add", &target, async move {
            m.grant(spec).await.map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(g) => done("/access", "granted", &crate::manage::api::grant_target(&g)),
        Err(e) => access_page(&api, &viewer, &Done::default(), Some(e)),
    }
}

pub(super) async fn revoke(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<GrantForm>,
) -> Response {
    let csrf = f.csrf.clone();
    let spec = f.spec();
    let target = crate::manage::api::grant_target(&spec);
    let m = api.manage.clone();
    let result = viewer
        .change(&csrf, SERVICES, "grant.remove", &target, async move {
            m.revoke(spec).await.map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(g) => done("/access", "revoked", &crate::manage::api::grant_target(&g)),
        Err(e) => access_page(&api, &viewer, &Done::default(), Some(e)),
    }
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
        let (provider, service) = match self.service_key.split_once(' ') {
            Some((p, s)) => (p.to_owned(), s.to_owned()),
            None => (self.provider, self.service),
        };
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
    let m = api.manage.clone();
    let result = viewer
        .change(&csrf, SERVICES, "quota.set", &target, async move {
            m.set_quota(spec).await.map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(_) => done("/access", "quota_set", &target),
        Err(e) => access_page(&api, &viewer, &Done::default(), Some(e)),
    }
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
    let m = api.manage.clone();
    let result = viewer
        .change(&csrf, SERVICES, "quota.remove", &target, async move {
            m.remove_quota(key).await.map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(_) => done("/access", "quota_removed", &target),
        Err(e) => access_page(&api, &viewer, &Done::default(), Some(e)),
    }
}
