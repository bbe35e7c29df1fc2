//! Maintenance mode: an operator takes the server out of service (`lintas ss maintenance
//! on`) before an upgrade or a move. Readiness fails, in-flight exchanges finish, new ones
//! are refused with a retriable `UNAVAILABLE` that says so, and the next service report
//! publishes it in the global configuration, so that consumers' servers can prefer
//! another server of the same subsystem. The state survives restarts (a file in the data
//! directory) until the operator turns it off.

use std::path::PathBuf;
use std::sync::Mutex;

use lintas_ops::Handle;
use tonic::{Code, Status};

use crate::SsError;
use crate::errors::{ErrorSource, error};

pub struct Maintenance {
    path: PathBuf,
    /// The operator's reason while on.
    reason: Mutex<Option<String>>,
    health: Handle,
}

impl Maintenance {
    /// Reads the state kept at `path` and shows it on `health`.
    pub fn open(path: PathBuf, health: Handle) -> Result<Self, SsError> {
        let reason = match std::fs::read_to_string(&path) {
            Ok(r) => Some(r.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(SsError::Io {
                    what: path.display().to_string(),
                    source: e,
                });
            }
        };
        let m = Maintenance {
            path,
            reason: Mutex::new(None),
            health,
        };
        m.show(reason);
        Ok(m)
    }

    fn show(&self, reason: Option<String>) {
        match &reason {
            Some(r) => self.health.not_ready(describe(r)),
            None => self.health.ready(),
        }
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// Turns maintenance on with `reason` (`Some`) or off (`None`), durably first.
    pub fn set(&self, reason: Option<String>) -> Result<(), SsError> {
        let io = |e: std::io::Error| SsError::Io {
            what: self.path.display().to_string(),
            source: e,
        };
        match &reason {
            Some(r) => lintas_certs::files::write_atomic(&self.path, r.as_bytes(), 0o600)
                .map_err(|e| SsError::State(e.to_string()))?,
            None => match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            },
        }
        self.show(reason);
        Ok(())
    }

    /// The operator's reason while in maintenance.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Refuses a new exchange while in maintenance (retriable: another server of the
    /// subsystem, or this one later, can take it).
    pub fn admit(&self, side: ErrorSource) -> Result<(), Status> {
        match self.reason() {
            None => Ok(()),
            Some(r) => Err(crate::errors::with_reason(
                error(
                    Code::Unavailable,
                    side,
                    format!("{}; retry later or on another server", describe(&r)),
                ),
                "MaintenanceMode",
            )),
        }
    }
}

fn describe(reason: &str) -> String {
    if reason.is_empty() {
        "the security server is in maintenance".into()
    } else {
        format!("the security server is in maintenance ({reason})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_survives_a_restart_and_refuses_new_exchanges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maintenance");
        let health = lintas_ops::Health::new();
        let m = Maintenance::open(
            path.clone(),
            health.component("maintenance", lintas_ops::Condition::Ready),
        )
        .unwrap();
        assert!(m.admit(ErrorSource::ProviderServer).is_ok());
        m.set(Some("moving to the new data centre".into())).unwrap();
        let refused = m.admit(ErrorSource::ProviderServer).unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable);
        assert!(refused.message().contains("new data centre"), "{refused:?}");
        assert!(!health.report().ready);

        let again = lintas_ops::Health::new();
        let m = Maintenance::open(
            path,
            again.component("maintenance", lintas_ops::Condition::Ready),
        )
        .unwrap();
        assert_eq!(m.reason().as_deref(), Some("moving to the new data centre"));
        assert!(!again.report().ready);
        m.set(None).unwrap();
        m.set(None).unwrap();
        assert!(again.report().ready);
        assert!(m.admit(ErrorSource::ConsumerServer).is_ok());
    }
}
