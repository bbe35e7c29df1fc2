//! The users and API keys page: who may administer this daemon, with which roles, and
//! the keys scripts use. Changes need a system administrator and are audited.

use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Chrome, Done, Viewer, done, render};
use crate::web::ApiError;

/// A form's fields, repeated ones (checkboxes) included.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(body: &[u8]) -> Self {
        Fields(form_urlencoded::parse(body).into_owned().collect())
    }
    fn one(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
    /// The roles ticked in the form.
    fn roles(&self) -> Result<Vec<crate::Role>, ApiError> {
        self.0
            .iter()
            .filter(|(k, _)| k == "role")
            .map(|(_, v)| {
                v.parse()
                    .map_err(|e: crate::role::UnknownRole| ApiError::invalid(e.to_string()))
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    c: Chrome,
    users: Vec<(crate::users::UserInfo, String, String)>,
    keys: Vec<(crate::users::ApiKeyInfo, String, String)>,
    roles: Vec<&'static str>,
    new_key: Option<String>,
    may_change: bool,
    needs: String,
}

fn role_names(roles: &[crate::Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn users_page(
    viewer: &Viewer,
    d: &Done,
    new_key: Option<String>,
    error: Option<ApiError>,
) -> Response {
    let plane = &viewer.plane;
    let mut c = viewer.chrome("users");
    c.notice = d.notice(&c);
    let mut status = error.as_ref().map_or(StatusCode::OK, ApiError::status);
    c.error = error.map(|e| e.message);
    let visible = match viewer
        .caller
        .require(plane, crate::api::READ_AUDIT, "user.list", "")
    {
        Ok(()) => true,
        Err(e) => {
            status = e.status();
            c.error = Some(e.message);
            false
        }
    };
    let (may_change, needs) = viewer.may(crate::api::MANAGE_USERS);
    let iso = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    };
    let page = UsersPage {
        users: if visible {
            plane.users.users()
        } else {
            Vec::new()
        }
        .into_iter()
        .map(|u| {
            let (roles, at) = (role_names(&u.roles), iso(u.created));
            (u, roles, at)
        })
        .collect(),
        keys: if visible {
            plane.users.api_keys()
        } else {
            Vec::new()
        }
        .into_iter()
        .map(|k| {
            let (roles, at) = (role_names(&k.roles), iso(k.created));
            (k, roles, at)
        })
        .collect(),
        roles: crate::Role::ALL.iter().map(|r| r.as_str()).collect(),
        new_key,
        may_change,
        needs,
        c,
    };
    render(&page, status)
}

pub(super) async fn users(viewer: Viewer, Query(d): Query<Done>) -> Response {
    users_page(&viewer, &d, None, None)
}

pub(super) async fn add_user(viewer: Viewer, body: axum::body::Bytes) -> Response {
    let f = Fields::parse(&body);
    let name = f.one("name");
    let roles = f.roles();
    let target = format!("user {name}");
    let plane = viewer.plane.clone();
    let op = async move {
        let roles = roles?;
        let password = f.one("password");
        let users = plane.users.clone();
        tokio::task::spawn_blocking(move || users.add_user(&name, &password, &roles))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(ApiError::from)
    };
    let csrf = Fields::parse(&body).one("csrf");
    match viewer
        .change(&csrf, crate::api::MANAGE_USERS, "user.add", &target, op)
        .await
    {
        Ok(u) => done("/users", "user_added", &u.name),
        Err(e) => users_page(&viewer, &Done::default(), None, Some(e)),
    }
}

pub(super) async fn remove_user(viewer: Viewer, body: axum::body::Bytes) -> Response {
    let f = Fields::parse(&body);
    let name = f.one("name");
    let target = format!("user {name}");
    let plane = viewer.plane.clone();
    let op = async move { plane.users.remove_user(&name).map_err(ApiError::from) };
    match viewer
        .change(
            &f.one("csrf"),
            crate::api::MANAGE_USERS,
            "user.remove",
            &target,
            op,
        )
        .await
    {
        Ok(u) => {
            viewer.plane.sessions.end_user(&u.name);
            done("/users", "user_removed", &u.name)
        }
        Err(e) => users_page(&viewer, &Done::default(), None, Some(e)),
    }
}

pub(super) async fn create_key(viewer: Viewer, body: axum::body::Bytes) -> Response {
    let f = Fields::parse(&body);
    let name = f.one("name");
    let target = format!("API key '{name}'");
    let plane = viewer.plane.clone();
    let actor = viewer.caller.actor.clone();
    let roles = f.roles();
    let op = async move {
        plane
            .users
            .create_api_key(&name, &roles?, &actor)
            .map_err(ApiError::from)
    };
    match viewer
        .change(
            &f.one("csrf"),
            crate::api::MANAGE_USERS,
            "api-key.add",
            &target,
            op,
        )
        .await
    {
        // Shown on this answer only, never put in a URL.
        Ok((_, key)) => users_page(&viewer, &Done::default(), Some(key), None),
        Err(e) => users_page(&viewer, &Done::default(), None, Some(e)),
    }
}

pub(super) async fn revoke_key(viewer: Viewer, body: axum::body::Bytes) -> Response {
    let f = Fields::parse(&body);
    let id = f.one("id");
    let target = format!("API key {id}");
    let plane = viewer.plane.clone();
    let op = async move { plane.users.revoke_api_key(&id).map_err(ApiError::from) };
    match viewer
        .change(
            &f.one("csrf"),
            crate::api::MANAGE_USERS,
            "api-key.remove",
            &target,
            op,
        )
        .await
    {
        Ok(k) => done("/users", "key_revoked", &k.id),
        Err(e) => users_page(&viewer, &Done::default(), None, Some(e)),
    }
}
