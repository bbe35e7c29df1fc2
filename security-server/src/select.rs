//! Choosing which of several security servers hosting a provider subsystem to call.
//!
//! The consumer side asks for the candidates in order and reports each attempt's
//! outcome; nothing else of the exchange is known here. Servers that answer are ranked
//! by their recent latency times the calls in flight to them, two picked at random and
//! the better one tried first (the power of two choices), so load spreads without
//! herding; of two about as good (within a quarter), either may go first. A server that failed before the request reached it is put aside for a
//! backoff that doubles with each failure in a row (at most [`MAX_BACKOFF`]); one in
//! maintenance (as the configuration publishes) is tried last. When its backoff ends a
//! server is tried again, and one answer brings it back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lintas_proto::globalconf::v1::{SecurityServer as Entry, ServiceRef};

/// First backoff after a failure.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Scores within this fraction of each other count as alike.
const ALIKE: f64 = 0.25;
/// Weight of the newest latency in the moving average.
const EWMA_WEIGHT: f64 = 0.3;

/// How an attempt on one server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered (whatever the application said).
    Answered,
    /// The request did not reach the application: the connection or handshake failed,
    /// or the server refused it before calling the application.
    NotSent,
    /// The request may have reached the application but no answer came back.
    Lost,
}

#[derive(Debug, Default, Clone)]
struct Peer {
    failures: u32,
    down_until: Option<Instant>,
    latency_ms: Option<f64>,
    in_flight: u32,
}

/// What ranking needs to know of one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub maintenance: bool,
    pub down: bool,
    /// Lower is better: latency times calls in flight.
    pub score: f64,
}

/// Candidates' indices in the order to try them. `pick` is a random number: it chooses
/// the two ready candidates compared first.
pub fn rank(views: &[View], pick: u64) -> Vec<usize> {
    let tier = |v: &View| match (v.maintenance, v.down) {
        (false, false) => 0,
        (false, true) => 1,
        (true, _) => 2,
    };
    let mut order: Vec<usize> = (0..views.len()).collect();
    order.sort_by(|&a, &b| {
        tier(&views[a])
            .cmp(&tier(&views[b]))
            .then(views[a].score.total_cmp(&views[b].score))
    });
    let ready = order.iter().filter(|&&i| tier(&views[i]) == 0).count();
    if ready >= 2 {
        // Two of the ready ones at random; the better of the two goes first.
        let n = ready as u64;
        let first = (pick % n) as usize;
        let second = ((pick / n) % (n - 1)) as usize;
        let second = if second >= first { second + 1 } else { second };
        let (a, b) = (order[first], order[second]);
        let (sa, sb) = (views[a].score, views[b].score);
        // Servers about as good as each other share the calls; a clearly better one
        // takes them.
        let best = if (sa - sb).abs() <= ALIKE * sa.max(sb) {
            if (pick / (n * (n - 1))).is_multiple_of(2) {
                a
            } else {
                b
            }
        } else if sb < sa {
            b
        } else {
            a
        };
        let at = order.iter().position(|&i| i == best).unwrap_or(0);
        order[..=at].rotate_right(1);
    }
    order
}

/// The server, of `ids`, that `key` belongs to: rendezvous hashing of the key and each
/// id, so that a key keeps its server while that server is a candidate, and only the
/// keys of a server that leaves move.
pub fn key_owner(ids: &[&str], key: &str) -> Option<usize> {
    let score = |id: &str| {
        let digest = lintas_certs::sha256(format!("{key}\n{id}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    };
    (0..ids.len()).max_by_key(|&i| (score(ids[i]), std::cmp::Reverse(i)))
}

/// Puts `owner` first in `order` when it is ready (neither in maintenance nor known
/// down); otherwise the order stays as health ranked it.
pub fn owner_first(order: &mut [usize], views: &[View], owner: usize) {
    let ready = views.get(owner).is_some_and(|v| !v.maintenance && !v.down);
    if let (true, Some(at)) = (ready, order.iter().position(|&i| i == owner)) {
        order[..=at].rotate_right(1);
    }
}

/// The catalogue entry a call is sent for: the topic a subscription call
/// (`lintas.events.v1.Subscriptions`) names, so that it goes to the server of its
/// publisher the topic is registered on (where its events are published and kept); for
/// any other call, the called service.
pub fn listed_as(method: &lintas_identifiers::MethodPath, body: &[u8]) -> String {
    use lintas_proto::events::v1::subscriptions_server::SERVICE_NAME as SUBSCRIPTIONS;
    use prost::Message;
    if method.service.as_str() == SUBSCRIPTIONS
        && let Ok(request) = lintas_proto::events::v1::SubscribeRequest::decode(body)
        && !request.topic.is_empty()
    {
        return request.topic;
    }
    method.service.to_string()
}

/// The servers that may answer a call of `service` of `provider`, of those `hosting` it:
/// the ones with a TLS certificate, narrowed to those whose catalogue entry lists the
/// service when any does (a server still being set up is not tried for it).
pub fn candidates<'a>(
    hosting: Vec<&'a Entry>,
    catalogue: &[ServiceRef],
    provider: &str,
    service: &str,
) -> Vec<&'a Entry> {
    let hosting: Vec<_> = hosting
        .into_iter()
        .filter(|e| e.tls_cert_sha256.len() == 32)
        .collect();
    let publishing: Vec<&str> = catalogue
        .iter()
        .filter(|r| r.provider == provider && r.service == service)
        .map(|r| r.server.as_str())
        .collect();
    if hosting.iter().any(|e| publishing.contains(&e.id.as_str())) {
        hosting
            .into_iter()
            .filter(|e| publishing.contains(&e.id.as_str()))
            .collect()
    } else {
        hosting
    }
}

/// Health of the provider servers this server called, learnt from the calls.
#[derive(Default)]
pub struct Selector {
    peers: Mutex<HashMap<String, Peer>>,
}

/// A call in flight to one server; counted until dropped.
pub struct InFlight {
    selector: Arc<Selector>,
    server: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(p) = self.selector.lock().get_mut(&self.server) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }
}

impl Selector {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Peer>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The servers to try, best first.
    pub fn order<'a>(&self, servers: Vec<&'a Entry>, now: Instant, pick: u64) -> Vec<&'a Entry> {
        self.order_keyed(servers, now, pick, None)
    }

    /// The servers to try, best first; `owner` (a server id, the one a call's key
    /// belongs to: [`key_owner`]) first while it is a candidate and ready.
    pub fn order_keyed<'a>(
        &self,
        servers: Vec<&'a Entry>,
        now: Instant,
        pick: u64,
        owner: Option<&str>,
    ) -> Vec<&'a Entry> {
        let views: Vec<View> = {
            let peers = self.lock();
            servers
                .iter()
                .map(|e| {
                    let p = peers.get(&e.id).cloned().unwrap_or_default();
                    View {
                        maintenance: e.maintenance,
                        down: p.down_until.is_some_and(|t| t > now),
                        score: p.latency_ms.unwrap_or(0.0) * f64::from(p.in_flight + 1),
                    }
                })
                .collect()
        };
        let mut order = rank(&views, pick);
        if let Some(owner) = owner.and_then(|id| servers.iter().position(|e| e.id == id)) {
            owner_first(&mut order, &views, owner);
        }
        order.into_iter().map(|i| servers[i]).collect()
    }

    /// Counts a call to `server` as in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>, server: &str) -> InFlight {
        let mut peers = self.lock();
        // Bounded: only servers of the configuration are ever called.
        peers.entry(server.to_owned()).or_default().in_flight += 1;
        InFlight {
            selector: self.clone(),
            server: server.to_owned(),
        }
    }

    /// Learns from an attempt on `server` that took `took`.
    pub fn report(&self, server: &str, outcome: Outcome, took: Duration, now: Instant) {
        let mut peers = self.lock();
        let p = peers.entry(server.to_owned()).or_default();
        match outcome {
            Outcome::Answered => {
                if p.failures > 0 {
                    tracing::info!(server, "provider server answers again");
                }
                p.failures = 0;
                p.down_until = None;
                let ms = took.as_secs_f64() * 1000.0;
                p.latency_ms = Some(match p.latency_ms {
                    Some(old) => old + EWMA_WEIGHT * (ms - old),
                    None => ms,
                });
            }
            Outcome::NotSent | Outcome::Lost => {
                p.failures = p.failures.saturating_add(1);
                let backoff = BASE_BACKOFF
                    .saturating_mul(1 << (p.failures - 1).min(16))
                    .min(MAX_BACKOFF);
                p.down_until = Some(now + backoff);
                tracing::warn!(
                    server,
                    failures = p.failures,
                    backoff_ms = backoff.as_millis() as u64,
                    "provider server put aside"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(maintenance: bool, down: bool, score: f64) -> View {
        View {
            maintenance,
            down,
            score,
        }
    }

    #[test]
    fn ranking_prefers_ready_then_down_then_maintenance() {
        // (candidates, pick, expected order)
        let cases: Vec<(Vec<View>, u64, Vec<usize>)> = vec![
            (vec![], 0, vec![]),
            (vec![v(false, false, 5.0)], 7, vec![0]),
            // Maintenance last, even when it is the fastest.
            (
                vec![v(true, false, 0.0), v(false, false, 9.0)],
                0,
                vec![1, 0],
            ),
            // A server put aside goes after the ready ones, before maintenance.
            (
                vec![
                    v(true, false, 0.0),
                    v(false, true, 0.0),
                    v(false, false, 9.0),
                ],
                3,
                vec![2, 1, 0],
            ),
            // Only failing servers: still tried, the lower score first.
            (
                vec![v(false, true, 4.0), v(false, true, 2.0)],
                0,
                vec![1, 0],
            ),
            // Two ready: the better of the two picked goes first, whatever the pick.
            (
                vec![v(false, false, 9.0), v(false, false, 1.0)],
                0,
                vec![1, 0],
            ),
            (
                vec![v(false, false, 9.0), v(false, false, 1.0)],
                1,
                vec![1, 0],
            ),
        ];
        for (views, pick, expected) in cases {
            assert_eq!(rank(&views, pick), expected, "{views:?} pick {pick}");
        }
    }

    #[test]
    fn the_two_choices_spread_load_over_equal_servers() {
        let views = vec![v(false, false, 1.0); 3];
        let mut firsts = [0; 3];
        for pick in 0..600 {
            let order = rank(&views, pick);
            assert_eq!(order.len(), 3);
            firsts[order[0]] += 1;
        }
        assert!(firsts.iter().all(|&n| n > 100), "{firsts:?}");
        // Two servers about as fast share the calls; a clearly faster one takes them.
        let alike = vec![v(false, false, 1.0), v(false, false, 1.2)];
        let firsts: Vec<usize> = (0..20).map(|pick| rank(&alike, pick)[0]).collect();
        assert!(firsts.contains(&0) && firsts.contains(&1), "{firsts:?}");
        let apart = vec![v(false, false, 1.0), v(false, false, 2.0)];
        assert!((0..20).all(|pick| rank(&apart, pick)[0] == 0));
        // With unequal scores the worst of three never goes first.
        let views = vec![
            v(false, false, 1.0),
            v(false, false, 2.0),
            v(false, false, 3.0),
        ];
        assert!((0..600).all(|pick| rank(&views, pick)[0] != 2));
    }

    #[test]
    fn only_servers_publishing_the_service_are_candidates_when_any_does() {
        let server = |id: &str, tls: bool| Entry {
            id: id.into(),
            tls_cert_sha256: if tls { vec![1; 32] } else { Vec::new() },
            ..Default::default()
        };
        let published = |server: &str, service: &str| ServiceRef {
            provider: "ID/GOV/A/B".into(),
            service: service.into(),
            server: server.into(),
            ..Default::default()
        };
        let (s1, s2, revoked) = (server("S1", true), server("S2", true), server("S3", false));
        let all = || vec![&s1, &s2, &revoked];
        let ids = |v: Vec<&Entry>| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        // (catalogue, service, expected)
        let cases = [
            (vec![], "a.A", vec!["S1", "S2"]),
            (vec![published("S2", "a.A")], "a.A", vec!["S2"]),
            (
                vec![published("S1", "a.A"), published("S2", "a.A")],
                "a.A",
                vec!["S1", "S2"],
            ),
            // Listed for another service only: every hosting server may be tried.
            (vec![published("S2", "b.B")], "a.A", vec!["S1", "S2"]),
            // Listed only by a server without a TLS certificate (revoked).
            (vec![published("S3", "a.A")], "a.A", vec!["S1", "S2"]),
        ];
        for (catalogue, service, expected) in cases {
            assert_eq!(
                ids(candidates(all(), &catalogue, "ID/GOV/A/B", service)),
                expected,
                "{catalogue:?}"
            );
        }
    }

    #[test]
    fn failures_put_a_server_aside_and_an_answer_brings_it_back() {
        let s = Arc::new(Selector::default());
        let entry = |id: &str| Entry {
            id: id.into(),
            ..Default::default()
        };
        let (a, b) = (entry("A"), entry("B"));
        let t0 = Instant::now();
        s.report("A", Outcome::Answered, Duration::from_millis(2), t0);
        s.report("B", Outcome::Answered, Duration::from_millis(2), t0);
        s.report("A", Outcome::NotSent, Duration::ZERO, t0);
        for pick in 0..10 {
            assert_eq!(s.order(vec![&a, &b], t0, pick)[0].id, "B");
        }
        // Backoff doubles with each failure in a row, up to the limit.
        s.report("A", Outcome::NotSent, Duration::ZERO, t0);
        let aside = |t| (0..10).all(|pick| s.order(vec![&a, &b], t, pick)[0].id == "B");
        assert!(aside(t0 + BASE_BACKOFF * 2 - Duration::from_millis(1)));
        assert!(!aside(t0 + BASE_BACKOFF * 2));
        for _ in 0..20 {
            s.report("A", Outcome::Lost, Duration::ZERO, t0);
        }
        assert!(aside(t0 + MAX_BACKOFF - Duration::from_millis(1)));
        assert!(!aside(t0 + MAX_BACKOFF));
        let later = t0 + MAX_BACKOFF;
        s.report("A", Outcome::Answered, Duration::from_millis(2), later);
        assert!(!aside(later));
        // Calls in flight make a server look busier.
        let _calls: Vec<InFlight> = (0..5).map(|_| s.start("A")).collect();
        assert!((0..10).all(|pick| s.order(vec![&a, &b], later, pick)[0].id == "B"));
    }

    #[test]
    fn a_subscription_call_goes_where_its_topic_is_listed() {
        use prost::Message;
        let subscribe = |topic: &str| {
            lintas_proto::events::v1::SubscribeRequest {
                topic: topic.into(),
                from_start: true,
            }
            .encode_to_vec()
        };
        let topic = "kependudukan.v1.StatusPenduduk";
        // (method, body, listed as)
        let cases: [(&str, Vec<u8>, &str); 6] = [
            (
                "/lintas.events.v1.Subscriptions/Subscribe",
                subscribe(topic),
                topic,
            ),
            (
                "/lintas.events.v1.Subscriptions/Unsubscribe",
                subscribe(topic),
                topic,
            ),
            // Unreadable or without a topic: the service, whose server refuses it.
            (
                "/lintas.events.v1.Subscriptions/Subscribe",
                vec![0xff, 0xff],
                "lintas.events.v1.Subscriptions",
            ),
            (
                "/lintas.events.v1.Subscriptions/Subscribe",
                Vec::new(),
                "lintas.events.v1.Subscriptions",
            ),
            (
                "/kependudukan.v1.Penduduk/CariNik",
                subscribe(topic),
                "kependudukan.v1.Penduduk",
            ),
            (
                "/lintas.events.v1.EventSink/Deliver",
                subscribe(topic),
                "lintas.events.v1.EventSink",
            ),
        ];
        for (method, body, want) in cases {
            let method: lintas_identifiers::MethodPath = method.parse().unwrap();
            assert_eq!(listed_as(&method, &body), want, "{method} {body:?}");
        }
    }

    #[test]
    fn a_key_keeps_its_server_and_only_a_ready_owner_goes_first() {
        let ids = ["ID/GOV/A/SS1", "ID/GOV/A/SS2", "ID/GOV/A/SS3"];
        // Stable for a key, spread over the servers across keys.
        let owners: Vec<usize> = (0..300)
            .map(|n| key_owner(&ids, &format!("bayar-{n}")).unwrap())
            .collect();
        for server in 0..3 {
            let share = owners.iter().filter(|&&o| o == server).count();
            assert!(
                (60..=140).contains(&share),
                "server {server}: {share} of 300"
            );
        }
        for (n, &owner) in owners.iter().enumerate() {
            let key = format!("bayar-{n}");
            assert_eq!(key_owner(&ids, &key), Some(owner));
            // A server leaving moves only its own keys.
            let now = key_owner(&ids[..2], &key).unwrap();
            assert!(owner == 2 || now == owner, "{key}");
        }
        assert_eq!(key_owner(&[], "k"), None);

        let ready = v(false, false, 1.0);
        // (views, order by health, owner, order)
        type Case<'a> = (&'a [View], &'a [usize], usize, &'a [usize]);
        let cases: [Case; 5] = [
            (&[ready, ready, ready], &[0, 1, 2], 2, &[2, 0, 1]),
            (&[ready, ready, ready], &[1, 0, 2], 1, &[1, 0, 2]),
            (&[ready, v(false, true, 1.0)], &[0, 1], 1, &[0, 1]),
            (&[ready, v(true, false, 1.0)], &[0, 1], 1, &[0, 1]),
            (&[ready], &[0], 3, &[0]),
        ];
        for (views, health, owner, want) in cases {
            let mut order = health.to_vec();
            owner_first(&mut order, views, owner);
            assert_eq!(order, want, "{views:?} owner {owner}");
        }
    }
}
