//! Batch signatures: one signature over the Merkle root of every header signed at the
//! same moment, each header carrying its inclusion proof (see
//! `proto/lintas/exchange/v1/exchange.proto`). Under load one ECDSA signature serves a
//! whole batch, and the receiving server verifies it once: a root it has verified is
//! remembered, so the other headers of the batch cost a few hashes each. A header signed
//! alone is a batch of one, at the cost of a single signature as before.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lintas_certs::SharedSigner;
use lintas_merkle::Hash;
use lintas_proto::exchange::v1::BatchSignature;
use tokio::sync::oneshot;

pub use lintas_wire::batch::{
    BATCH_DOMAIN, MAX_BATCH, claimed_root, leaf, sign_leaves, sign_one, verify,
};

/// Rounds a caller signs for others before handing the work to a task of its own.
const MAX_ROUNDS: usize = 4;
/// Verified roots remembered; beyond it the memory starts over.
const MAX_VERIFIED_ROOTS: usize = 4096;

/// Batch roots whose signature this server has verified, by the hash of public key,
/// root and signature.
#[derive(Default)]
pub struct VerifiedRoots(Mutex<HashSet<Hash>>);

impl VerifiedRoots {
    /// [`verify`], skipping the signature check for a root verified before.
    pub fn verify(
        &self,
        public_key: &[u8],
        domain: &str,
        header: &[u8],
        sig: &BatchSignature,
    ) -> Result<(), String> {
        let root = claimed_root(domain, header, sig)?;
        let mut id = Vec::with_capacity(public_key.len() + 32 + sig.value.len());
        id.extend_from_slice(public_key);
        id.extend_from_slice(&root);
        id.extend_from_slice(&sig.value);
        let id = lintas_certs::sha256(&id);
        if self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
        {
            return Ok(());
        }
        lintas_certs::sig::verify(public_key, BATCH_DOMAIN, &root, &sig.value)
            .map_err(|_| "signature does not verify".to_string())?;
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_VERIFIED_ROOTS {
            known.clear();
        }
        known.insert(id);
        Ok(())
    }
}

type Waiter = oneshot::Sender<Result<BatchSignature, String>>;

/// Signs headers in batches with one key. Whoever asks while no batch is being signed
/// signs at once, for itself and for everyone who asked meanwhile; there is no timer
/// and no waiting for a batch to fill, so a lone call costs one signature and no delay.
#[derive(Clone)]
pub struct BatchSigner(Arc<Signer>);

struct Signer {
    key: SharedSigner,
    state: Mutex<Queue>,
    counts: Arc<Counts>,
}

/// Signatures made and headers they covered: kept across a switch to renewed keys.
#[derive(Default)]
struct Counts {
    signatures: AtomicU64,
    headers: AtomicU64,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Hash, Waiter)>,
    /// Someone is signing and will take `waiting` when done.
    busy: bool,
}

impl BatchSigner {
    pub fn new(key: SharedSigner) -> Self {
        Self::counting(key, Arc::default())
    }

    fn counting(key: SharedSigner, counts: Arc<Counts>) -> Self {
        BatchSigner(Arc::new(Signer {
            key,
            state: Mutex::new(Queue::default()),
            counts,
        }))
    }

    /// A signer for a renewed key that goes on counting where this one is. Batches this
    /// one has begun are finished with its own key.
    pub fn renewed(&self, key: SharedSigner) -> Self {
        Self::counting(key, self.0.counts.clone())
    }

    /// Signatures made and headers they covered, since the start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.0.counts.signatures.load(Ordering::Relaxed),
            self.0.counts.headers.load(Ordering::Relaxed),
        )
    }

    /// Signs `header` in `domain`, possibly together with others.
    pub async fn sign(&self, domain: &str, header: &[u8]) -> Result<BatchSignature, String> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut q = self.0.lock();
            q.waiting.push((leaf(domain, header), tx));
            !std::mem::replace(&mut q.busy, true)
        };
        if lead {
            // Let tasks that are ready to run reach this point first: under load they
            // join the batch; when idle, nothing is ready and this costs nothing. If this
            // call is dropped meanwhile (its caller gave up), the guard still leads, so
            // the others are not left waiting.
            let guard = Leader(Some(self.0.clone()));
            tokio::task::yield_now().await;
            drop(guard);
        }
        rx.await
            .map_err(|_| "the batch signer stopped".to_string())?
    }
}

/// Leads when dropped: the one who took leadership signs, however its call ends.
struct Leader(Option<Arc<Signer>>);

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(signer) = self.0.take() {
            if signer.key.blocking() {
                signer.lead_elsewhere();
            } else {
                signer.lead();
            }
        }
    }
}

impl Signer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Signs what is waiting, round after round, until nothing is; after a few rounds
    /// the work moves to a task of its own, so that the caller who started it is not
    /// held up signing for everyone else.
    fn lead(self: Arc<Self>) {
        for _ in 0..MAX_ROUNDS {
            let batch = {
                let mut q = self.lock();
                if q.waiting.is_empty() {
                    q.busy = false;
                    return;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect::<Vec<_>>()
            };
            let (leaves, waiters): (Vec<Hash>, Vec<Waiter>) = batch.into_iter().unzip();
            self.counts.signatures.fetch_add(1, Ordering::Relaxed);
            self.counts
                .headers
                .fetch_add(leaves.len() as u64, Ordering::Relaxed);
            match sign_leaves(&*self.key, leaves) {
                Ok(sigs) => {
                    for (w, s) in waiters.into_iter().zip(sigs) {
                        let _ = w.send(Ok(s));
                    }
                }
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        }
        self.lead_elsewhere();
    }

    /// Leads on a task of its own: on the blocking pool for a key that may wait on a
    /// device (a token), so that no asynchronous task waits with it.
    fn lead_elsewhere(self: Arc<Self>) {
        if self.key.blocking() {
            tokio::task::spawn_blocking(move || self.lead());
        } else {
            tokio::spawn(async move { self.lead() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_signature_verifies_for_its_own_header_only() {
        let key = lintas_certs::keys::generate().unwrap();
        let pk = key.public_key_raw().to_vec();
        let headers: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40]).collect();
        let sigs = sign_leaves(
            &key,
            headers
                .iter()
                .map(|h| leaf("lintas/request/v1", h))
                .collect(),
        )
        .unwrap();
        assert!(
            sigs.iter()
                .all(|s| s.value == sigs[0].value && s.tree_size == 5)
        );
        let roots = VerifiedRoots::default();
        for (h, s) in headers.iter().zip(&sigs) {
            verify(&pk, "lintas/request/v1", h, s).unwrap();
            roots.verify(&pk, "lintas/request/v1", h, s).unwrap();
        }
        // Another header, another domain, another leaf position, a damaged signature.
        let err = |r: Result<(), String>| r.unwrap_err();
        assert_eq!(
            err(roots.verify(&pk, "lintas/request/v1", &headers[1], &sigs[0])),
            "signature does not verify"
        );
        assert_eq!(
            err(roots.verify(&pk, "lintas/response/v1", &headers[0], &sigs[0])),
            "signature does not verify"
        );
        let mut moved = sigs[2].clone();
        moved.leaf_index = 3;
        assert!(
            roots
                .verify(&pk, "lintas/request/v1", &headers[2], &moved)
                .is_err()
        );
        let mut damaged = sigs[4].clone();
        let n = damaged.value.len();
        damaged.value[n - 2] ^= 1;
        assert!(verify(&pk, "lintas/request/v1", &headers[4], &damaged).is_err());
        let mut short = sigs[0].clone();
        short.path[0].pop();
        assert!(err(verify(&pk, "lintas/request/v1", &headers[0], &short)).contains("32 bytes"));
        let mut huge = sigs[0].clone();
        huge.tree_size = u64::MAX;
        assert!(err(verify(&pk, "lintas/request/v1", &headers[0], &huge)).contains("batch of"));
        let other = lintas_certs::keys::generate().unwrap();
        assert!(
            verify(
                other.public_key_raw(),
                "lintas/request/v1",
                &headers[0],
                &sigs[0]
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn a_leader_that_gives_up_still_signs_for_the_others() {
        let key = lintas_certs::keys::generate().unwrap();
        let pk = key.public_key_raw().to_vec();
        let signer = BatchSigner::new(std::sync::Arc::new(key));
        // The first caller becomes the leader and is dropped at its first await.
        let mut first = Box::pin(signer.sign("lintas/request/v1", b"abandoned"));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(signer.0.lock().busy, "the first caller leads");
        drop(first);
        assert!(!signer.0.lock().busy, "leadership was handed back");
        let sig = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            signer.sign("lintas/request/v1", b"next"),
        )
        .await
        .expect("a later caller is not left waiting")
        .unwrap();
        verify(&pk, "lintas/request/v1", b"next", &sig).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_waiting_during_a_signature_share_the_next_one() {
        let key = lintas_certs::keys::generate().unwrap();
        let pk = key.public_key_raw().to_vec();
        let signer = BatchSigner::new(std::sync::Arc::new(key));
        // As if a batch were being signed: everyone who asks now waits for the next.
        signer.0.lock().busy = true;
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let signer = signer.clone();
                tokio::spawn(async move {
                    let header = i.to_be_bytes().to_vec();
                    let sig = signer.sign("lintas/response/v1", &header).await.unwrap();
                    (header, sig)
                })
            })
            .collect();
        while signer.0.lock().waiting.len() < 200 {
            tokio::task::yield_now().await;
        }
        // The batch in progress ends; its signer takes everything waiting.
        signer.0.clone().lead();
        let mut signatures = HashSet::new();
        for t in tasks {
            let (header, sig) = t.await.unwrap();
            verify(&pk, "lintas/response/v1", &header, &sig).unwrap();
            assert_eq!(sig.tree_size, 200);
            signatures.insert(sig.value);
        }
        assert_eq!(
            signatures.len(),
            1,
            "one signature for the 200 waiting headers"
        );
        assert!(!signer.0.lock().busy);
        // Alone, a header is a batch of one.
        let alone = signer.sign("lintas/response/v1", b"alone").await.unwrap();
        assert_eq!((alone.tree_size, alone.path.len()), (1, 0));
        verify(&pk, "lintas/response/v1", b"alone", &alone).unwrap();
    }
}
