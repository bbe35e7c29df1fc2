//! `lintas audit`: export evidence bundles from a security server's log, and verify them
//! offline against an instance anchor.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use lintas_proto::audit::v1::EvidenceBundle;
use prost::Message;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the evidence of matching exchanges from a running security server's log to
    /// one self-contained file. Every option given must match; an exchange matches when
    /// any of its records does.
    Export {
        /// The security server's configuration file.
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// The exchange's message id.
        #[arg(long)]
        message_id: Option<String>,
        /// The calling client, INSTANCE/CLASS/MEMBER/SUBSYSTEM.
        #[arg(long)]
        client: Option<String>,
        /// The provider, INSTANCE/CLASS/MEMBER/SUBSYSTEM.
        #[arg(long)]
        provider: Option<String>,
        /// Records from this time on (RFC 3339, e.g. 2026-11-22T08:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// Records up to this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Where to write the bundle (must not exist).
        #[arg(long, short)]
        out: PathBuf,
        /// Include the message bodies the server still keeps (body_retention_days).
        #[arg(long)]
        with_bodies: bool,
        /// Exchanges per bundle: a larger export is written as several bundles, one at
        /// a time, in one file (default and most: 10,000).
        #[arg(long, default_value_t = 10_000)]
        per_bundle: u32,
    },
    /// Write one exchange's receipt from a running security server's log: the answer
    /// the provider signed, with the signed request it answers, their inclusion proofs,
    /// the log's signed checkpoint, the RFC 3161 time-stamps that bound when they were
    /// written, and the bodies the server still keeps. Refused when this log holds no
    /// signed answer for the exchange. `lintas audit verify` checks it offline.
    Receipt {
        /// The exchange's message id.
        message_id: String,
        /// The calling client, INSTANCE/CLASS/MEMBER/SUBSYSTEM: needed when several
        /// clients used the same message id.
        #[arg(long)]
        client: Option<String>,
        /// The security server's configuration file.
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// Where to write the receipt (must not exist).
        #[arg(long, short)]
        out: PathBuf,
        /// Leave the bodies out (the receipt then proves their SHA-256 only).
        #[arg(long)]
        without_bodies: bool,
    },
    /// Copy the sealed segments of a running security server's log into a new
    /// directory, with a manifest that proves they are the beginning of its log.
    Archive {
        /// The security server's configuration file.
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// The directory to create.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Verify an archive of sealed segments offline, trusting only the anchor.
    VerifyArchive {
        /// The directory `lintas audit archive` wrote.
        dir: PathBuf,
        #[arg(long)]
        anchor: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify evidence bundles offline, trusting only the anchor. With two bundles (the
    /// two sides of the same exchanges) they are also checked against each other.
    /// Exits non-zero if anything fails.
    Verify {
        /// One bundle, or the consumer's and the provider's.
        #[arg(required = true, num_args = 1..=2)]
        bundles: Vec<PathBuf>,
        /// The instance's anchor file, obtained from the instance operator out of band.
        #[arg(long)]
        anchor: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn rfc3339_ms(what: &str, text: &str) -> Result<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("--{what} '{text}' is not an RFC 3339 time such as 2026-11-22T08:00:00Z")
        })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Export {
            config,
            message_id,
            client,
            provider,
            from,
            to,
            out,
            with_bodies,
            per_bundle,
        } => {
            let query = lintas_proto::ss::v1::EvidenceQuery {
                message_id: message_id.unwrap_or_default(),
                client: client.unwrap_or_default(),
                service_provider: provider.unwrap_or_default(),
                from_unix_ms: from
                    .map(|t| rfc3339_ms("from", &t))
                    .transpose()?
                    .unwrap_or(0),
                to_unix_ms: to.map(|t| rfc3339_ms("to", &t)).transpose()?.unwrap_or(0),
                with_bodies,
                exchanges_per_bundle: per_bundle,
            };
            lintas_ss::evidence::check_query(&query).map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                (1..=10_000).contains(&per_bundle),
                "--per-bundle must be between 1 and 10000"
            );
            let mut stream = crate::ss_cmd::admin(&config)
                .await?
                .export_evidence_bundles(query)
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            let mut file = crate::bundles::Writer::create(&out)?;
            let (mut records, mut origin) = (0, String::new());
            while let Some(bundle) = stream
                .message()
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            {
                records += bundle.entries.len();
                origin.clone_from(&bundle.origin);
                file.push(bundle)?;
            }
            let bundles = file.bundles;
            file.finish()?;
            println!(
                "wrote {records} records of {origin} in {bundles} bundle(s) to {}; verify with: lintas audit verify {} --anchor ANCHOR",
                out.display(),
                out.display()
            );
            Ok(())
        }
        Command::Receipt {
            message_id,
            client,
            config,
            out,
            without_bodies,
        } => receipt(&config, &message_id, client, &out, !without_bodies).await,
        Command::Archive { config, out } => {
            let settings = lintas_ss::SsConfig::load(&config, crate::env())?;
            let manifest = lintas_ss::admin::connect(&settings.data_dir)
                .await?
                .archive_manifest(lintas_proto::ss::v1::ArchiveRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            let records = settings.data_dir.join("records");
            std::fs::create_dir(&out).with_context(|| format!("creating {}", out.display()))?;
            for s in &manifest.segments {
                let bytes = std::fs::read(records.join(&s.file))
                    .with_context(|| format!("reading segment {}", s.file))?;
                // Sealed segments never change; a copy that differs is refused.
                if lintas_certs::sha256(&bytes)[..] != s.sha256[..] {
                    bail!("segment {} changed while it was copied", s.file);
                }
                lintas_certs::files::write_new(&out.join(&s.file), &bytes, 0o644)?;
            }
            lintas_certs::files::write_new(
                &out.join("manifest.pb"),
                &manifest.encode_to_vec(),
                0o644,
            )?;
            println!(
                "archived records 0 to {} of {} ({} sealed segments) in {}; verify with: lintas audit verify-archive {} --anchor ANCHOR",
                manifest.size.saturating_sub(1),
                manifest.origin,
                manifest.segments.len(),
                out.display(),
                out.display()
            );
            Ok(())
        }
        Command::VerifyArchive { dir, anchor, json } => {
            lintas_audit::command::verify_archive(&dir, &anchor, json)
        }
        Command::Verify {
            bundles,
            anchor,
            json,
        } => lintas_audit::command::verify(&bundles, &anchor, json),
    }
}

/// The record of `bundle` holding the provider-signed answer to `message_id`, if any.
fn signed_answer(bundle: &EvidenceBundle, message_id: &str) -> Option<lintas_log::Record> {
    use lintas_log::RecordKind;
    bundle
        .entries
        .iter()
        .filter_map(|e| lintas_log::Record::decode(e.record.as_slice()).ok())
        .find(|r| {
            r.message_id == message_id
                && (r.kind == RecordKind::ResponseSent as i32
                    || r.kind == RecordKind::ResponseReceived as i32)
                && r.signature.is_some()
        })
}

/// `lintas audit receipt`: one exchange's evidence, refused without a signed answer.
async fn receipt(
    config: &Path,
    message_id: &str,
    client: Option<String>,
    out: &Path,
    with_bodies: bool,
) -> Result<()> {
    let query = lintas_proto::ss::v1::EvidenceQuery {
        message_id: message_id.to_owned(),
        client: client.unwrap_or_default(),
        with_bodies,
        exchanges_per_bundle: 1,
        ..Default::default()
    };
    lintas_ss::evidence::check_query(&query).map_err(anyhow::Error::msg)?;
    let bundle = crate::ss_cmd::admin(config)
        .await?
        .export_evidence(query)
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    // Message ids are unique per client: a receipt is one client's exchange.
    let clients: std::collections::BTreeSet<String> = bundle
        .entries
        .iter()
        .filter_map(|e| lintas_log::Record::decode(e.record.as_slice()).ok())
        .filter(|r| r.message_id == message_id)
        .map(|r| r.client)
        .collect();
    if clients.len() > 1 {
        bail!(
            "{} clients used message id {message_id} ({}); name one with --client",
            clients.len(),
            clients.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let Some(answer) = signed_answer(&bundle, message_id) else {
        bail!(
            "no receipt: the log of {} holds no signed answer to exchange {message_id}",
            bundle.origin
        );
    };
    let mut file = crate::bundles::Writer::create(out)?;
    let origin = bundle.origin.clone();
    file.push(bundle)?;
    file.finish()?;
    println!(
        "wrote the receipt of exchange {message_id} of {} ({} answered with {:?}) from the log of {origin} to {}; verify with: lintas audit verify {} --anchor ANCHOR",
        answer.client,
        answer.service_provider,
        tonic::Code::from_i32(answer.status_code),
        out.display(),
        out.display()
    );
    Ok(())
}

pub fn write_bundle(path: &Path, bundle: &EvidenceBundle) -> Result<()> {
    lintas_certs::files::write_new(path, &bundle.encode_to_vec(), 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// A verification report in plain words.
pub use lintas_audit::command::describe;
