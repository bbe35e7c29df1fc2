//! Listeners that survive floods of idle, slow and abusive connections and requests,
//! and the registry's TSA under a flood of requests.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::adapters::http;
use super::binary::binary_pair;
use super::ops::{ops_get, publish_described, sample};
use super::*;

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(
    from: std::net::Ipv4Addr,
    to: &str,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((from, 0).into())?;
    socket.connect(to.parse().unwrap()).await
}

/// Whether `stream` is closed by the other side within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// An HTTP/2 frame header: length, type, flags, stream.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HTTP/1.1 POST from the loopback address `from`; the status code.
async fn post_from(from: std::net::Ipv4Addr, address: &str, path: &str, body: &[u8]) -> u16 {
    let mut stream = connect_from(from, address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// An HPACK literal header field without indexing, new name, no Huffman coding.
fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// Reads HTTP/2 frames from `read` until one of type `kind` arrives; its flags and payload.
async fn frame_of(read: &mut tokio::net::tcp::OwnedReadHalf, kind: u8) -> (u8, u32, Vec<u8>) {
    let mut header = [0u8; 9];
    loop {
        read.read_exact(&mut header).await.unwrap();
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        read.read_exact(&mut payload).await.unwrap();
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        if header[3] == kind {
            return (header[4], stream, payload);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_idle_and_slow_connections_do_not_stall_legitimate_calls() {
    let net = network().await;
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let provider_ops = net.provider_ops.clone();
    let consumer_address = net.consumer_url.trim_start_matches("http://").to_owned();
    // A fresh mutual-TLS connection to the provider port before the flood, for scale.
    let started = Instant::now();
    let _ = net.send(net.sign(net.header(), b"x"), None).await;
    let baseline = started.elapsed();

    // 1,000 connections that never send a byte, from 100 other loopback addresses, half
    // against the provider port (TLS) and half against the consumer endpoint.
    let mut idle = Vec::new();
    for n in 0..1000u32 {
        let from = std::net::Ipv4Addr::new(127, 0, 1, (n % 100) as u8 + 2);
        let to = if n % 2 == 0 {
            &net.provider_address
        } else {
            &consumer_address
        };
        idle.push(connect_from(from, to).await.unwrap());
    }
    // And idle connections against the registry's gRPC (TLS) and HTTP ports.
    for n in 0..400u32 {
        let from = std::net::Ipv4Addr::new(127, 0, 4, (n % 40) as u8 + 2);
        let to = if n % 2 == 0 {
            net.inst.config.grpc_listen
        } else {
            net.inst.config.http_listen
        };
        idle.push(connect_from(from, &to.to_string()).await.unwrap());
    }
    // One source opening more handshakes than it may: the extra ones are closed at once.
    let greedy = std::net::Ipv4Addr::new(127, 0, 2, 2);
    let mut extra = Vec::new();
    for _ in 0..40 {
        extra.push(connect_from(greedy, &net.provider_address).await.unwrap());
    }
    // A client sending its TLS handshake one byte per second; the time the server cuts
    // it off is when its reading side sees the end. Timed from before the connection
    // is made: the server's deadline may start as soon as it accepts, before the
    // connect call returns here.
    let slow_started = Instant::now();
    let slow = connect_from(std::net::Ipv4Addr::new(127, 0, 2, 3), &net.provider_address)
        .await
        .unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let slow_writer = tokio::spawn(async move {
        let hello = [
            0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        for byte in hello.iter().cycle().take(30) {
            if slow_write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let slow_cut = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        tokio::time::timeout(Duration::from_secs(30), async {
            while matches!(slow_read.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await
        .ok()
        .map(|()| Instant::now())
    });

    // Legitimate calls from 127.0.0.1: through both servers, and a fresh TLS connection
    // straight to the provider port.
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "a call stalled for {took:?}");
        best = best.min(took);
    }
    assert!(best < Duration::from_millis(200), "best call took {best:?}");
    // The registry still answers: the configuration over HTTP, its API over TLS.
    let started = Instant::now();
    net.consumer.conf().fetch().await.unwrap();
    net.inst
        .admin()
        .list_registrations(lintas_proto::registry::v1::ListRegistrationsRequest::default())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the registry stalled for {took:?}"
    );
    // Whatever the provider server answers, it answers after a new handshake, and the
    // flood does not make it wait.
    let started = Instant::now();
    let _ = net.send(net.sign(net.header(), b"x"), None).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(200).max(baseline * 4),
        "a new TLS connection took {took:?} (before the flood: {baseline:?})"
    );

    let mut refused = 0;
    for stream in &mut extra {
        if closed_within(stream, Duration::from_millis(500)).await {
            refused += 1;
        }
    }
    assert!(refused >= 40 - 16, "only {refused} of 40 were refused");
    let cut = slow_cut
        .await
        .unwrap()
        .expect("the slow handshake is cut off");
    slow_writer.abort();
    let limit = lintas_transport::Limits::default().handshake_timeout();
    let after = cut - slow_started;
    assert!(
        after >= limit && after < limit + Duration::from_secs(2),
        "cut after {after:?}"
    );

    let (_, _, text) = http(&provider_ops, "GET", "/metrics", &[], "").await;
    let count = |reason: &str| {
        sample(
            &text,
            &format!(
                "lintas_connections_refused_total{{listener=\"provider\",reason=\"{reason}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(count("per_source_handshake_limit") >= 24.0, "{text}");
    assert!(count("handshake_timeout") >= 1.0, "{text}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_opens_and_resets_streams_in_a_loop_is_cut_off() {
    let net = network().await;
    let address = net.consumer_url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    write.write_all(&hello).await.unwrap();

    // Frames from the server until it closes: (type, payload).
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        let mut header = [0u8; 9];
        while read.read_exact(&mut header).await.is_ok() {
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            if read.read_exact(&mut payload).await.is_err() {
                break;
            }
            frames.push((header[3], payload));
        }
        frames
    });
    // HEADERS (POST, http, /: indexed from HPACK's static table) and RST_STREAM
    // (CANCEL), written together, again and again.
    let mut sent = 0;
    for n in 0..20_000u32 {
        let id = 2 * n + 1;
        let mut pair = frame(0x1, 0x4, id, &[0x83, 0x86, 0x84]);
        pair.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
        if write.write_all(&pair).await.is_err() {
            break;
        }
        sent += 1;
    }
    let frames = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the server closes the connection")
        .unwrap();
    assert!(
        frames.iter().any(|(kind, _)| *kind == 0x7),
        "no GOAWAY after {sent} resets"
    );
    // The server's first SETTINGS carry the stream limit.
    let settings = &frames.iter().find(|(k, _)| *k == 0x4).unwrap().1;
    let limit = settings
        .chunks(6)
        .find(|s| s[..2] == [0, 3])
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(
        limit,
        Some(lintas_transport::Limits::default().max_concurrent_streams)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_time_stamp_requests_is_limited_per_source_and_servers_still_get_tokens() {
    let net = network().await;
    let tsa = net.inst.config.globalconf_urls[0]
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let request = lintas_timestamp::request(&[7u8; 32], Some(1)).unwrap();
    let flooder = std::net::Ipv4Addr::new(127, 0, 3, 2);
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..100 {
        *statuses
            .entry(post_from(flooder, &tsa, "/tsa", &request).await)
            .or_insert(0) += 1;
    }
    // A burst of a tenth of the default 120 a minute, then 429.
    assert!(
        statuses.get(&200).copied().unwrap_or(0) <= 13,
        "{statuses:?}"
    );
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= 87,
        "{statuses:?}"
    );
    // The servers, from their own address, still get their tokens.
    record_and_checkpoint(&net.provider, "after the flood").await;
    assert!(
        net.provider
            .evidence
            .timestamp_now()
            .await
            .unwrap()
            .is_some()
    );
    let (_, _, provider) = ops_get(&net.provider_ops, "/metrics").await;
    assert!(
        sample(&provider, "lintas_timestamp_age_seconds").is_some(),
        "{provider}"
    );
    let (_, _, text) = http(&net.inst.ops, "GET", "/metrics", &[], "").await;
    assert!(
        sample(&text, "lintas_tsa_requests_total{result=\"limited\"}").unwrap_or(0.0) >= 87.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_whose_bodies_never_arrive_end_at_the_deadline() {
    let net = network_edited(true, |c| c.connection_limits.request_timeout_secs = 1).await;
    publish_described(&net, format!("http://{}", net.app_address)).await;
    let address = net.consumer_url.trim_start_matches("http://").to_owned();

    // A REST request that promises a body and sends a tenth of it.
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /r1/{PROVIDER_CLIENT}/{SERVICE}/CariNik HTTP/1.1\r\nHost: {address}\r\nX-Road-Client: {CONSUMER_CLIENT}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"nik\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout_secs"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // A gRPC call whose request message never comes.
    let channel = plain_channel(&net.consumer_url).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut req = Request::new(tokio_stream::pending::<Bytes>());
    req.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    req.metadata_mut()
        .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    let started = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        grpc.streaming(
            req,
            format!("/{SERVICE}/CariNik").parse().unwrap(),
            lintas_transport::RawCodec,
        ),
    )
    .await
    .expect("the server answers")
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("request_timeout_secs"),
        "{status:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The endpoint still serves.
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_streams_cost_bounded_memory_and_refusals_are_logged_once() {
    let inst = Instance::start().await;
    let servers = binary_pair(&inst).await;
    let consumer = &servers[1];
    let limits = lintas_transport::Limits::default();
    let per_connection = limits.max_concurrent_streams;
    let connections = 8;
    let before = rss_kib(consumer.daemon.pid());

    // gRPC calls that send their headers and never a message, as many as the server
    // lets each connection have, on several connections.
    let path = "/kependudukan.v1.Penduduk/CariNik";
    let mut headers = vec![0x83u8, 0x86, 0x04, path.len() as u8];
    headers.extend_from_slice(path.as_bytes());
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("lintas-client", CONSUMER_CLIENT),
        ("lintas-service", PROVIDER_CLIENT),
    ] {
        headers.extend(hpack_literal(name, value));
    }
    let mut held = Vec::new();
    let mut refused_extra = 0;
    for _ in 0..connections {
        let stream = tokio::net::TcpStream::connect(&consumer.consumer_listen)
            .await
            .unwrap();
        let (mut read, mut write) = stream.into_split();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(0x4, 0, 0, &[]));
        write.write_all(&hello).await.unwrap();
        // The server's settings, acknowledged, so that its stream limit applies.
        loop {
            let (flags, _, _) = frame_of(&mut read, 0x4).await;
            if flags & 1 == 0 {
                break;
            }
        }
        write.write_all(&frame(0x4, 1, 0, &[])).await.unwrap();
        let mut burst = Vec::new();
        for n in 0..=per_connection {
            burst.extend(frame(0x1, 0x4, 2 * n + 1, &headers));
        }
        // A PING after them: its answer means every HEADERS before it was handled.
        burst.extend(frame(0x6, 0, 0, b"lintas!!"));
        write.write_all(&burst).await.unwrap();
        // One stream past the limit is refused (RST_STREAM, REFUSED_STREAM).
        let (_, stream_id, payload) =
            tokio::time::timeout(Duration::from_secs(10), frame_of(&mut read, 0x3))
                .await
                .expect("the stream past the limit is refused");
        assert_eq!(stream_id, 2 * per_connection + 1);
        assert_eq!(u32::from_be_bytes(payload[..4].try_into().unwrap()), 7);
        refused_extra += 1;
        tokio::time::timeout(Duration::from_secs(10), frame_of(&mut read, 0x6))
            .await
            .expect("the server answers the PING");
        held.push((read, write));
    }
    assert_eq!(refused_extra, connections);
    let after = rss_kib(consumer.daemon.pid());
    let streams = u64::from(per_connection) * connections as u64;
    let grown = after.saturating_sub(before);
    println!(
        "{streams} held streams: resident memory {before} KiB -> {after} KiB ({} KiB a stream)",
        grown / streams
    );
    assert!(
        grown < 64 * 1024,
        "{streams} held streams grew the server by {grown} KiB"
    );

    // Refusals by a limit are counted and logged once per source: a source opening more
    // handshakes than it may on the provider port.
    let greedy = std::net::Ipv4Addr::new(127, 0, 5, 2);
    let mut extra = Vec::new();
    for _ in 0..40 {
        extra.push(connect_from(greedy, &consumer.peer).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut extra {
        if closed_within(stream, Duration::from_millis(500)).await {
            closed += 1;
        }
    }
    assert!(closed >= 24, "{closed}");
    drop((held, extra));
    let log = std::fs::read_to_string(consumer.dir.join("serve.log")).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("refused or closed by a limit") && l.contains("127.0.5.2"))
        .count();
    assert_eq!(lines, 1, "{log}");
}
