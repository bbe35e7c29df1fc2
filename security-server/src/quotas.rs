//! Quotas: how many calls a client may make to a service, or to one of its methods, on
//! this provider server. Each quota is a token bucket per client: it holds at most
//! `burst` calls and refills at `calls` per `per_secs`. A quota names one client, or
//! none for every client (each with its own bucket); a client's own quota replaces the
//! one for every client at the same scope, and the service's and the method's quotas
//! both apply. The service administrator sets them; the catalogue publishes them so
//! that consumers know them. Buckets live in memory: a restart fills them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lintas_identifiers::{ClientId, ServiceName, SubsystemId};
use serde::{Deserialize, Serialize};

/// Longest refill period: a month.
pub const MAX_PER_SECS: u32 = 31 * 86_400;
/// Most calls a quota may allow per period, or hold at once.
pub const MAX_CALLS: u32 = 1_000_000_000;
/// Buckets kept at most; beyond, full ones (the same as none) are dropped.
const MAX_BUCKETS: usize = 100_000;

/// One quota, as the service administrator set it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quota {
    pub provider: SubsystemId,
    pub service: ServiceName,
    /// `None`: the service's calls together. For a REST service an HTTP method.
    pub method: Option<String>,
    /// `None`: every client, each on its own.
    pub client: Option<ClientId>,
    /// Calls allowed per `per_secs`, refilled evenly.
    pub calls: u32,
    pub per_secs: u32,
    /// Calls that may come at once.
    pub burst: u32,
}

impl Quota {
    /// The quota in words, for messages: who may call what how often.
    pub fn describe(&self) -> String {
        let what = match &self.method {
            None => format!("{} of {}", self.service, self.provider),
            Some(m) => format!("{}/{m} of {}", self.service, self.provider),
        };
        let who = self
            .client
            .as_ref()
            .map_or_else(|| "each client".to_owned(), ToString::to_string);
        format!(
            "{who} may call {what} {} times (burst {})",
            rate_text(self.calls, self.per_secs),
            self.burst
        )
    }

    /// Its key in the state store: one quota per service, method and client.
    pub fn key(&self) -> String {
        format!(
            "quota/{}/{}/{}/{}",
            self.provider,
            self.service,
            self.method.as_deref().unwrap_or("*"),
            self.client
                .as_ref()
                .map_or_else(|| "*".to_owned(), ToString::to_string)
        )
    }

    /// Whether its numbers are usable.
    pub fn check(&self) -> Result<(), String> {
        if self.calls == 0 || self.calls > MAX_CALLS {
            return Err(format!("calls must be 1 to {MAX_CALLS}"));
        }
        if self.per_secs == 0 || self.per_secs > MAX_PER_SECS {
            return Err(format!(
                "the period must be 1 s to {} days",
                MAX_PER_SECS / 86_400
            ));
        }
        if self.burst == 0 || self.burst > MAX_CALLS {
            return Err(format!("burst must be 1 to {MAX_CALLS}"));
        }
        Ok(())
    }

    /// As the catalogue publishes it.
    pub fn published(&self) -> lintas_proto::globalconf::v1::Quota {
        lintas_proto::globalconf::v1::Quota {
            method: self.method.clone().unwrap_or_default(),
            client: self
                .client
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            calls: self.calls,
            per_secs: self.per_secs,
            burst: self.burst,
        }
    }

    /// Calls refilled per second.
    fn per_second(&self) -> f64 {
        f64::from(self.calls) / f64::from(self.per_secs)
    }
}

/// The periods a rate may be written with, and their seconds.
const UNITS: [(&str, u32); 11] = [
    ("s", 1),
    ("sec", 1),
    ("second", 1),
    ("min", 60),
    ("minute", 60),
    ("h", 3600),
    ("hour", 3600),
    ("d", 86_400),
    ("day", 86_400),
    ("week", 7 * 86_400),
    ("month", MAX_PER_SECS),
];

/// A rate as an administrator writes it: `CALLS/UNIT` (`10/s`, `600/min`, `5000/h`,
/// `100000/day`, `1/week`, `1/month`), or `CALLS/SECONDSs` (`100/30s`).
pub fn parse_rate(text: &str) -> Result<(u32, u32), String> {
    let bad = |why: &str| format!("rate '{text}': {why}");
    let (calls, unit) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| bad("write it as CALLS/PERIOD, e.g. 10/s, 600/min, 100000/day"))?;
    let calls: u32 = calls
        .trim()
        .parse()
        .map_err(|_| bad("the number of calls is not a whole number"))?;
    let unit = unit.trim();
    let per_secs = match UNITS.iter().find(|(name, _)| *name == unit) {
        Some((_, secs)) => *secs,
        None => unit
            .strip_suffix('s')
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| {
                bad("the period is s, min, h, day, week, month, or a number of seconds (30s)")
            })?,
    };
    if calls == 0 || calls > MAX_CALLS {
        return Err(bad(&format!("calls must be 1 to {MAX_CALLS}")));
    }
    if per_secs == 0 || per_secs > MAX_PER_SECS {
        return Err(bad("the period must be 1 s to 31 days"));
    }
    Ok((calls, per_secs))
}

/// A rate in the shortest of the words [`parse_rate`] reads.
pub fn rate_text(calls: u32, per_secs: u32) -> String {
    let unit = match per_secs {
        1 => "s".to_owned(),
        60 => "min".to_owned(),
        3600 => "h".to_owned(),
        86_400 => "day".to_owned(),
        604_800 => "week".to_owned(),
        MAX_PER_SECS => "month".to_owned(),
        n => format!("{n}s"),
    };
    format!("{calls}/{unit}")
}

/// The quotas a call of `client` to `method` of `service` is held to: for the whole
/// service and for the method, the client's own quota if one names it, else the one for
/// every client.
pub fn applicable<'a>(
    quotas: &'a [Quota],
    client: &ClientId,
    provider: &SubsystemId,
    service: &ServiceName,
    method: &str,
) -> Vec<&'a Quota> {
    let of_service: Vec<&Quota> = quotas
        .iter()
        .filter(|q| &q.provider == provider && &q.service == service)
        .collect();
    let scopes = [None, Some(method)];
    scopes
        .iter()
        .filter_map(|scope| {
            let at_scope = || {
                of_service
                    .iter()
                    .copied()
                    .filter(move |q| q.method.as_deref() == *scope)
            };
            at_scope()
                .find(|q| q.client.as_ref() == Some(client))
                .or_else(|| at_scope().find(|q| q.client.is_none()))
        })
        .collect()
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// When it is full again, and so the same as none.
    full_at: Instant,
}

impl Bucket {
    /// Its tokens at `now` for `quota`.
    fn refilled(&self, quota: &Quota, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * quota.per_second()).min(f64::from(quota.burst))
    }
}

/// The buckets of every (quota, client), and the size at which full ones are next
/// swept out.
#[derive(Default)]
struct Buckets {
    map: HashMap<(String, String), Bucket>,
    sweep_at: usize,
}

/// A call refused by a quota: the one that keeps it waiting longest, and how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Over {
    pub wait: Duration,
    pub quota: Box<Quota>,
}

/// The buckets of every (quota, client).
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<Buckets>,
}

/// A duration of `secs` seconds, saturating instead of failing on a huge or odd value.
fn secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

impl Limiter {
    /// Takes one call from each of `quotas`' buckets for `client`, or none: then says how
    /// long until every one of them holds a call again.
    pub fn take(&self, quotas: &[&Quota], client: &ClientId, now: Instant) -> Result<(), Over> {
        if quotas.is_empty() {
            return Ok(());
        }
        let client = client.to_string();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let levels: Vec<f64> = quotas
            .iter()
            .map(|q| {
                buckets
                    .map
                    .get(&(q.key(), client.clone()))
                    .map_or(f64::from(q.burst), |b| b.refilled(q, now))
            })
            .collect();
        // The quota that keeps the call waiting longest.
        let over = quotas
            .iter()
            .zip(&levels)
            .filter(|(_, level)| **level < 1.0)
            .map(|(q, level)| (q, (1.0 - level) / q.per_second()))
            .fold(None::<(&&Quota, f64)>, |most, (q, wait)| match most {
                Some((_, w)) if w >= wait => most,
                _ => Some((q, wait)),
            });
        if let Some((quota, wait)) = over {
            return Err(Over {
                wait: secs(wait),
                quota: Box::new((*quota).clone()),
            });
        }
        if buckets.map.len() >= buckets.sweep_at.max(MAX_BUCKETS) {
            // A full bucket is the same as none. Swept again once the map has doubled,
            // so that calls do not each scan a map of buckets still in use.
            buckets.map.retain(|_, b| b.full_at > now);
            buckets.sweep_at = 2 * buckets.map.len();
        }
        for (q, level) in quotas.iter().zip(levels) {
            let tokens = level - 1.0;
            let to_full = (f64::from(q.burst) - tokens) / q.per_second();
            buckets.map.insert(
                (q.key(), client.clone()),
                Bucket {
                    tokens,
                    at: now,
                    full_at: now.checked_add(secs(to_full)).unwrap_or(now),
                },
            );
        }
        Ok(())
    }

    /// Gives back the call [`Limiter::take`] took for `client` (one refused later, for
    /// another reason, does not count).
    pub fn give_back(&self, quotas: &[&Quota], client: &ClientId) {
        let client = client.to_string();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for q in quotas {
            if let Some(b) = buckets.map.get_mut(&(q.key(), client.clone())) {
                b.tokens = (b.tokens + 1.0).min(f64::from(q.burst));
            }
        }
    }

    /// Drops the buckets of the quota with `key`, once it is removed.
    pub fn forget(&self, key: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.map.retain(|(k, _), _| k != key);
    }
}

/// Whole seconds a refused client should wait, as `Retry-After` says it (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests;
