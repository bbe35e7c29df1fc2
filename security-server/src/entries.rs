//! Append-only files of length-prefixed entries (`u32` big-endian length, then the
//! bytes), durable per entry: the server's checkpoints and time-stamps.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::SsError;

use crate::state_error_at as io;

/// An open entries file.
pub struct Entries {
    path: PathBuf,
    file: File,
}

impl Entries {
    /// Opens (creating) the file and hands `each` every entry: the byte offset of its
    /// bytes, and the bytes. An entry cut short by a crash at the end (never
    /// acknowledged) is cut off; an impossible length elsewhere is damage, refused.
    pub fn open(
        path: &Path,
        max_entry: usize,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), SsError>,
    ) -> Result<Self, SsError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io("opening", path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io("reading", path, e))?;
        let mut pos = 0usize;
        while pos + 4 <= bytes.len() {
            let n = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
                as usize;
            if n == 0 || n > max_entry {
                return Err(io(
                    "reading",
                    path,
                    format!(
                        "the entry at byte {pos} is damaged (impossible length); the file needs an operator's attention"
                    ),
                ));
            }
            if pos + 4 + n > bytes.len() {
                break;
            }
            each((pos + 4) as u64, &bytes[pos + 4..pos + 4 + n])?;
            pos += 4 + n;
        }
        if pos < bytes.len() {
            tracing::warn!(file = %path.display(), "cutting off an unfinished entry");
            file.set_len(pos as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| io("repairing", path, e))?;
        }
        Ok(Entries {
            path: path.to_owned(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry durably; returns the byte offset of its bytes. A failed write
    /// is cut back, so no partial entry stays in front of the next one.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64, SsError> {
        let end = self
            .file
            .metadata()
            .map_err(|e| io("reading", &self.path, e))?
            .len();
        let mut framed = Vec::with_capacity(4 + bytes.len());
        framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        framed.extend_from_slice(bytes);
        if let Err(e) = self
            .file
            .write_all(&framed)
            .and_then(|()| self.file.sync_data())
        {
            let _ = self.file.set_len(end).and_then(|()| self.file.sync_data());
            return Err(io("writing", &self.path, e));
        }
        Ok(end + 4)
    }

    /// Reads `len` bytes at `offset` (an entry's bytes, as `open` or `append` gave).
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SsError> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| io("reading", &self.path, e))?;
        Ok(buf)
    }
}
