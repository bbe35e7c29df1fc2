//! Durable file writes for keys, certificates and caches.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::CertError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the one certificate in a PEM file.
pub fn read_cert(path: &Path) -> Result<Vec<u8>, CertError> {
    let pem = std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })?;
    crate::pem::cert_from_pem(&pem, &path.display().to_string())
}

/// Reads every certificate in a PEM file (a bundle of CAs), at least one.
pub fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    let pem = std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })?;
    crate::pem::certs_from_pem(&pem, &path.display().to_string())
}

/// Where a new key or certificate waits beside `path` until it is switched in:
/// `path` with `.next` appended.
pub fn next(path: std::path::PathBuf) -> std::path::PathBuf {
    let mut s = path.into_os_string();
    s.push(".next");
    std::path::PathBuf::from(s)
}

/// Reads a file holding a secret (a private key, a PIN), refusing it when group or
/// others may access it. The mode is that of the file actually opened. The text is
/// wiped from memory when dropped.
pub fn read_private(path: &Path) -> Result<zeroize::Zeroizing<String>, CertError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut f = File::open(path).map_err(io(path))?;
    let mode = f.metadata().map_err(io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CertError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = zeroize::Zeroizing::new(String::new());
    f.read_to_string(&mut text).map_err(io(path))?;
    Ok(text)
}

/// Creates `path` with `mode` and writes `data` durably; refuses to replace a file.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                CertError::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                CertError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io(path))?;
    sync_parent(path)
}

/// Replaces `path` with `data` atomically and durably: readers see the old or the new
/// contents, never a mix, and after return the new contents survive a crash.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> Result<(), CertError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// Makes renames and new files in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), CertError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Moves a new key and certificate waiting beside `key` and `cert` ([`next`]) into
/// place, the key first: a move cut short leaves the certificate waiting beside a key
/// already moved, and the next call finishes it. Whether a certificate was waiting. The
/// caller syncs the directory ([`sync_dir`]) once its moves are done.
pub fn switch_in(key: &Path, cert: &Path) -> Result<bool, CertError> {
    let (next_key, next_cert) = (next(key.to_owned()), next(cert.to_owned()));
    if !next_cert.exists() {
        return Ok(false);
    }
    if next_key.exists() {
        std::fs::rename(&next_key, key).map_err(io(&next_key))?;
    }
    std::fs::rename(&next_cert, cert).map_err(io(&next_cert))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_new_write_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_new(&p, b"one", 0o644).unwrap();
        assert!(matches!(
            write_new(&p, b"two", 0o644),
            Err(CertError::AlreadyExists { .. })
        ));
        write_atomic(&p, b"three", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        assert!(!p.with_extension("tmp").exists());
    }
}
