//! One way to accept connections, for every listener of every daemon.
//!
//! [`Admission`] decides at accept time, before a byte is read: a total cap on open
//! connections, a cap per source address on open connections and on connections still
//! in their TLS handshake. A connection over a limit is closed at once (the accept loop
//! never waits, so a flood cannot stall anyone else) and the refusal is counted and
//! logged once per source and minute. An admitted connection is a [`Conn`]: it gives its
//! place back when dropped and fails with `TimedOut` after `idle_timeout` without a byte
//! read or written.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The limits of one listener (`[connection_limits]` in each daemon's configuration).
/// Defaults are safe on the public internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open connections in all, handshaking or not.
    pub max_connections: usize,
    /// Open connections from one source address.
    pub max_connections_per_source: usize,
    /// Connections from one source address still in their TLS handshake.
    pub max_handshakes_per_source: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout_ms: u64,
    /// A connection without a byte in either direction for this long is closed.
    pub idle_timeout_secs: u64,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest header list a request may send.
    pub max_header_list_bytes: u32,
    /// How long an HTTP entry may take to receive a whole request, body included.
    pub request_timeout_secs: u64,
    /// Requests (calls, HTTP/2 streams) in progress on one listener at once; beyond it
    /// new ones are refused at once (RESOURCE_EXHAUSTED, 503), so held requests cost
    /// bounded memory.
    pub max_requests: usize,
    /// Requests in progress from one source address at once.
    pub max_requests_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_source: 256,
            max_handshakes_per_source: 16,
            handshake_timeout_ms: 5_000,
            idle_timeout_secs: 300,
            max_concurrent_streams: 256,
            max_header_list_bytes: 16 * 1024,
            request_timeout_secs: 30,
            max_requests: 4096,
            max_requests_per_source: 512,
        }
    }
}

impl Limits {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// What is wrong with these limits, each said with its key.
    pub fn problems(&self) -> Vec<String> {
        let checks: [(bool, &str); 10] = [
            (
                (1..=1_000_000).contains(&self.max_connections),
                "max_connections must be between 1 and 1000000",
            ),
            (
                (1..=self.max_connections).contains(&self.max_connections_per_source),
                "max_connections_per_source must be between 1 and max_connections",
            ),
            (
                (1..=self.max_connections_per_source).contains(&self.max_handshakes_per_source),
                "max_handshakes_per_source must be between 1 and max_connections_per_source",
            ),
            (
                (100..=60_000).contains(&self.handshake_timeout_ms),
                "handshake_timeout_ms must be between 100 and 60000",
            ),
            (
                (5..=86_400).contains(&self.idle_timeout_secs),
                "idle_timeout_secs must be between 5 and 86400",
            ),
            (
                (1..=65_536).contains(&self.max_concurrent_streams),
                "max_concurrent_streams must be between 1 and 65536",
            ),
            (
                (1024..=1024 * 1024).contains(&self.max_header_list_bytes),
                "max_header_list_bytes must be between 1024 and 1048576",
            ),
            (
                (1..=3600).contains(&self.request_timeout_secs),
                "request_timeout_secs must be between 1 and 3600",
            ),
            (
                (1..=1_000_000).contains(&self.max_requests),
                "max_requests must be between 1 and 1000000",
            ),
            (
                (1..=self.max_requests).contains(&self.max_requests_per_source),
                "max_requests_per_source must be between 1 and max_requests",
            ),
        ];
        checks
            .into_iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, why)| format!("connection_limits: {why}"))
            .collect()
    }
}

/// Why a connection was refused or cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_source` are open from this address.
    PerSource,
    /// `max_handshakes_per_source` handshakes are running from this address.
    HandshakesPerSource,
    /// The TLS handshake did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// The TLS handshake failed.
    HandshakeFailed,
    /// No byte for `idle_timeout`.
    Idle,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::Total,
        Refusal::PerSource,
        Refusal::HandshakesPerSource,
        Refusal::HandshakeTimeout,
        Refusal::HandshakeFailed,
        Refusal::Idle,
    ];

    /// The metric label of this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "total_limit",
            Refusal::PerSource => "per_source_limit",
            Refusal::HandshakesPerSource => "per_source_handshake_limit",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::Idle => "idle_timeout",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// What a listener has seen, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub open: u64,
    pub handshaking: u64,
    pub accepted: u64,
    /// Refusals and cuts, by [`Refusal::ALL`] order.
    pub refused: [u64; 6],
}

#[derive(Default)]
struct Source {
    open: usize,
    handshaking: usize,
}

#[derive(Default)]
struct State {
    open: usize,
    handshaking: usize,
    sources: HashMap<IpAddr, Source>,
    /// When each source's last refusal was logged.
    logged: HashMap<IpAddr, Instant>,
}

/// The source a connection counts against: its IPv4 address, or its IPv6 /64 (one host
/// is usually given a whole /64, so counting single IPv6 addresses would not limit it).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Sources remembered for "logged once"; beyond it the memory starts over.
const MAX_LOGGED_SOURCES: usize = 4096;
/// A source's refusals are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The admission state of one listener.
pub struct Admission {
    name: String,
    limits: Limits,
    state: Mutex<State>,
    accepted: AtomicU64,
    refused: [AtomicU64; 6],
}

impl Admission {
    /// Admission of requests rather than connections: `max_requests` in all and
    /// `max_requests_per_source` from one source in progress at once. A request holds
    /// its [`Ticket`] until it ends.
    pub fn requests(name: impl Into<String>, limits: Limits) -> Arc<Self> {
        Self::new(
            name,
            Limits {
                max_connections: limits.max_requests,
                max_connections_per_source: limits.max_requests_per_source,
                ..limits
            },
        )
    }

    /// `name` names the listener in logs and metrics (`consumer`, `provider`, …).
    pub fn new(name: impl Into<String>, limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            name: name.into(),
            limits,
            state: Mutex::default(),
            accepted: AtomicU64::new(0),
            refused: Default::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> Stats {
        let state = self.lock();
        let mut refused = [0; 6];
        for (n, r) in refused.iter_mut().zip(&self.refused) {
            *n = r.load(Ordering::Relaxed);
        }
        Stats {
            open: state.open as u64,
            handshaking: state.handshaking as u64,
            accepted: self.accepted.load(Ordering::Relaxed),
            refused,
        }
    }

    /// Admits a connection from `peer`, handshaking when `tls`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr, tls: bool) -> Result<Ticket, Refusal> {
        let mut state = self.lock();
        let ip = source_of(peer.ip());
        let source = state.sources.get(&ip);
        let refusal = if state.open >= self.limits.max_connections {
            Some(Refusal::Total)
        } else if source.is_some_and(|s| s.open >= self.limits.max_connections_per_source) {
            Some(Refusal::PerSource)
        } else if tls
            && source.is_some_and(|s| s.handshaking >= self.limits.max_handshakes_per_source)
        {
            Some(Refusal::HandshakesPerSource)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(state);
            self.refused(peer, refusal);
            return Err(refusal);
        }
        state.open += 1;
        state.handshaking += usize::from(tls);
        let source = state.sources.entry(ip).or_default();
        source.open += 1;
        source.handshaking += usize::from(tls);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            admission: self.clone(),
            ip,
            handshaking: tls,
        })
    }

    /// Counts a refusal or cut and logs it once per source and minute.
    pub fn refused(&self, peer: SocketAddr, why: Refusal) {
        self.refused[why.index()].fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let source = source_of(peer.ip());
        let mut state = self.lock();
        if state
            .logged
            .get(&source)
            .is_some_and(|t| now.duration_since(*t) < LOG_EVERY)
        {
            return;
        }
        if state.logged.len() >= MAX_LOGGED_SOURCES {
            state.logged.clear();
        }
        state.logged.insert(source, now);
        drop(state);
        tracing::warn!(
            listener = %self.name,
            source = %source,
            reason = why.as_str(),
            "connection refused or closed by a limit (logged once a minute per source)"
        );
    }
}

/// An admitted connection's place; given back when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    handshaking: bool,
}

impl Ticket {
    /// The TLS handshake finished (or failed): the place stays, the handshake slot goes.
    pub fn handshake_done(&mut self) {
        if !std::mem::take(&mut self.handshaking) {
            return;
        }
        let mut state = self.admission.lock();
        state.handshaking -= 1;
        if let Some(s) = state.sources.get_mut(&self.ip) {
            s.handshaking -= 1;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.handshake_done();
        let mut state = self.admission.lock();
        state.open -= 1;
        if let Some(s) = state.sources.get_mut(&self.ip) {
            s.open -= 1;
            if s.open == 0 {
                state.sources.remove(&self.ip);
            }
        }
    }
}

/// An admitted TCP connection: holds its [`Ticket`] and closes itself when idle.
pub struct Conn {
    tcp: TcpStream,
    ticket: Ticket,
    peer: SocketAddr,
    idle_timeout: Duration,
    last_active: Instant,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    pub fn new(tcp: TcpStream, peer: SocketAddr, ticket: Ticket) -> Self {
        let idle_timeout = ticket.admission.limits.idle_timeout();
        Conn {
            tcp,
            ticket,
            peer,
            idle_timeout,
            last_active: Instant::now(),
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn ticket(&mut self) -> &mut Ticket {
        &mut self.ticket
    }

    /// `Err(TimedOut)` once the connection has been idle too long.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        while self.idle.as_mut().poll(cx).is_ready() {
            let due = self.last_active + self.idle_timeout;
            if Instant::now() >= due {
                self.ticket.admission.refused(self.peer, Refusal::Idle);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ));
            }
            self.idle.as_mut().reset(due.into());
        }
        Ok(())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last_active = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.last_active = Instant::now();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.last_active = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert!(Limits::default().problems().is_empty());
        let bad = Limits {
            max_connections: 10,
            max_connections_per_source: 20,
            max_handshakes_per_source: 30,
            handshake_timeout_ms: 0,
            ..Limits::default()
        };
        let problems = bad.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("max_connections_per_source"));
        assert!(problems[1].contains("max_handshakes_per_source"));
        assert!(problems[2].contains("handshake_timeout_ms"));
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let cases = [
            ("127.0.0.2", "127.0.0.2"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::"),
            ("::1", "::"),
        ];
        for (ip, source) in cases {
            assert_eq!(
                source_of(ip.parse().unwrap()),
                source.parse::<IpAddr>().unwrap(),
                "{ip}"
            );
        }
    }

    #[tokio::test]
    async fn limits_are_counted_per_source_and_in_total() {
        let limits = Limits {
            max_connections: 4,
            max_connections_per_source: 3,
            max_handshakes_per_source: 2,
            ..Limits::default()
        };
        let a = Admission::new("test", limits);
        let one = addr("127.0.0.2:1000");
        let two = addr("127.0.0.3:1000");
        // (peer, tls, expected)
        let table: [(SocketAddr, bool, Result<(), Refusal>); 6] = [
            (one, true, Ok(())),
            (one, true, Ok(())),
            (one, true, Err(Refusal::HandshakesPerSource)),
            (one, false, Ok(())),
            (one, false, Err(Refusal::PerSource)),
            (two, false, Ok(())),
        ];
        let mut held = Vec::new();
        for (n, (peer, tls, expected)) in table.into_iter().enumerate() {
            let got = a.admit(peer, tls);
            assert_eq!(
                got.as_ref().map(|_| ()).map_err(|r| *r),
                expected,
                "case {n}"
            );
            held.extend(got.ok());
        }
        assert_eq!(
            a.admit(addr("127.0.0.4:1"), false).err(),
            Some(Refusal::Total)
        );
        let stats = a.stats();
        assert_eq!((stats.open, stats.handshaking, stats.accepted), (4, 2, 4));
        assert_eq!(stats.refused[Refusal::Total.index()], 1);
        assert_eq!(stats.refused[Refusal::PerSource.index()], 1);
        // A finished handshake frees its slot, a dropped connection its place.
        held[0].handshake_done();
        assert!(
            a.admit(one, true).is_err(),
            "per-source open limit still holds"
        );
        held.truncate(1);
        assert_eq!(a.stats().open, 1);
        assert!(a.admit(one, true).is_ok());
        drop(held);
        assert_eq!(a.stats().open, 0);
        assert!(a.lock().sources.is_empty());
    }
}
