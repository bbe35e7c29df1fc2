//! `lintas`: one binary for every role. Parses flags, loads configuration, calls the
//! libraries, and waits for a signal; all logic lives in the library crates.
#![forbid(unsafe_code)]

mod adapter_cmd;
mod audit_cmd;
mod backup_cmd;
mod bench;
mod bench_large;
mod bench_load;
mod bench_procs;
mod bench_relay;
mod bench_scale;
mod bench_summary;
mod bundles;
mod certs_cmd;
mod demo;
mod events_cmd;
mod exit;
mod json;
mod network;
mod opmon_cmd;
mod quota_cmd;
mod registry_cmd;
mod ss_certs_cmd;
mod ss_cmd;
mod ss_serve;
mod systemd;
mod token_args;
mod users_cmd;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lintas",
    version,
    about = "lintas: a government interoperability bus (registry, security servers, PKI)"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Central registry: create an instance, run it, administer it.
    Registry(registry_cmd::Args),
    /// Security server: keys, registration, global configuration.
    Ss(ss_cmd::Args),
    /// Certificates: throw-away development PKI, inspection and verification.
    Certs(certs_cmd::Args),
    /// Evidence: export bundles from a security server's log; verify them offline.
    Audit(audit_cmd::Args),
    /// Adapters: serve a legacy REST/JSON, SOAP or SQL system as a gRPC service.
    Adapter(adapter_cmd::Args),
    /// Measure calls through the bus against direct calls to the application.
    Bench(bench::Args),
    /// Run a whole instance on loopback: registry, two members joining it, and the
    /// checks that make it trustworthy. Needs no setup and finishes on its own.
    Demo(demo::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout, e.g.
    /// `lintas completions bash > /usr/share/bash-completion/completions/lintas`.
    Completions { shell: clap_complete::Shell },
    /// Write a man page for every command (lintas.1, lintas-ss-serve.1, …) into DIR.
    Man {
        #[arg(long)]
        dir: std::path::PathBuf,
    },
}

fn init_logging(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LINTAS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: log files and journals get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // The journal stamps each line with the time itself.
    match (json, systemd::logging_to_journal()) {
        (true, _) => builder.json().init(),
        (false, true) => builder.without_time().init(),
        (false, false) => builder.init(),
    }
}

fn main() -> std::process::ExitCode {
    // A wrong command line exits with clap's own status, 2 (`exit::Exit::Usage`).
    let cli = Cli::parse();
    let serving = match &cli.command {
        Command::Registry(a) => a.serving(),
        Command::Ss(a) => a.serving(),
        Command::Adapter(a) => a.serving(),
        _ => false,
    };
    // The demo narrates on stdout; its refusals are expected, so only errors are logged.
    let level = match &cli.command {
        _ if serving => "info",
        Command::Demo(_) | Command::Bench(_) => "error",
        _ => "warn",
    };
    init_logging(cli.log_json, level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Registry(a) => registry_cmd::run(a).await,
            Command::Ss(a) => ss_cmd::run(a).await,
            Command::Certs(a) => certs_cmd::run(a),
            Command::Audit(a) => audit_cmd::run(a).await,
            Command::Adapter(a) => adapter_cmd::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Completions { shell } => {
                // Written whole, so a closed pipe is an error, not a panic.
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "lintas", &mut script);
                std::io::Write::write_all(&mut std::io::stdout(), &script)
                    .map_err(|e| anyhow::anyhow!("writing the completions: {e}"))
            }
            Command::Man { dir } => std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
                .map_err(|e| anyhow::anyhow!("writing man pages into {}: {e}", dir.display())),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::classify(&e).into()
        }
    }
}

/// Installs SIGINT and SIGTERM handlers now (before the daemon says it is listening)
/// and returns a future that resolves when either arrives (telling the service manager
/// the daemon is stopping).
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static>
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        systemd::stopping();
    })
}

/// Says on stdout, and to the service manager, that a daemon's listeners are bound.
pub fn listening(line: String) {
    println!("{line}");
    systemd::ready(&line);
}

/// The process environment, for configuration overrides.
pub fn env() -> Vec<(String, String)> {
    std::env::vars().collect()
}
