//! `--json` output: one pretty-printed JSON document on stdout. Lists are
//! `{"items": [...]}` whose items have the fields the management API answers for the
//! same things (its OpenAPI document, `/api/v1/openapi.json`, describes them); the
//! registry's gRPC-only lists name the fields of its protobuf messages.

use anyhow::Result;
use lintas_proto::registry::v1 as rpb;
use serde::Serialize;
use serde_json::{Value, json};

/// Prints `value` as JSON.
pub fn print<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `{"items": items}`.
pub fn items<T: Serialize>(items: impl IntoIterator<Item = T>) -> Result<()> {
    print(&json!({"items": items.into_iter().collect::<Vec<_>>()}))
}

pub fn registration(r: &rpb::RegistrationStatus) -> Value {
    json!({
        "request_id": r.request_id,
        "state": crate::registry_cmd::state_name(r.state),
        "reason": r.reason,
        "server_id": r.server_id,
        "address": r.address,
        "clients": r.clients,
        "member_name": r.member_name,
        "tls_key_fingerprint": r.tls_key_fingerprint,
        "signing_key_fingerprint": r.signing_key_fingerprint,
        "submitted_at": r.submitted_at,
        "decided_at": r.decided_at,
        "decided_by": r.decided_by,
        "renewal": r.renewal,
        "source": r.source,
    })
}

pub fn member(m: &lintas_proto::globalconf::v1::Member) -> Value {
    json!({"id": m.id, "name": m.name, "subsystems": m.subsystems})
}

pub fn server(s: &rpb::ServerInfo) -> Value {
    let certificates: Vec<Value> = s
        .certificates
        .iter()
        .map(|c| {
            json!({"role": c.role, "serial": c.serial, "not_after": c.not_after, "revoked": c.revoked})
        })
        .collect();
    json!({"id": s.id, "address": s.address, "clients": s.clients, "certificates": certificates})
}
