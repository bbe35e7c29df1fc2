//! Checkpoints: a server's signed statement of its log's size and tree head, and a
//! witness's cosignature over it. Both are signed over exact encoded bytes with their
//! own signature domains.

use lintas_merkle::Hash;
use prost::Message;

pub use lintas_proto::log::v1::{Checkpoint, Cosignature, Cosigned, SignedCheckpoint};

/// Signature domain of checkpoints (the server's log key).
pub const CHECKPOINT_DOMAIN: &str = "lintas/checkpoint/v1";
/// Signature domain of cosignatures (the witness's key).
pub const COSIGNATURE_DOMAIN: &str = "lintas/cosignature/v1";
/// Largest encoded checkpoint accepted.
pub const MAX_CHECKPOINT_BYTES: usize = 1024;

/// Signs `checkpoint` with a log key.
pub fn sign(
    key: &dyn lintas_certs::Signer,
    checkpoint: &Checkpoint,
) -> Result<SignedCheckpoint, lintas_certs::CertError> {
    let bytes = checkpoint.encode_to_vec();
    Ok(SignedCheckpoint {
        signature: lintas_certs::sig::sign(key, CHECKPOINT_DOMAIN, &bytes)?,
        checkpoint: bytes,
        cosignatures: Vec::new(),
    })
}

/// A checkpoint whose signature verified, with its tree head as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub checkpoint: Checkpoint,
    pub root: Hash,
}

/// Checks a signed checkpoint against the log key its origin's server has (an
/// uncompressed P-256 point, as the global configuration lists it).
pub fn verify(signed: &SignedCheckpoint, log_public_key: &[u8]) -> Result<Verified, String> {
    if signed.checkpoint.len() > MAX_CHECKPOINT_BYTES {
        return Err(format!(
            "checkpoint of {} bytes (at most {MAX_CHECKPOINT_BYTES})",
            signed.checkpoint.len()
        ));
    }
    if log_public_key.is_empty() {
        return Err("the server has no log key in the global configuration".into());
    }
    lintas_certs::sig::verify(
        log_public_key,
        CHECKPOINT_DOMAIN,
        &signed.checkpoint,
        &signed.signature,
    )
    .map_err(|_| "checkpoint signature does not verify with the server's log key".to_string())?;
    let checkpoint = Checkpoint::decode(signed.checkpoint.as_slice())
        .map_err(|e| format!("checkpoint is malformed: {e}"))?;
    let root = Hash::try_from(checkpoint.root.as_slice())
        .map_err(|_| "checkpoint root is not 32 bytes".to_string())?;
    Ok(Verified { checkpoint, root })
}

/// A witness's cosignature over the checkpoint bytes `checkpoint`.
pub fn cosign(
    key: &dyn lintas_certs::Signer,
    cert: &[u8],
    witness: &str,
    time_unix_ms: i64,
    checkpoint: &[u8],
) -> Result<Cosignature, lintas_certs::CertError> {
    let cosigned = Cosigned {
        witness: witness.to_owned(),
        time_unix_ms,
        checkpoint_sha256: lintas_certs::sha256(checkpoint).to_vec(),
    }
    .encode_to_vec();
    Ok(Cosignature {
        signature: lintas_certs::sig::sign(key, COSIGNATURE_DOMAIN, &cosigned)?,
        cosigned,
        signer_cert: cert.to_vec(),
    })
}

/// Checks that `cosignature` was made with `witness_public_key` over the checkpoint
/// bytes `checkpoint`; returns what the witness stated.
pub fn verify_cosignature(
    cosignature: &Cosignature,
    witness_public_key: &[u8],
    checkpoint: &[u8],
) -> Result<Cosigned, String> {
    lintas_certs::sig::verify(
        witness_public_key,
        COSIGNATURE_DOMAIN,
        &cosignature.cosigned,
        &cosignature.signature,
    )
    .map_err(|_| "cosignature does not verify".to_string())?;
    let cosigned = Cosigned::decode(cosignature.cosigned.as_slice())
        .map_err(|e| format!("cosignature is malformed: {e}"))?;
    if cosigned.checkpoint_sha256 != lintas_certs::sha256(checkpoint) {
        return Err("the cosignature is for another checkpoint".into());
    }
    Ok(cosigned)
}

/// Checks a cosignature made by the registry of `instance`: its certificate chains to
/// `trust` as the configuration-signing certificate of that instance at the time the
/// cosignature states, and it signs the checkpoint bytes `checkpoint`.
pub fn verify_witness(
    cosignature: &Cosignature,
    trust: &lintas_certs::TrustStore,
    instance: &lintas_identifiers::Code,
    checkpoint: &[u8],
) -> Result<Cosigned, String> {
    let claimed = Cosigned::decode(cosignature.cosigned.as_slice())
        .map_err(|e| format!("cosignature is malformed: {e}"))?;
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(claimed.time_unix_ms).unwrap_or(0));
    let info = trust
        .verify(&cosignature.signer_cert, lintas_certs::Role::GlobalConf, at)
        .map_err(|e| format!("the witness certificate is not the registry's: {e}"))?;
    let registry = lintas_certs::Identity::GlobalConf {
        instance: instance.clone(),
    };
    if info.identity != registry {
        return Err(format!(
            "cosigned by {}, not the registry of {instance}",
            info.identity
        ));
    }
    verify_cosignature(cosignature, &info.public_key, checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_and_cosignatures_verify_only_as_made() {
        let log_key = lintas_certs::keys::generate().unwrap();
        let cp = Checkpoint {
            origin: "ID/GOV/KEMENDAGRI/SS1".into(),
            size: 7,
            root: vec![9; 32],
            time_unix_ms: 1_700_000_000_000,
        };
        let signed = sign(&log_key, &cp).unwrap();
        let v = verify(&signed, log_key.public_key_raw()).unwrap();
        assert_eq!((v.checkpoint, v.root), (cp.clone(), [9; 32]));

        let other = lintas_certs::keys::generate().unwrap();
        assert!(verify(&signed, other.public_key_raw()).is_err());
        assert!(verify(&signed, &[]).unwrap_err().contains("no log key"));
        let mut changed = signed.clone();
        changed.checkpoint[3] ^= 1;
        assert!(verify(&changed, log_key.public_key_raw()).is_err());
        let short = sign(
            &log_key,
            &Checkpoint {
                root: vec![1; 31],
                ..cp
            },
        )
        .unwrap();
        assert!(
            verify(&short, log_key.public_key_raw())
                .unwrap_err()
                .contains("32 bytes")
        );

        let witness = lintas_certs::keys::generate().unwrap();
        let c = cosign(&witness, b"cert", "ID", 5, &signed.checkpoint).unwrap();
        let stated = verify_cosignature(&c, witness.public_key_raw(), &signed.checkpoint).unwrap();
        assert_eq!((stated.witness.as_str(), stated.time_unix_ms), ("ID", 5));
        assert!(
            verify_cosignature(&c, witness.public_key_raw(), &short.checkpoint)
                .unwrap_err()
                .contains("another checkpoint")
        );
        // A checkpoint signature is not a cosignature, and the reverse.
        let as_cosig = Cosignature {
            cosigned: signed.checkpoint.clone(),
            signature: signed.signature.clone(),
            signer_cert: Vec::new(),
        };
        assert!(
            verify_cosignature(&as_cosig, log_key.public_key_raw(), &signed.checkpoint).is_err()
        );
    }
}
