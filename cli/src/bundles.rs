//! Writing evidence files of any size (see `lintas_audit::files`, which reads them): one
//! bundle as it is, or a format line followed by each bundle length-delimited.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use lintas_proto::audit::v1::EvidenceBundle;
use prost::Message;

pub use lintas_audit::files::MAGIC;

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

#[cfg(test)]
mod tests {
    use super::*;
    use lintas_audit::files::each;

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
