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

/// The largest part of an export the admin socket sends at once.
const PART_BYTES: usize = 4 << 20;

/// An export in parts of at most [`PART_BYTES`] each (an entry larger than that in a
/// part of its own); never none, so the reader sees the export end.
pub fn in_parts(export: pb::StateExport) -> Vec<pb::StateExport> {
    let mut parts = vec![pb::StateExport::default()];
    let mut size = 0;
    for entry in export.entries {
        let len = entry.key.len() + entry.value.len() + entry.tree.len() + 16;
        if size + len > PART_BYTES && size > 0 {
            parts.push(pb::StateExport::default());
            size = 0;
        }
        size += len;
        if let Some(part) = parts.last_mut() {
            part.entries.push(entry);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_goes_in_parts_of_bounded_size_and_nothing_is_lost() {
        let entry = |n: usize| pb::StateEntry {
            tree: "events/log".into(),
            key: n.to_be_bytes().to_vec(),
            value: vec![7; n],
        };
        let mb = 1 << 20;
        // (entry sizes, entries per part)
        let cases: [(&[usize], &[usize]); 5] = [
            (&[], &[0]),
            (&[10], &[1]),
            (&[mb, mb, mb], &[3]),
            (&[3 * mb, 3 * mb, 10], &[1, 2]),
            (&[9 * mb, 1, 9 * mb], &[1, 1, 1]),
        ];
        for (sizes, want) in cases {
            let export = pb::StateExport {
                entries: sizes.iter().map(|&n| entry(n)).collect(),
            };
            let parts = in_parts(export.clone());
            let counts: Vec<usize> = parts.iter().map(|p| p.entries.len()).collect();
            assert_eq!(counts, want, "{sizes:?}");
            let joined: Vec<_> = parts.into_iter().flat_map(|p| p.entries).collect();
            assert_eq!(joined, export.entries);
        }
    }
}
