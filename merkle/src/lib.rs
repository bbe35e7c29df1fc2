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

/// The largest power of two strictly below `n` (`n` at least 2).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
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
    let k = split(n);
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
