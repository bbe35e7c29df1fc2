//! The security server's web console: pages over the same typed operations as the
//! management API, rendered on the server. Every change goes through a form carrying the
//! session's CSRF token, is checked against the viewer's roles and recorded in the admin
//! audit log, exactly as the API does.

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRef, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Form, Router};
use lintas_manage::console::{Chrome, Done, Site, Viewer, done, render};
use lintas_manage::{ApiError, Plane};

use super::api::{Api, CERTIFICATES, MAINTENANCE, SERVICES};
use super::chart::{Chart, chart};
use super::model::*;

/// The security server's console: its name, words and pages.
pub static SITE: Site = Site {
    product: "lintas security server",
    catalogue: super::words::CATALOGUE,
    nav: &[
        ("dashboard", "/"),
        ("services", "/services"),
        ("access", "/access"),
        ("client_certs", "/client-certs"),
        ("messages", "/messages"),
        ("users", "/users"),
        ("audit_log", "/audit"),
    ],
};

/// The console's own templates, for the test of their catalogue keys.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "dashboard.html",
        include_str!("../../templates/dashboard.html"),
    ),
    ("chart.html", include_str!("../../templates/chart.html")),
    (
        "services.html",
        include_str!("../../templates/services.html"),
    ),
    ("access.html", include_str!("../../templates/access.html")),
    ("certs.html", include_str!("../../templates/certs.html")),
    (
        "messages.html",
        include_str!("../../templates/messages.html"),
    ),
];

fn iso(unix_secs: i64) -> String {
    lintas_globalconf::iso8601(unix_secs)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    c: Chrome,
    /// Serial, generated, expires, members, servers.
    conf: Option<(u64, String, String, usize, usize)>,
    health: HealthInfo,
    log: LogStatus,
    checkpoint_at: String,
    certs: Vec<(&'static str, String, i64)>,
    chart: Chart,
}

async fn dashboard(State(api): State<Api>, viewer: Viewer, Query(d): Query<Done>) -> Response {
    dashboard_page(&api, &viewer, d.notice(&viewer.chrome("dashboard")), None).await
}

async fn dashboard_page(
    api: &Api,
    viewer: &Viewer,
    notice: Option<String>,
    error: Option<ApiError>,
) -> Response {
    let m = &api.manage;
    let mut c = viewer.chrome("dashboard");
    c.notice = notice;
    let status = error.as_ref().map_or(StatusCode::OK, ApiError::status);
    c.error = error.map(|e| e.message);
    let log = m.log_status();
    let now = now_ms() / 1000;
    let certs = [
        ("signing_cert", &m.own.sign_cert),
        ("tls_cert", &m.own.tls_cert),
    ]
    .into_iter()
    .filter_map(|(name, der)| lintas_certs::CertInfo::parse(der).ok().map(|i| (name, i)))
    .map(|(name, info)| {
        let until = info.not_after_unix();
        (name, iso(until), (until - now) / 86400)
    })
    .collect();
    let to = now_ms();
    let records = recent(m, to - 3_600_000, to, "", "")
        .await
        .unwrap_or_default();
    let page = DashboardPage {
        conf: m.conf_status().map(|s| {
            (
                s.serial,
                iso(s.generated_at),
                iso(s.expires_at),
                s.members,
                s.servers,
            )
        }),
        chart: chart(&records.0, to - 3_600_000, to, 60),
        checkpoint_at: if log.checkpoint_unix_ms > 0 {
            iso(log.checkpoint_unix_ms / 1000)
        } else {
            "-".into()
        },
        health: m.health(),
        log,
        certs,
        c,
    };
    render(&page, status)
}

/// Operational-monitoring records from `from` to `to` (Unix ms), at most 5000, and
/// whether there were more.
async fn recent(
    m: &super::Manage,
    from: i64,
    to: i64,
    client: &str,
    service: &str,
) -> Result<(Vec<lintas_proto::opmon::v1::OpRecord>, bool), ApiError> {
    const MOST: usize = 5000;
    let mut records = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = m
            .operational_data(lintas_proto::opmon::v1::OpQuery {
                from_unix_ms: from,
                to_unix_ms: to,
                client: client.into(),
                service: service.into(),
                cursor,
                limit: 1000,
            })
            .await?;
        records.extend(page.records);
        if page.next_cursor.is_empty() {
            return Ok((records, false));
        }
        if records.len() >= MOST {
            return Ok((records, true));
        }
        cursor = page.next_cursor;
    }
}

#[derive(serde::Deserialize)]
struct MaintenanceForm {
    csrf: String,
    on: bool,
    #[serde(default)]
    reason: String,
}

async fn set_maintenance(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<MaintenanceForm>,
) -> Response {
    let action = if f.on {
        "maintenance.on"
    } else {
        "maintenance.off"
    };
    let state = MaintenanceState {
        on: f.on,
        reason: f.reason.clone(),
    };
    let m = api.manage.clone();
    let result = viewer
        .change(&f.csrf, MAINTENANCE, action, &f.reason, async move {
            m.set_maintenance(state).map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(s) if s.on => done("/", "maintenance_is_on", &s.reason),
        Ok(_) => done("/", "maintenance_is_off", ""),
        Err(e) => dashboard_page(&api, &viewer, None, Some(e)).await,
    }
}

#[derive(Template)]
#[template(path = "services.html")]
struct ServicesPage {
    c: Chrome,
    services: Vec<ServiceInfo>,
    hosted: Vec<String>,
    may_change: bool,
    needs: String,
}

async fn services(State(api): State<Api>, viewer: Viewer, Query(d): Query<Done>) -> Response {
    let notice = d.notice(&viewer.chrome("services"));
    services_page(&api, &viewer, notice, None)
}

fn all<T: Clone>(
    list: impl Fn(&ListQuery) -> Result<Page<T>, super::ManageError>,
) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::new();
    let mut q = ListQuery {
        page_size: 5000,
        ..Default::default()
    };
    loop {
        let page = list(&q)?;
        out.extend(page.items);
        match page.next_page_token {
            Some(next) if out.len() < 50_000 => q.page_token = next,
            _ => return Ok(out),
        }
    }
}

fn services_page(
    api: &Api,
    viewer: &Viewer,
    notice: Option<String>,
    error: Option<ApiError>,
) -> Response {
    let m = &api.manage;
    let mut c = viewer.chrome("services");
    c.notice = notice;
    let mut status = error.as_ref().map_or(StatusCode::OK, ApiError::status);
    c.error = error.map(|e| e.message);
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
struct ServiceForm {
    csrf: String,
    provider: String,
    service: String,
    endpoint: String,
    #[serde(default)]
    rest: bool,
    #[serde(default)]
    large_messages: bool,
    #[serde(default)]
    openapi_path: String,
}

async fn add_service(
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
        Err(e) => services_page(&api, &viewer, None, Some(e)),
    }
}

#[derive(serde::Deserialize)]
struct ServiceRefForm {
    csrf: String,
    provider: String,
    service: String,
}

async fn remove_service(
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
        Err(e) => services_page(&api, &viewer, None, Some(e)),
    }
}

#[derive(Template)]
#[template(path = "access.html")]
struct AccessPage {
    c: Chrome,
    grants: Vec<GrantSpec>,
    /// ("PROVIDER SERVICE", "SERVICE (PROVIDER)") of each service, for the form.
    services: Vec<(String, String)>,
    may_change: bool,
    needs: String,
}

async fn access(State(api): State<Api>, viewer: Viewer, Query(d): Query<Done>) -> Response {
    let notice = d.notice(&viewer.chrome("access"));
    access_page(&api, &viewer, notice, None)
}

fn access_page(
    api: &Api,
    viewer: &Viewer,
    notice: Option<String>,
    error: Option<ApiError>,
) -> Response {
    let m = &api.manage;
    let mut c = viewer.chrome("access");
    c.notice = notice;
    let mut status = error.as_ref().map_or(StatusCode::OK, ApiError::status);
    c.error = error.map(|e| e.message);
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
struct GrantForm {
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

async fn grant(State(api): State<Api>, viewer: Viewer, Form(f): Form<GrantForm>) -> Response {
    let csrf = f.csrf.clone();
    let spec = f.spec();
    let target = super::api::grant_target(&spec);
    let m = api.manage.clone();
    let result = viewer
        .change(&csrf, SERVICES, "grant.add", &target, async move {
            m.grant(spec).await.map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(g) => done("/access", "granted", &super::api::grant_target(&g)),
        Err(e) => access_page(&api, &viewer, None, Some(e)),
    }
}

async fn revoke(State(api): State<Api>, viewer: Viewer, Form(f): Form<GrantForm>) -> Response {
    let csrf = f.csrf.clone();
    let spec = f.spec();
    let target = super::api::grant_target(&spec);
    let m = api.manage.clone();
    let result = viewer
        .change(&csrf, SERVICES, "grant.remove", &target, async move {
            m.revoke(spec).await.map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(g) => done("/access", "revoked", &super::api::grant_target(&g)),
        Err(e) => access_page(&api, &viewer, None, Some(e)),
    }
}

#[derive(Template)]
#[template(path = "certs.html")]
struct CertsPage {
    c: Chrome,
    certs: Vec<(ClientCertInfo, String)>,
    clients: Vec<String>,
    may_change: bool,
    needs: String,
}

async fn client_certs(State(api): State<Api>, viewer: Viewer, Query(d): Query<Done>) -> Response {
    let notice = d.notice(&viewer.chrome("client_certs"));
    certs_page(&api, &viewer, notice, None)
}

fn certs_page(
    api: &Api,
    viewer: &Viewer,
    notice: Option<String>,
    error: Option<ApiError>,
) -> Response {
    let m = &api.manage;
    let mut c = viewer.chrome("client_certs");
    c.notice = notice;
    let mut status = error.as_ref().map_or(StatusCode::OK, ApiError::status);
    c.error = error.map(|e| e.message);
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
struct CertForm {
    csrf: String,
    client: String,
    certificate_pem: String,
}

async fn add_client_cert(
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
        Err(e) => certs_page(&api, &viewer, None, Some(e)),
    }
}

#[derive(serde::Deserialize)]
struct CertRefForm {
    csrf: String,
    fingerprint: String,
}

async fn remove_client_cert(
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
        Err(e) => certs_page(&api, &viewer, None, Some(e)),
    }
}

/// The message-log search, as the form sends it (times as `datetime-local`, UTC).
#[derive(Debug, Default, serde::Deserialize)]
struct MessageQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    message_id: String,
}

/// `YYYY-MM-DDTHH:MM[:SS]` (UTC) as Unix milliseconds; empty is `None`.
fn parse_local(text: &str) -> Result<Option<i64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let with_seconds = if text.len() == 16 {
        format!("{text}:00Z")
    } else {
        format!("{text}Z")
    };
    time::OffsetDateTime::parse(
        &with_seconds,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
    .map_err(|_| format!("'{text}' is not a time like 2026-12-07T09:30"))
}

#[derive(Template)]
#[template(path = "messages.html")]
struct MessagesPage {
    c: Chrome,
    q: MessageQuery,
    records: Vec<(lintas_proto::opmon::v1::OpRecord, String)>,
    more: bool,
    chart: Chart,
}

async fn messages(
    State(api): State<Api>,
    viewer: Viewer,
    Query(q): Query<MessageQuery>,
) -> Response {
    let mut c = viewer.chrome("messages");
    let now = now_ms();
    let range = parse_local(&q.from).and_then(|from| Ok((from, parse_local(&q.to)?)));
    let (from, to) = match range {
        Ok((from, to)) => (
            from.unwrap_or(now - 24 * 3_600_000),
            to.unwrap_or(now + 60_000),
        ),
        Err(why) => {
            c.error = Some(why);
            (now - 24 * 3_600_000, now + 60_000)
        }
    };
    let (mut records, more) = recent(&api.manage, from, to, q.client.trim(), q.service.trim())
        .await
        .unwrap_or_else(|e| {
            c.error = Some(e.message);
            (Vec::new(), false)
        });
    let id = q.message_id.trim();
    if !id.is_empty() {
        records.retain(|r| r.message_id.contains(id));
    }
    let chart = chart(&records, from, to, 60);
    records.sort_by_key(|r| std::cmp::Reverse(r.time_unix_ms));
    records.truncate(500);
    let records = records
        .into_iter()
        .map(|r| {
            let at = iso(r.time_unix_ms / 1000);
            (r, at)
        })
        .collect();
    let status = if c.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        &MessagesPage {
            c,
            q,
            records,
            more,
            chart,
        },
        status,
    )
}

/// The console's pages.
pub fn routes<S>() -> Router<S>
where
    Api: FromRef<S>,
    Arc<Plane>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    use axum::routing::{get, post};
    Router::new()
        .route("/", get(dashboard))
        .route("/maintenance", post(set_maintenance))
        .route("/services", get(services).post(add_service))
        .route("/services/remove", post(remove_service))
        .route("/access", get(access).post(grant))
        .route("/access/revoke", post(revoke))
        .route("/client-certs", get(client_certs).post(add_client_cert))
        .route("/client-certs/remove", post(remove_client_cert))
        .route("/messages", get(messages))
        .merge(lintas_manage::console::routes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_the_search_form() {
        let cases: &[(&str, Result<Option<i64>, ()>)] = &[
            ("", Ok(None)),
            ("2026-12-07T09:30", Ok(Some(1_796_635_800_000))),
            ("2026-12-07T09:30:15", Ok(Some(1_796_635_815_000))),
            ("2026-12-07", Err(())),
            ("kemarin", Err(())),
            ("2026-13-07T09:30", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_local(text).map_err(|_| ()), *expected, "{text}");
        }
    }

    #[test]
    fn every_key_the_pages_use_is_in_both_languages() {
        assert_eq!(
            lintas_manage::i18n::check(SITE.catalogue),
            Vec::<String>::new()
        );
        let tr = lintas_manage::i18n::Tr {
            lang: lintas_manage::i18n::Lang::En,
            own: SITE.catalogue,
        };
        for (name, text) in TEMPLATES
            .iter()
            .chain(super::super::enrolment::TEMPLATES)
            .chain(lintas_manage::console::TEMPLATES)
        {
            for key in lintas_manage::i18n::keys_used(text) {
                assert!(tr.has(key), "{name} uses {key}, which no catalogue has");
            }
        }
        for (key, _) in SITE.nav.iter().chain(super::super::enrolment::SITE.nav) {
            assert!(tr.has(key), "navigation {key}");
        }
        // Keys the code passes to templates and notices.
        for key in [
            "signing_cert",
            "tls_cert",
            "service_added",
            "service_removed",
            "granted",
            "revoked",
            "cert_added",
            "cert_removed",
            "maintenance_is_on",
            "maintenance_is_off",
            "enrolment_pending",
            "enrolment_approved",
            "enrolment_none",
            "enrolment_rejected",
            "enrolment_unknown",
            "registration_sent",
            "checked",
        ] {
            assert!(tr.has(key), "{key}");
        }
    }
}
