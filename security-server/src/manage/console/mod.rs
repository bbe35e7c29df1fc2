//! The security server's web console: pages over the same typed operations as the
//! management API, rendered on the server. Every change goes through a form carrying the
//! session's CSRF token, is checked against the viewer's roles and recorded in the admin
//! audit log, exactly as the API does.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use lintas_manage::console::Site;
use lintas_manage::{ApiError, Plane};

mod access;
mod certs;
mod dashboard;
mod events;
mod messages;
mod services;

use super::api::Api;
use super::model::{ListQuery, Page};

/// The security server's console: its name, words and pages.
pub static SITE: Site = Site {
    product: "lintas security server",
    catalogue: super::words::CATALOGUE,
    nav: &[
        ("dashboard", "/"),
        ("services", "/services"),
        ("access", "/access"),
        ("events", "/events"),
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
        include_str!("../../../templates/dashboard.html"),
    ),
    ("chart.html", include_str!("../../../templates/chart.html")),
    (
        "services.html",
        include_str!("../../../templates/services.html"),
    ),
    (
        "access.html",
        include_str!("../../../templates/access.html"),
    ),
    ("certs.html", include_str!("../../../templates/certs.html")),
    (
        "events.html",
        include_str!("../../../templates/events.html"),
    ),
    (
        "messages.html",
        include_str!("../../../templates/messages.html"),
    ),
];

pub(super) fn iso(unix_secs: i64) -> String {
    lintas_globalconf::iso8601(unix_secs)
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
        .route("/", get(dashboard::dashboard))
        .route("/maintenance", post(dashboard::set_maintenance))
        .route(
            "/services",
            get(services::services).post(services::add_service),
        )
        .route("/services/remove", post(services::remove_service))
        .route("/access", get(access::access).post(access::grant))
        .route("/access/revoke", post(access::revoke))
        .route("/access/quota", post(access::set_quota))
        .route("/access/quota/remove", post(access::remove_quota))
        .route(
            "/client-certs",
            get(certs::client_certs).post(certs::add_client_cert),
        )
        .route("/client-certs/remove", post(certs::remove_client_cert))
        .route("/events", get(events::events))
        .route("/events/redeliver", post(events::redeliver))
        .route("/events/discard", post(events::discard))
        .route("/events/end", post(events::end))
        .route("/messages", get(messages::messages))
        .merge(lintas_manage::console::routes())
}

/// Every item of a paged list (at most 50,000).
fn all<T: Clone>(
    list: impl Fn(&ListQuery) -> Result<Page<T>, crate::manage::ManageError>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            .chain(crate::manage::enrolment::TEMPLATES)
            .chain(lintas_manage::console::TEMPLATES)
        {
            for key in lintas_manage::i18n::keys_used(text) {
                assert!(tr.has(key), "{name} uses {key}, which no catalogue has");
            }
        }
        for (key, _) in SITE.nav.iter().chain(crate::manage::enrolment::SITE.nav) {
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
            "quota_set",
            "quota_removed",
            "redelivered",
            "discarded",
            "subscription_ended",
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
