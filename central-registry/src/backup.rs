//! `lintas registry backup` and `lintas registry restore`: the registry's configuration,
//! keys (CA, configuration signing, TLS, TSA), first administrator's credentials, users
//! and admin audit log, and every record of its store, in one encrypted archive signed
//! with the configuration-signing key ([`lintas_backup`]).
//!
//! The archive holds `config/registry.toml`, `data/…` (the data directory without the
//! embedded database) and `store/records` (the store's records, whichever store it is:
//! a backup of the embedded database restores into PostgreSQL and back). The records
//! are read under the state's lock by the running registry (over the admin API) when it
//! holds the embedded database, or directly from the store otherwise.
//!
//! Servers refuse a configuration whose serial is below the one they hold, so a restored
//! registry must publish above the highest serial the instance has seen. The restore
//! asks the instance's configuration URLs for it (other nodes, mirrors); when it is
//! higher than the backup's, or cannot be learnt, the restore is refused unless the
//! operator names that serial (`serial_floor`), which the restored registry then
//! publishes above.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lintas_backup::dir::{ArchiveFile, Staging, canonical, files_in_order};
use lintas_backup::{BackupError, Head, Passphrase};
use lintas_certs::{Identity, Role};
use lintas_globalconf::{Anchor, Clock, ConfClient};
use lintas_proto::registry::v1 as pb;
use pb::registry_admin_client::RegistryAdminClient;
use prost::Message;
use serde::Serialize;
use tonic::transport::Channel;

use crate::store::{Put, RegistryStore, Stored};
use crate::{Paths, RegistryConfig, RegistryServeError};

/// What the archive's manifest calls a registry's backup.
pub const KIND: &str = "registry";
const CONFIG_ENTRY: &str = "config/registry.toml";
const STORE_ENTRY: &str = "store/records";
/// Records per streamed batch, by size.
const BATCH_BYTES: usize = 1024 * 1024;
/// How long the restore waits for the instance's configuration URLs.
const FETCH_WAIT: Duration = Duration::from_secs(15);

/// Errors of a backup or restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Registry(#[from] RegistryServeError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// Restoring would publish configurations servers refuse as a rollback.
    #[error("restore refused: {0}")]
    Rollback(String),
    #[error("{0}")]
    Refused(String),
}

/// The registry's own errors, met while restoring.
macro_rules! from_registry {
    ($($t:ty),*) => {$(
        impl From<$t> for RestoreError {
            fn from(e: $t) -> Self {
                RestoreError::Registry(e.into())
            }
        }
    )*};
}
from_registry!(
    crate::store::StoreError,
    crate::registry::RegistryError,
    lintas_certs::CertError,
    lintas_globalconf::ConfError,
    crate::config::ConfigError
);

/// Records in batches of about [`BATCH_BYTES`], for the admin API's stream.
pub fn batches(records: Vec<Stored>) -> Vec<pb::StoreRecords> {
    let mut out = vec![pb::StoreRecords::default()];
    let mut size = 0;
    for r in records {
        let len = r.key.len() + r.value.len();
        if size + len > BATCH_BYTES && size > 0 {
            out.push(pb::StoreRecords::default());
            size = 0;
        }
        size += len;
        out.last_mut()
            .expect("one batch at least")
            .records
            .push(pb::StoreRecord {
                key: r.key,
                value: r.value,
            });
    }
    out
}

/// The store's records when this process can read them itself: from PostgreSQL (one
/// statement, one state), or from the embedded database when no registry holds it
/// open. `None`: a running registry holds the embedded database; ask it.
pub fn local_records(config: &RegistryConfig) -> Result<Option<Vec<Stored>>, RestoreError> {
    if !config.database.is_empty() {
        let store = crate::store::PostgresStore::open(&config.database)?;
        return Ok(Some(store.load()?));
    }
    let db = Paths(config.data_dir.clone()).db();
    if lintas_log::sled_in_use(&db) {
        return Ok(None);
    }
    Ok(Some(crate::store::SledStore::open(&db)?.load()?))
}

/// The store's records from a running registry, over the admin API.
pub async fn remote_records(
    client: &mut RegistryAdminClient<Channel>,
) -> Result<Vec<Stored>, RestoreError> {
    let mut stream = client
        .export_state(pb::ExportStateRequest {})
        .await
        .map_err(|s| RestoreError::Refused(format!("the registry's admin API: {}", s.message())))?
        .into_inner();
    let mut records = Vec::new();
    while let Some(batch) = stream
        .message()
        .await
        .map_err(|s| RestoreError::Refused(format!("the registry's admin API: {}", s.message())))?
    {
        records.extend(batch.records.into_iter().map(|r| Stored {
            key: r.key,
            value: r.value,
            version: 1,
        }));
    }
    Ok(records)
}

/// What a backup wrote.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub archive: PathBuf,
    pub instance: String,
    pub created_unix_ms: i64,
    pub files: usize,
    pub records: usize,
    pub conf_serial: Option<u64>,
    /// Whether the records came from the running registry.
    pub online: bool,
}

fn rank(rel: &str) -> Option<u8> {
    let top = rel.split('/').next().unwrap_or(rel);
    (top != "db" && !rel.ends_with(".tmp") && !rel.ends_with(".partial")).then_some(0)
}

/// Writes a backup of the registry configured at `config_path`, with `records` read
/// from its store, to `out` (which must not exist).
pub fn backup(
    config_path: &Path,
    config: &RegistryConfig,
    records: Vec<Stored>,
    online: bool,
    out: &Path,
    passphrase: &Passphrase,
    now_ms: i64,
) -> Result<BackupReport, RestoreError> {
    let paths = Paths(config.data_dir.clone());
    let conf_key = lintas_pkcs11::load(&paths.conf_key(), config.pkcs11.as_ref())?;
    let conf_cert = lintas_certs::files::read_cert(&paths.conf_cert())?;
    let conf_serial = crate::registry::conf_serial_of(&records);
    let count = records.len();
    let export = pb::StoreRecords {
        records: records
            .into_iter()
            .map(|r| pb::StoreRecord {
                key: r.key,
                value: r.value,
            })
            .collect(),
    };
    let (archive, mut w) = ArchiveFile::create(out, passphrase)?;
    w.add_file(CONFIG_ENTRY, config_path)?;
    let skip = [canonical(config_path), canonical(archive.partial())];
    for (rel, path) in files_in_order(&canonical(&config.data_dir), &skip, rank)? {
        w.add_file(&format!("data/{rel}"), &path)?;
    }
    w.add(STORE_ENTRY, 0o600, &export.encode_to_vec())?;
    let head = Head {
        kind: KIND.into(),
        id: config.instance.to_string(),
        created_unix_ms: now_ms,
        details: serde_json::json!({
            "conf_serial": conf_serial,
            "records": count,
            "online": online,
        }),
    };
    let (written, manifest) = w.finish(head, &*conf_key, &conf_cert)?;
    archive.commit(written)?;
    Ok(BackupReport {
        archive: out.to_owned(),
        instance: manifest.id,
        created_unix_ms: manifest.created_unix_ms,
        files: manifest.files.len(),
        records: count,
        conf_serial,
        online,
    })
}

/// What a restore found and did.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub instance: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// `embedded` or `postgresql`.
    pub store: String,
    pub backup_created_unix_ms: i64,
    pub records: usize,
    /// The serial the backup held.
    pub conf_serial_in_backup: Option<u64>,
    /// The highest serial the instance's configuration URLs served, when one answered.
    pub conf_serial_published: Option<u64>,
    /// The serial the restored registry published (above the floor), if it did.
    pub conf_serial: Option<u64>,
}

/// Restores the archive at `archive` as a new registry node: its configuration written
/// to `config_path` (which must not exist), its data directory new, its store (the
/// embedded one in that directory, or the PostgreSQL database the configuration names)
/// empty. `serial_floor` is the highest configuration serial the instance's servers
/// may hold; see the module's note.
pub async fn restore(
    archive: &Path,
    config_path: &Path,
    anchor: &Path,
    passphrase: &Passphrase,
    serial_floor: Option<u64>,
    env: Vec<(String, String)>,
    clock: Arc<dyn Clock>,
) -> Result<RestoreReport, RestoreError> {
    let anchor = Anchor::load(anchor)?;
    let staging = Staging::beside(config_path)?;
    let input = std::fs::File::open(archive).map_err(|source| BackupError::Io {
        what: "opening",
        path: archive.to_owned(),
        source,
    })?;
    let unpacked = lintas_backup::unpack(std::io::BufReader::new(input), passphrase, &staging.dir)?;
    let manifest = &unpacked.manifest;
    if manifest.kind != KIND {
        return Err(RestoreError::Refused(format!(
            "{} is a backup of a {}, not of a registry",
            archive.display(),
            manifest.kind
        )));
    }
    let staged_config = staging.dir.join(CONFIG_ENTRY);
    let mut config = RegistryConfig::load(&staged_config, env)?;
    let data_dir = staging.data_dir(&config.data_dir, &staging.dir.join("config"));
    staging.check_new(&data_dir)?;
    config.data_dir = staging.dir.join("data");
    let paths = Paths(config.data_dir.clone());
    let instance = config.instance.clone();
    lintas_backup::verify_signer(
        &unpacked,
        anchor.trust_store(),
        Role::GlobalConf,
        &Identity::GlobalConf { instance },
        &config.instance.to_string(),
    )?;
    if !anchor.signing_certs.contains(&unpacked.signer_cert) {
        return Err(BackupError::Signature(
            "the archive is signed by a configuration-signing certificate the anchor given does not list".into(),
        )
        .into());
    }

    let records = read_records(&staging.dir.join(STORE_ENTRY))?;
    let in_backup = crate::registry::conf_serial_of(&records);
    let published = published_serial(&anchor, &staging.dir, clock.clone()).await;
    let floor = floor(
        in_backup,
        &published,
        serial_floor,
        manifest.created_unix_ms,
    )?;

    let count = records.len();
    let store: Arc<dyn RegistryStore> = if config.database.is_empty() {
        Arc::new(crate::store::SledStore::open(&paths.db())?)
    } else {
        let pg = crate::store::PostgresStore::open(&config.database)?;
        let held = pg.load()?.len();
        if held > 0 {
            return Err(RestoreError::Refused(format!(
                "the PostgreSQL database the configuration names already holds {held} records; restore needs an empty one"
            )));
        }
        Arc::new(pg)
    };
    let puts = records
        .into_iter()
        .map(|r| Put {
            key: r.key,
            value: Some(r.value),
        })
        .collect();
    store
        .apply(&[], puts)
        .map_err(|e| RestoreError::Refused(format!("writing the records into the store: {e}")))?;
    // The embedded store is in the staging directory and goes with it on failure; a
    // PostgreSQL database is emptied again, so the restore can be repeated.
    let shared = (!config.database.is_empty()).then_some(store);
    let finished = match finish(&config, clock, floor, manifest.created_unix_ms).await {
        Ok(serial) => staging
            .move_into(&staging.dir.join("data"), &data_dir)
            .map_err(RestoreError::from)
            .and_then(|()| {
                let text = std::fs::read(&staged_config).map_err(|source| BackupError::Io {
                    what: "reading",
                    path: staged_config.clone(),
                    source,
                })?;
                lintas_certs::files::write_new(config_path, &text, 0o644)?;
                Ok(serial)
            }),
        Err(e) => Err(e),
    };
    let conf_serial = match (finished, shared) {
        (Ok(serial), _) => serial,
        (Err(e), None) => return Err(e),
        (Err(e), Some(store)) => return Err(empty_again(store.as_ref(), e)),
    };
    Ok(RestoreReport {
        instance: manifest.id.clone(),
        config: config_path.to_owned(),
        data_dir,
        store: if config.database.is_empty() {
            "embedded".into()
        } else {
            "postgresql".into()
        },
        backup_created_unix_ms: manifest.created_unix_ms,
        records: count,
        conf_serial_in_backup: in_backup,
        conf_serial_published: published.as_ref().ok().copied(),
        conf_serial,
    })
}

/// Opens the restored registry (which checks its keys against the records, as serving
/// will) and publishes above `floor` when one is needed.
async fn finish(
    config: &RegistryConfig,
    clock: Arc<dyn Clock>,
    floor: Option<u64>,
    created_unix_ms: i64,
) -> Result<Option<u64>, RestoreError> {
    let registry = crate::open(config, clock)?;
    let Some(floor) = floor else {
        return Ok(None);
    };
    let why = format!(
        "restored from the backup made at {}; serial raised above {floor}, the highest the instance had published",
        lintas_manage::audit::rfc3339(created_unix_ms)
    );
    let serial =
        tokio::task::spawn_blocking(move || registry.republish_above(floor, "restore", &why))
            .await
            .map_err(|e| RestoreError::Refused(e.to_string()))??;
    Ok(Some(serial))
}

/// Removes every record again after a failed restore into a shared database.
fn empty_again(store: &dyn RegistryStore, failed: RestoreError) -> RestoreError {
    let emptied = store.load().map_err(|e| e.to_string()).and_then(|records| {
        let removals = records
            .into_iter()
            .map(|r| Put {
                key: r.key,
                value: None,
            })
            .collect();
        store.apply(&[], removals).map_err(|e| e.to_string())
    });
    match emptied {
        Ok(()) => failed,
        Err(undo) => RestoreError::Refused(format!(
            "{failed}; emptying the PostgreSQL database again failed too ({undo}): empty it before restoring again"
        )),
    }
}

/// Whether the restore may go on, and the serial the restored registry must publish
/// above (`None`: the backup's own serial is the newest known).
fn floor(
    in_backup: Option<u64>,
    published: &Result<u64, String>,
    given: Option<u64>,
    created_unix_ms: i64,
) -> Result<Option<u64>, RestoreError> {
    let held = in_backup.unwrap_or(0);
    let made = lintas_manage::audit::rfc3339(created_unix_ms);
    match (published, given) {
        (Ok(p), Some(g)) if g < *p => Err(RestoreError::Rollback(format!(
            "--serial-floor {g} is below serial {p}, which the instance publishes now; servers holding it would refuse the restored registry's configurations"
        ))),
        (_, Some(g)) => Ok(Some(g.max(held))),
        (Ok(p), None) if *p > held => Err(RestoreError::Rollback(format!(
            "the backup made at {made} holds configuration serial {held}, but the instance has published serial {p} since. \
             What changed after the backup (approvals, members, revocations, groups) would be lost, and servers would refuse \
             the restored registry's configurations as a rollback until its serial passed {p}. Restore a newer backup, or, \
             to go back to this one knowingly, give --serial-floor {p}: the restored registry then publishes serial {} at once",
            p + 1
        ))),
        (Ok(_), None) => Ok(None),
        (Err(why), None) => Err(RestoreError::Rollback(format!(
            "the backup made at {made} holds configuration serial {held}, and the serial the instance has published since could not be learnt ({why}). \
             Servers refuse configurations below the serial they hold: give --serial-floor with the highest serial any server \
             or mirror holds (`lintas ss conf` on a server prints it), or {held} if nothing was published after the backup"
        ))),
    }
}

/// The highest serial the instance's configuration URLs serve now (each verified
/// against the anchor; a lagging mirror must not lower it), or why none answered.
async fn published_serial(
    anchor: &Anchor,
    staging: &Path,
    clock: Arc<dyn Clock>,
) -> Result<u64, String> {
    let mut serials = Vec::new();
    let mut failures = Vec::new();
    for (i, url) in anchor.globalconf_urls.iter().enumerate() {
        let cache = staging.join(format!("published-{i}"));
        let fetched = async {
            std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
            let client = ConfClient::open(anchor.clone(), &cache, clock.clone())
                .map_err(|e| e.to_string())?
                .with_urls(vec![url.clone()]);
            match tokio::time::timeout(FETCH_WAIT, client.fetch()).await {
                Ok(Ok(conf)) => Ok(conf.serial()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer in {} s", FETCH_WAIT.as_secs())),
            }
        };
        match fetched.await {
            Ok(serial) => serials.push(serial),
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    serials.into_iter().max().ok_or_else(|| {
        if failures.is_empty() {
            "the anchor lists no configuration URL".into()
        } else {
            failures.join("; ")
        }
    })
}

fn read_records(path: &Path) -> Result<Vec<Stored>, RestoreError> {
    let bytes = std::fs::read(path).map_err(|source| BackupError::Io {
        what: "reading",
        path: path.to_owned(),
        source,
    })?;
    let export = pb::StoreRecords::decode(bytes.as_slice())
        .map_err(|e| BackupError::Damaged(format!("the archive's store records: {e}")))?;
    std::fs::remove_file(path).map_err(|source| BackupError::Io {
        what: "removing",
        path: path.to_owned(),
        source,
    })?;
    Ok(export
        .records
        .into_iter()
        .map(|r| Stored {
            key: r.key,
            value: r.value,
            version: 1,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restored_serial_never_falls_below_what_the_instance_published() {
        let unreachable = Err("connection refused".to_owned());
        type Case = (
            Option<u64>,
            Result<u64, String>,
            Option<u64>,
            Result<Option<u64>, &'static str>,
        );
        let cases: [Case; 7] = [
            (Some(5), Ok(5), None, Ok(None)),
            (Some(5), Ok(3), None, Ok(None)),
            (Some(5), Ok(9), None, Err("has published serial 9 since")),
            (Some(5), Ok(9), Some(9), Ok(Some(9))),
            (Some(5), Ok(9), Some(7), Err("below serial 9")),
            (
                Some(5),
                unreachable.clone(),
                None,
                Err("could not be learnt (connection refused)"),
            ),
            (Some(5), unreachable, Some(3), Ok(Some(5))),
        ];
        for (in_backup, published, given, expect) in cases {
            let got = floor(in_backup, &published, given, 0);
            match (expect, got) {
                (Ok(e), Ok(g)) => assert_eq!(e, g, "{in_backup:?} {published:?} {given:?}"),
                (Err(words), Err(e)) => assert!(e.to_string().contains(words), "{e}"),
                (e, g) => {
                    panic!("{in_backup:?} {published:?} {given:?}: expected {e:?}, got {g:?}")
                }
            }
        }
    }

    #[test]
    fn records_stream_in_batches_of_bounded_size() {
        let record = |i: usize| Stored {
            key: format!("member/{i}"),
            value: vec![0; 300 * 1024],
            version: 1,
        };
        let b = batches((0..7).map(record).collect());
        assert_eq!(b.iter().map(|b| b.records.len()).sum::<usize>(), 7);
        assert!(b.iter().all(|b| b.records.len() <= 4), "{}", b.len());
        assert_eq!(
            batches(Vec::new()).len(),
            1,
            "an empty store is one empty batch"
        );
        let big = batches(vec![Stored {
            key: "conf/latest".into(),
            value: vec![0; 3 * BATCH_BYTES],
            version: 1,
        }]);
        assert_eq!(big.len(), 1, "a record larger than a batch travels alone");
    }
}
