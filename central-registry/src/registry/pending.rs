//! Registration requests waiting for an administrator. Anyone may file one (a server has
//! no certificate before it registers), so they are kept apart from the registry's
//! state: a submission costs the same however many are pending (no scan, no copy of the
//! state), each source address may have only so many pending, requests expire, and a
//! pending request never blocks another for the same server id; the administrator
//! sees them all, each with its key fingerprints and source.

use std::collections::HashMap;

use super::{RegState, RegistrationRec};

/// Limits on pending requests (`[registration]` in the registry's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_total: usize,
    pub max_per_source: usize,
    /// Seconds a request stays pending before it expires.
    pub ttl_secs: i64,
}

/// Why a request cannot be filed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    Total(usize),
    Source(usize),
}

#[derive(Default)]
pub struct PendingSet {
    by_id: HashMap<String, RegistrationRec>,
    per_source: HashMap<String, usize>,
}

impl PendingSet {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether a request from `source` fits within `limits`.
    pub fn room_for(&self, source: &str, limits: &Limits) -> Result<(), Full> {
        if self.by_id.len() >= limits.max_total {
            return Err(Full::Total(self.by_id.len()));
        }
        let mine = self.per_source.get(source).copied().unwrap_or(0);
        if mine >= limits.max_per_source {
            return Err(Full::Source(mine));
        }
        Ok(())
    }

    pub fn insert(&mut self, rec: RegistrationRec) {
        debug_assert_eq!(rec.state, RegState::Pending);
        *self.per_source.entry(rec.source.clone()).or_default() += 1;
        if let Some(old) = self.by_id.insert(rec.request_id.clone(), rec) {
            self.forget_source(&old.source);
        }
    }

    fn forget_source(&mut self, source: &str) {
        if let Some(n) = self.per_source.get_mut(source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(source);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&RegistrationRec> {
        self.by_id.get(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<RegistrationRec> {
        let rec = self.by_id.remove(id)?;
        self.forget_source(&rec.source);
        Some(rec)
    }

    pub fn values(&self) -> impl Iterator<Item = &RegistrationRec> {
        self.by_id.values()
    }

    /// Ids of the requests for `server`.
    pub fn for_server(&self, server: &lintas_identifiers::ServerId) -> Vec<String> {
        self.by_id
            .values()
            .filter(|r| &r.server_id == server)
            .map(|r| r.request_id.clone())
            .collect()
    }

    /// Ids of the requests filed `ttl_secs` or more before `now`.
    pub fn expired(&self, now: i64, ttl_secs: i64) -> Vec<String> {
        self.by_id
            .values()
            .filter(|r| r.submitted_at + ttl_secs <= now)
            .map(|r| r.request_id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, server: &str, source: &str, at: i64) -> RegistrationRec {
        RegistrationRec {
            request_id: id.into(),
            server_id: server.parse().unwrap(),
            address: "ss.example:5500".parse().unwrap(),
            clients: Vec::new(),
            member_name: String::new(),
            tls_csr_hex: String::new(),
            signing_csr_hex: String::new(),
            tls_key_fingerprint: String::new(),
            signing_key_fingerprint: String::new(),
            log_key_hex: String::new(),
            state: RegState::Pending,
            reason: String::new(),
            submitted_at: at,
            decided_at: 0,
            decided_by: String::new(),
            tls_cert_hex: String::new(),
            signing_cert_hex: String::new(),
            renewal: false,
            source: source.into(),
        }
    }

    #[test]
    fn limits_count_per_source_and_in_total_and_requests_expire() {
        let limits = Limits {
            max_total: 3,
            max_per_source: 2,
            ttl_secs: 100,
        };
        let mut set = PendingSet::default();
        let server = "ID/GOV/A/SS1";
        // (id, source, submitted, room before inserting)
        let cases = [
            ("1", "10.0.0.1", 0, Ok(())),
            ("2", "10.0.0.1", 10, Ok(())),
            ("3", "10.0.0.1", 20, Err(Full::Source(2))),
            ("4", "10.0.0.2", 30, Ok(())),
            ("5", "10.0.0.3", 40, Err(Full::Total(3))),
        ];
        for (id, source, at, room) in cases {
            assert_eq!(set.room_for(source, &limits), room, "request {id}");
            if room.is_ok() {
                set.insert(rec(id, server, source, at));
            }
        }
        // Two requests for one server stand side by side.
        assert_eq!(set.for_server(&server.parse().unwrap()).len(), 3);
        assert_eq!(set.expired(105, 100), vec!["1".to_owned()]);
        set.remove("1");
        assert_eq!(set.room_for("10.0.0.1", &limits), Ok(()));
        assert_eq!(set.len(), 2);
        set.remove("2");
        set.remove("4");
        assert!(set.per_source.is_empty());
    }
}
