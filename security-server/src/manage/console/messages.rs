//! The message log: exchanges searched by time, client, service or message id, each
//! with its evidence, and a chart of what matched.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use lintas_manage::console::{Chrome, Viewer, render};

use super::dashboard::recent;
use super::{iso, now_ms};
use crate::manage::api::Api;
use crate::manage::chart::{Chart, chart};

/// The message-log search, as the form sends it (times as `datetime-local`, UTC).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct MessageQuery {
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
pub(super) struct MessagesPage {
    c: Chrome,
    q: MessageQuery,
    records: Vec<(lintas_proto::opmon::v1::OpRecord, String)>,
    more: bool,
    chart: Chart,
}

pub(super) async fn messages(
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
}
