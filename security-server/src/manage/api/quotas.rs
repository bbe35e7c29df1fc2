//! Quotas over the management API: set, removed and listed by those who administer
//! services.

use super::*;

/// The audit log's words for a quota.
pub fn quota_target(q: &QuotaKey) -> String {
    let mut t = format!("{} {}", q.provider, q.service);
    if let Some(m) = &q.method {
        t.push_str(&format!(" method {m}"));
    }
    match &q.client {
        Some(c) => t.push_str(&format!(" for {c}")),
        None => t.push_str(" for each client"),
    }
    t
}

/// How often clients may call the services provided here.
#[utoipa::path(get, path = "/api/v1/quotas", tag = "access", params(ListQuery),
    responses((status = 200, body = Page<QuotaSpec>), (status = 401, body = ApiError)))]
pub(super) async fn list_quotas(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<QuotaSpec>>, ApiError> {
    Ok(Json(api.manage.quotas(&q)?))
}

/// Sets a quota, replacing the one for the same service, method and client.
#[utoipa::path(put, path = "/api/v1/quotas", tag = "access", request_body = QuotaSpec,
    responses((status = 200, body = QuotaSpec), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 412, body = ApiError)))]
pub(super) async fn set_quota(
    State(api): State<Api>,
    caller: Caller,
    Body(q): Body<QuotaSpec>,
) -> Result<Json<QuotaSpec>, ApiError> {
    let target = quota_target(&q.clone().into());
    let op = async { Ok(api.manage.set_quota(q).await?) };
    Ok(Json(
        audited(&api, &caller, SERVICES, "quota.set", &target, op).await?,
    ))
}

/// Removes a quota (by its service, method and client).
#[utoipa::path(delete, path = "/api/v1/quotas", tag = "access", params(QuotaKey),
    responses((status = 200, body = QuotaSpec), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub(super) async fn remove_quota(
    State(api): State<Api>,
    caller: Caller,
    Params(key): Params<QuotaKey>,
) -> Result<Json<QuotaSpec>, ApiError> {
    let target = quota_target(&key);
    let op = async { Ok(api.manage.remove_quota(key).await?) };
    Ok(Json(
        audited(&api, &caller, SERVICES, "quota.remove", &target, op).await?,
    ))
}
