//! Durable registry state behind a small trait, so a replicated database can replace
//! sled without touching the registry logic.
//!
//! The registry keeps its state in memory and persists every change as one atomic batch
//! of key/value puts, flushed before the change is acknowledged. `load` reads everything
//! back at start-up. Values are JSON; keys are `<kind>/<id>`.

use std::path::Path;

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

/// Persistence for the registry.
pub trait RegistryStore: Send + Sync + 'static {
    /// Every stored key and value, in key order.
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies all puts and removals atomically and durably.
    fn apply(&self, batch: Vec<Put>) -> Result<(), StoreError>;
}

/// The default store: one sled tree, blocking flush after each batch. Registry changes
/// are rare (administrator actions, registrations), so one flush per change is cheap.
pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = lintas_log::open_sled(dir).map_err(StoreError)?;
        Ok(SledStore { db })
    }
}

impl RegistryStore for SledStore {
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.db
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| StoreError(e.to_string()))?;
                let key = String::from_utf8(k.to_vec())
                    .map_err(|_| StoreError("non-UTF-8 key in database".into()))?;
                Ok((key, v.to_vec()))
            })
            .collect()
    }

    fn apply(&self, batch: Vec<Put>) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for put in batch {
            match put.value {
                Some(v) => b.insert(put.key.as_bytes(), v),
                None => b.remove(put.key.as_bytes()),
            }
        }
        self.db
            .apply_batch(b)
            .map_err(|e| StoreError(e.to_string()))?;
        self.db.flush().map_err(|e| StoreError(e.to_string()))?;
        Ok(())
    }
}
