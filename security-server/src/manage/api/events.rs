//! The subscriptions to this server's topics and their dead letters over the
//! management API.

use super::*;
use crate::manage::{dead_letters_target, subscription_target};

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

/// Ends a subscription for its subscriber (one whose grant was revoked, say); its dead
/// letters go with it.
#[utoipa::path(delete, path = "/api/v1/subscriptions", tag = "events", params(SubscriptionRef),
    responses((status = 200, body = SubscriptionInfo), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn end_subscription(
    State(api): State<Api>,
    caller: Caller,
    Params(s): Params<SubscriptionRef>,
) -> Result<Json<SubscriptionInfo>, ApiError> {
    let target = subscription_target(&s);
    let op = async { Ok(api.manage.end_subscription(s).await?) };
    Ok(Json(
        audited(&api, &caller, SERVICES, "subscription.end", &target, op).await?,
    ))
}

/// A subscription's dead letters (events given up on), oldest first.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "events", params(DeadLetterSelection),
    responses((status = 200, body = Vec<DeadLetterInfo>), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 412, body = ApiError)))]
pub(super) async fn list_dead_letters(
    State(api): State<Api>,
    _caller: Caller,
    Params(s): Params<DeadLetterSelection>,
) -> Result<Json<Vec<DeadLetterInfo>>, ApiError> {
    Ok(Json(api.manage.dead_letters(&s)?))
}

/// Has a subscription's dead letters (the one at `sequence`, or all) delivered again,
/// before its next event.
#[utoipa::path(post, path = "/api/v1/dead-letters/redeliver", tag = "events",
    request_body = DeadLetterSelection,
    responses((status = 200, body = DeadLetterCount), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn redeliver_dead_letters(
    State(api): State<Api>,
    caller: Caller,
    Body(s): Body<DeadLetterSelection>,
) -> Result<Json<DeadLetterCount>, ApiError> {
    changed(api, caller, s, true).await
}

/// Removes a subscription's dead letters (the one at `sequence`, or all) for good.
#[utoipa::path(post, path = "/api/v1/dead-letters/discard", tag = "events",
    request_body = DeadLetterSelection,
    responses((status = 200, body = DeadLetterCount), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn discard_dead_letters(
    State(api): State<Api>,
    caller: Caller,
    Body(s): Body<DeadLetterSelection>,
) -> Result<Json<DeadLetterCount>, ApiError> {
    changed(api, caller, s, false).await
}

async fn changed(
    api: Api,
    caller: Caller,
    s: DeadLetterSelection,
    redeliver: bool,
) -> Result<Json<DeadLetterCount>, ApiError> {
    let target = dead_letters_target(&s);
    let action = if redeliver {
        "dead-letters.redeliver"
    } else {
        "dead-letters.discard"
    };
    let op = async { Ok(api.manage.change_dead_letters(s, redeliver).await?) };
    Ok(Json(
        audited(&api, &caller, SERVICES, action, &target, op).await?,
    ))
}
