//! Local applications' client certificates: the list, registering, removing.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::Response;
use lintas_manage::ApiError;
use lintas_manage::console::{Chrome, Done, Viewer, done, render};

use super::{all, iso};
use crate::manage::api::{Api, CERTIFICATES};
use crate::manage::model::*;

#[derive(Template)]
#[template(path = "certs.html")]
pub(super) struct CertsPage {
    c: Chrome,
    certs: Vec<(ClientCertInfo, String)>,
    clients: Vec<String>,
    may_change: bool,
    needs: String,
}

pub(super) async fn client_certs(
    State(api): State<Api>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Response {
    certs_page(&api, &viewer, &d, None)
}

fn certs_page(api: &Api, viewer: &Viewer, d: &Done, error: Option<ApiError>) -> Response {
    let m = &api.manage;
    let (mut c, mut status) = viewer.page("client_certs", d, error);
    let certs = all(|q| m.client_certs(q))
        .unwrap_or_else(|e| {
            status = e.status();
            c.error = Some(e.message);
            Vec::new()
        })
        .into_iter()
        .map(|cert| {
            let until = iso(cert.not_after);
            (cert, until)
        })
        .collect();
    let (may_change, needs) = viewer.may(CERTIFICATES);
    let mut clients: Vec<String> = m.own.clients.iter().map(ToString::to_string).collect();
    clients.push(m.own.id.owner.to_string());
    render(
        &CertsPage {
            c,
            certs,
            clients,
            may_change,
            needs,
        },
        status,
    )
}

#[derive(serde::Deserialize)]
pub(super) struct CertForm {
    csrf: String,
    client: String,
    certificate_pem: String,
}

pub(super) async fn add_client_cert(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<CertForm>,
) -> Response {
    let target = format!("client certificate for {}", f.client);
    let m = api.manage.clone();
    let result = viewer
        .change(
            &f.csrf,
            CERTIFICATES,
            "client-cert.add",
            &target,
            async move {
                let der = lintas_certs::pem::cert_from_pem(&f.certificate_pem, "certificate")
                    .map_err(|e| ApiError::invalid(e.to_string()))?;
                m.add_client_cert(&f.client, der)
                    .await
                    .map_err(ApiError::from)
            },
        )
        .await;
    match result {
        Ok(cert) => done("/client-certs", "cert_added", &cert.fingerprint),
        Err(e) => certs_page(&api, &viewer, &Done::default(), Some(e)),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct CertRefForm {
    csrf: String,
    fingerprint: String,
}

pub(super) async fn remove_client_cert(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<CertRefForm>,
) -> Response {
    let target = format!("client certificate {}", f.fingerprint);
    let m = api.manage.clone();
    let fp = f.fingerprint.clone();
    let result = viewer
        .change(
            &f.csrf,
            CERTIFICATES,
            "client-cert.remove",
            &target,
            async move { m.remove_client_cert(&fp).await.map_err(ApiError::from) },
        )
        .await;
    match result {
        Ok(cert) => done("/client-certs", "cert_removed", &cert.fingerprint),
        Err(e) => certs_page(&api, &viewer, &Done::default(), Some(e)),
    }
}
