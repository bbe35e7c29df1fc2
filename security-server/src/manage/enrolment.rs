//! Before a security server is enrolled it cannot serve calls, but its management
//! listener already can: the enrolment console shows the key fingerprints to read to
//! the registry's administrator, submits the registration (with an enrolment token, or
//! for approval), and says whether it is pending, rejected or approved. The server
//! checks with the registry every few seconds while a request is pending and, once the
//! certificates are stored, the enrolment console stops so the whole server can start.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Form, Router};
use lintas_manage::console::{Chrome, Done, Site, Viewer, done, render};
use lintas_manage::{Allowed, ApiError, Plane, Role};
use tokio::net::TcpListener;

use crate::{Enrolment, Node, SsError};

/// Who may register the server.
pub const ENROL: Allowed = Allowed(&[Role::SystemAdministrator]);

/// How often a pending request is checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The console before enrolment: one page.
pub static SITE: Site = Site {
    product: "lintas security server",
    catalogue: super::words::CATALOGUE,
    nav: &[("enrolment", "/"), ("audit_log", "/audit")],
};

pub const TEMPLATES: &[(&str, &str)] = &[(
    "enrolment.html",
    include_str!("../../templates/enrolment.html"),
)];

#[derive(Clone)]
struct Enrol {
    node: Arc<Node>,
    plane: Arc<Plane>,
    enrolled: Arc<tokio::sync::Notify>,
}

impl FromRef<Enrol> for Arc<Plane> {
    fn from_ref(e: &Enrol) -> Self {
        e.plane.clone()
    }
}

#[derive(Template)]
#[template(path = "enrolment.html")]
struct EnrolmentPage {
    c: Chrome,
    server: String,
    state: &'static str,
    detail: String,
    tls: String,
    signing: String,
}

/// The registration's state, in the viewer's words, and its detail.
async fn state(node: &Node, c: &Chrome) -> (&'static str, String) {
    match node.poll().await {
        Ok(Enrolment::Pending(s)) => (c.tr.t("enrolment_pending"), s.request_id),
        Ok(Enrolment::Approved(s)) => (c.tr.t("enrolment_approved"), s.decided_by),
        Err(SsError::NotRegistered) => (c.tr.t("enrolment_none"), String::new()),
        Err(SsError::Rejected { reason }) => (c.tr.t("enrolment_rejected"), reason),
        Err(e) => (c.tr.t("enrolment_unknown"), e.to_string()),
    }
}

async fn page(e: &Enrol, viewer: &Viewer, d: &Done, error: Option<ApiError>) -> Response {
    let mut c = viewer.chrome("enrolment");
    c.notice = d.notice(&c);
    let status = error.as_ref().map_or(StatusCode::OK, ApiError::status);
    c.error = error.map(|e| e.message);
    let (state, detail) = state(&e.node, &c).await;
    if state == c.tr.t("enrolment_approved") {
        e.enrolled.notify_one();
    }
    let (tls, signing) = e
        .node
        .key_fingerprints()
        .unwrap_or_else(|err| (String::new(), err.to_string()));
    render(
        &EnrolmentPage {
            server: e.node.config.server_id.to_string(),
            c,
            state,
            detail,
            tls,
            signing,
        },
        status,
    )
}

async fn show(
    State(e): State<Enrol>,
    viewer: Viewer,
    axum::extract::Query(d): axum::extract::Query<Done>,
) -> Response {
    page(&e, &viewer, &d, None).await
}

#[derive(serde::Deserialize)]
struct RegisterForm {
    csrf: String,
    #[serde(default)]
    token: String,
}

async fn register(State(e): State<Enrol>, viewer: Viewer, Form(f): Form<RegisterForm>) -> Response {
    let token = Some(f.token.trim()).filter(|t| !t.is_empty());
    let target = format!(
        "registration of {}{}",
        e.node.config.server_id,
        if token.is_some() {
            " with an enrolment token"
        } else {
            ""
        }
    );
    let op = async {
        e.node
            .register(token)
            .await
            .map_err(|err| ApiError::precondition(err.to_string()))
    };
    match viewer
        .change(&f.csrf, ENROL, "registration.submit", &target, op)
        .await
    {
        Ok(status) => done("/", "registration_sent", &status.request_id),
        Err(err) => page(&e, &viewer, &Done::default(), Some(err)).await,
    }
}

#[derive(serde::Deserialize)]
struct CheckForm {
    csrf: String,
}

async fn check(State(e): State<Enrol>, viewer: Viewer, Form(f): Form<CheckForm>) -> Response {
    if let Err(err) = viewer.check_csrf(&f.csrf) {
        return page(&e, &viewer, &Done::default(), Some(err)).await;
    }
    done("/", "checked", "")
}

/// Serves the enrolment console on `listener` until `node` is enrolled (its certificates
/// stored), checking a pending request every few seconds, or until `stop` completes.
/// Returns whether it is enrolled.
pub async fn serve_until_enrolled(
    node: Arc<Node>,
    listener: std::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<bool, SsError> {
    let (plane, tls) = super::plane::management_plane(&node, &SITE)?;
    let limits = node.config.connection_limits;
    let listener = TcpListener::from_std(listener)
        .map_err(|e| SsError::Serve(format!("management listener: {e}")))?;
    let enrolled = Arc::new(tokio::sync::Notify::new());
    let state = Enrol {
        node: node.clone(),
        plane,
        enrolled: enrolled.clone(),
    };
    let router = Router::new()
        .route("/", axum::routing::get(show))
        .route("/enrolment/register", axum::routing::post(register))
        .route("/enrolment/check", axum::routing::post(check))
        .merge(lintas_manage::console::routes())
        .layer(axum::middleware::from_fn(
            lintas_manage::web::security_headers,
        ))
        .with_state(state);
    let done = lintas_transport::Stop::on(stop);
    let watcher = {
        let (node, enrolled, done) = (node.clone(), enrolled.clone(), done.clone());
        async move {
            loop {
                tokio::select! {
                    _ = done.stopped() => return false,
                    _ = enrolled.notified() => {}
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                }
                if node.paths.sign_cert().exists() && node.paths.tls_cert().exists() {
                    return true;
                }
                if let Ok(Enrolment::Approved(_)) = node.poll().await {
                    return true;
                }
            }
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "not enrolled yet: the management console offers registration");
    }
    let admission = lintas_transport::Admission::new("management", limits);
    let server = lintas_transport::serve_https(listener, tls, admission, router, done.stopped());
    let (enrolled, ()) = tokio::join!(done.part(watcher), server);
    Ok(enrolled)
}
