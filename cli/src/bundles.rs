//! Evidence files of any size: one bundle as it is (`EvidenceBundle` bytes), or, when an
//! export comes in several bundles, a line naming the format followed by each bundle
//! length-delimited. Both are written and read one bundle at a time.

use std::io::{BufReader, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use lintas_proto::audit::v1::EvidenceBundle;
use prost::Message;

/// The first line of a file of several bundles.
pub const MAGIC: &[u8] = b"lintas-evidence-bundles/v1\n";
/// Largest single bundle read.
const MAX_BUNDLE_BYTES: u64 = 1 << 30;

/// Writes bundles to a new file as they come: the first is held until a second shows
/// whether the file holds one bundle (written as it is) or several.
pub struct Writer {
    file: std::io::BufWriter<std::fs::File>,
    held: Option<EvidenceBundle>,
    pub bundles: usize,
}

impl Writer {
    pub fn create(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Writer {
            file: std::io::BufWriter::new(file),
            held: None,
            bundles: 0,
        })
    }

    pub fn push(&mut self, bundle: EvidenceBundle) -> Result<()> {
        self.bundles += 1;
        match self.bundles {
            1 => self.held = Some(bundle),
            2 => {
                self.file.write_all(MAGIC)?;
                if let Some(first) = self.held.take() {
                    self.file
                        .write_all(&first.encode_length_delimited_to_vec())?;
                }
                self.file
                    .write_all(&bundle.encode_length_delimited_to_vec())?;
            }
            _ => self
                .file
                .write_all(&bundle.encode_length_delimited_to_vec())?,
        }
        Ok(())
    }

    /// Writes what is held and makes the file durable.
    pub fn finish(mut self) -> Result<()> {
        if let Some(only) = self.held.take() {
            self.file.write_all(&only.encode_to_vec())?;
        }
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        Ok(())
    }
}

/// Reads the bundles of `path` one at a time, handing each one's bytes to `each` (with
/// its number from 1); returns how many there were.
pub fn each(path: &Path, mut each: impl FnMut(usize, Vec<u8>) -> Result<()>) -> Result<usize> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut head = vec![0u8; MAGIC.len()];
    let got = read_up_to(&mut reader, &mut head)?;
    if got < MAGIC.len() || head != MAGIC {
        // One bundle, as it is.
        let mut rest = Vec::new();
        reader
            .take(MAX_BUNDLE_BYTES)
            .read_to_end(&mut rest)
            .with_context(|| format!("reading {}", path.display()))?;
        head.truncate(got);
        head.extend(rest);
        each(1, head)?;
        return Ok(1);
    }
    let mut n = 0;
    while let Some(len) = read_varint(&mut reader)? {
        if len > MAX_BUNDLE_BYTES {
            bail!(
                "{}: bundle {} is {len} bytes, more than {MAX_BUNDLE_BYTES}",
                path.display(),
                n + 1
            );
        }
        let mut bytes = vec![0u8; len as usize];
        reader
            .read_exact(&mut bytes)
            .with_context(|| format!("{}: bundle {} is cut short", path.display(), n + 1))?;
        n += 1;
        each(n, bytes)?;
    }
    Ok(n)
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// A varint length, or `None` at a clean end of the file.
fn read_varint(reader: &mut impl Read) -> Result<Option<u64>> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        if reader.read(&mut byte)? == 0 {
            if shift == 0 {
                return Ok(None);
            }
            bail!("the file ends inside a bundle's length");
        }
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    bail!("a bundle's length is not a valid varint")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(origin: &str) -> EvidenceBundle {
        EvidenceBundle {
            origin: origin.into(),
            ..Default::default()
        }
    }

    #[test]
    fn one_or_many_bundles_round_trip_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        for count in [1usize, 2, 5] {
            let path = dir.path().join(format!("{count}.evidence"));
            let mut w = Writer::create(&path).unwrap();
            for i in 0..count {
                w.push(bundle(&format!("S{i}"))).unwrap();
            }
            w.finish().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            // A single bundle is written as it is, readable by any protobuf tool.
            assert_eq!(bytes.starts_with(MAGIC), count > 1);
            let mut seen = Vec::new();
            let n = each(&path, |k, b| {
                seen.push((k, EvidenceBundle::decode(b.as_slice()).unwrap().origin));
                Ok(())
            })
            .unwrap();
            assert_eq!(n, count);
            assert_eq!(
                seen,
                (0..count)
                    .map(|i| (i + 1, format!("S{i}")))
                    .collect::<Vec<_>>()
            );
            if count > 1 {
                let cut = dir.path().join(format!("{count}.cut"));
                std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
                let err = each(&cut, |_, _| Ok(())).unwrap_err();
                assert!(format!("{err:#}").contains("cut short"), "{err:#}");
            }
        }
        // An existing file is never overwritten.
        assert!(Writer::create(&dir.path().join("1.evidence")).is_err());
    }
}
