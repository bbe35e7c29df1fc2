//! The registry as witness of the security servers' logs: it keeps the newest checkpoint
//! of each log, accepts a newer one only with a consistency proof from it, and cosigns
//! what it accepts. A server therefore cannot show one history to the witness and
//! another to anybody else; an inconsistent checkpoint is refused and kept as evidence.

use lintas_log::checkpoint::{self, Cosignature, SignedCheckpoint};
use lintas_proto::registry::v1::AddCheckpointRequest;
use prost::Message;

use super::*;

/// Clock difference allowed between a checkpoint's time and the registry's.
const CHECKPOINT_SKEW_MS: i64 = 5 * 60 * 1000;
/// Most hashes a consistency proof can need (two per tree level).
const MAX_PROOF_HASHES: usize = 128;

/// The newest checkpoint witnessed for one log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WitnessRec {
    pub origin: String,
    pub size: u64,
    pub root_hex: String,
    /// The encoded `SignedCheckpoint`, with this registry's cosignature.
    pub signed_hex: String,
}

/// An inconsistent checkpoint, kept as evidence.
#[derive(Debug, Serialize, Deserialize)]
struct RefusalRec {
    origin: String,
    at: i64,
    reason: String,
    /// The encoded `SignedCheckpoint` the registry held, and the one refused.
    held_hex: String,
    offered_hex: String,
    offered_proof_hex: Vec<String>,
}

impl Registry {
    /// Checks, stores and cosigns a server's newest checkpoint (see the module docs).
    pub fn add_checkpoint(
        &self,
        peer_cert: Option<&[u8]>,
        req: AddCheckpointRequest,
    ) -> Result<Cosignature> {
        let server_id = self.peer_server(peer_cert, "handing in checkpoints")?;
        let log_key = {
            let state = self.lock();
            let server = state.servers.get(&server_id).ok_or_else(|| {
                RegistryError::PermissionDenied(format!("{server_id} is not a registered server"))
            })?;
            lintas_certs::unhex(&server.log_key_hex).unwrap_or_default()
        };
        let signed = req
            .checkpoint
            .ok_or_else(|| invalid("checkpoint", "missing"))?;
        // Whose log it claims to be decides who may hand it in, before anything else.
        let claimed = lintas_log::checkpoint::Checkpoint::decode(signed.checkpoint.as_slice())
            .map_err(|e| invalid("checkpoint", format!("malformed: {e}")))?;
        if claimed.origin != server_id.to_string() {
            return Err(RegistryError::PermissionDenied(format!(
                "the checkpoint is of {}'s log; {server_id} can only hand in its own",
                claimed.origin
            )));
        }
        let v = checkpoint::verify(&signed, &log_key).map_err(|e| invalid("checkpoint", e))?;
        let now_ms = self.now() * 1000;
        if v.checkpoint.time_unix_ms > now_ms + CHECKPOINT_SKEW_MS {
            return Err(invalid(
                "checkpoint",
                format!(
                    "dated {} ms ahead of the registry's clock",
                    v.checkpoint.time_unix_ms - now_ms
                ),
            ));
        }
        if req.consistency_proof.len() > MAX_PROOF_HASHES {
            return Err(invalid(
                "consistency_proof",
                format!("more than {MAX_PROOF_HASHES} hashes"),
            ));
        }
        let proof = lintas_merkle::hashes_from(&req.consistency_proof)
            .ok_or_else(|| invalid("consistency_proof", "a hash is not 32 bytes"))?;

        let origin = v.checkpoint.origin.clone();
        // One at a time on this node; another node is kept out by the record's version.
        let one_at_a_time = self.witnessing.lock().unwrap_or_else(|p| p.into_inner());
        let key = Key::Witness(&origin).to_string();
        let (held, held_version) = match self.store.get(&key).map_err(internal)? {
            Some(s) => (Some(decode::<WitnessRec>(&key, &s.value)?), s.version),
            None => (None, 0),
        };
        let (held_size, held_root) = match &held {
            Some(h) => (
                h.size,
                lintas_certs::unhex(&h.root_hex)
                    .and_then(|r| lintas_merkle::Hash::try_from(r.as_slice()).ok())
                    .ok_or_else(|| internal("stored witness root is damaged"))?,
            ),
            None => (0, lintas_merkle::empty_root()),
        };
        if req.old_size != held_size {
            return Err(RegistryError::FailedPrecondition(format!(
                "the registry holds the checkpoint of size {held_size} for {origin}; prove consistency from that size, not {}",
                req.old_size
            )));
        }
        if let Err(e) = lintas_merkle::verify_consistency(
            held_size,
            v.checkpoint.size,
            &held_root,
            &v.root,
            &proof,
        ) {
            let reason = format!(
                "checkpoint of size {} is not consistent with the one of size {held_size} the registry holds ({e}): the log was forked or rewritten",
                v.checkpoint.size
            );
            let refusal = RefusalRec {
                origin: origin.clone(),
                at: now_ms,
                reason: reason.clone(),
                held_hex: held.map(|h| h.signed_hex).unwrap_or_default(),
                offered_hex: lintas_certs::hex(&signed.encode_to_vec()),
                offered_proof_hex: proof.iter().map(|h| lintas_certs::hex(h)).collect(),
            };
            drop(one_at_a_time);
            // The first refusal against a held checkpoint is the evidence; repeats (a
            // server retrying) are not stored again.
            let first = self
                .witness_refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((origin.clone(), held_size));
            if first {
                let actor = format!("server {server_id}");
                self.commit(&actor, Publish::No, |_, change| {
                    change.put(Key::WitnessRefusal(&origin, held_size).into(), &refusal)?;
                    Ok((
                        (),
                        format!("witness refused a checkpoint of {origin}: {reason}"),
                    ))
                })?;
                tracing::error!(%origin, %reason, "witness refused an inconsistent checkpoint");
            }
            return Err(RegistryError::FailedPrecondition(reason));
        }
        if let Some(h) = held.filter(|h| h.size == v.checkpoint.size) {
            let stored = decode_signed(&h.signed_hex)?;
            if stored.checkpoint == signed.checkpoint {
                // The very checkpoint again: its cosignature stands.
                return stored
                    .cosignatures
                    .into_iter()
                    .next()
                    .ok_or_else(|| internal("stored checkpoint has no cosignature"));
            }
        }
        let cosignature = checkpoint::cosign(
            &*self.keys.conf_key,
            &self.keys.conf_cert,
            &self.policy.instance.to_string(),
            now_ms,
            &signed.checkpoint,
        )
        .map_err(internal)?;
        let mut stored = signed;
        stored.cosignatures = vec![cosignature.clone()];
        let rec = WitnessRec {
            origin: origin.clone(),
            size: v.checkpoint.size,
            root_hex: lintas_certs::hex(&v.root),
            signed_hex: lintas_certs::hex(&stored.encode_to_vec()),
        };
        let expect = [Expect {
            key: key.clone(),
            version: held_version,
        }];
        let put = Put {
            key,
            value: Some(serde_json::to_vec(&rec).map_err(internal)?),
        };
        match self.store.apply(&expect, vec![put]) {
            Ok(()) => Ok(cosignature),
            Err(ApplyError::Conflict { .. }) => Err(RegistryError::Unavailable(format!(
                "another registry node witnessed a checkpoint of {origin} at the same moment; hand in the newest again"
            ))),
            Err(ApplyError::Store(e)) => Err(internal(e)),
        }
    }

    /// The newest checkpoint witnessed for `origin`, with its cosignature.
    pub fn witnessed(&self, origin: &str) -> Result<SignedCheckpoint> {
        let key = Key::Witness(origin).to_string();
        let stored = self.store.get(&key).map_err(internal)?.ok_or_else(|| {
            RegistryError::NotFound(format!("no checkpoint of {origin} has been witnessed"))
        })?;
        decode_signed(&decode::<WitnessRec>(&key, &stored.value)?.signed_hex)
    }
}

fn decode_signed(hex: &str) -> Result<SignedCheckpoint> {
    let bytes = lintas_certs::unhex(hex).ok_or_else(|| internal("stored checkpoint is damaged"))?;
    SignedCheckpoint::decode(bytes.as_slice()).map_err(internal)
}
