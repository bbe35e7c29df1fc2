//! What a backup reads from the registry and a restore asks of it: every stored record
//! as one state, the serial a backup holds, and a configuration published above a
//! serial the instance has seen (`crate::backup`).

use super::*;

/// The serial of the newest configuration among stored records (a backup's).
pub fn conf_serial_of(records: &[crate::store::Stored]) -> Option<u64> {
    let latest = Key::ConfLatest.to_string();
    records
        .iter()
        .find(|r| r.key == latest)
        .and_then(|r| serde_json::from_slice::<ConfMeta>(&r.value).ok())
        .map(|m| m.serial)
}

impl Registry {
    /// Publishes the next configuration with a serial above `floor`: after a restore
    /// from a backup older than what servers already hold, which would otherwise refuse
    /// the restored registry's configurations as a rollback until the serial passed
    /// theirs.
    pub fn republish_above(&self, floor: u64, actor: &str, why: &str) -> Result<u64> {
        let ((), serial) = self.commit(actor, Publish::Yes, |state, _| {
            state.conf_serial = state.conf_serial.max(floor);
            Ok(((), why.to_owned()))
        })?;
        Ok(serial)
    }

    /// Every record of the store, read under the state's lock so that the copy is one
    /// state: a running registry's backup.
    pub fn export_records(&self) -> Result<Vec<crate::store::Stored>> {
        let _state = self.lock();
        self.store.load().map_err(internal)
    }
}
