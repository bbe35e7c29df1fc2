//! What administration reads besides the paged lists: global groups, time-stamping
//! authorities and the published configuration's generation.

use super::*;

/// The configuration being published.
#[derive(Debug, Clone)]
pub struct Generation {
    pub serial: u64,
    pub members: usize,
    pub servers: usize,
    pub pending_registrations: usize,
    pub groups: usize,
    pub services: usize,
}

impl Registry {
    pub fn groups(&self) -> Vec<GroupRec> {
        self.lock().groups.values().cloned().collect()
    }

    /// The time-stamping authorities listed now (besides the registry's own).
    pub fn tsas(&self) -> Vec<TsaRec> {
        self.lock()
            .tsas
            .values()
            .filter(|t| t.listed)
            .cloned()
            .collect()
    }

    pub fn generation(&self) -> Generation {
        let pending = self.pending_set().len();
        let state = self.lock();
        Generation {
            serial: state.conf_serial,
            members: state.members.len(),
            servers: state.servers.len(),
            pending_registrations: pending,
            groups: state.groups.len(),
            services: state.catalogue.values().map(Vec::len).sum(),
        }
    }
}
