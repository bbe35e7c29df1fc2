//! `lintas bench --large`: one large body through a REST service, up and down, directly
//! to the backend and through the bus (consumer security server → provider security
//! server → backend), on this machine. The two security servers run as their own
//! processes (`lintas ss serve`), so each one's peak memory can be read; the registry,
//! the backend and the client run in this one. Bodies are generated and counted as they
//! stream, never held whole anywhere.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use crate::bench_procs::{Server, metric_sums};

const PROVIDER: &str = "ID/GOV/BERKAS/SS1";
const PROVIDER_CLIENT: &str = "ID/GOV/BERKAS/ARSIP";
const CONSUMER: &str = "ID/GOV/PEMOHON/SS1";
const CONSUMER_CLIENT: &str = "ID/GOV/PEMOHON/APP";
const SERVICE: &str = "berkas";
/// Pieces the client sends and the backend answers in.
const PIECE: usize = 64 * 1024;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

pub async fn run(mib: u64) -> Result<()> {
    if mib == 0 {
        bail!("--size must be at least 1 MiB");
    }
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut running = crate::network::Running::default();
    let result = measure(temp.path(), mib << 20, &mut running).await;
    running.stop().await?;
    result
}

async fn measure(root: &Path, size: u64, running: &mut crate::network::Running) -> Result<()> {
    let (report, config) = crate::network::start_registry(root, running).await?;
    let mut admin = lintas_registry::admin::connect(&report.admin_dir, &config.public_url)?;

    // The backend, in this process: it counts what it is sent and streams what it is
    // asked for.
    let backend = TcpListener::bind("127.0.0.1:0").await?;
    let backend_url = format!("http://{}", backend.local_addr()?);
    let stop = running.stopper();
    running.tasks.push(tokio::spawn(async move {
        axum::serve(backend, files())
            .with_graceful_shutdown(stop)
            .await
            .context("backend")
    }));

    // Two members enrol with tokens; each server then runs as its own process.
    let mut servers = Vec::new();
    for (id, client) in [(PROVIDER, PROVIDER_CLIENT), (CONSUMER, CONSUMER_CLIENT)] {
        servers.push(
            crate::bench_procs::security_server(root, &report.anchor_path, &mut admin, id, client)
                .await?,
        );
    }
    let consumer_url = servers[1].consumer_url.clone();
    crate::bench_procs::publish(
        &servers[0].config,
        PROVIDER_CLIENT,
        SERVICE,
        &backend_url,
        crate::bench_procs::Kind::Rest,
        CONSUMER_CLIENT,
    )?;

    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let bus = format!("{consumer_url}/r1/{PROVIDER_CLIENT}/{SERVICE}");
    // The service was published a moment ago: the first call may wait for the
    // configuration that lists it.
    let mut tries = 0;
    while download(&client, &bus, 1024).await.is_err() {
        tries += 1;
        if tries > 100 {
            bail!("the service never became callable through the bus");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (idle_provider, idle_consumer) = (
        servers[0].process.memory()?.1,
        servers[1].process.memory()?.1,
    );

    println!(
        "lintas bench --large: {} MiB up (POST) and down (GET) through a REST service; through the bus every 1 MiB chunk is hashed, signed and recorded durably on both servers (consumer endpoint in development mode: plaintext loopback)",
        size >> 20
    );
    println!(
        "{:<8} {:<10} {:>9} {:>10} {:>18} {:>22}",
        "path", "direction", "seconds", "MiB/s", "records/flush", "CPU s consumer/provider"
    );
    let mut rates = Vec::new();
    for (name, base) in [("direct", backend_url.as_str()), ("bus", bus.as_str())] {
        for direction in ["up", "down"] {
            let before = log_counters(&servers).await?;
            let cpu_before = (
                servers[1].process.cpu_secs()?,
                servers[0].process.cpu_secs()?,
            );
            let started = Instant::now();
            let moved = match direction {
                "up" => upload(&client, base, size).await?,
                _ => download(&client, base, size).await?,
            };
            if moved != size {
                bail!("{name} {direction}: {moved} bytes arrived of {size}");
            }
            let secs = started.elapsed().as_secs_f64();
            let rate = (size >> 20) as f64 / secs;
            let after = log_counters(&servers).await?;
            let cpu = format!(
                "{:.2} / {:.2}",
                servers[1].process.cpu_secs()? - cpu_before.0,
                servers[0].process.cpu_secs()? - cpu_before.1
            );
            let per_flush = match after[1] - before[1] {
                0 => "-".to_owned(),
                flushes => format!("{} / {flushes}", after[0] - before[0]),
            };
            println!(
                "{name:<8} {direction:<10} {secs:>9.2} {rate:>10.0} {per_flush:>18} {cpu:>22}"
            );
            rates.push(rate);
        }
    }
    println!(
        "bus/direct throughput: {:.2} up, {:.2} down",
        rates[2] / rates[0],
        rates[3] / rates[1]
    );
    // The floor under the bus's cost: every byte is hashed once at each server.
    let block = vec![0x5au8; 64 << 20];
    let started = Instant::now();
    for _ in 0..4 {
        std::hint::black_box(lintas_certs::sha256(&block));
    }
    println!(
        "SHA-256 on this machine, one core: {:.0} MiB/s (each server hashes every byte once)",
        256.0 / started.elapsed().as_secs_f64()
    );
    for (name, server, idle) in [
        ("provider", &servers[0], idle_provider),
        ("consumer", &servers[1], idle_consumer),
    ] {
        let (peak, now) = server.process.memory()?;
        println!(
            "{name} security server: peak RSS {peak:.0} MiB (after start-up {idle:.0} MiB, now {now:.0} MiB)"
        );
    }
    Ok(())
}

/// Records and synced batches of both servers' logs, from their metrics.
async fn log_counters(servers: &[Server]) -> Result<[u64; 2]> {
    let servers: Vec<&Server> = servers.iter().collect();
    let sums = metric_sums(
        &servers,
        &["lintas_log_records", "lintas_log_flushes_total"],
    )
    .await?;
    Ok([sums[0] as u64, sums[1] as u64])
}

fn request(method: hyper::Method, url: &str, body: Body) -> Result<hyper::Request<Body>> {
    Ok(hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("X-Road-Client", CONSUMER_CLIENT)
        .body(body)?)
}

/// POSTs `size` generated bytes to `base/files`; the bytes the backend counted.
async fn upload(client: &Client<HttpConnector, Body>, base: &str, size: u64) -> Result<u64> {
    let pieces = (0..size).step_by(PIECE).map(move |start| {
        let n = (size - start).min(PIECE as u64) as usize;
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![0x5a; n])))
    });
    let body = StreamBody::new(tokio_stream::iter(pieces)).boxed();
    let r = client
        .request(request(
            hyper::Method::POST,
            &format!("{base}/files"),
            body,
        )?)
        .await?;
    let status = r.status();
    let text = r.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "upload answered {status}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    Ok(String::from_utf8_lossy(&text).trim().parse()?)
}

/// GETs `base/files/SIZE`; the bytes that arrived.
async fn download(client: &Client<HttpConnector, Body>, base: &str, size: u64) -> Result<u64> {
    let empty = http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed();
    let r = client
        .request(request(
            hyper::Method::GET,
            &format!("{base}/files/{size}"),
            empty,
        )?)
        .await?;
    if !r.status().is_success() {
        bail!("download answered {}", r.status());
    }
    let mut body = r.into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// The backend: `POST /files` answers how many bytes it received; `GET /files/N`
/// streams N bytes.
fn files() -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/files",
            post(|body: axum::body::Body| async move {
                let mut stream = body.into_data_stream();
                let mut n = 0u64;
                while let Some(Ok(data)) = tokio_stream::StreamExt::next(&mut stream).await {
                    n += data.len() as u64;
                }
                n.to_string()
            }),
        )
        .route(
            "/files/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<u64>| async move {
                    let pieces = (0..n).step_by(PIECE).map(move |start| {
                        let len = (n - start).min(PIECE as u64) as usize;
                        Ok::<_, std::io::Error>(Bytes::from(vec![0xa5; len]))
                    });
                    axum::body::Body::from_stream(tokio_stream::iter(pieces))
                },
            ),
        )
}
