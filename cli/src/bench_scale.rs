//! `lintas bench --scale`: the global configuration at national scale. A registry is
//! filled with a synthetic instance (members, servers with real certificates, services
//! with grants), and the benchmark measures the signed document's size, how long the
//! registry takes to generate it, how long a security server takes to fetch and verify
//! it, and what one poll costs the registry (a child process, so only its CPU is
//! counted) when answered in full, gzip-encoded, or with `304 Not Modified`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lintas_globalconf::{Anchor, ConfClient, SystemClock};
use lintas_registry::RegistryConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to build.
pub struct Scale {
    pub members: usize,
    pub servers: usize,
    pub services: usize,
    /// Polls per kind of answer.
    pub polls: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One GET of `/globalconf` at `addr` with `headers`: the status and the body size.
async fn poll(addr: &str, headers: &str) -> Result<(u16, usize)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!(
                "GET /globalconf HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, raw.len() - end - 4))
}

pub async fn run(scale: Scale) -> Result<()> {
    if scale.members == 0 || scale.polls == 0 {
        bail!("--members and --polls must be at least 1");
    }
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let root = temp.path();
    let (grpc, http) = (
        crate::bench_procs::free_port()?,
        crate::bench_procs::free_port()?,
    );
    let report = crate::network::init_instance(
        root,
        format!("127.0.0.1:{grpc}").parse()?,
        format!("127.0.0.1:{http}").parse()?,
    )?;
    let config = RegistryConfig::load(&report.config_path, std::iter::empty())?;
    let anchor = Anchor::load(&report.anchor_path)?;

    // The registry, filled and re-signed in this process.
    println!(
        "building a synthetic instance: {} members, {} servers, {} services ...",
        scale.members, scale.servers, scale.services
    );
    let (blob, generation) = tokio::task::block_in_place(|| -> Result<_> {
        let registry = lintas_registry::open(&config, Arc::new(SystemClock))?;
        registry.fill_synthetic(scale.members, scale.servers, scale.services)?;
        let mut took = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            registry.republish("bench", "measuring generation")?;
            took.push(started.elapsed());
        }
        Ok((registry.latest_conf(), median(took)))
    })?;
    let gzip_len =
        match lintas_globalconf::publish::Published::new(blob.clone()).answer(None, Some("gzip")) {
            lintas_globalconf::publish::Answer::Full { body, .. } => body.len(),
            lintas_globalconf::publish::Answer::NotModified => 0,
        };
    let verification = median(
        (0..5)
            .map(|_| {
                let started = Instant::now();
                lintas_globalconf::verify(&blob, &anchor, std::time::SystemTime::now())
                    .map(|_| started.elapsed())
            })
            .collect::<Result<Vec<_>, _>>()?,
    );

    // What a server's cache write costs (the document is kept durably before use).
    let scratch = tempfile::tempdir()?;
    let durable = median(
        (0..5)
            .map(|i| {
                let started = Instant::now();
                lintas_certs::files::write_atomic(
                    &scratch.path().join(format!("conf{i}")),
                    &blob,
                    0o644,
                )
                .map(|_| started.elapsed())
            })
            .collect::<Result<Vec<_>, _>>()?,
    );

    // The registry as a process of its own, so that its CPU is measured alone.
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["registry", "serve", "--config"])
        .arg(&report.config_path)
        .env("LINTAS_REGISTRY_OPS_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the registry")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let child = Killed(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .await??;
    if !line.contains("listening") {
        bail!("the registry did not start: {line}");
    }
    let pid = child.0.id();
    let addr = format!("127.0.0.1:{http}");

    // The registry prepares each new document once (hash and gzip), at its first poll.
    let started = Instant::now();
    poll(&addr, "Accept-Encoding: gzip\r\n").await?;
    let first_answer = started.elapsed();

    // A security server's fetch: in full the first time, 304 after.
    let cache = tempfile::tempdir()?;
    let client = ConfClient::open(anchor.clone(), cache.path(), Arc::new(SystemClock))?;
    let started = Instant::now();
    let fetched = client.fetch().await?;
    let first_fetch = started.elapsed();
    // The registry re-signs when it starts: the document served is that newer one.
    if fetched.conf.servers.len() != scale.servers.min(scale.members) {
        bail!("the registry served another instance than it was filled with");
    }
    let started = Instant::now();
    client.fetch().await?;
    let unchanged_fetch = started.elapsed();

    // Many servers polling: the registry's CPU per poll for each kind of answer.
    let etag = lintas_globalconf::publish::etag_of(&fetched.blob);
    let kinds = [
        ("full", String::new()),
        ("gzip", "Accept-Encoding: gzip\r\n".to_owned()),
        (
            "304",
            format!("Accept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n"),
        ),
    ];
    let mut rows = Vec::new();
    for (kind, headers) in kinds {
        let before = crate::bench_procs::cpu_of(pid)?;
        let started = Instant::now();
        let mut bytes = 0;
        // Sixteen at a time, as servers arriving together would.
        for batch in (0..scale.polls).collect::<Vec<_>>().chunks(16) {
            let polls: Vec<_> = batch
                .iter()
                .map(|_| {
                    let (addr, headers) = (addr.clone(), headers.clone());
                    tokio::spawn(async move { poll(&addr, &headers).await })
                })
                .collect();
            for p in polls {
                let (status, len) = p.await??;
                if status != 200 && status != 304 {
                    bail!("the registry answered {status}");
                }
                bytes = len;
            }
        }
        let wall = started.elapsed();
        let cpu = crate::bench_procs::cpu_of(pid)? - before;
        rows.push((kind, bytes, cpu / scale.polls as f64, wall));
    }
    drop(child);

    println!();
    println!("| measure | figure |");
    println!("|---|---|");
    println!(
        "| instance | {} members, {} servers, {} services |",
        scale.members,
        scale.servers.min(scale.members),
        scale.services
    );
    println!(
        "| signed configuration | {:.0} KiB ({:.0} KiB gzip) |",
        blob.len() as f64 / 1024.0,
        gzip_len as f64 / 1024.0
    );
    println!(
        "| generation at the registry (build, sign, durable write; median of 5) | {} |",
        ms(generation)
    );
    println!(
        "| verification at a server (median of 5) | {} |",
        ms(verification)
    );
    println!(
        "| the registry's first answer right after it starts (each new document is hashed and compressed once) | {} |",
        ms(first_answer)
    );
    println!(
        "| a server's durable write of the document (median of 5) | {} |",
        ms(durable)
    );
    println!(
        "| a server's first fetch (HTTP, gzip, verify, durable cache) | {} |",
        ms(first_fetch)
    );
    println!(
        "| a server's fetch of an unchanged document (304) | {} |",
        ms(unchanged_fetch)
    );
    for (kind, bytes, cpu, wall) in rows {
        println!(
            "| registry per poll, {kind} answer ({} polls, 16 at once) | {:.0} µs CPU, {} body bytes, {:.0} polls/s |",
            scale.polls,
            cpu * 1e6,
            bytes,
            scale.polls as f64 / wall.as_secs_f64()
        );
    }
    let polls_per_sec = scale.servers.min(scale.members) as f64 / 60.0;
    println!(
        "\n{} servers polling every 60 s make {polls_per_sec:.0} polls/s.",
        scale.servers.min(scale.members)
    );
    Ok(())
}

/// A child process killed when dropped (the benchmark's registry).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
