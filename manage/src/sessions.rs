//! Console sessions (in memory: a restart logs everyone out) and login throttling.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::users::UserInfo;

/// A session ends after this long without a request…
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// …and after this long in any case.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most; the oldest goes when a new one would pass it.
pub const MAX_SESSIONS: usize = 10_000;

/// What a valid session cookie stands for.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: UserInfo,
    /// Sent back with every change (header `X-CSRF-Token` or form field `csrf`).
    pub csrf: String,
}

struct Held {
    session: Session,
    created: Instant,
    last_seen: Instant,
}

/// The sessions of one daemon, by the SHA-256 of their cookie value (a memory dump
/// holds no usable cookie).
#[derive(Default)]
pub struct Sessions {
    held: Mutex<HashMap<[u8; 32], Held>>,
}

fn random_token() -> String {
    lintas_certs::hex(&crate::users::random_bytes::<32>())
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `user`: the cookie value and the session.
    pub fn start(&self, user: UserInfo, now: Instant) -> (String, Session) {
        let cookie = random_token();
        let session = Session {
            user,
            csrf: random_token(),
        };
        let mut held = self.lock();
        held.retain(|_, h| alive(h, now));
        if held.len() >= MAX_SESSIONS
            && let Some(oldest) = held
                .iter()
                .min_by_key(|(_, h)| h.last_seen)
                .map(|(k, _)| *k)
        {
            held.remove(&oldest);
        }
        held.insert(
            lintas_certs::sha256(cookie.as_bytes()),
            Held {
                session: session.clone(),
                created: now,
                last_seen: now,
            },
        );
        (cookie, session)
    }

    /// The session of `cookie` if it is alive (and marks it used).
    pub fn get(&self, cookie: &str, now: Instant) -> Option<Session> {
        let key = lintas_certs::sha256(cookie.as_bytes());
        let mut held = self.lock();
        match held.get_mut(&key) {
            Some(h) if alive(h, now) => {
                h.last_seen = now;
                Some(h.session.clone())
            }
            Some(_) => {
                held.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn end(&self, cookie: &str) {
        self.lock().remove(&lintas_certs::sha256(cookie.as_bytes()));
    }

    /// Ends every session of `user` (after their password or roles changed, or they
    /// were removed).
    pub fn end_user(&self, user: &str) {
        self.lock().retain(|_, h| h.session.user.name != user);
    }
}

fn alive(h: &Held, now: Instant) -> bool {
    now.saturating_duration_since(h.last_seen) < IDLE
        && now.saturating_duration_since(h.created) < MAX_AGE
}

/// Failed logins allowed before waits begin.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait between attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Keys tracked at most (sources and names); the stalest go first.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// How long after `f` the next attempt must wait: nothing for the first
/// [`FREE_FAILURES`], then 1 s, 2 s, 4 s … up to [`MAX_WAIT`].
fn wait(f: &Failures) -> Duration {
    match f.count.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(over) => Duration::from_secs(1u64 << over.min(20)).min(MAX_WAIT),
    }
}

/// Login throttling by source address and by user name: after a few failures each
/// further attempt waits twice as long as the last, whoever makes it.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Failures>>,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(how long to wait)` when any of `keys` must still wait.
    pub fn check(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let failures = self.lock();
        let longest = keys
            .iter()
            .filter_map(|k| failures.get(k))
            .map(|f| (f.last + wait(f)).saturating_duration_since(now))
            .max()
            .unwrap_or(Duration::ZERO);
        if longest.is_zero() {
            Ok(())
        } else {
            Err(longest)
        }
    }

    pub fn failed(&self, keys: &[String], now: Instant) {
        let mut failures = self.lock();
        // A key quiet for the longest wait starts over.
        failures.retain(|_, f| now.saturating_duration_since(f.last) < MAX_WAIT * 2);
        if failures.len() + keys.len() > MAX_KEYS {
            let mut by_age: Vec<(Instant, String)> =
                failures.iter().map(|(k, f)| (f.last, k.clone())).collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(keys.len()) {
                failures.remove(&k);
            }
        }
        for k in keys {
            let f = failures.entry(k.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        let mut failures = self.lock();
        for k in keys {
            failures.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::Role;

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.into(),
            roles: vec![Role::Auditor],
            created: 0,
        }
    }

    #[test]
    fn sessions_expire_when_idle_or_old() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let (cookie, s) = sessions.start(user("a"), t0);
        assert_eq!(s.csrf.len(), 64);
        let cases: &[(Duration, bool)] = &[
            (Duration::from_secs(60), true),
            (IDLE - Duration::from_secs(1), true),
        ];
        let mut now = t0;
        for (step, alive) in cases {
            now += *step;
            assert_eq!(sessions.get(&cookie, now).is_some(), *alive);
        }
        // Kept busy, it still ends at MAX_AGE.
        let (busy, _) = sessions.start(user("b"), t0);
        let mut now = t0;
        while now < t0 + MAX_AGE - Duration::from_secs(600) {
            now += Duration::from_secs(600);
            assert!(sessions.get(&busy, now).is_some());
        }
        assert!(sessions.get(&busy, t0 + MAX_AGE).is_none());
        // Idle past the limit: gone.
        let (idle, _) = sessions.start(user("c"), t0);
        assert!(sessions.get(&idle, t0 + IDLE).is_none());
        assert!(sessions.get("not a cookie", t0).is_none());
    }

    #[test]
    fn ending_a_user_ends_their_sessions() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let (a1, _) = sessions.start(user("a"), now);
        let (a2, _) = sessions.start(user("a"), now);
        let (b, _) = sessions.start(user("b"), now);
        sessions.end_user("a");
        assert!(sessions.get(&a1, now).is_none() && sessions.get(&a2, now).is_none());
        assert!(sessions.get(&b, now).is_some());
        sessions.end(&b);
        assert!(sessions.get(&b, now).is_none());
    }

    #[test]
    fn waits_double_after_the_free_failures() {
        let cases: &[(u32, u64)] = &[
            (0, 0),
            (4, 0),
            (5, 1),
            (6, 2),
            (8, 8),
            (15, 900),
            (200, 900),
        ];
        let last = Instant::now();
        for (count, secs) in cases {
            assert_eq!(
                wait(&Failures {
                    count: *count,
                    last
                })
                .as_secs(),
                *secs,
                "{count}"
            );
        }
    }

    #[test]
    fn throttle_by_address_and_name() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        let keys = |ip: &str, user: &str| vec![format!("ip {ip}"), format!("user {user}")];
        for _ in 0..FREE_FAILURES {
            assert!(throttle.check(&keys("10.0.0.1", "admin"), t0).is_ok());
            throttle.failed(&keys("10.0.0.1", "admin"), t0);
        }
        assert_eq!(
            throttle.check(&keys("10.0.0.1", "admin"), t0),
            Err(Duration::from_secs(1))
        );
        // The same name from elsewhere waits too; another name from elsewhere does not.
        assert!(throttle.check(&keys("10.0.0.2", "admin"), t0).is_err());
        assert!(throttle.check(&keys("10.0.0.2", "siti"), t0).is_ok());
        assert!(
            throttle
                .check(&keys("10.0.0.1", "admin"), t0 + Duration::from_secs(1))
                .is_ok()
        );
        throttle.failed(&keys("10.0.0.1", "admin"), t0 + Duration::from_secs(1));
        assert_eq!(
            throttle.check(&keys("10.0.0.1", "admin"), t0 + Duration::from_secs(1)),
            Err(Duration::from_secs(2))
        );
        throttle.succeeded(&keys("10.0.0.1", "admin"));
        assert!(
            throttle
                .check(&keys("10.0.0.1", "admin"), t0 + Duration::from_secs(1))
                .is_ok()
        );
    }
}
