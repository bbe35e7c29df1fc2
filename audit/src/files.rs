//! Evidence files of any size: one bundle as it is (`EvidenceBundle` bytes), or, when an
//! export comes in several bundles, a line naming the format followed by each bundle
//! length-delimited. Read one bundle at a time.

use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The first line of a file of several bundles.
pub const MAGIC: &[u8] = b"lintas-evidence-bundles/v1\n";
/// Largest single bundle read.
pub const MAX_BUNDLE_BYTES: u64 = 1 << 30;

/// Whether `path` holds several bundles (a large export).
pub fn is_multi_bundle(path: &Path) -> bool {
    let mut head = vec![0u8; MAGIC.len()];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && head == MAGIC
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
