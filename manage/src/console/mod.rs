//! What every daemon's web console shares: pages rendered on the server from templates
//! compiled into the binary (askama), the layout and its navigation, logging in and out
//! with a session cookie, forms carrying the session's CSRF token, the language switch,
//! the stylesheet, and the admin audit log page. No JavaScript.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Router};

mod users;

use crate::i18n::{Entry, LANG_COOKIE, Lang, Tr};
use crate::web::{ApiError, Caller, Plane, Via};

/// The shared templates, for the test that checks their keys against the catalogues.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../../templates/layout.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("audit.html", include_str!("../../templates/audit.html")),
    ("users.html", include_str!("../../templates/users.html")),
];

const CSS: &str = include_str!("../../static/console.css");

/// What a daemon's console is: its name, its own words and its navigation.
#[derive(Debug)]
pub struct Site {
    pub product: &'static str,
    pub catalogue: &'static [Entry],
    /// (catalogue key, path) of each page in the navigation.
    pub nav: &'static [(&'static str, &'static str)],
}

/// One link of the navigation.
#[derive(Debug, Clone)]
pub struct NavItem {
    pub key: &'static str,
    pub href: &'static str,
    pub active: bool,
}

/// What the layout shows around every page.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub tr: Tr,
    pub product: &'static str,
    pub title: &'static str,
    /// Empty before login.
    pub user: String,
    pub roles: String,
    pub csrf: String,
    pub nav: Vec<NavItem>,
    /// This page's path (for the language switch to come back to).
    pub path: String,
    pub notice: Option<String>,
    pub error: Option<String>,
}

impl Chrome {
    fn new(site: &'static Site, lang: Lang, path: &str, title_key: &str) -> Self {
        let tr = Tr {
            lang,
            own: site.catalogue,
        };
        Chrome {
            tr,
            product: site.product,
            title: tr.t(title_key),
            user: String::new(),
            roles: String::new(),
            csrf: String::new(),
            nav: Vec::new(),
            path: path.to_owned(),
            notice: None,
            error: None,
        }
    }
}

/// A logged-in person looking at the console (a session, never an API key).
pub struct Viewer {
    pub caller: Caller,
    pub lang: Lang,
    pub path: String,
    pub site: &'static Site,
    pub plane: Arc<Plane>,
}

impl Viewer {
    /// The layout for a page titled by `title_key`.
    pub fn chrome(&self, title_key: &str) -> Chrome {
        let mut c = Chrome::new(self.site, self.lang, &self.path, title_key);
        c.user = self.caller.name.clone();
        c.roles = self
            .caller
            .roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        c.csrf = self.caller.csrf.clone().unwrap_or_default();
        c.nav = self
            .site
            .nav
            .iter()
            .map(|(key, href)| NavItem {
                key,
                href,
                active: *href == self.path || (*href != "/" && self.path.starts_with(href)),
            })
            .collect();
        c
    }

    /// The layout for a page titled by `title_key`, with the notice `done` names and the
    /// refusal to show, and the status to answer with.
    pub fn page(
        &self,
        title_key: &str,
        done: &Done,
        error: Option<ApiError>,
    ) -> (Chrome, StatusCode) {
        let mut c = self.chrome(title_key);
        c.notice = done.notice(&c);
        let status = error.as_ref().map_or(StatusCode::OK, ApiError::status);
        c.error = error.map(|e| e.message);
        (c, status)
    }

    /// A change through a form: the form's CSRF token, the viewer's roles, the
    /// operation, and its record in the audit log.
    pub async fn change<T>(
        &self,
        csrf: &str,
        allowed: crate::Allowed,
        action: &str,
        target: &str,
        op: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.check_csrf(csrf)?;
        self.caller
            .audited(&self.plane, allowed, action, target, op)
            .await
    }

    /// Whether the viewer holds one of `allowed`, and the roles' names (for the note
    /// under a form).
    pub fn may(&self, allowed: crate::Allowed) -> (bool, String) {
        (allowed.permits(&self.caller.roles), allowed.names())
    }

    /// Refuses a form whose CSRF token is not the session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), ApiError> {
        match &self.caller.csrf {
            Some(expected) if crate::web::same_token(token, expected) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is not this session's; reload the page",
            )),
        }
    }
}

impl<S> FromRequestParts<S> for Viewer
where
    Arc<Plane>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let plane = Arc::<Plane>::from_ref(state);
        let path = parts.uri.path().to_owned();
        match crate::web::authenticate(&plane, parts, true) {
            Ok(caller) if caller.via == Via::Session => Ok(Viewer {
                caller,
                lang: Lang::of(&parts.headers),
                path,
                site: plane.site,
                plane,
            }),
            _ => Err(Redirect::to(&format!("/login?next={}", safe_path(&path))).into_response()),
        }
    }
}

/// What a page says after a change (`?done=KEY&what=…`), in the viewer's words.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Done {
    #[serde(default)]
    done: String,
    #[serde(default)]
    what: String,
}

impl Done {
    /// The notice, when `done` is a key of the catalogues.
    pub fn notice(&self, c: &Chrome) -> Option<String> {
        (!self.done.is_empty() && c.tr.has(&self.done))
            .then(|| format!("{} {}", c.tr.t(&self.done), self.what))
    }
}

/// Back to `path` saying what was done (post/redirect/get).
pub fn done(path: &str, key: &str, what: &str) -> Response {
    let what: String =
        percent_encoding::utf8_percent_encode(what, percent_encoding::NON_ALPHANUMERIC).collect();
    Redirect::to(&format!("{path}?done={key}&what={what}")).into_response()
}

/// `path` if it is a path of this site, else `/` (no open redirects).
fn safe_path(path: &str) -> String {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains(['\\', '\r', '\n'])
        && path.len() < 512;
    if ok { path.into() } else { "/".into() }
}

/// Renders a page with `status`.
pub fn render(page: &impl Template, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("rendering the page: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    c: Chrome,
    next: String,
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

async fn login_page(
    State(plane): State<Arc<Plane>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let c = Chrome::new(plane.site, Lang::of(&headers), "/login", "login_title");
    render(
        &LoginPage {
            c,
            next: safe_path(&q.next),
        },
        StatusCode::OK,
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(plane): State<Arc<Plane>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    match crate::api::log_in(&plane, &form.name, &form.password, from, "console").await {
        Ok((cookie, _)) => {
            let mut response = Redirect::to(&safe_path(&form.next)).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, crate::api::session_cookie(&cookie));
            response
        }
        Err(e) => {
            let mut c = Chrome::new(plane.site, Lang::of(&headers), "/login", "login_title");
            c.error = Some(e.message.clone());
            let mut response = render(
                &LoginPage {
                    c,
                    next: safe_path(&form.next),
                },
                e.status(),
            );
            if let Some(secs) = e.retry_after
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}

/// A form that carries nothing but the CSRF token.
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

async fn logout(
    State(plane): State<Arc<Plane>>,
    viewer: Viewer,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = viewer.check_csrf(&form.csrf) {
        return e.into_response();
    }
    if let Err(e) = crate::api::log_out(&plane, &viewer.caller) {
        return e.into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, crate::api::ended_cookie());
    response
}

#[derive(serde::Deserialize)]
struct LangQuery {
    to: String,
    #[serde(default)]
    back: String,
}

async fn switch_language(Query(q): Query<LangQuery>) -> Response {
    let code = if q.to == "en" { "en" } else { "id" };
    let mut response = Redirect::to(&safe_path(&q.back)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={code}; Path=/; Secure; SameSite=Strict; Max-Age=31536000"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    entries: Vec<crate::audit::AuditEntry>,
}

async fn audit_page(viewer: Viewer) -> Response {
    let plane = viewer.plane.clone();
    let mut c = viewer.chrome("audit_log");
    if let Err(e) = viewer
        .caller
        .require(&plane, crate::api::READ_AUDIT, "audit-log.read", "")
    {
        c.error = Some(e.message.clone());
        return render(
            &AuditPage {
                c,
                entries: Vec::new(),
            },
            e.status(),
        );
    }
    match plane.audit.page(0, 500, "") {
        Ok(entries) => render(&AuditPage { c, entries }, StatusCode::OK),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The console routes every daemon serves: login and logout, the language switch, the
/// stylesheet, the users and API keys page and the audit log page.
pub fn routes<S>() -> Router<S>
where
    Arc<Plane>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/login", axum::routing::get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/lang", axum::routing::get(switch_language))
        .route("/audit", axum::routing::get(audit_page))
        .route(
            "/users",
            axum::routing::get(users::users).post(users::add_user),
        )
        .route("/users/remove", axum::routing::post(users::remove_user))
        .route("/api-keys", axum::routing::post(users::create_key))
        .route("/api-keys/revoke", axum::routing::post(users::revoke_key))
        .route(
            "/static/console.css",
            axum::routing::get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, "max-age=3600"),
                    ],
                    CSS,
                )
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_the_site() {
        let cases: &[(&str, &str)] = &[
            ("/services", "/services"),
            ("/", "/"),
            ("", "/"),
            ("//evil.example/x", "/"),
            ("https://evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("/a\r\nSet-Cookie: x", "/"),
        ];
        for (given, expected) in cases {
            assert_eq!(safe_path(given), *expected, "{given:?}");
        }
    }
}
