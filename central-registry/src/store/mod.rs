//! Durable registry state behind a small trait: the embedded store (sled) for one
//! machine, PostgreSQL for several registry nodes sharing one database.
//!
//! The registry keeps its state in memory and persists every change as one atomic batch
//! of puts and removals, flushed before the change is acknowledged. Every key has a
//! version that each put raises by one; a batch names the versions it was computed
//! from (`Expect`) and is refused as a whole when another writer got there first
//! (`ApplyError::Conflict`), so two nodes never both apply changes made from the same
//! state (optimistic concurrency, checked by the database, not by a lock in one
//! process). `load` reads everything back; `get` one key. Values are JSON; keys are
//! `<kind>/<id>`. A removed key's version starts again from 0, so keys that are
//! expected on (the state's version, each log's witness record) are never removed.

mod memory;
pub mod postgres;
mod sled_store;

pub mod contract;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sled_store::SledStore;

#[derive(Debug, thiserror::Error)]
#[error("registry database: {0}")]
pub struct StoreError(pub String);

/// One put (or removal) in a change batch.
#[derive(Debug, Clone)]
pub struct Put {
    pub key: String,
    /// The new value; `None` removes the key.
    pub value: Option<Vec<u8>>,
}

/// A condition of a batch: `key` is still at `version` (0: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub key: String,
    pub version: u64,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub value: Vec<u8>,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Another writer changed `key` since the batch was computed: nothing was applied.
    #[error("registry database: {key} was changed by another registry node")]
    Conflict { key: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Persistence for the registry.
pub trait RegistryStore: Send + Sync + 'static {
    /// Every stored record, in key order.
    fn load(&self) -> Result<Vec<Stored>, StoreError>;
    /// One record, if stored.
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Applies all puts and removals atomically and durably if every expectation still
    /// holds; otherwise applies nothing.
    fn apply(&self, expect: &[Expect], batch: Vec<Put>) -> Result<(), ApplyError>;
    /// Whether reading the store again after a failed write tells what the write did
    /// (a database whose commits are all or nothing): the registry then reloads as soon
    /// as the store answers instead of waiting for a restart.
    fn reload_recovers(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::RegistryStore;

    #[test]
    fn the_memory_store_keeps_the_contract() {
        super::contract::check(&super::MemoryStore::default());
        let shared = Arc::new(super::MemoryStore::default());
        super::contract::check_shared(shared.clone(), shared);
    }

    #[test]
    fn the_sled_store_keeps_the_contract_and_its_records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = super::SledStore::open(dir.path()).unwrap();
            super::contract::check(&store);
        }
        let store = super::SledStore::open(dir.path()).unwrap();
        let kept = store.get("member/a").unwrap().unwrap();
        assert_eq!((kept.value.as_slice(), kept.version), (&b"A2"[..], 2));
        let fresh = tempfile::tempdir().unwrap();
        let shared = Arc::new(super::SledStore::open(fresh.path()).unwrap());
        super::contract::check_shared(shared.clone(), shared);
    }
}
