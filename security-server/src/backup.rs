//! `lintas ss backup` and `lintas ss restore`: a security server's keys, configuration,
//! configuration cache, services and grants, and its whole record log (records,
//! checkpoints, time-stamps, bodies, evidence material) in one encrypted, signed
//! archive ([`lintas_backup`]), and a restore that checks the log and asks the witness
//! whether the archive is older than what the instance has seen.
//!
//! The archive holds `config/ss.toml` (the configuration file), `data/…` (the data
//! directory) and `state/access` (the state store's entries: services, grants and
//! quotas, idempotency keys, events and their subscriptions). Operational monitoring
//! data (`opmon/`) is statistics, not state, and is left out.
//!
//! A running server keeps writing while the backup reads, so the files are read in an
//! order that keeps what the copy holds consistent: the record segments first (a record
//! being written while its segment is read is cut off at the end of the copy, which the
//! restore's opening of the log truncates as a crash's unfinished write); then the
//! checkpoints and time-stamps, which hold every token the copied records name, and may
//! hold entries about records written after the segments were read, which the restore
//! cuts; then bodies and evidence material, which hold at least what the copied records
//! need (bodies past their retention may disappear meanwhile, and are then left out).
//! The log's Merkle tree files are left out: the restored log rebuilds them from the
//! records. The state store is read by the running server under its write lock (over
//! the admin socket), or opened directly when the server is stopped.
//!
//! The restore trusts the instance's anchor the operator gives, never the copy in the
//! archive: the signer must be this server's certificate from that anchor's CA, and the
//! witness is asked at the registry that anchor names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lintas_backup::dir::{ArchiveFile, Staging, canonical, files_in_order};
use lintas_backup::{BackupError, Head, Passphrase};
use lintas_certs::{Identity, Role};
use lintas_globalconf::Clock;
use lintas_proto::ss::v1 as pb;
use prost::Message;
use serde::Serialize;

use crate::access::Access;
use crate::checkpoints::Checkpoints;
use crate::state_export::{entries, state_trees};
use crate::{Node, SsConfig, SsError};

/// What the archive's manifest calls a security server's backup.
pub const KIND: &str = "security-server";
const CONFIG_ENTRY: &str = "config/ss.toml";
const STATE_ENTRY: &str = "state/access";
/// Directories of the data directory not copied: the state store (copied as its
/// entries) and operational monitoring statistics.
const SKIPPED_DIRS: [&str; 2] = ["state", "opmon"];
/// How long the restore waits for the registry (witness, configuration).
const REGISTRY_WAIT: Duration = Duration::from_secs(15);

/// Where a file of the data directory comes in the copy (see the module's note), then
/// by path. `None`: not copied.
fn phase(rel: &str) -> Option<u8> {
    let top = rel.split('/').next().unwrap_or(rel);
    if SKIPPED_DIRS.contains(&top)
        || rel == crate::admin::SOCKET
        || rel.ends_with(".tmp")
        || rel.ends_with(".partial")
    {
        return None;
    }
    let Some(rest) = rel.strip_prefix("records/") else {
        return Some(0);
    };
    if rest.starts_with("tree/") {
        // Rebuilt from the records when the restored log opens.
        return None;
    }
    Some(match rest {
        _ if !rest.contains('/') && rest.ends_with(".seg") => 1,
        "checkpoints" | "timestamps" => 2,
        "bodies/index" => 3,
        _ => 4,
    })
}

/// What a backup wrote.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub archive: PathBuf,
    pub server_id: String,
    pub created_unix_ms: i64,
    pub files: usize,
    pub bytes: u64,
    /// Whether the server was running (its state store read over the admin socket).
    pub online: bool,
}

/// The state store's entries: from the running server, or from the store itself.
async fn state_entries(config: &SsConfig) -> Result<(pb::StateExport, bool), SsError> {
    let records = config.data_dir.join("records");
    let state = config.data_dir.join("state");
    if lintas_log::file::in_use(&records) || lintas_log::sled_in_use(&state) {
        let mut admin = crate::admin::connect(&config.data_dir).await?;
        let mut parts = admin
            .export_state(pb::ListRequest::default())
            .await
            .map_err(SsError::from)?
            .into_inner();
        let mut export = pb::StateExport::default();
        while let Some(part) = parts.message().await.map_err(SsError::from)? {
            export.entries.extend(part.entries);
        }
        return Ok((export, true));
    }
    let mut export = pb::StateExport::default();
    if !state.exists() {
        // Never served: nothing stored yet.
        return Ok((export, false));
    }
    let db = lintas_log::open_sled(&state).map_err(crate::state_error)?;
    for name in state_trees() {
        let tree = db.open_tree(name).map_err(crate::state_error)?;
        let mut kvs = Vec::new();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(crate::state_error)?;
            kvs.push((k.to_vec(), v.to_vec()));
        }
        export.entries.extend(entries(name, kvs));
    }
    Ok((export, false))
}

/// Writes a backup of the server configured at `config_path` to `out` (which must not
/// exist): to `out.partial` first, renamed when complete and durable.
pub async fn backup(
    config_path: &Path,
    config: SsConfig,
    out: &Path,
    passphrase: &Passphrase,
    now_ms: i64,
) -> Result<BackupReport, SsError> {
    let node = Node::open(config)?;
    let tls_cert = match lintas_certs::files::read_cert(&node.paths.tls_cert()) {
        Ok(c) => c,
        Err(lintas_certs::CertError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(SsError::NotEnrolled);
        }
        Err(e) => return Err(e.into()),
    };
    let (state, online) = state_entries(&node.config).await?;
    let (archive, mut w) = ArchiveFile::create(out, passphrase)?;
    w.add_file(CONFIG_ENTRY, config_path)?;
    let skip = [canonical(config_path), canonical(archive.partial())];
    for (rel, path) in files_in_order(&canonical(&node.config.data_dir), &skip, phase)? {
        match w.add_file(&format!("data/{rel}"), &path) {
            // Bodies past their retention may be deleted while the backup runs.
            Err(BackupError::Io {
                what: "opening",
                source,
                ..
            }) if source.kind() == std::io::ErrorKind::NotFound
                && rel.starts_with("records/bodies/") => {}
            other => other?,
        }
    }
    w.add(STATE_ENTRY, 0o600, &state.encode_to_vec())?;
    let head = Head {
        kind: KIND.into(),
        id: node.config.server_id.to_string(),
        created_unix_ms: now_ms,
        details: serde_json::json!({ "online": online }),
    };
    let (written, manifest) = w.finish(head, &node.tls_key, &tls_cert)?;
    archive.commit(written)?;
    Ok(BackupReport {
        archive: out.to_owned(),
        server_id: manifest.id,
        created_unix_ms: manifest.created_unix_ms,
        files: manifest.files.len(),
        bytes: manifest.files.iter().map(|f| f.bytes).sum(),
        online,
    })
}

/// What a restore found and did.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub server_id: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub backup_created_unix_ms: i64,
    pub files: usize,
    /// Records in the restored log.
    pub log_records: u64,
    /// Checkpoints and time-stamps left out because they were written about records
    /// after the log was copied (a backup taken while the server ran).
    pub entries_cut: usize,
    /// Records of this log the witness has cosigned; `None` when it could not be asked.
    pub witnessed_records: Option<u64>,
    /// Why the witness could not be asked.
    pub witness_unchecked: Option<String>,
    /// The configuration serial the backup held, and the one held now (fetched at
    /// restore when the registry answered).
    pub conf_serial_in_backup: Option<u64>,
    pub conf_serial: Option<u64>,
}

/// Restores the archive at `archive` as a new node: its configuration written to
/// `config_path` (which must not exist) and its data directory (which must not exist or
/// be empty). Refused, with nothing written, when the log does not open cleanly or the
/// witness has seen more of this log than the archive holds.
pub async fn restore(
    archive: &Path,
    config_path: &Path,
    anchor: &Path,
    passphrase: &Passphrase,
    env: Vec<(String, String)>,
    clock: Arc<dyn Clock>,
) -> Result<RestoreReport, SsError> {
    let anchor = lintas_globalconf::Anchor::load(anchor)?;
    let staging = Staging::beside(config_path)?;
    restore_staged(
        archive,
        config_path,
        &anchor,
        &staging,
        passphrase,
        env,
        clock,
    )
    .await
}

async fn restore_staged(
    archive: &Path,
    config_path: &Path,
    anchor: &lintas_globalconf::Anchor,
    staging: &Staging,
    passphrase: &Passphrase,
    env: Vec<(String, String)>,
    clock: Arc<dyn Clock>,
) -> Result<RestoreReport, SsError> {
    let input =
        std::fs::File::open(archive).map_err(|e| crate::state_error_at("opening", archive, e))?;
    let unpacked = lintas_backup::unpack(std::io::BufReader::new(input), passphrase, &staging.dir)?;
    let manifest = &unpacked.manifest;
    if manifest.kind != KIND {
        return Err(SsError::InvalidInput(format!(
            "{} is a backup of a {}, not of a security server",
            archive.display(),
            manifest.kind
        )));
    }
    // The configuration as it will be, with the data directory read from the staging
    // copy meanwhile.
    let staged_config = staging.dir.join(CONFIG_ENTRY);
    let mut config = SsConfig::load(&staged_config, env)?;
    let data_dir = staging.data_dir(&config.data_dir, &staging.dir.join("config"));
    staging.check_new(&data_dir)?;
    config.data_dir = staging.dir.join("data");
    // The instance's anchor as the operator holds it, not the archive's own copy.
    let paths = crate::Paths(config.data_dir.clone());
    lintas_certs::files::write_atomic(&paths.anchor(), anchor.text.as_bytes(), 0o644)?;
    let node = Node::open(config)?;
    let id = &node.config.server_id;
    lintas_backup::verify_signer(
        &unpacked,
        node.anchor.trust_store(),
        Role::Server,
        &Identity::Server(id.clone()),
        &id.to_string(),
    )?;
    import_state(&node, &staging.dir.join(STATE_ENTRY))?;

    // The log as copied; then what was written about records beyond it while the copy
    // was taken (checkpoints, time-stamps) is cut, and the checkpoints checked.
    let records = node.paths.0.join("records");
    let log = lintas_log::RecordLog::open_after(&records, node.config.log_segment_kib * 1024, 0)?;
    let log_records = log.len();
    let cut = Checkpoints::cut_beyond(&records.join("checkpoints"), log_records)?
        + crate::timestamps::Timestamps::cut_beyond(&records.join("timestamps"), log_records)?;
    let checkpoints = Checkpoints::read(
        &records.join("checkpoints"),
        id.to_string(),
        node.log_key()?.clone(),
    )?;
    checkpoints.check(&log)?;

    let conf = node.conf_client(clock)?;
    let conf_serial_in_backup = conf.held_serial();
    let (witnessed_records, witness_unchecked) = match ask_witness(&node, &checkpoints, &log).await
    {
        Ok(size) => (Some(size), None),
        Err(SsError::State(e)) => {
            return Err(SsError::Rollback(format!(
                "{e}. The backup made at {} holds {log_records} records of this server's log; the witness has cosigned more. Restoring it would lose the records written after it was made, and the server would refuse to start. Restore a newer backup of this server, or recover its data directory",
                lintas_manage::audit::rfc3339(manifest.created_unix_ms)
            )));
        }
        Err(e) => (None, Some(e.to_string())),
    };
    // The newest configuration now, so the restored cache does not lower the serial the
    // server refuses to go below.
    let conf_serial = match tokio::time::timeout(REGISTRY_WAIT, conf.fetch()).await {
        Ok(Ok(c)) => Some(c.serial()),
        _ => conf_serial_in_backup,
    };
    drop(log);
    drop(checkpoints);
    drop(node);

    staging.move_into(&staging.dir.join("data"), &data_dir)?;
    let config_text = std::fs::read(&staged_config)
        .map_err(|e| crate::state_error_at("reading", &staged_config, e))?;
    lintas_certs::files::write_new(config_path, &config_text, 0o644)?;
    Ok(RestoreReport {
        server_id: manifest.id.clone(),
        config: config_path.to_owned(),
        data_dir,
        backup_created_unix_ms: manifest.created_unix_ms,
        files: manifest.files.len(),
        log_records,
        entries_cut: cut,
        witnessed_records,
        witness_unchecked,
        conf_serial_in_backup,
        conf_serial,
    })
}

/// Writes the archived state store's entries into a new store in the staged data
/// directory.
fn import_state(node: &Node, export: &Path) -> Result<(), SsError> {
    let bytes = std::fs::read(export).map_err(|e| crate::state_error_at("reading", export, e))?;
    let export = pb::StateExport::decode(bytes.as_slice())
        .map_err(|e| SsError::State(format!("the archive's state store: {e}")))?;
    let db = lintas_log::open_sled(&node.paths.0.join("state")).map_err(crate::state_error)?;
    for entry in export.entries {
        let Some(tree) = state_trees().find(|t| *t == entry.tree) else {
            return Err(SsError::State(format!(
                "the archive's state store has a tree '{}' this lintas does not know",
                entry.tree
            )));
        };
        db.open_tree(tree)
            .and_then(|t| t.insert(entry.key, entry.value))
            .map_err(crate::state_error)?;
    }
    db.flush().map_err(crate::state_error)?;
    // Read back as the server will.
    Access::open(&db)?;
    Ok(())
}

/// Asks the registry's witness for this log's newest cosigned checkpoint and checks the
/// restored log holds it.
async fn ask_witness(
    node: &Node,
    checkpoints: &Checkpoints,
    log: &lintas_log::RecordLog,
) -> Result<u64, SsError> {
    let tls_cert = lintas_certs::files::read_cert(&node.paths.tls_cert())?;
    let tls = lintas_transport::client_config(
        node.anchor.trust_store(),
        Role::Registry,
        Some((&tls_cert, &node.tls_key)),
    )?;
    let channel = lintas_transport::channel_to_any(&node.anchor.registry_urls(), tls)?;
    let mut registry =
        lintas_proto::registry::v1::registration_client::RegistrationClient::new(channel);
    match tokio::time::timeout(
        REGISTRY_WAIT,
        checkpoints.sync_with_witness(log, &mut registry),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(SsError::Unreachable(format!(
            "the registry did not answer in {} s",
            REGISTRY_WAIT.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_copied_in_an_order_that_keeps_the_log_consistent() {
        let cases = [
            ("ss.toml", Some(0)),
            ("tls.key.pem", Some(0)),
            ("conf/globalconf.bin", Some(0)),
            ("records/00000000000000000000.seg", Some(1)),
            ("records/checkpoints", Some(2)),
            ("records/timestamps", Some(2)),
            ("records/tree/level-0", None),
            ("records/bodies/index", Some(3)),
            ("records/bodies/20000.dat", Some(4)),
            ("records/evidence/certs/ab.der", Some(4)),
            ("records/lock", Some(4)),
            ("state/db", None),
            ("state/conf", None),
            ("opmon/00.seg", None),
            ("admin.sock", None),
            ("conf/x.tmp", None),
            ("backup.lbk.partial", None),
        ];
        for (path, expect) in cases {
            assert_eq!(phase(path), expect, "{path}");
        }
    }
}
