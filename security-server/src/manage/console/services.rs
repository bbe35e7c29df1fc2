//! Services provided here: the list, providing one, removing one.

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
#[template(path = "services.html")]
pub(super) struct ServicesPage {
    c: Chrome,
    services: Vec<ServiceInfo>,
    hosted: Vec<String>,
    may_change: bool,
    needs: String,
}

pub(super) async fn services(
    State(api): State<Api>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Response {
    services_page(&api, &viewer, &d, None)
}

fn services_page(api: &Api, viewer: &Viewer, d: &Done, error: Option<ApiError>) -> Response {
    let m = &api.manage;
    let (mut c, mut status) = viewer.page("services", d, error);
    let services = all(|q| m.services(q)).unwrap_or_else(|e| {
        status = e.status();
        c.error = Some(e.message);
        Vec::new()
    });
    let (may_change, needs) = viewer.may(SERVICES);
    render(
        &ServicesPage {
            c,
            services,
            hosted: m.own.clients.iter().map(ToString::to_string).collect(),
            may_change,
            needs,
        },
        status,
    )
}

#[derive(serde::Deserialize)]
pub(super) struct ServiceForm {
    csrf: String,
    provider: String,
    service: String,
    endpoint: String,
    #[serde(default)]
    rest: bool,
    #[serde(default)]
    large_messages: bool,
    /// A topic events are published on (without an endpoint).
    #[serde(default)]
    topic: bool,
    #[serde(default)]
    openapi_path: String,
}

pub(super) async fn add_service(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<ServiceForm>,
) -> Response {
    let target = format!("{} {}", f.provider, f.service);
    let spec = ServiceSpec {
        provider: f.provider,
        service: f.service,
        endpoint: f.endpoint,
        rest: f.rest,
        large_messages: f.large_messages,
        topic: f.topic,
        openapi_path: Some(f.openapi_path).filter(|p| !p.is_empty()),
        ..Default::default()
    };
    let m = api.manage.clone();
    let result = viewer
        .change(&f.csrf, SERVICES, "service.add", &target, async move {
            m.add_service(spec).await.map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(added) => done("/services", "service_added", &added.service.service),
        Err(e) => services_page(&api, &viewer, &Done::default(), Some(e)),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct ServiceRefForm {
    csrf: String,
    provider: String,
    service: String,
}

pub(super) async fn remove_service(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<ServiceRefForm>,
) -> Response {
    let target = format!("{} {}", f.provider, f.service);
    let m = api.manage.clone();
    let (p, s) = (f.provider.clone(), f.service.clone());
    let result = viewer
        .change(&f.csrf, SERVICES, "service.remove", &target, async move {
            m.remove_service(&p, &s).await.map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(removed) => done("/services", "service_removed", &removed.service),
        Err(e) => services_page(&api, &viewer, &Done::default(), Some(e)),
    }
}
