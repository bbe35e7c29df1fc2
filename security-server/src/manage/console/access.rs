//! Access rights: the list, granting, revoking.

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
