//! The processes a benchmark runs beside itself (security servers, the application,
//! relay hops), each its own process so that its CPU time and memory can be read from
//! `/proc`, as an operator would see them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A child process of this binary, killed when dropped.
pub struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts this binary with `args`, its standard error into `log`.
    pub fn start(args: &[&OsStr], log: &Path) -> Result<Process> {
        let log = std::fs::File::create(log).with_context(|| log.display().to_string())?;
        let child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting a process of the benchmark")?;
        Ok(Process { child })
    }

    /// The first line the process printed (a listener's address), waiting at most 30 s.
    pub async fn first_line(&mut self) -> Result<String> {
        let stdout = self.child.stdout.take().context("no standard output")?;
        let read = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .map(|_| line)
        });
        match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(line) => Ok(line??.trim().to_owned()),
            Err(_) => bail!("a process of the benchmark said nothing within 30 s"),
        }
    }

    /// CPU seconds the process has used (user and system).
    pub fn cpu_secs(&self) -> Result<f64> {
        cpu_of(self.child.id())
    }

    /// Peak and current resident memory, MiB (`VmHWM`, `VmRSS`).
    pub fn memory(&self) -> Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading a process's /proc status")?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((kib("VmHWM:") / 1024.0, kib("VmRSS:") / 1024.0))
    }
}

/// CPU seconds (user and system) the process `pid` has used.
pub fn cpu_of(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks =
        |i: usize| -> Result<f64> { Ok(fields.get(i).context("short /proc stat")?.parse()?) };
    // /proc counts in USER_HZ, 100 on Linux.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// A security server running as its own process (`lintas ss serve`).
pub struct Server {
    pub process: Process,
    pub config: PathBuf,
    pub ops_port: u16,
    /// Its consumer endpoint, `http://127.0.0.1:PORT` (development mode: plaintext).
    pub consumer_url: String,
}

/// Creates security server `id` hosting `client` under `root`, enrols it with a token
/// and starts it as a process; returns once it is ready.
pub async fn security_server(
    root: &Path,
    anchor: &Path,
    admin: &mut lintas_proto::registry::v1::registry_admin_client::RegistryAdminClient<
        tonic::transport::Channel,
    >,
    id: &str,
    client: &str,
) -> Result<Server> {
    let (consumer_port, ops_port, management_port) = (free_port()?, free_port()?, free_port()?);
    let member = crate::network::new_server_edited(root, anchor, id, &[client], "bench", |c| {
        c.consumer_listen = ([127, 0, 0, 1], consumer_port).into();
        c.ops_listen = ([127, 0, 0, 1], ops_port).into();
        c.management_listen = ([127, 0, 0, 1], management_port).into();
        c.provider_listen = ([127, 0, 0, 1], c.address.port()).into();
        c.dev_plaintext_loopback = true;
    })
    .await?;
    crate::network::enrol_with_token(admin, &member.node, id).await?;
    let dir = member.node.paths.0.clone();
    let config = dir.join("ss.toml");
    // The provider endpoint's port is the child's to bind now.
    drop(member);
    let process = Process::start(
        &[
            OsStr::new("ss"),
            OsStr::new("serve"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        &dir.join("server.log"),
    )?;
    ready(ops_port, &dir).await?;
    Ok(Server {
        process,
        config,
        ops_port,
        consumer_url: format!("http://127.0.0.1:{consumer_port}"),
    })
}

/// Waits, bounded, until a server's operations listener answers `/readyz` with 200.
async fn ready(ops_port: u16, dir: &Path) -> Result<()> {
    let client = http_client();
    let url: hyper::Uri = format!("http://127.0.0.1:{ops_port}/readyz").parse()?;
    for _ in 0..300 {
        if let Ok(r) = client.get(url.clone()).await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(5).collect();
    bail!(
        "a security server did not become ready within 30 s; the end of its log:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

fn http_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Each server's metrics, as text.
pub async fn metrics(servers: &[&Server]) -> Result<Vec<String>> {
    let client = http_client();
    let mut texts = Vec::new();
    for server in servers {
        let url: hyper::Uri = format!("http://127.0.0.1:{}/metrics", server.ops_port).parse()?;
        let read = async { anyhow::Ok(client.get(url).await?.into_body().collect().await?) };
        let text = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .context("a security server's metrics did not come within 10 s")??
            .to_bytes();
        texts.push(String::from_utf8_lossy(&text).into_owned());
    }
    Ok(texts)
}

/// The sums over `servers` of the metrics `names` (unlabelled samples), in order.
pub async fn metric_sums(servers: &[&Server], names: &[&str]) -> Result<Vec<f64>> {
    Ok(sums(&metrics(servers).await?, names))
}

/// The sums over the metrics `texts` of the samples `names` (unlabelled), in order.
pub fn sums(texts: &[String], names: &[&str]) -> Vec<f64> {
    let mut sums = vec![0.0; names.len()];
    for line in texts.iter().flat_map(|t| t.lines()) {
        for (sum, name) in sums.iter_mut().zip(names) {
            if let Some(v) = line.strip_prefix(name).and_then(|v| v.strip_prefix(' ')) {
                *sum += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    sums
}

/// A free loopback port, for a child process to listen on.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// What a published service is.
pub enum Kind<'a> {
    /// gRPC, defined in this .proto file (which says which methods stream).
    Grpc(&'a Path),
    /// X-Road's REST protocol.
    Rest,
}

/// Publishes `service` of `provider` on the security server configured in `config`,
/// its application at `endpoint`, and grants it to `client`.
pub fn publish(
    config: &Path,
    provider: &str,
    service: &str,
    endpoint: &str,
    kind: Kind<'_>,
    client: &str,
) -> Result<()> {
    let config = config.display().to_string();
    let proto;
    let mut add = vec![
        "ss",
        "service",
        "add",
        provider,
        service,
        "--endpoint",
        endpoint,
    ];
    match kind {
        Kind::Rest => add.push("--rest"),
        Kind::Grpc(file) => {
            proto = file.display().to_string();
            add.extend(["--proto", &proto]);
        }
    }
    add.extend(["--config", &config]);
    lintas(&add)?;
    lintas(&[
        "ss", "acl", "grant", provider, service, client, "--config", &config,
    ])
}

/// `lintas ARGS` with this binary, which must succeed.
fn lintas(args: &[&str]) -> Result<()> {
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .output()
        .context("running lintas")?;
    if !out.status.success() {
        bail!(
            "lintas {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
