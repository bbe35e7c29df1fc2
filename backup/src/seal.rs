//! The encryption of an archive: a passphrase stretched by Argon2id into an AES-256-GCM
//! key, and the archive's bytes sealed in chunks (the STREAM construction): each chunk's
//! nonce is a random prefix, the chunk's number and a flag marking the last chunk, and
//! every chunk authenticates the header. Chunks cannot be reordered, dropped, repeated
//! or cut off at the end without the opening failing at that chunk.

use std::io::{Read, Write};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::BackupError;

/// The first bytes of every archive.
pub const MAGIC: &[u8; 8] = b"LNTSBKP1";
/// Plaintext bytes per chunk.
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const SALT: usize = 16;
const PREFIX: usize = 7;
/// magic, Argon2 memory (KiB), passes, lanes, salt, nonce prefix.
pub const HEADER_LEN: usize = 8 + 4 + 4 + 4 + SALT + PREFIX;

/// Argon2id's cost. The defaults follow OWASP's guidance for Argon2id (at least 19 MiB);
/// an archive names its own, and one asking for more than [`Kdf::MAX_MEMORY_KIB`] is
/// refused rather than allowed to exhaust the restoring machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kdf {
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
}

impl Kdf {
    pub const DEFAULT: Kdf = Kdf {
        memory_kib: 64 * 1024,
        passes: 3,
        lanes: 1,
    };
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;

    fn key(&self, passphrase: &Passphrase, salt: &[u8]) -> Result<LessSafeKey, BackupError> {
        if self.memory_kib > Self::MAX_MEMORY_KIB || self.passes > 64 || self.lanes > 16 {
            return Err(BackupError::Format(format!(
                "the archive asks for Argon2id with {} KiB, {} passes and {} lanes, more than a restore allows",
                self.memory_kib, self.passes, self.lanes
            )));
        }
        let params = argon2::Params::new(self.memory_kib, self.passes, self.lanes, Some(32))
            .map_err(|e| BackupError::Format(format!("the archive's Argon2id parameters: {e}")))?;
        let mut key = [0u8; 32];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(passphrase.0.as_bytes(), salt, &mut key)
            .map_err(|e| BackupError::Format(format!("deriving the key: {e}")))?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key)
            .map_err(|_| BackupError::Format("the derived key was refused".into()))?;
        key.fill(0);
        Ok(LessSafeKey::new(unbound))
    }
}

/// The passphrase that protects an archive. It is never printed: `Debug` hides it.
pub struct Passphrase(String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        // Overwrite the bytes before they are freed.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

impl Passphrase {
    /// Shortest passphrase accepted when writing an archive.
    pub const MIN_CHARS: usize = 12;

    /// A passphrase for writing: refused when shorter than [`Self::MIN_CHARS`].
    pub fn new(text: String) -> Result<Self, BackupError> {
        if text.chars().count() < Self::MIN_CHARS {
            return Err(BackupError::Passphrase(format!(
                "a backup passphrase needs at least {} characters",
                Self::MIN_CHARS
            )));
        }
        Ok(Passphrase(text))
    }

    /// A passphrase for reading an archive, taken as given.
    pub fn for_reading(text: String) -> Self {
        Passphrase(text)
    }

    /// Reads a passphrase from a file (its first line), or from standard input for
    /// `-`. The file is named in errors; its content never is.
    pub fn read(path: &std::path::Path) -> Result<String, BackupError> {
        let mut text = String::new();
        let read = if path.as_os_str() == "-" {
            std::io::stdin().read_line(&mut text).map(|_| ())
        } else {
            std::fs::read_to_string(path).map(|t| text = t)
        };
        read.map_err(|e| {
            BackupError::Passphrase(format!(
                "reading the passphrase from {}: {e}",
                path.display()
            ))
        })?;
        let line = text.lines().next().unwrap_or("").to_owned();
        // The rest of the file's bytes are overwritten before they are freed.
        let mut bytes = text.into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
        if line.is_empty() {
            return Err(BackupError::Passphrase(format!(
                "{} holds no passphrase on its first line",
                path.display()
            )));
        }
        Ok(line)
    }
}

fn nonce(prefix: &[u8; PREFIX], counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..PREFIX + 4].copy_from_slice(&counter.to_be_bytes());
    n[NONCE_LEN - 1] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Writes sealed chunks of what is written to it.
pub struct Sealer<W: Write> {
    out: W,
    key: LessSafeKey,
    header: [u8; HEADER_LEN],
    prefix: [u8; PREFIX],
    counter: u32,
    buf: Vec<u8>,
}

impl<W: Write> Sealer<W> {
    pub fn new(mut out: W, passphrase: &Passphrase, kdf: Kdf) -> Result<Self, BackupError> {
        let mut salt = [0u8; SALT];
        let mut prefix = [0u8; PREFIX];
        aws_lc_rs::rand::fill(&mut salt)
            .and_then(|()| aws_lc_rs::rand::fill(&mut prefix))
            .map_err(|_| BackupError::Format("the system's random source failed".into()))?;
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&kdf.memory_kib.to_be_bytes());
        header[12..16].copy_from_slice(&kdf.passes.to_be_bytes());
        header[16..20].copy_from_slice(&kdf.lanes.to_be_bytes());
        header[20..20 + SALT].copy_from_slice(&salt);
        header[20 + SALT..].copy_from_slice(&prefix);
        let key = kdf.key(passphrase, &salt)?;
        out.write_all(&header).map_err(BackupError::Write)?;
        Ok(Sealer {
            out,
            key,
            header,
            prefix,
            counter: 0,
            buf: Vec::with_capacity(CHUNK + TAG),
        })
    }

    fn seal(&mut self, last: bool) -> Result<(), BackupError> {
        let n = nonce(&self.prefix, self.counter, last);
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| BackupError::Format("the archive is too large".into()))?;
        self.key
            .seal_in_place_append_tag(n, Aad::from(&self.header[..]), &mut self.buf)
            .map_err(|_| BackupError::Format("sealing a chunk failed".into()))?;
        let len = u32::try_from(self.buf.len()).expect("a chunk is under 4 GiB");
        self.out
            .write_all(&len.to_be_bytes())
            .and_then(|()| self.out.write_all(&self.buf))
            .map_err(BackupError::Write)?;
        self.buf.clear();
        Ok(())
    }

    pub fn write(&mut self, mut data: &[u8]) -> Result<(), BackupError> {
        while !data.is_empty() {
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK {
                self.seal(false)?;
            }
        }
        Ok(())
    }

    /// Seals the last chunk and gives back the output.
    pub fn finish(mut self) -> Result<W, BackupError> {
        self.seal(true)?;
        self.out.flush().map_err(BackupError::Write)?;
        Ok(self.out)
    }
}

/// Reads the plaintext of a sealed archive, chunk by chunk.
pub struct Opener<R: Read> {
    input: R,
    key: LessSafeKey,
    header: [u8; HEADER_LEN],
    prefix: [u8; PREFIX],
    counter: u32,
    /// Byte offset of the next chunk in the archive, for errors.
    offset: u64,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> Opener<R> {
    pub fn new(mut input: R, passphrase: &Passphrase) -> Result<Self, BackupError> {
        let mut header = [0u8; HEADER_LEN];
        input.read_exact(&mut header).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                BackupError::Format("the file is too short to be a lintas backup".into())
            } else {
                BackupError::Read(e)
            }
        })?;
        if &header[..8] != MAGIC {
            return Err(BackupError::Format(
                "the file is not a lintas backup (its first bytes are not LNTSBKP1)".into(),
            ));
        }
        let word = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap());
        let kdf = Kdf {
            memory_kib: word(8),
            passes: word(12),
            lanes: word(16),
        };
        let key = kdf.key(passphrase, &header[20..20 + SALT])?;
        let prefix = header[20 + SALT..].try_into().unwrap();
        Ok(Opener {
            input,
            key,
            header,
            prefix,
            counter: 0,
            offset: HEADER_LEN as u64,
            plain: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    fn next_chunk(&mut self) -> Result<bool, BackupError> {
        if self.done {
            return Ok(false);
        }
        let at = self.offset;
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(BackupError::Damaged(format!(
                    "the archive ends at byte {at} before its last chunk: it was cut off"
                )));
            }
            Err(e) => return Err(BackupError::Read(e)),
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG..=CHUNK + TAG).contains(&len) {
            return Err(BackupError::Damaged(format!(
                "the chunk at byte {at} declares {len} bytes, which no chunk has"
            )));
        }
        self.plain.resize(len, 0);
        self.input.read_exact(&mut self.plain).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                BackupError::Damaged(format!("the chunk at byte {at} is cut off"))
            } else {
                BackupError::Read(e)
            }
        })?;
        self.offset += 4 + len as u64;
        // Only the last chunk is shorter than a full one: a writer seals the rest, even
        // when empty, as the last chunk after the full ones.
        let last = len < CHUNK + TAG;
        let opened = self
            .key
            .open_in_place(
                nonce(&self.prefix, self.counter, last),
                Aad::from(&self.header[..]),
                &mut self.plain,
            )
            .map(|p| p.len());
        let plain_len = opened.map_err(|_| {
            if self.counter == 0 {
                BackupError::Passphrase(
                    "the passphrase is wrong, or the archive's first bytes are damaged".into(),
                )
            } else {
                BackupError::Damaged(format!(
                    "the chunk at byte {at} does not authenticate: the archive was damaged or altered there"
                ))
            }
        })?;
        self.plain.truncate(plain_len);
        self.pos = 0;
        self.counter += 1;
        if last {
            self.done = true;
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra).map_err(BackupError::Read)? != 0 {
                return Err(BackupError::Damaged(format!(
                    "bytes follow the last chunk (from byte {})",
                    self.offset
                )));
            }
        }
        Ok(true)
    }

    /// Reads exactly `buf.len()` plaintext bytes; `Ok(false)` at the clean end of the
    /// plaintext before any byte was read.
    pub fn read_exact_or_end(&mut self, buf: &mut [u8]) -> Result<bool, BackupError> {
        let mut filled = 0;
        while filled < buf.len() {
            if self.pos == self.plain.len() && !self.next_chunk()? {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(BackupError::Damaged(
                    "the archive's content ends inside an entry".into(),
                ));
            }
            let take = (self.plain.len() - self.pos).min(buf.len() - filled);
            buf[filled..filled + take].copy_from_slice(&self.plain[self.pos..self.pos + take]);
            self.pos += take;
            filled += take;
        }
        Ok(true)
    }

    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), BackupError> {
        if self.read_exact_or_end(buf)? || buf.is_empty() {
            Ok(())
        } else {
            Err(BackupError::Damaged(
                "the archive's content ends inside an entry".into(),
            ))
        }
    }
}
