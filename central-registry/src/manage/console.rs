//! The registry's web console: the configuration and readiness, registration requests
//! with the fingerprints to compare (approve, or reject with a reason), members and
//! subsystems, servers and their certificates (revoke), global groups, enrolment tokens,
//! and the history of the configuration's generations.
//! Pages over the same operations as the API; forms carry the session's CSRF token.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::{Form, Router};
use lintas_manage::ApiError;
use lintas_manage::console::{Chrome, Done, Site, Viewer, done, render};

use super::api::{Api, REGISTRATION, SECURITY};
use super::model::*;

/// The registry's console: its name, words and pages.
pub static SITE: Site = Site {
    product: "lintas central registry",
    catalogue: super::words::CATALOGUE,
    nav: &[
        ("overview", "/"),
        ("registrations", "/registrations"),
        ("members", "/members"),
        ("servers", "/servers"),
        ("groups", "/groups"),
        ("generations", "/generations"),
        ("users", "/users"),
        ("audit_log", "/audit"),
    ],
};

/// The console's own templates, for the test of their catalogue keys.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "overview.html",
        include_str!("../../templates/overview.html"),
    ),
    (
        "registrations.html",
        include_str!("../../templates/registrations.html"),
    ),
    ("members.html", include_str!("../../templates/members.html")),
    ("servers.html", include_str!("../../templates/servers.html")),
    ("groups.html", include_str!("../../templates/groups.html")),
    (
        "generations.html",
        include_str!("../../templates/generations.html"),
    ),
];

fn iso(unix_secs: i64) -> String {
    lintas_globalconf::iso8601(unix_secs)
}

/// Every item of a paged list (at most 50,000).
async fn all<T, F, Fut>(list: F) -> Result<Vec<T>, ApiError>
where
    F: Fn(ListQuery) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, ApiError>>,
{
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(ListQuery {
            page_size: 5000,
            page_token: token,
            ..Default::default()
        })
        .await?;
        out.extend(page.items);
        match page.next_page_token {
            Some(next) if out.len() < 50_000 => token = next,
            _ => return Ok(out),
        }
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    c: Chrome,
    g: Generation,
    token: Option<Token>,
    token_until: String,
}

async fn overview(State(api): State<Api>, viewer: Viewer, Query(d): Query<Done>) -> Response {
    overview_page(&api, &viewer, &d, None, None)
}

fn overview_page(
    api: &Api,
    viewer: &Viewer,
    d: &Done,
    token: Option<Token>,
    error: Option<ApiError>,
) -> Response {
    let (c, status) = viewer.page("overview", d, error);
    let token_until = token
        .as_ref()
        .map(|t| iso(t.expires_at))
        .unwrap_or_default();
    render(
        &OverviewPage {
            c,
            g: api.manage.generation(),
            token,
            token_until,
        },
        status,
    )
}

#[derive(serde::Deserialize)]
struct TokenForm {
    csrf: String,
    server_id: String,
}

async fn create_token(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<TokenForm>,
) -> Response {
    let target = format!("enrolment token for {}", f.server_id);
    let spec = NewToken {
        server_id: f.server_id.trim().to_owned(),
        ttl_seconds: None,
    };
    let op = api.manage.create_token(&viewer.caller.actor, spec);
    match viewer
        .change(&f.csrf, REGISTRATION, "token.add", &target, op)
        .await
    {
        // Shown on this answer only, never put in a URL.
        Ok(token) => overview_page(&api, &viewer, &Done::default(), Some(token), None),
        Err(e) => overview_page(&api, &viewer, &Done::default(), None, Some(e)),
    }
}

#[derive(Template)]
#[template(path = "registrations.html")]
struct RegistrationsPage {
    c: Chrome,
    pending: Vec<(Registration, String)>,
    decided: Vec<(Registration, String)>,
    may_change: bool,
    needs: String,
}

async fn registrations(State(api): State<Api>, viewer: Viewer, Query(d): Query<Done>) -> Response {
    registrations_page(&api, &viewer, &d, None).await
}

async fn registrations_page(
    api: &Api,
    viewer: &Viewer,
    d: &Done,
    error: Option<ApiError>,
) -> Response {
    let (mut c, mut status) = viewer.page("registrations", d, error);
    let list = |state: &'static str| {
        let m = api.manage.clone();
        async move {
            let q = RegistrationQuery {
                state: Some(state.into()),
                page_size: 500,
                ..Default::default()
            };
            m.registrations(q).await.map(|p| {
                p.items
                    .into_iter()
                    .map(|r| {
                        let at = iso(if r.decided_at > 0 {
                            r.decided_at
                        } else {
                            r.submitted_at
                        });
                        (r, at)
                    })
                    .collect::<Vec<_>>()
            })
        }
    };
    let mut failed = |e: ApiError| {
        status = e.status();
        c.error = Some(e.message);
        Vec::new()
    };
    let pending = list("pending").await.unwrap_or_else(&mut failed);
    let mut decided = list("approved").await.unwrap_or_else(&mut failed);
    decided.extend(list("rejected").await.unwrap_or_else(&mut failed));
    decided.sort_by_key(|(r, _)| std::cmp::Reverse(r.decided_at));
    decided.truncate(50);
    let (may_change, needs) = viewer.may(REGISTRATION);
    render(
        &RegistrationsPage {
            c,
            pending,
            decided,
            may_change,
            needs,
        },
        status,
    )
}

#[derive(serde::Deserialize)]
struct DecisionForm {
    csrf: String,
    request_id: String,
    #[serde(default)]
    reason: String,
}

async fn approve(State(api): State<Api>, viewer: Viewer, Form(f): Form<DecisionForm>) -> Response {
    let target = format!("registration {}", f.request_id);
    let op = api.manage.approve(&viewer.caller.actor, &f.request_id);
    match viewer
        .change(&f.csrf, REGISTRATION, "registration.approve", &target, op)
        .await
    {
        Ok(r) => done("/registrations", "approved", &r.server_id),
        Err(e) => registrations_page(&api, &viewer, &Done::default(), Some(e)).await,
    }
}

async fn reject(State(api): State<Api>, viewer: Viewer, Form(f): Form<DecisionForm>) -> Response {
    let target = format!("registration {}: {}", f.request_id, f.reason);
    let op = api
        .manage
        .reject(&viewer.caller.actor, &f.request_id, &f.reason);
    match viewer
        .change(&f.csrf, REGISTRATION, "registration.reject", &target, op)
        .await
    {
        Ok(r) => done("/registrations", "rejected", &r.server_id),
        Err(e) => registrations_page(&api, &viewer, &Done::default(), Some(e)).await,
    }
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    c: Chrome,
    members: Vec<Member>,
    may_change: bool,
    needs: String,
}

async fn members(State(api): State<Api>, viewer: Viewer, Query(d): Query<Done>) -> Response {
    members_page(&api, &viewer, &d, None).await
}

async fn members_page(api: &Api, viewer: &Viewer, d: &Done, error: Option<ApiError>) -> Response {
    let (mut c, mut status) = viewer.page("members", d, error);
    let members = all(|q| api.manage.members(q)).await.unwrap_or_else(|e| {
        status = e.status();
        c.error = Some(e.message);
        Vec::new()
    });
    let (may_change, needs) = viewer.may(REGISTRATION);
    render(
        &MembersPage {
            c,
            members,
            may_change,
            needs,
        },
        status,
    )
}

#[derive(serde::Deserialize)]
struct MemberForm {
    csrf: String,
    id: String,
    #[serde(default)]
    name: String,
}

async fn add_member(State(api): State<Api>, viewer: Viewer, Form(f): Form<MemberForm>) -> Response {
    let target = format!("member {} ({})", f.id, f.name);
    let spec = NewMember {
        id: f.id.trim().to_owned(),
        name: f.name.trim().to_owned(),
    };
    let op = api.manage.add_member(&viewer.caller.actor, spec);
    match viewer
        .change(&f.csrf, REGISTRATION, "member.add", &target, op)
        .await
    {
        Ok(_) => done("/members", "member_added", f.id.trim()),
        Err(e) => members_page(&api, &viewer, &Done::default(), Some(e)).await,
    }
}

async fn add_subsystem(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<MemberForm>,
) -> Response {
    let target = format!("subsystem {}", f.id);
    let spec = NewSubsystem {
        id: f.id.trim().to_owned(),
    };
    let op = api.manage.add_subsystem(&viewer.caller.actor, spec);
    match viewer
        .change(&f.csrf, REGISTRATION, "subsystem.add", &target, op)
        .await
    {
        Ok(_) => done("/members", "subsystem_added", f.id.trim()),
        Err(e) => members_page(&api, &viewer, &Done::default(), Some(e)).await,
    }
}

type ServerRow = (Server, Vec<(Certificate, String)>);

#[derive(Template)]
#[template(path = "servers.html")]
struct ServersPage {
    c: Chrome,
    servers: Vec<ServerRow>,
    may_revoke: bool,
    needs: String,
}

async fn servers(State(api): State<Api>, viewer: Viewer, Query(d): Query<Done>) -> Response {
    servers_page(&api, &viewer, &d, None).await
}

async fn servers_page(api: &Api, viewer: &Viewer, d: &Done, error: Option<ApiError>) -> Response {
    let (mut c, mut status) = viewer.page("servers", d, error);
    let servers = all(|q| api.manage.servers(q))
        .await
        .unwrap_or_else(|e| {
            status = e.status();
            c.error = Some(e.message);
            Vec::new()
        })
        .into_iter()
        .map(|s| {
            let certs = s
                .certificates
                .iter()
                .map(|cert| (cert.clone(), iso(cert.not_after)))
                .collect();
            (s, certs)
        })
        .collect();
    let (may_revoke, needs) = viewer.may(SECURITY);
    render(
        &ServersPage {
            c,
            servers,
            may_revoke,
            needs,
        },
        status,
    )
}

#[derive(serde::Deserialize)]
struct RevokeForm {
    csrf: String,
    serial: String,
    reason: String,
}

async fn revoke(State(api): State<Api>, viewer: Viewer, Form(f): Form<RevokeForm>) -> Response {
    let target = format!("certificate {}: {}", f.serial, f.reason);
    let spec = NewRevocation {
        serial: f.serial.trim().to_owned(),
        reason: f.reason.clone(),
    };
    let op = api.manage.revoke(&viewer.caller.actor, spec);
    match viewer
        .change(&f.csrf, SECURITY, "certificate.revoke", &target, op)
        .await
    {
        Ok(_) => done("/servers", "cert_revoked", f.serial.trim()),
        Err(e) => servers_page(&api, &viewer, &Done::default(), Some(e)).await,
    }
}

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage {
    c: Chrome,
    groups: Vec<Group>,
    may_change: bool,
    needs: String,
}

async fn groups(State(api): State<Api>, viewer: Viewer, Query(d): Query<Done>) -> Response {
    groups_page(&api, &viewer, &d, None)
}

fn groups_page(api: &Api, viewer: &Viewer, d: &Done, error: Option<ApiError>) -> Response {
    let (c, status) = viewer.page("groups", d, error);
    let (may_change, needs) = viewer.may(REGISTRATION);
    render(
        &GroupsPage {
            c,
            groups: api.manage.groups(),
            may_change,
            needs,
        },
        status,
    )
}

#[derive(serde::Deserialize)]
struct GroupForm {
    csrf: String,
    code: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    client: String,
}

async fn add_group(State(api): State<Api>, viewer: Viewer, Form(f): Form<GroupForm>) -> Response {
    let target = format!("group {}", f.code);
    let spec = NewGroup {
        code: f.code.trim().to_owned(),
        description: f.description.clone(),
    };
    let op = api.manage.add_group(&viewer.caller.actor, spec);
    match viewer
        .change(&f.csrf, REGISTRATION, "group.add", &target, op)
        .await
    {
        Ok(_) => done("/groups", "group_added", f.code.trim()),
        Err(e) => groups_page(&api, &viewer, &Done::default(), Some(e)),
    }
}

async fn add_group_member(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<GroupForm>,
) -> Response {
    let target = format!("group {} + {}", f.code, f.client);
    let op = api
        .manage
        .set_group_member(&viewer.caller.actor, &f.code, f.client.trim(), true);
    match viewer
        .change(&f.csrf, REGISTRATION, "group.member.add", &target, op)
        .await
    {
        Ok(_) => done("/groups", "group_member_added", f.client.trim()),
        Err(e) => groups_page(&api, &viewer, &Done::default(), Some(e)),
    }
}

#[derive(Template)]
#[template(path = "generations.html")]
struct GenerationsPage {
    c: Chrome,
    /// Each with when it was signed and until when it holds.
    generations: Vec<(ConfGeneration, String, String)>,
    next: Option<String>,
}

#[derive(serde::Deserialize)]
struct Older {
    #[serde(default)]
    page_token: String,
}

async fn generations(
    State(api): State<Api>,
    viewer: Viewer,
    Query(d): Query<Done>,
    Query(older): Query<Older>,
) -> Response {
    let (mut c, mut status) = viewer.page("generations", &d, None);
    let q = ListQuery {
        page_size: 50,
        page_token: older.page_token,
        ..Default::default()
    };
    let page = api.manage.generations(q).await.unwrap_or_else(|e| {
        status = e.status();
        c.error = Some(e.message);
        Page {
            items: Vec::new(),
            next_page_token: None,
        }
    });
    let generations = page
        .items
        .into_iter()
        .map(|g| {
            let (signed, until) = (iso(g.generated_at), iso(g.expires_at));
            (g, signed, until)
        })
        .collect();
    let next = page.next_page_token;
    render(
        &GenerationsPage {
            c,
            generations,
            next,
        },
        status,
    )
}

/// The console's pages.
pub fn routes() -> Router<Api> {
    use axum::routing::{get, post};
    Router::new()
        .route("/", get(overview))
        .route("/tokens", post(create_token))
        .route("/registrations", get(registrations))
        .route("/registrations/approve", post(approve))
        .route("/registrations/reject", post(reject))
        .route("/members", get(members).post(add_member))
        .route("/subsystems", post(add_subsystem))
        .route("/servers", get(servers))
        .route("/revocations", post(revoke))
        .route("/groups", get(groups).post(add_group))
        .route("/groups/members", post(add_group_member))
        .route("/generations", get(generations))
        .merge(lintas_manage::console::routes())
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
            lang: lintas_manage::i18n::Lang::Id,
            own: SITE.catalogue,
        };
        for (name, text) in TEMPLATES.iter().chain(lintas_manage::console::TEMPLATES) {
            for key in lintas_manage::i18n::keys_used(text) {
                assert!(tr.has(key), "{name} uses {key}, which no catalogue has");
            }
        }
        for key in SITE.nav.iter().map(|(k, _)| *k).chain([
            "approved",
            "rejected",
            "member_added",
            "subsystem_added",
            "cert_revoked",
            "group_added",
            "group_member_added",
        ]) {
            assert!(tr.has(key), "{key}");
        }
    }
}
