//! The subscriptions to this server's topics over the management API.

use super::*;

/// The subscriptions to the topics of the publishers hosted here.
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "events", params(ListQuery),
    responses((status = 200, body = Page<SubscriptionInfo>), (status = 401, body = ApiError)))]
pub(super) async fn list_subscriptions(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<SubscriptionInfo>>, ApiError> {
    Ok(Json(api.manage.subscriptions(&q)?))
}
