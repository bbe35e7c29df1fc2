//! The service manager's readiness protocol (`sd_notify`, for `Type=notify` units): a
//! daemon says `READY=1` once its listeners are bound, `STATUS=…` for `systemctl
//! status`, `STOPPING=1` when a signal asks it to stop, and `WATCHDOG=1` every half
//! `WATCHDOG_USEC` while its runtime answers. Messages are datagrams to the Unix socket
//! named by `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket); without it, as
//! when run by hand, nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (newline-separated `KEY=value` lines) to the service manager, if one
/// listens. A failure is logged, never fatal: the daemon works without a manager.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket.to_string_lossy(), state) {
        tracing::warn!(error = %e, "cannot tell the service manager the daemon's state");
    }
}

fn send(socket: &str, state: &str) -> std::io::Result<()> {
    let out = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        out.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        out.send_to(state.as_bytes(), socket)?;
    }
    Ok(())
}

/// Says the daemon is ready, with a status line; starts the watchdog's keep-alive when
/// the unit asks for one (once, however often the daemon says it is ready).
pub fn ready(status: &str) {
    static WATCHING: std::sync::Once = std::sync::Once::new();
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    WATCHING.call_once(watch);
}

fn watch() {
    if let Some(every) = watchdog_period(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    ) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify("WATCHDOG=1");
            }
        });
    }
}

/// Says the daemon is stopping.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping");
}

/// Whether standard error goes to the journal (`JOURNAL_STREAM` names its device and
/// inode), which stamps every line with the time itself.
pub fn logging_to_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| stream == format!("{}:{}", m.dev(), m.ino()))
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// How often to send `WATCHDOG=1`: half the manager's `WATCHDOG_USEC`, if it is set,
/// valid, and meant for this process (`WATCHDOG_PID`, when set, is its pid).
fn watchdog_period(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_kept_alive_at_half_its_period_when_meant_for_this_process() {
        let cases = [
            (None, None, None),
            (Some("0"), None, None),
            (Some("x"), None, None),
            (Some("-5"), None, None),
            (Some("20000000"), None, Some(Duration::from_secs(10))),
            (Some("20000000"), Some("42"), Some(Duration::from_secs(10))),
            (Some("20000000"), Some("43"), None),
            (Some("20000000"), Some("abc"), None),
        ];
        for (usec, pid, want) in cases {
            assert_eq!(watchdog_period(usec, pid, 42), want, "{usec:?} {pid:?}");
        }
    }

    #[test]
    fn messages_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("lintas-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        // Nobody listening: an error to log, not a panic.
        assert!(send(dir.path().join("absent").to_str().unwrap(), "READY=1").is_err());
    }
}
