//! The benchmark's callers: `in_flight` tasks each making one unary echo call (or
//! streamed message, or REST call) after another over one connection, and what one such run measured, including the
//! CPU time each process used per exchange over the measured period.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lintas_examples::echo::v1::EchoMessage;
use lintas_examples::echo::v1::echo_client::EchoClient;
use serde::Serialize;
use tonic::transport::Channel;

/// Who the bus's callers say they are and call.
pub struct Caller {
    pub client: &'static str,
    pub service: &'static str,
}

/// Messages a caller sends on one stream before it opens the next.
pub const STREAM_MESSAGES: usize = 100;

/// Longest one call may take before the run is given up (a process stopped answering).
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// `call`, or an error once it has taken [`CALL_LIMIT`].
async fn bounded<T>(call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(CALL_LIMIT, call).await {
        Ok(done) => done,
        Err(_) => bail!("a call took more than {} s", CALL_LIMIT.as_secs()),
    }
}

/// What the callers call.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// The echo service's `Echo` method at `url`, naming `caller` (through the bus).
    Grpc {
        url: &'a str,
        caller: Option<&'a Caller>,
    },
    /// The echo service's `Chat` method at `url`: each caller keeps a stream open for
    /// [`STREAM_MESSAGES`] messages, sending one and awaiting its answer before the
    /// next, then opens another. A call is one message answered.
    Stream {
        url: &'a str,
        caller: Option<&'a Caller>,
    },
    /// `POST url` with the payload, expecting it back; with `client`, the
    /// `X-Road-Client` header (through the bus's REST entry).
    Rest {
        url: &'a str,
        client: Option<&'static str>,
    },
}

type RestClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// An HTTP/1.1 client with a pool of kept-alive connections, one per caller at most.
fn rest_client() -> RestClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Calls started in the measured period.
    pub calls: usize,
    pub calls_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time per exchange of each process, microseconds, by process name.
    pub cpu_us_per_exchange: std::collections::BTreeMap<String, f64>,
}

/// A process whose CPU time a run reads: its name and how to read it.
pub type CpuReader<'a> = (&'a str, Box<dyn Fn() -> Result<f64> + 'a>);

/// Runs `in_flight` callers against `url` for one second of warm-up and `seconds`
/// measured, reading each process's CPU time at the start and end of the measured
/// period.
pub async fn run(
    target: Target<'_>,
    in_flight: usize,
    seconds: u64,
    payload: usize,
    processes: &[CpuReader<'_>],
) -> Result<Measured> {
    let payload = vec![0x5a; payload];
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(seconds);
    let callers: Vec<tokio::task::JoinHandle<Result<Vec<Duration>>>> = match target {
        Target::Grpc { url, caller } | Target::Stream { url, caller } => {
            let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
                .tcp_nodelay(true)
                .connect()
                .await?;
            let meta = caller.map(|c| (c.client, c.service));
            let streams = matches!(target, Target::Stream { .. });
            (0..in_flight)
                .map(|_| {
                    let client = EchoClient::new(channel.clone());
                    let payload = payload.clone();
                    tokio::spawn(async move {
                        match streams {
                            true => chats(client, payload, meta, warm_up, end).await,
                            false => calls(client, payload, meta, warm_up, end).await,
                        }
                    })
                })
                .collect()
        }
        Target::Rest { url, client } => {
            let http = rest_client();
            let payload = bytes::Bytes::from(payload);
            (0..in_flight)
                .map(|_| {
                    let (http, payload, url) = (http.clone(), payload.clone(), url.to_owned());
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        loop {
                            let start = Instant::now();
                            if start >= end {
                                return Ok(latencies);
                            }
                            bounded(post(&http, &url, client, &payload)).await?;
                            if start >= warm_up {
                                latencies.push(start.elapsed());
                            }
                        }
                    })
                })
                .collect()
        }
    };
    tokio::time::sleep_until(warm_up.into()).await;
    let before = cpu(processes)?;
    tokio::time::sleep_until(end.into()).await;
    let after = cpu(processes)?;
    let mut latencies = Vec::new();
    for c in callers {
        latencies.extend(c.await.context("caller task")??);
    }
    if latencies.is_empty() {
        bail!("no call completed in the measured period");
    }
    latencies.sort_unstable();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let n = latencies.len();
    let per_exchange = processes
        .iter()
        .zip(before.iter().zip(&after))
        .map(|((name, _), (b, a))| ((*name).to_owned(), (a - b) * 1e6 / n as f64))
        .collect();
    Ok(Measured {
        calls: n,
        calls_per_sec: n as f64 / seconds as f64,
        p50_ms: pick(0.50).as_secs_f64() * 1e3,
        p99_ms: pick(0.99).as_secs_f64() * 1e3,
        cpu_us_per_exchange: per_exchange,
    })
}

/// One call to `target`, to see that the path is up.
pub async fn once(target: Target<'_>) -> Result<()> {
    bounded(once_unbounded(target)).await
}

async fn once_unbounded(target: Target<'_>) -> Result<()> {
    match target {
        Target::Grpc { url, caller } | Target::Stream { url, caller } => {
            let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
                .connect()
                .await?;
            let mut client = EchoClient::new(channel);
            let meta = caller.map(|c| (c.client, c.service));
            match target {
                Target::Stream { .. } => chat(&mut client, vec![1; 16], meta, 1, |_| true)
                    .await
                    .map(|_| ()),
                _ => echo(&mut client, &[1; 16], meta).await,
            }
        }
        Target::Rest { url, client } => {
            post(
                &rest_client(),
                url,
                client,
                &bytes::Bytes::from_static(&[1; 16]),
            )
            .await
        }
    }
}

/// One REST call, its answer checked.
async fn post(
    http: &RestClient,
    url: &str,
    client: Option<&str>,
    payload: &bytes::Bytes,
) -> Result<()> {
    use http_body_util::BodyExt;
    let mut request = hyper::Request::post(url).header("content-type", "application/octet-stream");
    if let Some(client) = client {
        request = request.header("X-Road-Client", client);
    }
    let answer = http
        .request(request.body(http_body_util::Full::new(payload.clone()))?)
        .await?;
    let status = answer.status();
    let body = answer.into_body().collect().await?.to_bytes();
    if !status.is_success() || body.len() != payload.len() {
        bail!(
            "POST {url} answered {status} with {} bytes for {}: {}",
            body.len(),
            payload.len(),
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(())
}

fn cpu(processes: &[CpuReader<'_>]) -> Result<Vec<f64>> {
    processes.iter().map(|(_, read)| read()).collect()
}

/// One caller: calls until `end`, keeping the latency of each call started after
/// `warm_up`.
async fn calls(
    mut client: EchoClient<Channel>,
    payload: Vec<u8>,
    meta: Option<(&'static str, &'static str)>,
    warm_up: Instant,
    end: Instant,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    loop {
        let start = Instant::now();
        if start >= end {
            return Ok(latencies);
        }
        bounded(echo(&mut client, &payload, meta)).await?;
        if start >= warm_up {
            latencies.push(start.elapsed());
        }
    }
}

/// One caller of streams: streams of up to [`STREAM_MESSAGES`] messages until `end`,
/// keeping the latency of each message sent after `warm_up`. The first message of
/// each stream includes its opening; its close is in no message's latency.
async fn chats(
    mut client: EchoClient<Channel>,
    payload: Vec<u8>,
    meta: Option<(&'static str, &'static str)>,
    warm_up: Instant,
    end: Instant,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    while Instant::now() < end {
        let keep = |(start, answered): (Instant, Instant)| {
            if start >= warm_up {
                latencies.push(answered - start);
            }
            answered < end
        };
        chat(&mut client, payload.clone(), meta, STREAM_MESSAGES, keep).await?;
    }
    Ok(latencies)
}

/// One `Chat` stream: up to `messages` messages, each sent once the one before was
/// answered, while `answered` (given when each was sent and
/// answered) says to go on; then the stream is closed and must end without error.
/// Returns how many were answered.
async fn chat(
    client: &mut EchoClient<Channel>,
    payload: Vec<u8>,
    meta: Option<(&'static str, &'static str)>,
    messages: usize,
    mut answered: impl FnMut((Instant, Instant)) -> bool,
) -> Result<usize> {
    let (send, outgoing) = tokio::sync::mpsc::channel(1);
    let message = || EchoMessage {
        payload: payload.clone(),
    };
    // The first message goes with the opening: a server may wait for it.
    let mut start = Instant::now();
    send.send(message()).await?;
    let request = named(
        tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outgoing)),
        meta,
    )?;
    let mut answers = bounded(async { Ok(client.chat(request).await?.into_inner()) }).await?;
    let mut done = 0;
    loop {
        let answer = bounded(async { Ok(answers.message().await?) })
            .await?
            .context("the stream ended before its answer")?;
        // The echo application answers each message with "re: " before it.
        if answer.payload.len() != payload.len() + 4 || !answer.payload.starts_with(b"re: ") {
            bail!(
                "chat answered {} bytes for {}",
                answer.payload.len(),
                payload.len()
            );
        }
        done += 1;
        if !answered((start, Instant::now())) || done == messages {
            break;
        }
        start = Instant::now();
        if send.send(message()).await.is_err() {
            // The stream ended: its status says why.
            bounded(async { Ok(answers.message().await?) }).await?;
            bail!("the stream ended after {done} message(s) without an error");
        }
    }
    drop(send);
    if let Some(more) = bounded(async { Ok(answers.message().await?) }).await? {
        bail!("chat answered {} bytes nobody sent", more.payload.len());
    }
    Ok(done)
}

/// One echo call, its answer checked.
async fn echo(
    client: &mut EchoClient<Channel>,
    payload: &[u8],
    meta: Option<(&'static str, &'static str)>,
) -> Result<()> {
    let request = named(
        tonic::Request::new(EchoMessage {
            payload: payload.to_vec(),
        }),
        meta,
    )?;
    let answer = client.echo(request).await?;
    if answer.get_ref().payload.len() != payload.len() {
        bail!(
            "echo answered {} bytes for {}",
            answer.get_ref().payload.len(),
            payload.len()
        );
    }
    Ok(())
}

/// `request` naming the bus's caller and service (`meta`), when it goes through the bus.
fn named<T>(
    mut request: tonic::Request<T>,
    meta: Option<(&'static str, &'static str)>,
) -> Result<tonic::Request<T>> {
    if let Some((client, service)) = meta {
        let md = request.metadata_mut();
        md.insert("lintas-client", client.parse()?);
        md.insert("lintas-service", service.parse()?);
    }
    Ok(request)
}
