//! Batch signatures: one signature over the Merkle root of every header signed at the
//! same moment, each header carrying its inclusion proof (see
//! `proto/lintas/exchange/v1/exchange.proto`). A header signed alone is a batch of one.

use lintas_certs::Signer;
use lintas_merkle::Hash;
use lintas_proto::exchange::v1::BatchSignature;

/// Signature domain of batch roots.
pub const BATCH_DOMAIN: &str = "lintas/batch/v1";
/// Most headers one signature covers (a proof then has at most 10 hashes).
pub const MAX_BATCH: usize = 1024;

/// The leaf hash of `header` signed in `domain`: SHA-256(0x00 || domain || 0x00 || header).
pub fn leaf(domain: &str, header: &[u8]) -> Hash {
    let mut entry = Vec::with_capacity(domain.len() + 1 + header.len());
    entry.extend_from_slice(domain.as_bytes());
    entry.push(0);
    entry.extend_from_slice(header);
    lintas_merkle::leaf_hash(&entry)
}

/// Signs a batch of leaf hashes; returns each leaf's signature, in order.
pub fn sign_leaves(key: &dyn Signer, leaves: Vec<Hash>) -> Result<Vec<BatchSignature>, String> {
    let size = leaves.len() as u64;
    let tree = lintas_merkle::Tree::new(leaves).ok_or("nothing to sign")?;
    let value =
        lintas_certs::sig::sign(key, BATCH_DOMAIN, &tree.root()).map_err(|e| e.to_string())?;
    (0..size)
        .map(|i| {
            let path = tree
                .inclusion_proof(i)
                .ok_or("leaf index out of range")?
                .iter()
                .map(|h| h.to_vec())
                .collect();
            Ok(BatchSignature {
                value: value.clone(),
                leaf_index: i,
                tree_size: size,
                path,
            })
        })
        .collect()
}

/// Signs one header on its own (a batch of one).
pub fn sign_one(key: &dyn Signer, domain: &str, header: &[u8]) -> Result<BatchSignature, String> {
    sign_leaves(key, vec![leaf(domain, header)])?
        .pop()
        .ok_or_else(|| "no signature made".into())
}

/// The batch root a signature claims for `header`, from its inclusion proof.
pub fn claimed_root(domain: &str, header: &[u8], sig: &BatchSignature) -> Result<Hash, String> {
    if sig.tree_size == 0 || sig.tree_size > MAX_BATCH as u64 {
        return Err(format!(
            "batch of {} headers (1 to {MAX_BATCH} allowed)",
            sig.tree_size
        ));
    }
    let path = lintas_merkle::hashes_from(&sig.path)
        .ok_or_else(|| "inclusion proof holds a hash that is not 32 bytes".to_string())?;
    lintas_merkle::root_from_inclusion(&leaf(domain, header), sig.leaf_index, sig.tree_size, &path)
        .map_err(|e| format!("inclusion proof: {e}"))
}

/// Checks that `sig` covers `header` in `domain` and was made with `public_key`, without
/// any memory of earlier checks (for auditors and tools).
pub fn verify(
    public_key: &[u8],
    domain: &str,
    header: &[u8],
    sig: &BatchSignature,
) -> Result<(), String> {
    let root = claimed_root(domain, header, sig)?;
    lintas_certs::sig::verify(public_key, BATCH_DOMAIN, &root, &sig.value)
        .map_err(|_| "signature does not verify".into())
}
