//! `lintas bench`: the same unary call made three ways, all on this machine, each
//! process its own: directly to the application; through two relay hops that only pass
//! calls on, with mutual TLS between them (the ceiling: what the bus would cost if
//! signing and logging were free); and through the bus (consumer security server →
//! provider security server, every header signed, both logs durable before the
//! answer). A REST call and messages on a bidirectional stream go directly and through
//! the bus too. Several rounds, the paths interleaved in each, give a median and a
//! spread; each run reads the CPU time every process used per exchange. The results
//! can be written as JSON.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bench_load::{Caller, CpuReader, Measured, Target};
use crate::bench_procs::{Kind, Process, Server, metrics, sums};
use crate::bench_summary::{
    GOAL_ADDED_P50_MS, GOAL_RATIO, Route, Run, Summary, listed, mean_ms, print_summary, summarise,
    times,
};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds each run measures (after one second of warm-up).
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Rounds: each runs every path at 1 and at 64 calls in flight, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Request and response payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// The paths to measure: direct, relay, bus (gRPC), rest-direct, rest-bus (the REST
    /// entry), stream-direct, stream-bus (messages on bidirectional streams). A ratio
    /// needs both of its paths.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,relay,bus,rest-direct,rest-bus,stream-direct,stream-bus"
    )]
    paths: Vec<Route>,
    /// Calls in flight to measure each path at.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    in_flight: Vec<usize>,
    /// Write every run and the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
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
    /// (The benchmark's own processes.) Serve the echo application on this address.
    #[arg(long, hide = true)]
    serve_echo: Option<String>,
    /// (The benchmark's own processes.) Serve a relay hop on this address.
    #[arg(long, hide = true, requires_all = ["upstream", "tls_dir", "side"])]
    serve_relay: Option<String>,
    #[arg(long, hide = true)]
    upstream: Option<String>,
    #[arg(long, hide = true)]
    tls_dir: Option<PathBuf>,
    #[arg(long, hide = true)]
    side: Option<crate::bench_relay::Side>,
}

const PROVIDER: &str = "ID/GOV/BENCH/SS1";
const PROVIDER_CLIENT: &str = "ID/GOV/BENCH/ECHO";
const CONSUMER: &str = "ID/GOV/LOAD/SS1";
const CONSUMER_CLIENT: &str = "ID/GOV/LOAD/GEN";
const SERVICE: &str = "echo.v1.Echo";
const REST_SERVICE: &str = "echorest";

pub async fn run(args: Args) -> Result<()> {
    if let Some(addr) = &args.serve_echo {
        return crate::bench_relay::serve_echo(addr).await;
    }
    if let (Some(addr), Some(upstream), Some(dir), Some(side)) =
        (&args.serve_relay, &args.upstream, &args.tls_dir, args.side)
    {
        return crate::bench_relay::serve_relay(addr, upstream, dir, side).await;
    }
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
    if args.seconds == 0 || args.rounds == 0 || args.payload > 3 * 1024 * 1024 {
        bail!("--seconds and --rounds must be at least 1 and --payload at most 3 MiB");
    }
    if args.paths.is_empty() || args.in_flight.is_empty() || args.in_flight.contains(&0) {
        bail!("--paths needs at least one path and --in-flight numbers of at least 1");
    }
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut running = crate::network::Running::default();
    // Interrupted, the processes it started are stopped and its directory removed all
    // the same (they go with `measure`'s future).
    let result = tokio::select! {
        result = measure(temp.path(), &args, &mut running) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    running.stop().await?;
    result
}

/// Everything the paths run through.
struct Setup {
    /// Provider's and consumer's security servers.
    servers: [Server; 2],
    app: Process,
    relays: [Process; 2],
    urls: BTreeMap<Route, String>,
}

async fn measure(root: &Path, args: &Args, running: &mut crate::network::Running) -> Result<()> {
    let (report, config) = crate::network::start_registry(root, running).await?;
    let setup = start(root, &report, &config).await?;
    println!(
        "lintas bench: {} byte payloads, {} round(s) of {} s per run after 1 s of warm-up, every process its own; through the relay two hops only pass calls on (mutual TLS between them); through the bus every request and response header is signed (in batches) and verified, and recorded durably on both servers before the answer (consumer endpoint in development mode: plaintext loopback, as for the relay's first hop)",
        args.payload, args.rounds, args.seconds
    );
    println!(
        "on the stream paths a call is one message on a bidirectional stream, answered before the next is sent, {} to a stream (each signed and recorded on both servers through the bus)",
        crate::bench_load::STREAM_MESSAGES
    );
    println!(
        "{:<6} {:<13} {:>9} {:>10} {:>8} {:>8}  CPU µs per exchange",
        "round", "path", "in flight", "calls/s", "p50 ms", "p99 ms"
    );
    let bus_servers = [&setup.servers[0], &setup.servers[1]];
    let counters = [
        "lintas_log_records",
        "lintas_log_flushes_total",
        "lintas_signed_headers_total",
        "lintas_batch_signatures_total",
    ];
    let mut bus_counts = [0.0; 4];
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for &in_flight in &args.in_flight {
            for &route in &args.paths {
                let path = route.name();
                // The servers' counters and stage times around a run through the bus,
                // from one reading of their metrics before and one after.
                let bus = route.through_bus();
                let before = match bus {
                    true => metrics(&bus_servers).await?,
                    false => Vec::new(),
                };
                let measured = run_path(&setup, route, in_flight, args).await?;
                let mut stages_ms = None;
                if bus {
                    let after = metrics(&bus_servers).await?;
                    let (a, b) = (sums(&after, &counters), sums(&before, &counters));
                    for (sum, (a, b)) in bus_counts.iter_mut().zip(a.iter().zip(&b)) {
                        *sum += a - b;
                    }
                    stages_ms = Some(mean_ms(&times(&before), &times(&after)));
                }
                let cpu = listed(&measured.cpu_us_per_exchange, 0);
                println!(
                    "{round:<6} {path:<13} {in_flight:>9} {:>10.0} {:>8.3} {:>8.3}  {}",
                    measured.calls_per_sec, measured.p50_ms, measured.p99_ms, cpu
                );
                runs.push(Run {
                    path,
                    in_flight,
                    round,
                    measured,
                    stages_ms,
                });
            }
        }
    }
    let summary = summarise(&runs, &args.in_flight);
    print_summary(&summary, args.rounds);
    let per = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let bus = BusCounts {
        records_per_flush: per(bus_counts[0], bus_counts[1]),
        headers_per_signature: per(bus_counts[2], bus_counts[3]),
    };
    println!(
        "through the bus: {:.1} records per durable write, {:.1} headers per signature",
        bus.records_per_flush, bus.headers_per_signature
    );
    let evidence = evidence_rates(&setup.servers[1], &report.anchor_path).await?;
    if let Some(path) = &args.json {
        let results = Results {
            lintas_version: env!("CARGO_PKG_VERSION"),
            date: now_rfc3339(),
            machine: Machine::read(),
            settings: Settings {
                seconds: args.seconds,
                warm_up_seconds: 1,
                rounds: args.rounds,
                payload_bytes: args.payload,
            },
            goals: Goals {
                bus_direct_at_64_at_least: GOAL_RATIO,
                added_p50_ms_at_1_at_most: GOAL_ADDED_P50_MS,
                met: summary.goals_met(),
            },
            summary,
            bus,
            evidence,
            runs,
        };
        let text = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, text + "\n").with_context(|| path.display().to_string())?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// Starts the two security servers, the application and the relay hops, publishes the
/// echo service to the consumer, and waits until it can be called through the bus.
async fn start(
    root: &Path,
    report: &lintas_registry::InitReport,
    config: &lintas_registry::RegistryConfig,
) -> Result<Setup> {
    let mut admin = lintas_registry::admin::connect(&report.admin_dir, &config.public_url)?;
    let provider = crate::bench_procs::security_server(
        root,
        &report.anchor_path,
        &mut admin,
        PROVIDER,
        PROVIDER_CLIENT,
    )
    .await?;
    let consumer = crate::bench_procs::security_server(
        root,
        &report.anchor_path,
        &mut admin,
        CONSUMER,
        CONSUMER_CLIENT,
    )
    .await?;
    let any = OsStr::new("127.0.0.1:0");
    let mut app = Process::start(
        &[OsStr::new("bench"), OsStr::new("--serve-echo"), any],
        &root.join("app.log"),
    )?;
    let line = app.first_line().await?;
    let (grpc, rest) = line
        .split_once(' ')
        .with_context(|| format!("the application said {line:?}"))?;
    let (app_url, rest_url) = (format!("http://{grpc}"), format!("http://{rest}"));
    let tls = root.join("relay-tls");
    std::fs::create_dir(&tls)?;
    crate::bench_relay::make_certs(&tls)?;
    let relay = |upstream: &str, side: &str, log: &str| {
        Process::start(
            &[
                OsStr::new("bench"),
                OsStr::new("--serve-relay"),
                any,
                OsStr::new("--upstream"),
                OsStr::new(upstream),
                OsStr::new("--tls-dir"),
                tls.as_os_str(),
                OsStr::new("--side"),
                OsStr::new(side),
            ],
            &root.join(log),
        )
    };
    let mut second = relay(&app_url, "second", "relay-second.log")?;
    let second_url = format!("https://{}", second.first_line().await?);
    let mut first = relay(&second_url, "first", "relay-first.log")?;
    let first_url = format!("http://{}", first.first_line().await?);

    let proto = root.join("echo.proto");
    std::fs::write(&proto, lintas_examples::echo::PROTO)?;
    for (service, endpoint, kind) in [
        (SERVICE, &app_url, Kind::Grpc(&proto)),
        (REST_SERVICE, &rest_url, Kind::Rest),
    ] {
        crate::bench_procs::publish(
            &provider.config,
            PROVIDER_CLIENT,
            service,
            endpoint,
            kind,
            CONSUMER_CLIENT,
        )?;
    }
    let urls = BTreeMap::from([
        (Route::Direct, app_url.clone()),
        (Route::Relay, first_url),
        (Route::Bus, consumer.consumer_url.clone()),
        (Route::StreamDirect, app_url),
        (Route::StreamBus, consumer.consumer_url.clone()),
        (Route::RestDirect, format!("{rest_url}/echo")),
        (
            Route::RestBus,
            format!(
                "{}/r1/{PROVIDER_CLIENT}/{REST_SERVICE}/echo",
                consumer.consumer_url
            ),
        ),
    ]);
    // The service was published a moment ago: the consumer's server may need the
    // configuration that lists it. Each path answers before anything is measured.
    let setup = Setup {
        servers: [provider, consumer],
        app,
        relays: [first, second],
        urls,
    };
    for route in Route::ALL {
        let mut tries = 0;
        while let Err(e) = crate::bench_load::once(setup.target(route)).await {
            tries += 1;
            if tries > 100 {
                bail!("{}: calls do not get through: {e:#}", route.name());
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(setup)
}

impl Setup {
    /// What the callers of `route` call.
    fn target(&self, route: Route) -> Target<'_> {
        static BUS: Caller = Caller {
            client: CONSUMER_CLIENT,
            service: PROVIDER_CLIENT,
        };
        let url = self.urls[&route].as_str();
        let caller = route.through_bus().then_some(&BUS);
        match route {
            Route::RestDirect | Route::RestBus => Target::Rest {
                url,
                client: caller.map(|c| c.client),
            },
            Route::StreamDirect | Route::StreamBus => Target::Stream { url, caller },
            Route::Direct | Route::Relay | Route::Bus => Target::Grpc { url, caller },
        }
    }
}

/// Measures `route` once, reading the CPU time of every process the calls pass through.
async fn run_path(setup: &Setup, route: Route, in_flight: usize, args: &Args) -> Result<Measured> {
    let me = std::process::id();
    let mut processes: Vec<CpuReader<'_>> =
        vec![("client", Box::new(move || crate::bench_procs::cpu_of(me)))];
    match route {
        Route::Relay => {
            processes.push(("relay 1", Box::new(|| setup.relays[0].cpu_secs())));
            processes.push(("relay 2", Box::new(|| setup.relays[1].cpu_secs())));
        }
        _ if route.through_bus() => {
            processes.push((
                "consumer ss",
                Box::new(|| setup.servers[1].process.cpu_secs()),
            ));
            processes.push((
                "provider ss",
                Box::new(|| setup.servers[0].process.cpu_secs()),
            ));
        }
        _ => {}
    }
    processes.push(("app", Box::new(|| setup.app.cpu_secs())));
    crate::bench_load::run(
        setup.target(route),
        in_flight,
        args.seconds,
        args.payload,
        &processes,
    )
    .await
}

#[derive(Serialize)]
struct Results {
    lintas_version: &'static str,
    date: String,
    machine: Machine,
    settings: Settings,
    goals: Goals,
    summary: Summary,
    bus: BusCounts,
    evidence: Evidence,
    runs: Vec<Run>,
}

#[derive(Serialize)]
struct Settings {
    seconds: u64,
    warm_up_seconds: u64,
    rounds: usize,
    payload_bytes: usize,
}

#[derive(Serialize)]
struct Goals {
    bus_direct_at_64_at_least: f64,
    added_p50_ms_at_1_at_most: f64,
    /// Both met; absent when not both were measured.
    met: Option<bool>,
}

#[derive(Serialize)]
struct BusCounts {
    records_per_flush: f64,
    headers_per_signature: f64,
}

#[derive(Serialize)]
struct Machine {
    cores: usize,
    cpu: String,
    kernel: String,
}

impl Machine {
    fn read() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Serialize)]
struct Evidence {
    exchanges: usize,
    bundles: usize,
    export_per_sec: f64,
    verify_per_sec: f64,
}

/// Exports every exchange the consumer's server logged (in bundles of 10,000, as `audit
/// export` does) over its admin socket and verifies the bundles offline, one at a time.
async fn evidence_rates(server: &Server, anchor: &Path) -> Result<Evidence> {
    let anchor = lintas_globalconf::Anchor::load(anchor)?;
    let query = lintas_proto::ss::v1::EvidenceQuery {
        client: CONSUMER_CLIENT.into(),
        exchanges_per_bundle: 10_000,
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = crate::ss_cmd::admin(&server.config)
        .await?
        .export_evidence_bundles(query)
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let (mut exchanges, mut verify_time, mut bundles) = (0usize, std::time::Duration::ZERO, 0);
    while let Some(bundle) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
    {
        bundles += 1;
        // Verification is timed apart from the export it interleaves with.
        let verifying = Instant::now();
        let report = tokio::task::block_in_place(|| lintas_audit::verify(&bundle, &anchor));
        verify_time += verifying.elapsed();
        if !report.verified {
            bail!("bundle {bundles} does not verify: {:?}", report.failures);
        }
        exchanges += report.exchanges.len();
    }
    let export_time = started.elapsed().saturating_sub(verify_time);
    let evidence = Evidence {
        exchanges,
        bundles,
        export_per_sec: exchanges as f64 / export_time.as_secs_f64(),
        verify_per_sec: exchanges as f64 / verify_time.as_secs_f64(),
    };
    println!(
        "evidence: {exchanges} exchanges in {bundles} bundle(s); export {:.0} exchanges/s, offline verification {:.0} exchanges/s",
        evidence.export_per_sec, evidence.verify_per_sec
    );
    Ok(evidence)
}
