//! A store in memory, for tests and tools: the same contract, nothing durable.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{ApplyError, Expect, Put, RegistryStore, StoreError, Stored};

#[derive(Default)]
pub struct MemoryStore(Mutex<BTreeMap<String, (Vec<u8>, u64)>>);

impl RegistryStore for MemoryStore {
    fn load(&self) -> Result<Vec<Stored>, StoreError> {
        let data = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(data
            .iter()
            .map(|(k, (v, n))| Stored {
                key: k.clone(),
                value: v.clone(),
                version: *n,
            })
            .collect())
    }

    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let data = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(data.get(key).map(|(v, n)| Stored {
            key: key.to_owned(),
            value: v.clone(),
            version: *n,
        }))
    }

    fn apply(&self, expect: &[Expect], batch: Vec<Put>) -> Result<(), ApplyError> {
        let mut data = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for e in expect {
            if data.get(&e.key).map_or(0, |(_, n)| *n) != e.version {
                return Err(ApplyError::Conflict { key: e.key.clone() });
            }
        }
        for p in batch {
            match p.value {
                Some(v) => {
                    let n = data.get(&p.key).map_or(0, |(_, n)| *n);
                    data.insert(p.key, (v, n + 1));
                }
                None => {
                    data.remove(&p.key);
                }
            }
        }
        Ok(())
    }
}
