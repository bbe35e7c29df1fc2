//! Merkle trees as RFC 9162 section 2.1 (RFC 6962 section 2.1) defines them, over
//! SHA-256: a leaf hashes as `SHA-256(0x00 || entry)`, an inner node as
//! `SHA-256(0x01 || left || right)`, and a tree of `n` leaves splits at the largest power
//! of two below `n`. The empty tree's head is `SHA-256("")`.
//!
//! lintas uses it twice: a security server signs the root of the headers it signs
//! together (one signature for a whole batch), and its message log is such a tree, with
//! inclusion and consistency proofs any auditor can check.
#![forbid(unsafe_code)]

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("the proof has {0} hashes, which no proof for these sizes has")]
    WrongLength(usize),
    #[error("tree size {first} cannot precede tree size {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("the proof leads to a different root")]
    RootMismatch,
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Hashes as they travel (bytes each), checked to be 32 bytes; `None` if one is not.
pub fn hashes_from(bytes: &[Vec<u8>]) -> Option<Vec<Hash>> {
    bytes
        .iter()
        .map(|h| Hash::try_from(h.as_slice()).ok())
        .collect()
}

/// `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    sha256(&[&[0x00], entry])
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The head of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The tree head (MTH) over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        _ => Tree::new(leaves.to_vec()).map_or_else(empty_root, |t| t.root()),
    }
}

/// All levels of a tree, for a head and every leaf's inclusion proof at once. Built
/// bottom up: pairs hash together and a level's lone last node moves up unchanged,
/// which yields exactly the RFC's split at the largest power of two.
pub struct Tree {
    /// `levels[0]` are the leaves; the last level holds the root alone.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// A tree over leaf hashes; `None` for none (the empty tree has no levels, only
    /// [`empty_root`]).
    pub fn new(leaves: Vec<Hash>) -> Option<Tree> {
        if leaves.is_empty() {
            return None;
        }
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|l| l.len() > 1) {
            let next = level
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [lone] => *lone,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(next);
        }
        Some(Tree { levels })
    }

    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    pub fn root(&self) -> Hash {
        self.levels[self.levels.len() - 1][0]
    }

    /// The inclusion proof (RFC 9162 `PATH`) of leaf `index`, leaf side first; `None`
    /// if there is no such leaf.
    pub fn inclusion_proof(&self, index: u64) -> Option<Vec<Hash>> {
        let mut i = usize::try_from(index).ok()?;
        if i >= self.levels[0].len() {
            return None;
        }
        let mut proof = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            // A lone last node has no sibling at this level: it moves up as it is.
            if let Some(sibling) = level.get(i ^ 1) {
                proof.push(*sibling);
            }
            i /= 2;
        }
        Some(proof)
    }
}

/// The consistency proof (RFC 9162 `PROOF`) that the tree over the first `first` of
/// `leaves` is a prefix of the tree over all of them; `None` if `first` exceeds the
/// number of leaves.
pub fn consistency_proof(leaves: &[Hash], first: u64) -> Option<Vec<Hash>> {
    let m = usize::try_from(first).ok()?;
    if m > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    if m > 0 {
        subproof(m, leaves, true, &mut proof);
    }
    Some(proof)
}

fn subproof(m: usize, leaves: &[Hash], whole: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            proof.push(root(leaves));
        }
        return;
    }
    let k = split64(n as u64) as usize;
    if m <= k {
        subproof(m, &leaves[..k], whole, proof);
        proof.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(root(&leaves[..k]));
    }
}

/// The root that an inclusion proof of `leaf` at `index` in a tree of `size` leads to
/// (RFC 9162 section 2.1.3.2).
pub fn root_from_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    Ok(r)
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves whose head is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(leaf, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Checks that the tree of `first` leaves with head `first_root` is a prefix of the
/// tree of `second` leaves with head `second_root` (RFC 9162 section 2.1.4.2). Every
/// tree extends the empty one, whose proof is empty.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == second || first == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength(proof.len()));
        }
        let expected = if first == 0 {
            empty_root()
        } else {
            *second_root
        };
        return if *first_root == expected {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let Some((head, rest)) = proof.split_first() else {
        return Err(ProofError::WrongLength(0));
    };
    // When `first` is a power of two, its head is the proof's implicit first node.
    let (start, rest) = if first.is_power_of_two() {
        (first_root, proof)
    } else {
        (head, rest)
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    if fr == *first_root && sr == *second_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The right edge of a growing tree: the roots of its complete subtrees, largest
/// first. Enough to append leaves and know the head at every size, in O(log n) memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (level, hash) of each complete subtree on the right edge, left to right.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns the complete subtrees it closed, as
    /// (level, index, hash), lowest first (the leaf itself is level 0).
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let mut closed = vec![(0, self.size, leaf)];
        let (mut level, mut hash) = (0u32, leaf);
        while let Some(&(l, left)) = self.nodes.last() {
            if l != level {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            closed.push((level, self.size >> level, hash));
        }
        self.nodes.push((level, hash));
        self.size += 1;
        closed
    }

    /// The frontier of a stored tree at `size` leaves.
    pub fn at<S: Subtrees>(src: &S, size: u64) -> Result<Self, S::Error> {
        let mut nodes = Vec::new();
        let mut start = 0u64;
        for level in (0..u64::BITS).rev() {
            if size & (1 << level) != 0 {
                nodes.push((level, src.subtree(level, start >> level)?));
                start += 1 << level;
            }
        }
        Ok(Frontier { size, nodes })
    }

    /// The tree head at the current size.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(&(_, mut root)) = nodes.next() else {
            return empty_root();
        };
        for (_, left) in nodes {
            root = node_hash(left, &root);
        }
        root
    }
}

/// Where the hashes of complete subtrees of a stored tree come from: the subtree of
/// `2^level` leaves starting at leaf `index * 2^level`. A log that keeps these (each is
/// written once, when its last leaf arrives) can give heads and proofs for any earlier
/// size with O(log² n) reads.
pub trait Subtrees {
    type Error;
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// MTH of the `len` leaves from `start`, for ranges the RFC's recursion produces
/// (`start` is a multiple of the largest power of two not above `len`).
fn range_root<S: Subtrees>(src: &S, start: u64, len: u64) -> Result<Hash, S::Error> {
    if len.is_power_of_two() {
        let level = len.trailing_zeros();
        return src.subtree(level, start >> level);
    }
    let k = split64(len);
    let left = src.subtree(k.trailing_zeros(), start >> k.trailing_zeros())?;
    let right = range_root(src, start + k, len - k)?;
    Ok(node_hash(&left, &right))
}

/// The largest power of two strictly below `n` (`n` at least 2).
fn split64(n: u64) -> u64 {
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// The head of the stored tree at `size` leaves.
pub fn root_at<S: Subtrees>(src: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_root(src, 0, size)
}

/// The inclusion proof of leaf `index` in the stored tree at `size` leaves; `None` if
/// `index` is not below `size`.
pub fn inclusion_proof_at<S: Subtrees>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Option<Vec<Hash>>, S::Error> {
    if index >= size {
        return Ok(None);
    }
    let mut proof = Vec::new();
    // Walk down from the whole tree, collecting siblings root side first.
    let (mut start, mut len, mut m) = (0u64, size, index);
    while len > 1 {
        let k = split64(len);
        if m < k {
            proof.push(range_root(src, start + k, len - k)?);
            len = k;
        } else {
            proof.push(range_root(src, start, k)?);
            start += k;
            len -= k;
            m -= k;
        }
    }
    proof.reverse();
    Ok(Some(proof))
}

/// The consistency proof between the stored tree's sizes `first` and `second`; `None`
/// if `first` exceeds `second`.
pub fn consistency_proof_at<S: Subtrees>(
    src: &S,
    first: u64,
    second: u64,
) -> Result<Option<Vec<Hash>>, S::Error> {
    if first > second {
        return Ok(None);
    }
    let mut proof = Vec::new();
    if first == 0 || first == second {
        return Ok(Some(proof));
    }
    // SUBPROOF(m, D[start, start+len), whole), iteratively, root side first.
    let (mut start, mut len, mut m, mut whole) = (0u64, second, first, true);
    loop {
        if m == len {
            if !whole {
                proof.push(range_root(src, start, len)?);
            }
            break;
        }
        let k = split64(len);
        if m <= k {
            proof.push(range_root(src, start + k, len - k)?);
            len = k;
        } else {
            proof.push(range_root(src, start, k)?);
            start += k;
            len -= k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(Some(proof))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Hash {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    // Known answers from Certificate Transparency's reference test data (the
    // certificate-transparency C++ and Go implementations use the same eight leaves).
    const ENTRIES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves() -> Vec<Hash> {
        ENTRIES.iter().map(|e| leaf_hash(e)).collect()
    }

    #[test]
    fn tree_heads_match_the_reference() {
        assert_eq!(
            empty_root(),
            unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let l = leaves();
        for n in 1..=8 {
            assert_eq!(root(&l[..n]), unhex(ROOTS[n - 1]), "size {n}");
        }
    }

    #[test]
    fn inclusion_proofs_match_the_reference() {
        let tree = Tree::new(leaves()).unwrap();
        let cases: [(u64, [&str; 3]); 2] = [
            (
                0,
                [
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                [
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, expected) in cases {
            let proof = tree.inclusion_proof(index).unwrap();
            assert_eq!(proof, expected.map(unhex).to_vec(), "leaf {index}");
            verify_inclusion(
                &leaves()[index as usize],
                index,
                8,
                &proof,
                &unhex(ROOTS[7]),
            )
            .unwrap();
        }
        assert!(tree.inclusion_proof(8).is_none());
    }

    #[test]
    fn consistency_proofs_match_the_reference() {
        let cases: [(u64, &[&str]); 2] = [
            (
                2,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        let l = leaves();
        for (first, expected) in cases {
            let proof = consistency_proof(&l, first).unwrap();
            assert_eq!(
                proof,
                expected.iter().map(|h| unhex(h)).collect::<Vec<_>>(),
                "from {first}"
            );
            verify_consistency(
                first,
                8,
                &unhex(ROOTS[first as usize - 1]),
                &unhex(ROOTS[7]),
                &proof,
            )
            .unwrap();
        }
        assert!(consistency_proof(&l, 9).is_none());
    }

    #[test]
    fn degenerate_consistency_cases() {
        let l = leaves();
        let (r4, r8) = (root(&l[..4]), root(&l));
        verify_consistency(4, 4, &r4, &r4, &[]).unwrap();
        assert_eq!(
            verify_consistency(4, 4, &r4, &r8, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(4, 4, &r4, &r4, &[r4]),
            Err(ProofError::WrongLength(1))
        );
        verify_consistency(0, 8, &empty_root(), &r8, &[]).unwrap();
        assert!(verify_consistency(0, 8, &r4, &r8, &[]).is_err());
        assert_eq!(
            verify_consistency(8, 4, &r8, &r4, &[]),
            Err(ProofError::SizesOutOfOrder {
                first: 8,
                second: 4
            })
        );
        assert_eq!(
            verify_consistency(6, 8, &root(&l[..6]), &r8, &[]),
            Err(ProofError::WrongLength(0))
        );
    }

    fn many(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn every_proof_in_small_trees_verifies_and_mangled_ones_do_not() {
        let all = many(40);
        for n in 1..=all.len() {
            let l = &all[..n];
            let tree = Tree::new(l.to_vec()).unwrap();
            let head = root(l);
            assert_eq!(tree.root(), head);
            for i in 0..n as u64 {
                let proof = tree.inclusion_proof(i).unwrap();
                verify_inclusion(&l[i as usize], i, n as u64, &proof, &head).unwrap();
                if let Some(last) = proof.len().checked_sub(1) {
                    let mut bad = proof.clone();
                    bad[last][0] ^= 1;
                    assert!(verify_inclusion(&l[i as usize], i, n as u64, &bad, &head).is_err());
                    assert!(
                        verify_inclusion(&l[i as usize], i, n as u64, &proof[..last], &head)
                            .is_err()
                    );
                }
                let mut longer = proof.clone();
                longer.push([0xab; 32]);
                assert!(verify_inclusion(&l[i as usize], i, n as u64, &longer, &head).is_err());
                if n > 1 {
                    let other = (i + 1) % n as u64;
                    assert!(
                        verify_inclusion(&l[i as usize], other, n as u64, &proof, &head).is_err()
                    );
                }
            }
            for m in 0..=n as u64 {
                let proof = consistency_proof(l, m).unwrap();
                let first_root = root(&l[..m as usize]);
                verify_consistency(m, n as u64, &first_root, &head, &proof).unwrap();
                if let Some(last) = proof.len().checked_sub(1) {
                    let mut bad = proof.clone();
                    bad[last][31] ^= 0x80;
                    assert!(verify_consistency(m, n as u64, &first_root, &head, &bad).is_err());
                    assert!(
                        verify_consistency(m, n as u64, &first_root, &head, &proof[..last])
                            .is_err()
                    );
                }
            }
        }
    }

    /// Complete subtrees computed from the leaves, as a store would hold them.
    struct Stored(Vec<Hash>);

    impl Subtrees for Stored {
        type Error = String;
        fn subtree(&self, level: u32, index: u64) -> Result<Hash, String> {
            let from = (index << level) as usize;
            let to = from + (1usize << level);
            if to > self.0.len() {
                return Err(format!("subtree {level}/{index} is not complete"));
            }
            Ok(root(&self.0[from..to]))
        }
    }

    #[test]
    fn stored_subtrees_give_the_same_heads_and_proofs() {
        let all = many(70);
        let stored = Stored(all.clone());
        for n in 0..=all.len() {
            let l = &all[..n];
            assert_eq!(root_at(&stored, n as u64).unwrap(), root(l), "size {n}");
            if n > 0 {
                let tree = Tree::new(l.to_vec()).unwrap();
                for i in 0..n as u64 {
                    assert_eq!(
                        inclusion_proof_at(&stored, i, n as u64).unwrap(),
                        tree.inclusion_proof(i),
                        "leaf {i} of {n}"
                    );
                }
            }
            assert_eq!(
                inclusion_proof_at(&stored, n as u64, n as u64).unwrap(),
                None
            );
            for m in 0..=n as u64 {
                assert_eq!(
                    consistency_proof_at(&stored, m, n as u64).unwrap(),
                    consistency_proof(l, m),
                    "{m} to {n}"
                );
            }
            assert_eq!(
                consistency_proof_at(&stored, n as u64 + 1, n as u64).unwrap(),
                None
            );
        }
        // A frontier fed the same leaves agrees at every size and names each complete
        // subtree as it closes.
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            for (level, index, hash) in frontier.push(*leaf) {
                assert_eq!(Ok(hash), stored.subtree(level, index), "{level}/{index}");
            }
            assert_eq!(frontier.size(), i as u64 + 1);
            assert_eq!(frontier.root(), root(&all[..=i]));
            assert_eq!(Frontier::at(&stored, i as u64 + 1).unwrap(), frontier);
        }
        // The reference vectors, through the store.
        let reference = Stored(leaves());
        assert_eq!(root_at(&reference, 8).unwrap(), unhex(ROOTS[7]));
    }

    proptest! {
        #[test]
        fn no_proof_verifies_a_leaf_that_is_not_there(n in 1usize..200, i in 0usize..200, j in 0usize..200) {
            let l = many(n);
            let (i, j) = (i % n, j % n);
            let tree = Tree::new(l.clone()).unwrap();
            let proof = tree.inclusion_proof(i as u64).unwrap();
            let stranger = leaf_hash(b"not in the tree");
            prop_assert!(verify_inclusion(&stranger, i as u64, n as u64, &proof, &tree.root()).is_err());
            if i != j {
                prop_assert!(verify_inclusion(&l[j], i as u64, n as u64, &proof, &tree.root()).is_err());
            }
        }
    }
}
