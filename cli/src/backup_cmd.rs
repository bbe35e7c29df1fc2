//! `lintas ss backup|restore` and `lintas registry backup|restore`: the arguments they
//! share and their words.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lintas_backup::Passphrase;
use lintas_globalconf::iso8601;

/// Where a backup's passphrase comes from.
#[derive(clap::Args)]
pub struct PassphraseArg {
    /// File whose first line is the passphrase (at least 12 characters to write a
    /// backup); `-` reads it from standard input. Keep it apart from the backups.
    #[arg(long)]
    pub passphrase_file: PathBuf,
}

impl PassphraseArg {
    /// The passphrase for writing (refused when short).
    pub fn for_writing(&self) -> Result<Passphrase> {
        Ok(Passphrase::new(Passphrase::read(&self.passphrase_file)?)?)
    }

    pub fn for_reading(&self) -> Result<Passphrase> {
        Ok(Passphrase::for_reading(Passphrase::read(
            &self.passphrase_file,
        )?))
    }
}

#[derive(clap::Args)]
pub struct SsBackupArgs {
    #[arg(long, default_value = "ss.toml")]
    config: PathBuf,
    /// The archive to write (never overwritten).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArg,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn ss_backup(a: SsBackupArgs) -> Result<()> {
    let settings = lintas_ss::SsConfig::load(&a.config, crate::env())?;
    let report = lintas_ss::backup::backup(
        &a.config,
        settings,
        &a.out,
        &a.passphrase.for_writing()?,
        lintas_ss::errors::now_ms(&lintas_globalconf::SystemClock),
    )
    .await?;
    print_ss_backup(&report, a.json)
}

/// What every restore is given.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup archive.
    #[arg(long)]
    archive: PathBuf,
    /// Where to write the configuration file (must not exist); the data directory it
    /// names must not exist or be empty.
    #[arg(long)]
    config: PathBuf,
    /// The instance's trust anchor, as the registry operator distributes it: the
    /// archive's signer is checked against it, never against the archive's own.
    #[arg(long)]
    anchor: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArg,
    /// Print what was restored as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn ss_restore(a: RestoreArgs) -> Result<()> {
    let report = lintas_ss::backup::restore(
        &a.archive,
        &a.config,
        &a.anchor,
        &a.passphrase.for_reading()?,
        crate::env(),
        std::sync::Arc::new(lintas_globalconf::SystemClock),
    )
    .await?;
    print_ss_restore(&report, a.json)
}

fn ms_to_secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn print_ss_backup(r: &lintas_ss::backup::BackupReport, json: bool) -> Result<()> {
    if json {
        return crate::json::print(r);
    }
    println!(
        "backup of {} written to {} ({} files, {} bytes{}) at {}",
        r.server_id,
        r.archive.display(),
        r.files,
        r.bytes,
        if r.online {
            ", taken while serving"
        } else {
            ""
        },
        iso8601(ms_to_secs(r.created_unix_ms))
    );
    Ok(())
}

fn print_ss_restore(r: &lintas_ss::backup::RestoreReport, json: bool) -> Result<()> {
    if json {
        return crate::json::print(r);
    }
    println!(
        "security server {} restored from the backup made at {}: {} files",
        r.server_id,
        iso8601(ms_to_secs(r.backup_created_unix_ms)),
        r.files
    );
    println!("  configuration:  {}", r.config.display());
    println!("  data directory: {}", r.data_dir.display());
    if r.entries_cut > 0 {
        println!(
            "  {} checkpoints and time-stamps made after the log was copied were left out",
            r.entries_cut
        );
    }
    match (r.witnessed_records, &r.witness_unchecked) {
        (Some(w), _) => println!(
            "  log: {} records; the witness has cosigned {w} of them, so nothing it saw is lost",
            r.log_records
        ),
        (None, Some(why)) => println!(
            "  log: {} records; NOT checked against the witness ({why}): the server checks when it starts, and stops if records it saw are missing",
            r.log_records
        ),
        (None, None) => println!("  log: {} records", r.log_records),
    }
    match (r.conf_serial_in_backup, r.conf_serial) {
        (Some(b), Some(n)) if n > b => {
            println!("  global configuration: serial {b} in the backup, {n} fetched now and cached")
        }
        (_, Some(n)) => println!("  global configuration: serial {n}"),
        _ => println!("  global configuration: none held yet"),
    }
    println!("next: lintas ss serve --config {}", r.config.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct RegistryBackupArgs {
    /// The registry.toml written by `init`.
    #[arg(long, default_value = "registry.toml")]
    config: PathBuf,
    /// The archive to write (never overwritten).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArg,
    /// Administrator credentials, to read a running registry's embedded database over
    /// its admin API (default: the `admin` directory `init` wrote).
    #[arg(long, env = "LINTAS_ADMIN_DIR")]
    admin_dir: Option<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn registry_backup(a: RegistryBackupArgs) -> Result<()> {
    use lintas_registry::backup as b;
    let config = lintas_registry::RegistryConfig::load(&a.config, crate::env())?;
    let passphrase = a.passphrase.for_writing()?;
    let (records, online) = match b::local_records(&config)? {
        Some(r) => (r, false),
        None => {
            let dir = a
                .admin_dir
                .unwrap_or_else(|| lintas_registry::Paths(config.data_dir.clone()).admin_dir());
            let mut client = lintas_registry::admin::connect_any(&dir, &config.node_urls())
                .context("the registry is running on its embedded database: its records are read over the admin API")?
                .max_decoding_message_size(64 * 1024 * 1024);
            (b::remote_records(&mut client).await?, true)
        }
    };
    let now = lintas_ss::errors::now_ms(&lintas_globalconf::SystemClock);
    let r = b::backup(
        &a.config,
        &config,
        records,
        online,
        &a.out,
        &passphrase,
        now,
    )?;
    if a.json {
        return crate::json::print(&r);
    }
    println!(
        "backup of instance {} written to {} ({} files, {} store records, configuration serial {}{}) at {}",
        r.instance,
        r.archive.display(),
        r.files,
        r.records,
        r.conf_serial
            .map_or_else(|| "none".into(), |s| s.to_string()),
        if r.online {
            ", read from the running registry"
        } else {
            ""
        },
        iso8601(ms_to_secs(r.created_unix_ms))
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct RegistryRestoreArgs {
    #[command(flatten)]
    common: RestoreArgs,
    /// The highest configuration serial the instance's servers may hold (`lintas ss
    /// conf` on a server prints its serial): the restored registry publishes above it.
    #[arg(long)]
    serial_floor: Option<u64>,
}

pub async fn registry_restore(a: RegistryRestoreArgs) -> Result<()> {
    let c = a.common;
    let r = lintas_registry::backup::restore(
        &c.archive,
        &c.config,
        &c.anchor,
        &c.passphrase.for_reading()?,
        a.serial_floor,
        crate::env(),
        std::sync::Arc::new(lintas_globalconf::SystemClock),
    )
    .await?;
    if c.json {
        return crate::json::print(&r);
    }
    println!(
        "registry of instance {} restored from the backup made at {}: {} store records into the {} store",
        r.instance,
        iso8601(ms_to_secs(r.backup_created_unix_ms)),
        r.records,
        r.store
    );
    println!("  configuration:  {}", r.config.display());
    println!("  data directory: {}", r.data_dir.display());
    let held = r.conf_serial_in_backup.unwrap_or(0);
    match (r.conf_serial, r.conf_serial_published) {
        (Some(s), _) => println!(
            "  global configuration: serial {held} in the backup; serial {s} published now, above what servers hold"
        ),
        (None, Some(p)) => println!(
            "  global configuration: serial {held} in the backup; the instance publishes {p}, so nothing newer was lost"
        ),
        (None, None) => println!("  global configuration: serial {held}"),
    }
    println!(
        "next: lintas registry serve --config {}",
        r.config.display()
    );
    Ok(())
}
