//! The default store: sled on the registry's disk, one transaction and a blocking flush
//! per batch. Registry changes are rare (administrator actions, registrations, witness
//! rounds), so one flush per change is cheap. Values live in the default tree as before
//! versions existed; versions in a tree of their own (a value stored without one counts
//! as version 1).

use std::path::Path;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{ApplyError, Expect, Put, RegistryStore, StoreError, Stored};

pub struct SledStore {
    db: sled::Db,
    values: sled::Tree,
    versions: sled::Tree,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn version_of(bytes: Option<&[u8]>, present: bool) -> u64 {
    match bytes.and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        Some(b) => u64::from_be_bytes(b),
        None => u64::from(present),
    }
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = lintas_log::open_sled(dir).map_err(StoreError)?;
        let values = (*db).clone();
        let versions = db.open_tree("versions").map_err(err)?;
        Ok(SledStore {
            db,
            values,
            versions,
        })
    }
}

impl RegistryStore for SledStore {
    fn load(&self) -> Result<Vec<Stored>, StoreError> {
        self.values
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(err)?;
                let key = String::from_utf8(k.to_vec())
                    .map_err(|_| StoreError("non-UTF-8 key in database".into()))?;
                let version = version_of(self.versions.get(&k).map_err(err)?.as_deref(), true);
                Ok(Stored {
                    key,
                    value: v.to_vec(),
                    version,
                })
            })
            .collect()
    }

    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let Some(v) = self.values.get(key).map_err(err)? else {
            return Ok(None);
        };
        Ok(Some(Stored {
            key: key.to_owned(),
            value: v.to_vec(),
            version: version_of(self.versions.get(key).map_err(err)?.as_deref(), true),
        }))
    }

    fn apply(&self, expect: &[Expect], batch: Vec<Put>) -> Result<(), ApplyError> {
        let done = (&self.values, &self.versions).transaction(|(values, versions)| {
            let current = |key: &str| -> Result<u64, ConflictableTransactionError<String>> {
                let present = values.get(key)?.is_some();
                Ok(version_of(versions.get(key)?.as_deref(), present))
            };
            for e in expect {
                if current(&e.key)? != e.version {
                    return Err(ConflictableTransactionError::Abort(e.key.clone()));
                }
            }
            for p in &batch {
                match &p.value {
                    Some(v) => {
                        let next = current(&p.key)? + 1;
                        values.insert(p.key.as_bytes(), v.as_slice())?;
                        versions.insert(p.key.as_bytes(), &next.to_be_bytes())?;
                    }
                    None => {
                        values.remove(p.key.as_bytes())?;
                        versions.remove(p.key.as_bytes())?;
                    }
                }
            }
            Ok(())
        });
        match done {
            Ok(()) => {}
            Err(TransactionError::Abort(key)) => return Err(ApplyError::Conflict { key }),
            Err(TransactionError::Storage(e)) => return Err(err(e).into()),
        }
        self.db.flush().map_err(err)?;
        Ok(())
    }
}
