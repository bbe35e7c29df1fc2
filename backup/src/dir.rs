//! What both daemons' backups and restores do with directories: the files of a data
//! directory in the order a daemon ranks them, an archive file that appears only when
//! complete, and a restore staged beside the configuration file and moved into a new
//! data directory only after every check passed.

use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{BackupError, Passphrase, Writer, io};

/// Every regular file under `dir` (relative, `/`-separated), ordered by `rank` and then
/// by path; files `rank` gives no place, and the absolute paths in `skip`, are left out.
pub fn files_in_order(
    dir: &Path,
    skip: &[PathBuf],
    rank: impl Fn(&str) -> Option<u8>,
) -> Result<Vec<(String, PathBuf)>, BackupError> {
    let mut ordered = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io("reading", &d))? {
            let entry = entry.map_err(io("reading", &d))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io("reading", &path))?;
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() || skip.contains(&path) {
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .ok()
                .and_then(Path::to_str)
                .ok_or_else(|| {
                    BackupError::Format(format!("{} is not a UTF-8 path", path.display()))
                })?
                .to_owned();
            if let Some(r) = rank(&rel) {
                ordered.push((r, rel, path));
            }
        }
    }
    ordered.sort();
    Ok(ordered
        .into_iter()
        .map(|(_, rel, path)| (rel, path))
        .collect())
}

/// The path as the file system resolves it, or as given when it does not exist.
pub fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

/// An archive being written: `OUT.partial` (mode 0600) until [`ArchiveFile::commit`]
/// makes it durable and renames it to `OUT`; removed if dropped before.
pub struct ArchiveFile {
    out: PathBuf,
    partial: PathBuf,
    committed: bool,
}

impl ArchiveFile {
    /// Starts an archive at `out`, which must not exist.
    pub fn create(
        out: &Path,
        passphrase: &Passphrase,
    ) -> Result<(Self, Writer<BufWriter<File>>), BackupError> {
        if out.exists() {
            return Err(BackupError::Target(format!(
                "{} exists; a backup never overwrites a file",
                out.display()
            )));
        }
        let partial = PathBuf::from(format!("{}.partial", out.display()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io("creating", &partial))?;
        let archive = ArchiveFile {
            out: out.to_owned(),
            partial,
            committed: false,
        };
        let writer = Writer::new(BufWriter::new(file), passphrase)?;
        Ok((archive, writer))
    }

    /// The file being written, to leave out of the backup when it is inside the data
    /// directory.
    pub fn partial(&self) -> &Path {
        &self.partial
    }

    pub fn commit(mut self, written: BufWriter<File>) -> Result<(), BackupError> {
        let file = written
            .into_inner()
            .map_err(|e| BackupError::Write(e.into_error()))?;
        file.sync_all().map_err(BackupError::Write)?;
        std::fs::rename(&self.partial, &self.out).map_err(io("renaming", &self.partial))?;
        self.committed = true;
        if let Some(parent) = self.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing", parent))?;
        }
        Ok(())
    }
}

impl Drop for ArchiveFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// A restore's working directory, `.lintas-restore-<pid>` beside the configuration
/// file to be written (so on the same file system as a data directory beside it, and
/// writable by the account that runs the daemon). Removed when dropped.
pub struct Staging {
    pub dir: PathBuf,
    /// The directory the configuration file goes into.
    pub config_dir: PathBuf,
    /// Whether the restore made `config_dir` (removed again if left empty).
    made_config_dir: bool,
}

impl Staging {
    /// Refuses a configuration file that exists; creates the staging directory.
    pub fn beside(config_path: &Path) -> Result<Self, BackupError> {
        if config_path.exists() {
            return Err(BackupError::Target(format!(
                "{} exists; restore writes a new node: move the old one away first",
                config_path.display()
            )));
        }
        let config_dir = match config_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let made_config_dir = !config_dir.exists();
        std::fs::create_dir_all(&config_dir).map_err(io("creating", &config_dir))?;
        // Decrypted keys pass through it: the restoring account's only.
        let dir = config_dir.join(format!(".lintas-restore-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating", &dir))?;
        Ok(Staging {
            dir,
            config_dir,
            made_config_dir,
        })
    }

    /// Where a data directory named by the staged configuration goes: a relative one is
    /// relative to the configuration file's final place, not to the staging copy.
    pub fn data_dir(&self, loaded: &Path, staged_config_dir: &Path) -> PathBuf {
        match loaded.strip_prefix(staged_config_dir) {
            Ok(rel) => rel
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .fold(self.config_dir.clone(), |p, c| p.join(c)),
            Err(_) => loaded.to_owned(),
        }
    }

    /// The data directory must be new: absent, or empty but for the staging directory
    /// (a data directory may hold its configuration file, which is written last).
    pub fn check_new(&self, data_dir: &Path) -> Result<(), BackupError> {
        match std::fs::read_dir(data_dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("reading", data_dir)(e)),
            Ok(entries) => match entries
                .filter_map(Result::ok)
                .find(|e| e.path() != self.dir)
            {
                None => Ok(()),
                Some(_) => Err(BackupError::Target(format!(
                    "the data directory {} is not empty; restore writes a new node",
                    data_dir.display()
                ))),
            },
        }
    }

    /// Moves what `from` (inside the staging directory) holds into `to` (created if
    /// absent), entry by entry.
    pub fn move_into(&self, from: &Path, to: &Path) -> Result<(), BackupError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(to)
            .map_err(io("creating", to))?;
        for entry in std::fs::read_dir(from).map_err(io("reading", from))? {
            let entry = entry.map_err(io("reading", from))?;
            let target = to.join(entry.file_name());
            std::fs::rename(entry.path(), &target).map_err(|e| {
                BackupError::Target(format!(
                    "moving the restored data to {}: {e} (restore stages beside the configuration file, so the data directory must be on the same file system)",
                    target.display()
                ))
            })?;
        }
        File::open(to)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", to))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.made_config_dir {
            // Only when empty: a finished restore wrote its configuration there.
            let _ = std::fs::remove_dir(&self.config_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_goes_only_into_a_new_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("node/ss.toml");
        let staging = Staging::beside(&cfg).unwrap();
        let node = dir.path().join("node");
        assert!(staging.dir.starts_with(&node));
        staging.check_new(&dir.path().join("absent")).unwrap();
        staging.check_new(&node).unwrap();
        std::fs::write(node.join("x"), b"").unwrap();
        let err = staging.check_new(&node).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
        let staged = staging.dir.clone();
        drop(staging);
        assert!(!staged.exists(), "the staging directory is removed");
        // A directory the restore made is removed again when nothing went into it.
        let fresh = dir.path().join("fresh/ss.toml");
        drop(Staging::beside(&fresh).unwrap());
        assert!(!dir.path().join("fresh").exists());
        std::fs::write(&cfg, b"").unwrap();
        let err = Staging::beside(&cfg).err().unwrap();
        assert!(err.to_string().contains("exists"), "{err}");
    }

    #[test]
    fn a_relative_data_directory_follows_the_configuration_file() {
        let staging = Staging {
            dir: "/srv/.lintas-restore-1".into(),
            config_dir: "/srv/node".into(),
            made_config_dir: false,
        };
        let staged = Path::new("/srv/.lintas-restore-1/config");
        assert_eq!(
            staging.data_dir(&staged.join("."), staged),
            PathBuf::from("/srv/node")
        );
        assert_eq!(
            staging.data_dir(&staged.join("data"), staged),
            PathBuf::from("/srv/node/data")
        );
        assert_eq!(
            staging.data_dir(Path::new("/var/lib/x"), staged),
            PathBuf::from("/var/lib/x")
        );
    }

    #[test]
    fn files_come_in_rank_then_path_order_and_unranked_ones_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b", "a", "sub/c", "skip/d", "gone"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let rank = |rel: &str| match rel {
            "sub/c" => Some(0),
            _ if rel.starts_with("skip/") => None,
            _ => Some(1),
        };
        let skip = [dir.path().join("gone")];
        let got: Vec<String> = files_in_order(dir.path(), &skip, rank)
            .unwrap()
            .into_iter()
            .map(|(rel, _)| rel)
            .collect();
        assert_eq!(got, ["sub/c", "a", "b"]);
    }
}
