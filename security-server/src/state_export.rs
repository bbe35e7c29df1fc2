//! The state store's entries a backup carries: services, grants and quotas,
//! idempotency keys, events with their subscriptions and dead letters.

use lintas_proto::ss::v1 as pb;

use crate::SsError;
use crate::access::Access;
use crate::idempotency::Idempotency;

/// The state store's trees a backup carries.
pub fn state_trees() -> impl Iterator<Item = &'static str> {
    [Access::TREE, Idempotency::TREE]
        .into_iter()
        .chain(crate::events::TREES)
}

pub fn entries(
    tree: &'static str,
    kvs: Vec<(Vec<u8>, Vec<u8>)>,
) -> impl Iterator<Item = pb::StateEntry> {
    kvs.into_iter().map(move |(key, value)| pb::StateEntry {
        tree: tree.into(),
        key,
        value,
    })
}

/// A running server's state store's entries, each tree read consistently.
pub fn exported(
    access: &Access,
    idempotency: &Idempotency,
    events: &crate::events::Events,
) -> Result<pb::StateExport, SsError> {
    let mut out: Vec<pb::StateEntry> = entries(Access::TREE, access.export()?).collect();
    out.extend(entries(Idempotency::TREE, idempotency.export()?));
    out.extend(events.export()?);
    Ok(pb::StateExport { entries: out })
}
