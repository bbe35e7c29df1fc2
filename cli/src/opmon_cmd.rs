//! `lintas ss opmon`: the running server's operational monitoring records, one page at a
//! time, as lines for people or JSON for tools.

use std::path::Path;

use anyhow::Result;
use lintas_proto::opmon::v1::{OpPage, OpQuery, OpRecord};

/// What `lintas ss opmon` was asked.
pub struct Query<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub client: Option<String>,
    pub service: Option<String>,
    pub cursor: Option<String>,
    pub limit: u32,
    pub json: bool,
}

pub async fn run(config: &Path, q: Query<'_>) -> Result<()> {
    let query = OpQuery {
        from_unix_ms: q
            .from
            .map(|t| crate::audit_cmd::rfc3339_ms("from", t))
            .transpose()?
            .unwrap_or(0),
        to_unix_ms: q
            .to
            .map(|t| crate::audit_cmd::rfc3339_ms("to", t))
            .transpose()?
            .unwrap_or(0),
        client: q.client.unwrap_or_default(),
        service: q.service.unwrap_or_default(),
        cursor: q.cursor.unwrap_or_default(),
        limit: q.limit,
    };
    let page = crate::ss_cmd::admin(config)
        .await?
        .operational_data(query)
        .await?
        .into_inner();
    if q.json {
        println!("{}", serde_json::to_string_pretty(&page_json(&page))?);
        return Ok(());
    }
    for r in &page.records {
        println!("{}", line(r));
    }
    if page.records.is_empty() {
        println!("no exchanges match");
    }
    if !page.next_cursor.is_empty() {
        println!("more: add --cursor {}", page.next_cursor);
    }
    Ok(())
}

/// One record in a line: when, which side, who called what, how it ended and how long
/// each part took.
pub(crate) fn line(r: &OpRecord) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "{} {:<8} {}{} -> {} {}/{} {}{} {:.2} ms (sign {:.2}, durable {:.2}, peer {:.2}, app {:.2}) id {} trace {}",
        lintas_globalconf::iso8601(r.time_unix_ms.div_euclid(1000)),
        r.side,
        r.client,
        // Refused by the provider's checks: the names are claims.
        if r.unverified { " (unverified)" } else { "" },
        r.provider,
        r.service,
        r.method,
        r.code,
        if r.error_source.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.error_source)
        },
        ms(r.total_us),
        ms(r.signing_us),
        ms(r.durable_us),
        ms(r.peer_us),
        ms(r.app_us),
        r.message_id,
        r.trace_id,
    )
}

fn page_json(page: &OpPage) -> serde_json::Value {
    let records: Vec<serde_json::Value> = page
        .records
        .iter()
        .map(|r| {
            serde_json::json!({
                "time_unix_ms": r.time_unix_ms,
                "side": r.side,
                "server": r.server,
                "message_id": r.message_id,
                "client": r.client,
                "provider": r.provider,
                "service": r.service,
                "method": r.method,
                "peer_server": r.peer_server,
                "trace_id": r.trace_id,
                "user_id": r.user_id,
                "request_bytes": r.request_bytes,
                "response_bytes": r.response_bytes,
                "code": r.code,
                "error_source": r.error_source,
                "total_us": r.total_us,
                "signing_us": r.signing_us,
                "durable_us": r.durable_us,
                "peer_us": r.peer_us,
                "app_us": r.app_us,
                "unverified": r.unverified,
            })
        })
        .collect();
    serde_json::json!({"records": records, "next_cursor": page.next_cursor})
}
