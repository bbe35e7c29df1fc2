//! Events: the subscriptions to the topics of the publishers hosted here, their dead
//! letters, and having them delivered again or discarded.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::Response;
use lintas_manage::ApiError;
use lintas_manage::console::{Chrome, Done, Viewer, done, render};

use super::all;
use crate::manage::api::{Api, SERVICES};
use crate::manage::model::*;

/// A subscription and its dead letters.
pub(super) struct Subscription {
    info: SubscriptionInfo,
    letters: Vec<Letter>,
}

pub(super) struct Letter {
    info: DeadLetterInfo,
    /// When it was published, ISO 8601.
    published: String,
}

#[derive(Template)]
#[template(path = "events.html")]
pub(super) struct EventsPage {
    c: Chrome,
    subscriptions: Vec<Subscription>,
    may_change: bool,
    needs: String,
}

pub(super) async fn events(
    State(api): State<Api>,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Response {
    events_page(&api, &viewer, &d, None)
}

fn events_page(api: &Api, viewer: &Viewer, d: &Done, error: Option<ApiError>) -> Response {
    let m = &api.manage;
    let (mut c, mut status) = viewer.page("events", d, error);
    let mut subscriptions = Vec::new();
    let listed = all(|q| m.subscriptions(q)).and_then(|infos| {
        for info in infos {
            let letters = if info.dead_letters == 0 {
                Vec::new()
            } else {
                m.dead_letters(&DeadLetterSelection {
                    publisher: info.publisher.clone(),
                    topic: info.topic.clone(),
                    subscriber: info.subscriber.clone(),
                    sequence: None,
                })?
                .into_iter()
                .map(|l| Letter {
                    published: super::iso(l.published_unix_ms / 1000),
                    info: l,
                })
                .collect()
            };
            subscriptions.push(Subscription { info, letters });
        }
        Ok(())
    });
    if let Err(e) = listed {
        status = e.status();
        c.error = Some(e.message);
    }
    let (may_change, needs) = viewer.may(SERVICES);
    render(
        &EventsPage {
            c,
            subscriptions,
            may_change,
            needs,
        },
        status,
    )
}

#[derive(serde::Deserialize)]
pub(super) struct LettersForm {
    csrf: String,
    publisher: String,
    topic: String,
    subscriber: String,
    /// One dead letter; all of the subscription's without it.
    #[serde(default)]
    sequence: Option<u64>,
}

pub(super) async fn redeliver(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<LettersForm>,
) -> Response {
    changed(api, viewer, f, true).await
}

pub(super) async fn discard(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<LettersForm>,
) -> Response {
    changed(api, viewer, f, false).await
}

#[derive(serde::Deserialize)]
pub(super) struct SubscriptionForm {
    csrf: String,
    publisher: String,
    topic: String,
    subscriber: String,
}

pub(super) async fn end(
    State(api): State<Api>,
    viewer: Viewer,
    Form(f): Form<SubscriptionForm>,
) -> Response {
    let s = SubscriptionRef {
        publisher: f.publisher,
        topic: f.topic,
        subscriber: f.subscriber,
    };
    let target = crate::manage::subscription_target(&s);
    let m = api.manage.clone();
    let result = viewer
        .change(&f.csrf, SERVICES, "subscription.end", &target, async move {
            m.end_subscription(s).await.map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(ended) => done("/events", "subscription_ended", &ended.subscriber),
        Err(e) => events_page(&api, &viewer, &Done::default(), Some(e)),
    }
}

async fn changed(api: Api, viewer: Viewer, f: LettersForm, redeliver: bool) -> Response {
    let selection = DeadLetterSelection {
        publisher: f.publisher,
        topic: f.topic,
        subscriber: f.subscriber,
        sequence: f.sequence,
    };
    let target = crate::manage::dead_letters_target(&selection);
    let (action, notice) = if redeliver {
        ("dead-letters.redeliver", "redelivered")
    } else {
        ("dead-letters.discard", "discarded")
    };
    let m = api.manage.clone();
    let result = viewer
        .change(&f.csrf, SERVICES, action, &target, async move {
            m.change_dead_letters(selection, redeliver)
                .await
                .map_err(ApiError::from)
        })
        .await;
    match result {
        Ok(n) => done("/events", notice, &n.count.to_string()),
        Err(e) => events_page(&api, &viewer, &Done::default(), Some(e)),
    }
}
