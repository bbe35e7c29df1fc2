//! The dashboard: readiness, the global configuration, the log, certificates,
//! maintenance and the last hour's traffic.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::Response;
use lintas_manage::ApiError;
use lintas_manage::console::{Chrome, Done, Viewer, done, render};

use super::{iso, now_ms};
use crate::manage::api::{Api, MAINTENANCE};
use crate::manage::chart::{Chart, chart};
use crate::manage::model::*;

#[derive(Template)]
#[template(path = "dashboard.html")]
pub(super) struct DashboardPage {
    c: Chrome,
    /// Serial, generated, expires, members, servers.
    conf: Option<(u64, String, String, usize, usize)>,
    health: HealthInfo,
    log: LogStatus,
    checkpoint_at: String,
    certs: Vec<(&'static str, String, i64)>,
    chart: Chart,
}

pub(super) async fn dashboard(
    State(api): State<Api>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Response {
    dashboard_page(&api, &viewer, &d, None).await
}

async fn dashboard_page(api: &Api, viewer: &Viewer, d: &Done, error: Option<ApiError>) -> Response {
    let m = &api.manage;
    let (c, status) = viewer.page("dashboard", d, error);
    let log = m.log_status();
    let now = now_ms() / 1000;
    let keys = m.own.keys();
    let certs = [
        ("signing_cert", &keys.sign_cert),
        ("tls_cert", &keys.tls_cert),
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
pub(super) async fn recent(
    m: &crate::manage::Manage,
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
pub(super) struct MaintenanceForm {
    csrf: String,
    on: bool,
    #[serde(default)]
    reason: String,
}

pub(super) async fn set_maintenance(
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
        Err(e) => dashboard_page(&api, &viewer, &Done::default(), Some(e)).await,
    }
}
