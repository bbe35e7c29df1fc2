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

    /// Cuts the file before the first entry `keep` refuses, and everything after it:
    /// entries are appended in the order of what they are about, so a copy taken while
    /// the server ran may end with entries about records its copy of the log does not
    /// hold. The number of entries cut.
    pub fn cut_from_first(
        path: &Path,
        max_entry: usize,
        mut keep: impl FnMut(&[u8]) -> Result<bool, SsError>,
    ) -> Result<usize, SsError> {
        let mut cut: Option<u64> = None;
        let mut after = 0;
        let entries = Entries::open(path, max_entry, |offset, bytes| {
            if cut.is_some() {
                after += 1;
            } else if !keep(bytes)? {
                cut = Some(offset - 4);
                after = 1;
            }
            Ok(())
        })?;
        if let Some(at) = cut {
            entries
                .file
                .set_len(at)
                .and_then(|()| entries.file.sync_all())
                .map_err(|e| io("cutting", path, e))?;
        }
        Ok(after)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        Entries::open(path, 64, |_, b| {
            seen.push(b.to_vec());
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_copy_is_cut_from_the_first_entry_beyond_what_it_keeps() {
        let cases: [(&[u8], u8, usize, &[u8]); 4] = [
            (b"123", 3, 0, b"123"),
            (b"123", 2, 1, b"12"),
            (b"123", 0, 3, b""),
            // Entries come in order: nothing after the first refused stays.
            (b"1312", 1, 3, b"1"),
        ];
        for (written, keep_to, cut, left) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("entries");
            let mut file = Entries::open(&path, 64, |_, _| Ok(())).unwrap();
            for b in written {
                file.append(&[*b - b'0']).unwrap();
            }
            drop(file);
            let n = Entries::cut_from_first(&path, 64, |b| Ok(b[0] <= keep_to)).unwrap();
            assert_eq!(n, cut, "{written:?} to {keep_to}");
            let kept: Vec<u8> = entries(&path).iter().map(|e| e[0] + b'0').collect();
            assert_eq!(kept, left, "{written:?} to {keep_to}");
        }
    }
}
