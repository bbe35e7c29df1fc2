//! `lintas bench`: the same unary call made directly to the application and through the
//! bus (consumer security server → provider security server → application), all on
//! this machine, with signatures and durable records on. Prints throughput and latency
//! at 1 and at 64 calls in flight, and the bus/direct ratios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lintas_examples::echo::v1::EchoMessage;
use lintas_examples::echo::v1::echo_client::EchoClient;
use lintas_globalconf::SystemClock;
use lintas_identifiers::ClientId;
use lintas_ss::access::{Grant, ServiceEntry, Subject};
use lintas_ss::daemon::SecurityServer;
use tokio::net::TcpListener;
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds each measurement runs (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Request and response payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Measure one large body through a REST service instead, up and down, with each
    /// security server in its own process (see `bench_large`).
    #[arg(long)]
    large: bool,
    /// With --large: the body's size in MiB.
    #[arg(long, default_value_t = 1024)]
    size: u64,
    /// Measure the global configuration at scale instead (see `bench_scale`).
    #[arg(long)]
    scale: bool,
    /// With --scale: members of the synthetic instance.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// With --scale: security servers (each of its own member).
    #[arg(long, default_value_t = 1_000)]
    servers: usize,
    /// With --scale: services, spread over the servers.
    #[arg(long, default_value_t = 50_000)]
    services: usize,
    /// With --scale: polls measured per kind of answer.
    #[arg(long, default_value_t = 1_000)]
    polls: usize,
}

const PROVIDER: &str = "ID/GOV/BENCH/SS1";
const PROVIDER_CLIENT: &str = "ID/GOV/BENCH/ECHO";
const CONSUMER: &str = "ID/GOV/LOAD/SS1";
const CONSUMER_CLIENT: &str = "ID/GOV/LOAD/GEN";
const SERVICE: &str = "echo.v1.Echo";

/// One measurement.
struct Figures {
    calls_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub async fn run(args: Args) -> Result<()> {
    if args.large {
        return crate::bench_large::run(args.size).await;
    }
    if args.scale {
        return crate::bench_scale::run(crate::bench_scale::Scale {
            members: args.members,
            servers: args.servers,
            services: args.services,
            polls: args.polls,
        })
        .await;
    }
    if args.seconds == 0 || args.payload > 3 * 1024 * 1024 {
        bail!("--seconds must be at least 1 and --payload at most 3 MiB");
    }
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let root = temp.path();
    let mut running = crate::network::Running::default();
    let result = measure(root, &args, &mut running).await;
    running.stop().await?;
    result
}

async fn measure(
    root: &std::path::Path,
    args: &Args,
    running: &mut crate::network::Running,
) -> Result<()> {
    let (report, config) = crate::network::start_registry(root, running).await?;
    let mut admin = lintas_registry::admin::connect(&report.admin_dir, &config.public_url)?;

    // Two members enrol with tokens and start their servers.
    let mut servers = Vec::new();
    let mut consumer_url = String::new();
    for (id, client) in [(PROVIDER, PROVIDER_CLIENT), (CONSUMER, CONSUMER_CLIENT)] {
        let member =
            crate::network::new_server(root, &report.anchor_path, id, &[client], "bench", true)
                .await?;
        crate::network::enrol_with_token(&mut admin, &member.node, id).await?;
        let server = SecurityServer::open(member.node, Arc::new(SystemClock))?;
        let local = TcpListener::bind("127.0.0.1:0").await?;
        if id == CONSUMER {
            consumer_url = format!("http://{}", local.local_addr()?);
        }
        let stop = running.stopper();
        let serving = server.clone();
        let listeners = lintas_ss::serve::Listeners {
            consumer: local,
            provider: member.peer,
            ops: TcpListener::bind("127.0.0.1:0").await?,
            management: None,
        };
        running.tasks.push(tokio::spawn(async move {
            Ok(lintas_ss::serve::serve(serving, listeners, stop).await?)
        }));
        servers.push(server);
    }
    let app = TcpListener::bind("127.0.0.1:0").await?;
    let app_url = format!("http://{}", app.local_addr()?);
    let stop = running.stopper();
    running.tasks.push(tokio::spawn(async move {
        Ok(lintas_examples::echo_server::serve(app, stop).await?)
    }));
    servers[0].access.add_service(ServiceEntry {
        provider: PROVIDER_CLIENT.parse()?,
        service: SERVICE.parse()?,
        endpoint: app_url.clone(),
        ca_pem: None,
        descriptor_set: None,
        rest: false,
        large_messages: false,
        openapi: None,
    })?;
    servers[0].access.grant(Grant {
        provider: PROVIDER_CLIENT.parse()?,
        service: SERVICE.parse()?,
        method: None,
        subject: Subject::Client(ClientId::Subsystem(CONSUMER_CLIENT.parse()?)),
        path: None,
    })?;

    println!(
        "lintas bench: {} byte payloads, {} s per run after 1 s warm-up; through the bus every call's request and response headers are signed (in batches), verified, and recorded durably on both servers (consumer endpoint in development mode: plaintext loopback)",
        args.payload, args.seconds
    );
    println!(
        "{:<8} {:>10} {:>12} {:>9} {:>9} {:>15} {:>18}",
        "path", "in flight", "calls/s", "p50 ms", "p99 ms", "records/flush", "headers/signature"
    );
    // Records and flushes of both logs, headers and signatures of both signers.
    let counters = || {
        servers.iter().fold([0u64; 4], |mut c, s| {
            let (signatures, headers) = s.signing_stats();
            c[0] += s.log.len();
            c[1] += s.log.flushes();
            c[2] += headers;
            c[3] += signatures;
            c
        })
    };
    let mut table = Vec::new();
    for in_flight in [1usize, 64] {
        for (name, url, via_bus) in [("direct", &app_url, false), ("bus", &consumer_url, true)] {
            let before = counters();
            let f = load(url, via_bus, in_flight, args).await?;
            let after = counters();
            let per = |a: usize, b: usize| match after[b] - before[b] {
                0 => "-".to_string(),
                d => format!("{:.1}", (after[a] - before[a]) as f64 / d as f64),
            };
            println!(
                "{:<8} {:>10} {:>12.0} {:>9.3} {:>9.3} {:>15} {:>18}",
                name,
                in_flight,
                f.calls_per_sec,
                f.p50_ms,
                f.p99_ms,
                per(0, 1),
                per(2, 3)
            );
            table.push(f);
        }
    }
    println!(
        "bus/direct throughput: {:.2} at 1 in flight, {:.2} at 64 in flight; added p50 latency at 1 in flight: {:.3} ms",
        table[1].calls_per_sec / table[0].calls_per_sec,
        table[3].calls_per_sec / table[2].calls_per_sec,
        table[1].p50_ms - table[0].p50_ms
    );
    println!(
        "records written: {} on the consumer server, {} on the provider server",
        servers[1].log.len(),
        servers[0].log.len()
    );
    evidence_rates(&servers[1], &report.anchor_path).await
}

/// Exports every exchange the consumer's server logged (in bundles of 10,000, as `audit
/// export` does) and verifies the bundles offline, one at a time: exchanges per second
/// for each.
async fn evidence_rates(server: &SecurityServer, anchor: &std::path::Path) -> Result<()> {
    let anchor = lintas_globalconf::Anchor::load(anchor)?;
    let query = lintas_proto::ss::v1::EvidenceQuery {
        client: CONSUMER_CLIENT.into(),
        ..Default::default()
    };
    let started = Instant::now();
    let mut bundles = server
        .evidence
        .export_bundles(&query, lintas_ss::evidence::MAX_EXCHANGES)
        .await?;
    let (mut exported, mut verify_time, mut count) = (0usize, Duration::ZERO, 0usize);
    while let Some(bundle) = bundles.recv().await {
        let bundle = bundle?;
        count += 1;
        // Verification is timed apart from the export it interleaves with.
        let verifying = Instant::now();
        let report = tokio::task::block_in_place(|| lintas_audit::verify(&bundle, &anchor));
        verify_time += verifying.elapsed();
        if !report.verified {
            bail!("bundle {count} does not verify: {:?}", report.failures);
        }
        exported += report.exchanges.len();
    }
    let export_time = started.elapsed().saturating_sub(verify_time);
    println!(
        "evidence: {exported} exchanges in {count} bundle(s); export {:.0} exchanges/s, offline verification {:.0} exchanges/s",
        exported as f64 / export_time.as_secs_f64(),
        exported as f64 / verify_time.as_secs_f64()
    );
    Ok(())
}

/// Runs `in_flight` concurrent callers against `url` and measures.
async fn load(url: &str, via_bus: bool, in_flight: usize, args: &Args) -> Result<Figures> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let payload = vec![0x5a; args.payload];
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(args.seconds);
    let callers: Vec<_> = (0..in_flight)
        .map(|_| {
            let channel = channel.clone();
            let payload = payload.clone();
            tokio::spawn(async move { caller(channel, payload, via_bus, warm_up, end).await })
        })
        .collect();
    let mut latencies = Vec::new();
    for c in callers {
        latencies.extend(c.await.context("caller task")??);
    }
    if latencies.is_empty() {
        bail!("no call completed in the measured period");
    }
    latencies.sort_unstable();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok(Figures {
        calls_per_sec: latencies.len() as f64 / args.seconds as f64,
        p50_ms: pick(0.50).as_secs_f64() * 1e3,
        p99_ms: pick(0.99).as_secs_f64() * 1e3,
    })
}

async fn caller(
    channel: Channel,
    payload: Vec<u8>,
    via_bus: bool,
    warm_up: Instant,
    end: Instant,
) -> Result<Vec<Duration>> {
    let mut client = EchoClient::new(channel);
    let mut latencies = Vec::new();
    loop {
        let start = Instant::now();
        if start >= end {
            return Ok(latencies);
        }
        let mut request = tonic::Request::new(EchoMessage {
            payload: payload.clone(),
        });
        if via_bus {
            let md = request.metadata_mut();
            md.insert("lintas-client", CONSUMER_CLIENT.parse()?);
            md.insert("lintas-service", PROVIDER_CLIENT.parse()?);
        }
        let answer = client.echo(request).await?;
        if answer.get_ref().payload.len() != payload.len() {
            bail!(
                "echo answered {} bytes for {}",
                answer.get_ref().payload.len(),
                payload.len()
            );
        }
        if start >= warm_up {
            latencies.push(start.elapsed());
        }
    }
}
