//! The Merkle tree over the log's records, kept in files beside the segments: one file
//! per level, `level-LL` holding the 32-byte roots of the complete subtrees of `2^LL`
//! records in order (level 0 holds the records' leaf hashes). Each node is written once,
//! when its last record becomes durable, so the head at any size and every inclusion
//! and consistency proof need O(log² n) reads.
//!
//! The files are not flushed on every batch: they follow from the records and are
//! checked against them, and repaired, each time the log opens.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lintas_merkle::{Frontier, Hash, Subtrees};

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// The stored levels of the tree and its right edge.
pub struct TreeFiles {
    dir: PathBuf,
    levels: Vec<File>,
    /// Nodes stored per level.
    counts: Vec<u64>,
    frontier: Frontier,
    /// Set when writing nodes failed: the files may have gaps, so no proof is given
    /// from them until the log is opened again (which repairs them).
    failed: Option<String>,
}

fn level_path(dir: &Path, level: u32) -> PathBuf {
    dir.join(format!("level-{level:02}"))
}

impl TreeFiles {
    fn open_level(&mut self, level: u32) -> Result<(), String> {
        while self.levels.len() <= level as usize {
            let l = self.levels.len() as u32;
            let path = level_path(&self.dir, l);
            let file = crate::open_append_only(&path).map_err(|e| io("opening", &path, e))?;
            let len = file.metadata().map_err(|e| io("reading", &path, e))?.len();
            self.levels.push(file);
            self.counts.push(len / 32);
        }
        Ok(())
    }

    /// Number of records the tree covers.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The head at the current size.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Appends the leaf hashes of newly durable records, writing every subtree they
    /// complete.
    pub fn append(&mut self, leaves: &[Hash]) -> Result<(), String> {
        let result = self.write(leaves);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn write(&mut self, leaves: &[Hash]) -> Result<(), String> {
        let mut writes: Vec<Vec<u8>> = Vec::new();
        let mut firsts: Vec<u64> = Vec::new();
        for leaf in leaves {
            for (level, index, hash) in self.frontier.push(*leaf) {
                let l = level as usize;
                if writes.len() <= l {
                    writes.resize(l + 1, Vec::new());
                    firsts.resize(l + 1, 0);
                }
                if writes[l].is_empty() {
                    firsts[l] = index;
                }
                writes[l].extend_from_slice(&hash);
            }
        }
        for (l, bytes) in writes.iter().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            self.open_level(l as u32)?;
            let at = firsts[l] * 32;
            self.levels[l]
                .write_all_at(bytes, at)
                .map_err(|e| io("writing", &level_path(&self.dir, l as u32), e))?;
            self.counts[l] = firsts[l] + bytes.len() as u64 / 32;
        }
        Ok(())
    }

    /// Opens the tree in `dir` for a log whose records have the leaf hashes `leaves`
    /// yields, in order (see [`TreeOpener`]).
    pub fn open(
        dir: &Path,
        leaves: impl IntoIterator<Item = Result<Hash, String>>,
    ) -> Result<(TreeFiles, u64), String> {
        let mut opener = TreeOpener::new(dir)?;
        for leaf in leaves {
            opener.leaf(leaf?)?;
        }
        opener.finish()
    }
}

/// Opens the tree while the log's records are read: stored nodes are compared with the
/// ones the records give, and from the first that is missing or differs, the files are
/// rewritten.
pub struct TreeOpener {
    tree: TreeFiles,
    readers: Vec<BufReader<File>>,
    check: Frontier,
    /// The first record from which the stored nodes are not confirmed.
    bad_from: Option<u64>,
    pending: Vec<Hash>,
}

impl TreeOpener {
    pub fn new(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let mut tree = TreeFiles {
            dir: dir.to_owned(),
            levels: Vec::new(),
            counts: Vec::new(),
            frontier: Frontier::new(),
            failed: None,
        };
        // Every level stored, so that none is left holding nodes beyond the records.
        let mut level = 0;
        while level == 0 || level_path(dir, level).exists() {
            tree.open_level(level)?;
            level += 1;
        }
        Ok(TreeOpener {
            tree,
            readers: Vec::new(),
            check: Frontier::new(),
            bad_from: None,
            pending: Vec::new(),
        })
    }

    /// The next record's leaf hash.
    pub fn leaf(&mut self, leaf: Hash) -> Result<(), String> {
        if self.bad_from.is_some() {
            self.pending.push(leaf);
            return Ok(());
        }
        let index = self.check.size();
        for (level, node, hash) in self.check.push(leaf) {
            self.tree.open_level(level)?;
            let l = level as usize;
            let stored = if node < self.tree.counts[l] {
                while self.readers.len() <= l {
                    let path = level_path(&self.tree.dir, self.readers.len() as u32);
                    let f = File::open(&path).map_err(|e| io("opening", &path, e))?;
                    self.readers.push(BufReader::with_capacity(1 << 16, f));
                }
                let mut stored = [0u8; 32];
                self.readers[l]
                    .read_exact(&mut stored)
                    .map_err(|e| io("reading", &level_path(&self.tree.dir, level), e))?;
                Some(stored)
            } else {
                None
            };
            if stored != Some(hash) {
                self.bad_from = Some(index);
                self.pending.push(leaf);
                return Ok(());
            }
        }
        Ok(())
    }

    /// The tree, and how many records had to be re-added (0 when the files were whole).
    pub fn finish(self) -> Result<(TreeFiles, u64), String> {
        let TreeOpener {
            mut tree,
            check,
            bad_from,
            pending,
            ..
        } = self;
        let kept = bad_from.unwrap_or(check.size());
        // Everything stored beyond what was confirmed goes; the rest is appended again.
        for l in 0..tree.levels.len() {
            let keep = kept >> l;
            if tree.counts[l] != keep {
                let path = level_path(&tree.dir, l as u32);
                tree.levels[l]
                    .set_len(keep * 32)
                    .map_err(|e| io("truncating", &path, e))?;
                tree.counts[l] = keep;
            }
        }
        tree.frontier = Frontier::at(&tree, kept)?;
        tree.append(&pending)?;
        Ok((tree, pending.len() as u64))
    }
}

impl Subtrees for TreeFiles {
    type Error = String;

    fn subtree(&self, level: u32, index: u64) -> Result<Hash, String> {
        if let Some(e) = &self.failed {
            return Err(format!(
                "the log's tree could not be written ({e}); proofs are unavailable until the log is opened again"
            ));
        }
        let l = level as usize;
        if l >= self.counts.len() || index >= self.counts[l] {
            return Err(format!(
                "the log's tree has no complete subtree {index} at level {level}"
            ));
        }
        let mut hash = [0u8; 32];
        self.levels[l]
            .read_exact_at(&mut hash, index * 32)
            .map_err(|e| io("reading", &level_path(&self.dir, level), e))?;
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| lintas_merkle::leaf_hash(&i.to_be_bytes()))
            .collect()
    }

    fn ok(l: &[Hash]) -> impl Iterator<Item = Result<Hash, String>> + '_ {
        l.iter().map(|h| Ok(*h))
    }

    #[test]
    fn stored_levels_give_heads_and_proofs_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(45);
        let (mut tree, repaired) = TreeFiles::open(dir.path(), ok(&[])).unwrap();
        assert_eq!(repaired, 0);
        tree.append(&all[..20]).unwrap();
        tree.append(&all[20..]).unwrap();
        assert_eq!(tree.root(), lintas_merkle::root(&all));
        for n in [1u64, 7, 20, 32, 45] {
            assert_eq!(
                lintas_merkle::root_at(&tree, n).unwrap(),
                lintas_merkle::root(&all[..n as usize])
            );
        }
        let proof = lintas_merkle::inclusion_proof_at(&tree, 13, 45)
            .unwrap()
            .unwrap();
        lintas_merkle::verify_inclusion(&all[13], 13, 45, &proof, &tree.root()).unwrap();
        drop(tree);
        let (tree, repaired) = TreeFiles::open(dir.path(), ok(&all)).unwrap();
        assert_eq!((repaired, tree.size()), (0, 45));
        assert_eq!(tree.root(), lintas_merkle::root(&all));
    }

    #[test]
    fn lost_and_altered_nodes_are_rewritten_from_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(40);
        let (mut tree, _) = TreeFiles::open(dir.path(), ok(&[])).unwrap();
        tree.append(&all[..30]).unwrap();
        drop(tree);
        // The last ten records' nodes were never written (a crash), and a level-2 node
        // covering records 8 to 11 was altered.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(level_path(dir.path(), 2))
            .unwrap();
        f.write_all_at(&[0xee; 32], 2 * 32).unwrap();
        drop(f);
        let (tree, repaired) = TreeFiles::open(dir.path(), ok(&all)).unwrap();
        // The altered node closed at record 11: from there on everything is re-added.
        assert_eq!((repaired, tree.size()), (29, 40));
        for n in 1..=40u64 {
            assert_eq!(
                lintas_merkle::root_at(&tree, n).unwrap(),
                lintas_merkle::root(&all[..n as usize]),
                "size {n}"
            );
        }
        // Files holding more than the records (the records were cut back) shrink.
        drop(tree);
        let (tree, repaired) = TreeFiles::open(dir.path(), ok(&all[..33])).unwrap();
        assert_eq!((repaired, tree.size()), (0, 33));
        assert_eq!(tree.root(), lintas_merkle::root(&all[..33]));
        assert!(tree.subtree(0, 33).is_err());
    }
}
