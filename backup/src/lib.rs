//! Backup archives of a lintas daemon.
//!
//! An archive is one file: a header (magic, Argon2id's cost, salt) and then, sealed in
//! chunks with a key stretched from a passphrase ([`seal`]), a sequence of file entries
//! and a trailer. The trailer holds a manifest — what the archive is of, when it was
//! made, and every file's path, mode, size and SHA-256 — signed by the daemon's own
//! certified key, with that certificate. Restoring checks the passphrase chunk by chunk,
//! the manifest against every byte unpacked and the signature; the daemon's code checks
//! the certificate against the instance's anchor and what the archive holds against the
//! instance (rollback).
//!
//! Which files make up a daemon's backup, and how its live state is read consistently,
//! is the daemon's business (`lintas_ss::backup`, `lintas_registry::backup`).

pub mod dir;
pub mod seal;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use seal::{Kdf, Passphrase};

/// The format named in every manifest.
pub const FORMAT: &str = "lintas-backup/1";
/// The signature domain of a manifest.
pub const DOMAIN: &str = "lintas/backup/v1";
const FILE: u8 = 1;
const TRAILER: u8 = 2;
const MAX_PATH: usize = 1024;
const MAX_MANIFEST: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Passphrase(String),
    #[error("not a usable lintas backup: {0}")]
    Format(String),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("the backup's signature: {0}")]
    Signature(String),
    /// Where a backup or restore was to write is taken.
    #[error("{0}")]
    Target(String),
    #[error("reading the backup: {0}")]
    Read(std::io::Error),
    #[error("writing the backup: {0}")]
    Write(std::io::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_owned();
    move |source| BackupError::Io { what, path, source }
}

/// What an archive holds, signed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// `security-server` or `registry`.
    pub kind: String,
    /// The server's or the instance's identifier.
    pub id: String,
    pub created_unix_ms: i64,
    pub lintas_version: String,
    /// What the daemon states about its state at the time (log size, configuration
    /// serial), for the restore's rollback checks and for people.
    pub details: serde_json::Value,
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub mode: u32,
    pub bytes: u64,
    pub sha256: String,
}

/// What the daemon says about the archive it makes.
pub struct Head {
    pub kind: String,
    pub id: String,
    pub created_unix_ms: i64,
    pub details: serde_json::Value,
}

/// Writes an archive: files, then the signed manifest.
pub struct Writer<W: Write> {
    sealer: seal::Sealer<W>,
    files: Vec<FileEntry>,
    paths: HashSet<String>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, passphrase: &Passphrase) -> Result<Self, BackupError> {
        Self::with_kdf(out, passphrase, Kdf::DEFAULT)
    }

    pub fn with_kdf(out: W, passphrase: &Passphrase, kdf: Kdf) -> Result<Self, BackupError> {
        Ok(Writer {
            sealer: seal::Sealer::new(out, passphrase, kdf)?,
            files: Vec::new(),
            paths: HashSet::new(),
        })
    }

    /// Adds `len` bytes read from `data` as the file `path` (relative, `/`-separated).
    /// A source that ends before `len` bytes is an error naming the path.
    pub fn add_reader(
        &mut self,
        path: &str,
        mode: u32,
        len: u64,
        data: &mut dyn Read,
    ) -> Result<(), BackupError> {
        check_path(path)?;
        if !self.paths.insert(path.to_owned()) {
            return Err(BackupError::Format(format!("{path} is added twice")));
        }
        let mut head = vec![FILE];
        head.extend_from_slice(&(path.len() as u16).to_be_bytes());
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(&(mode & 0o777).to_be_bytes());
        head.extend_from_slice(&len.to_be_bytes());
        self.sealer.write(&head)?;
        let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut left = len;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = data.read(&mut buf[..want]).map_err(|e| BackupError::Io {
                what: "reading",
                path: path.into(),
                source: e,
            })?;
            if n == 0 {
                return Err(BackupError::Format(format!(
                    "{path} ended {left} bytes short of the {len} it had when the backup began"
                )));
            }
            hash.update(&buf[..n]);
            self.sealer.write(&buf[..n])?;
            left -= n as u64;
        }
        self.files.push(FileEntry {
            path: path.into(),
            mode: mode & 0o777,
            bytes: len,
            sha256: lintas_certs::hex(hash.finish().as_ref()),
        });
        Ok(())
    }

    pub fn add(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), BackupError> {
        self.add_reader(path, mode, data.len() as u64, &mut &data[..])
    }

    /// Adds the file at `source` as `path`: as long as it is when opened (a file that
    /// is appended to meanwhile is taken up to that length).
    pub fn add_file(&mut self, path: &str, source: &Path) -> Result<(), BackupError> {
        let mut f = std::fs::File::open(source).map_err(io("opening", source))?;
        let meta = f.metadata().map_err(io("reading", source))?;
        self.add_reader(path, meta.permissions().mode(), meta.len(), &mut f)
    }

    /// Signs the manifest with `key` (whose certificate is `cert`) and seals the end.
    pub fn finish(
        mut self,
        head: Head,
        key: &dyn lintas_certs::Signer,
        cert: &[u8],
    ) -> Result<(W, Manifest), BackupError> {
        let manifest = Manifest {
            format: FORMAT.into(),
            kind: head.kind,
            id: head.id,
            created_unix_ms: head.created_unix_ms,
            lintas_version: env!("CARGO_PKG_VERSION").into(),
            details: head.details,
            files: std::mem::take(&mut self.files),
        };
        let bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let signature = lintas_certs::sig::sign(key, DOMAIN, &bytes)
            .map_err(|e| BackupError::Signature(e.to_string()))?;
        let mut tail = vec![TRAILER];
        tail.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        tail.extend_from_slice(&bytes);
        tail.extend_from_slice(&(signature.len() as u16).to_be_bytes());
        tail.extend_from_slice(&signature);
        tail.extend_from_slice(&(cert.len() as u32).to_be_bytes());
        tail.extend_from_slice(cert);
        self.sealer.write(&tail)?;
        Ok((self.sealer.finish()?, manifest))
    }
}

/// A relative path of normal components only, so no entry can land outside the
/// directory it is restored into.
fn check_path(path: &str) -> Result<(), BackupError> {
    let p = Path::new(path);
    let normal = !path.is_empty()
        && path.len() <= MAX_PATH
        && !path.contains('\\')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if normal {
        Ok(())
    } else {
        Err(BackupError::Format(format!(
            "the entry path {path:?} is not a plain relative path"
        )))
    }
}

/// What an archive that unpacked and verified holds.
pub struct Unpacked {
    pub manifest: Manifest,
    /// The certificate whose key signed the manifest (DER): the caller checks it
    /// against the instance's anchor, its role and identity.
    pub signer_cert: Vec<u8>,
}

/// Checks the certificate that signed an archive against the instance's trust store,
/// taken from outside the archive (an archive carries an anchor of its own, which proves
/// nothing): chain, role and identity, valid when the backup was made; the manifest
/// must be of `id`.
pub fn verify_signer(
    unpacked: &Unpacked,
    trust: &lintas_certs::TrustStore,
    role: lintas_certs::Role,
    identity: &lintas_certs::Identity,
    id: &str,
) -> Result<(), BackupError> {
    let made = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(
            u64::try_from(unpacked.manifest.created_unix_ms).unwrap_or(0),
        );
    let info = trust
        .verify(&unpacked.signer_cert, role, made)
        .map_err(|e| {
            BackupError::Signature(format!(
                "the signer's certificate does not verify against the anchor given: {e}"
            ))
        })?;
    if &info.identity != identity || unpacked.manifest.id != id {
        return Err(BackupError::Signature(format!(
            "the archive says it is of {} and is signed by {}, not by {}",
            unpacked.manifest.id,
            info.identity.to_uri(),
            identity.to_uri()
        )));
    }
    Ok(())
}

/// Unpacks an archive into `dir` (which must exist and be empty), checking every chunk,
/// every file against the manifest and the manifest's signature against the public key
/// of the certificate it carries. On an error the files written so far stay in `dir`
/// for the caller to remove.
pub fn unpack(
    input: impl Read,
    passphrase: &Passphrase,
    dir: &Path,
) -> Result<Unpacked, BackupError> {
    let mut opener = seal::Opener::new(input, passphrase)?;
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let mut kind = [0u8; 1];
        if !opener.read_exact_or_end(&mut kind)? {
            return Err(BackupError::Damaged("the archive has no manifest".into()));
        }
        match kind[0] {
            FILE => files.push(unpack_file(&mut opener, dir, &mut seen)?),
            TRAILER => break,
            other => {
                return Err(BackupError::Damaged(format!(
                    "an entry of unknown kind {other}"
                )));
            }
        }
    }
    let manifest_bytes = read_field(&mut opener, 4, MAX_MANIFEST, "manifest")?;
    let signature = read_field(&mut opener, 2, 1024, "signature")?;
    let signer_cert = read_field(&mut opener, 4, 64 * 1024, "certificate")?;
    let mut extra = [0u8; 1];
    if opener.read_exact_or_end(&mut extra)? {
        return Err(BackupError::Damaged("bytes follow the manifest".into()));
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| BackupError::Damaged(format!("the manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Format(format!(
            "the archive's format is {}, this lintas reads {FORMAT}",
            manifest.format
        )));
    }
    let info = lintas_certs::CertInfo::parse(&signer_cert)
        .map_err(|e| BackupError::Signature(format!("the signer's certificate: {e}")))?;
    lintas_certs::sig::verify(&info.public_key, DOMAIN, &manifest_bytes, &signature)
        .map_err(|_| {
            BackupError::Signature(format!(
                "the manifest's signature does not verify with the key of the certificate it carries ({})",
                info.identity.to_uri()
            ))
        })?;
    if manifest.files != files {
        let listed: HashSet<_> = manifest.files.iter().map(|f| &f.path).collect();
        let odd = files
            .iter()
            .find(|f| !manifest.files.contains(f))
            .map(|f| format!("{} does not match the manifest", f.path))
            .or_else(|| {
                let got: HashSet<_> = files.iter().map(|f| &f.path).collect();
                listed
                    .iter()
                    .find(|p| !got.contains(*p))
                    .map(|p| format!("{p} is listed but missing"))
            })
            .unwrap_or_else(|| "the files are in another order than listed".into());
        return Err(BackupError::Damaged(format!(
            "the signed manifest and the files differ: {odd}"
        )));
    }
    sync_dirs(dir, &files)?;
    Ok(Unpacked {
        manifest,
        signer_cert,
    })
}

fn read_field(
    opener: &mut seal::Opener<impl Read>,
    width: usize,
    max: usize,
    what: &str,
) -> Result<Vec<u8>, BackupError> {
    let mut len = [0u8; 4];
    opener.read_exact(&mut len[4 - width..])?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(BackupError::Damaged(format!(
            "the {what} declares {len} bytes, more than {max}"
        )));
    }
    let mut data = vec![0u8; len];
    opener.read_exact(&mut data)?;
    Ok(data)
}

fn unpack_file(
    opener: &mut seal::Opener<impl Read>,
    dir: &Path,
    seen: &mut HashSet<String>,
) -> Result<FileEntry, BackupError> {
    let path = read_field(opener, 2, MAX_PATH, "entry path")?;
    let path = String::from_utf8(path)
        .map_err(|_| BackupError::Damaged("an entry path is not UTF-8".into()))?;
    check_path(&path)?;
    if !seen.insert(path.clone()) {
        return Err(BackupError::Damaged(format!("{path} appears twice")));
    }
    let mut word = [0u8; 4];
    opener.read_exact(&mut word)?;
    let mode = u32::from_be_bytes(word);
    if mode & !0o777 != 0 {
        return Err(BackupError::Damaged(format!(
            "{path} has mode {mode:o}, beyond permission bits"
        )));
    }
    let mut len = [0u8; 8];
    opener.read_exact(&mut len)?;
    let len = u64::from_be_bytes(len);
    let target = dir.join(&path);
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io("creating", parent))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&target)
        .map_err(io("creating", &target))?;
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut left = len;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        opener.read_exact(&mut buf[..n])?;
        hash.update(&buf[..n]);
        f.write_all(&buf[..n]).map_err(io("writing", &target))?;
        left -= n as u64;
    }
    f.sync_all().map_err(io("syncing", &target))?;
    Ok(FileEntry {
        path,
        mode,
        bytes: len,
        sha256: lintas_certs::hex(hash.finish().as_ref()),
    })
}

/// Makes the unpacked files' directory entries durable.
fn sync_dirs(dir: &Path, files: &[FileEntry]) -> Result<(), BackupError> {
    let mut dirs: HashSet<PathBuf> = files
        .iter()
        .filter_map(|f| dir.join(&f.path).parent().map(Path::to_owned))
        .collect();
    dirs.insert(dir.to_owned());
    for d in dirs {
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing", &d))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
