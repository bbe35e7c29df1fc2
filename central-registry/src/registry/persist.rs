//! How the registry's state is kept: loaded from the store, changed by computing a
//! change on a copy and writing it against the version the copy was made from, and
//! reloaded when another registry node changed it first (see `store`).

use super::*;

/// How often a change refused because another node changed the state first is
/// computed again from the newer state.
pub(super) const MAX_CONFLICTS: usize = 10;

/// Why a change was not written.
pub(super) enum Applied {
    /// Another registry node changed the state first: compute the change again.
    Conflict,
    Failed(RegistryError),
}

/// Everything loaded from the store.
pub(super) struct Loaded {
    pub state: State,
    pub latest: Vec<u8>,
    pub refusals: BTreeSet<(String, u64)>,
    pub pending: pending::PendingSet,
    pub generations: Vec<GenerationRec>,
}

/// Reads everything the registry keeps from `store`.
pub(super) fn load(store: &dyn RegistryStore) -> Result<Loaded> {
    let mut state = State::default();
    let mut latest = Vec::new();
    let mut refusals = BTreeSet::new();
    let mut pending = pending::PendingSet::default();
    let mut generations = Vec::new();
    for Stored {
        key,
        value,
        version,
    } in store.load().map_err(internal)?
    {
        let (kind, id) = key.split_once('/').unwrap_or((key.as_str(), ""));
        match kind {
            keys::MEMBER => {
                let m: MemberRec = decode(&key, &value)?;
                state.members.insert(m.id.clone(), m);
            }
            keys::SERVER => {
                let s: ServerRec = decode(&key, &value)?;
                state.servers.insert(s.id.clone(), s);
            }
            keys::REGISTRATION => {
                let r: RegistrationRec = decode(&key, &value)?;
                if r.state == RegState::Pending {
                    pending.insert(r);
                } else {
                    state.registrations.insert(r.request_id.clone(), r);
                }
            }
            keys::GROUP => {
                let g: GroupRec = decode(&key, &value)?;
                state.groups.insert(g.code.clone(), g);
            }
            keys::TOKEN => {
                let t: TokenRec = decode(&key, &value)?;
                state.tokens.insert(t.hash.clone(), t);
            }
            keys::CATALOGUE => {
                let c: CatalogueRec = decode(&key, &value)?;
                state.catalogue.insert(c.server, c.services);
            }
            keys::DESCRIPTOR => {
                state.descriptors.insert(id.to_owned(), Arc::new(value));
            }
            keys::TSA => {
                let t: TsaRec = decode(&key, &value)?;
                state.tsas.insert(t.name.clone(), t);
            }
            keys::ADMIN_CERT => {
                let c: IssuedCert = decode(&key, &value)?;
                state.admin_certs.insert(c.serial.clone(), c);
            }
            keys::AUDIT => {
                let seq = u64::from_str_radix(id, 16).unwrap_or(0);
                state.audit_seq = state.audit_seq.max(seq + 1);
            }
            // Read when needed (see `witness`).
            keys::WITNESS => {}
            keys::META if key == Key::State.to_string() => state.version = version,
            // Evidence of a forked log, kept for the administrators.
            keys::WITNESS_REFUSAL => {
                if let Some((origin, held)) = id.rsplit_once('/')
                    && let Ok(held) = u64::from_str_radix(held, 16)
                {
                    refusals.insert((origin.to_owned(), held));
                }
            }
            keys::GENERATION => generations.push(decode::<GenerationRec>(&key, &value)?),
            keys::CONF => {
                let m: ConfMeta = decode(&key, &value)?;
                state.conf_serial = m.serial;
                latest = lintas_certs::unhex(&m.blob_hex)
                    .ok_or_else(|| internal("stored global configuration is not hexadecimal"))?;
            }
            other => return Err(internal(format!("unknown record kind '{other}'"))),
        }
    }
    Ok(Loaded {
        state,
        latest,
        refusals,
        pending,
        generations,
    })
}

impl Registry {
    /// Takes the stored state in place of the one held (another registry node changed
    /// it). Called with the state lock held.
    pub(super) fn reload(&self, state: &mut State) -> Result<()> {
        let loaded = load(&*self.store)?;
        *state = loaded.state;
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded.latest);
        *self
            .witness_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = loaded.refusals;
        *self.pending_set() = loaded.pending;
        *self.generations.lock().unwrap_or_else(|p| p.into_inner()) = loaded.generations;
        tracing::debug!(
            version = state.version,
            serial = state.conf_serial,
            "registry state reloaded"
        );
        Ok(())
    }

    /// Catches up with changes other registry nodes stored (a no-op on one node).
    /// True when something was reloaded.
    pub fn sync(&self) -> Result<bool> {
        if self.poisoned.load(Ordering::SeqCst) && self.store.reload_recovers() {
            // After a failed write: the database, once it answers, says what happened.
            let mut state = self.lock();
            self.reload(&mut state)?;
            self.poisoned.store(false, Ordering::SeqCst);
            tracing::warn!(
                version = state.version,
                "the registry database answers again; state reloaded and changes accepted"
            );
            return Ok(true);
        }
        let stored = self
            .store
            .get(&Key::State.to_string())
            .map_err(internal)?
            .map_or(0, |s| s.version);
        let mut state = self.lock();
        if stored == state.version {
            return Ok(false);
        }
        self.reload(&mut state)?;
        Ok(true)
    }

    /// Applies `mutate` to a copy of the state, writes the records (with, when `publish`
    /// says so, a newly signed configuration) and an audit entry in one durable batch,
    /// then swaps the copy in. Returns `mutate`'s value and the configuration serial in
    /// force afterwards.
    ///
    /// If the store fails, what reached the disk is unknown (a batch may be applied but
    /// not flushed), so the registry refuses further changes until it is restarted and
    /// reloads the state from disk.
    pub(super) fn commit<T>(
        &self,
        actor: &str,
        publish: Publish,
        mutate: impl Fn(&mut State, &mut Change) -> Result<(T, String)>,
    ) -> Result<(T, u64)> {
        self.refuse_if_poisoned()?;
        let mut guard = self.lock();
        for _ in 0..MAX_CONFLICTS {
            let mut next = guard.clone();
            let mut change = Change::default();
            let (out, action) = mutate(&mut next, &mut change)?;
            let published = match publish {
                Publish::Yes => Some(self.publish_into(&mut next, &mut change, actor, &action)?),
                Publish::No => None,
            };
            self.audit(&mut next, &mut change, actor, &action)?;
            let settle = std::mem::take(&mut change.settle);
            match self.apply_state(&mut next, change) {
                Ok(()) => {}
                Err(Applied::Conflict) => {
                    self.reload(&mut guard)?;
                    continue;
                }
                Err(Applied::Failed(e)) => return Err(e),
            }
            *guard = next;
            if !settle.is_empty() {
                let mut pending = self.pending_set();
                for id in &settle {
                    pending.remove(id);
                }
            }
            if let Some((blob, generation)) = published {
                *self.latest.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(blob);
                self.remember_generation(generation);
            }
            tracing::info!(actor, action = %action, serial = guard.conf_serial, "registry change");
            return Ok((out, guard.conf_serial));
        }
        Err(RegistryError::Unavailable(
            "other registry nodes kept changing the state; try again".into(),
        ))
    }

    pub(super) fn refuse_if_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(RegistryError::Internal(if self.store.reload_recovers() {
                "an earlier write to the registry database failed; changes are refused until it answers again".into()
            } else {
                "an earlier write to the registry database failed; restart the registry to reload its state".into()
            }));
        }
        Ok(())
    }

    /// Adds the audit record of `action` to a change of `state`.
    pub(super) fn audit(
        &self,
        state: &mut State,
        change: &mut Change,
        actor: &str,
        action: &str,
    ) -> Result<()> {
        let seq = state.audit_seq;
        state.audit_seq += 1;
        change.put(
            Key::Audit(seq).into(),
            &AuditRec {
                at: self.now(),
                actor: actor.to_owned(),
                action: action.to_owned(),
            },
        )
    }

    /// Writes a change computed from `state`, if no other node changed the state since;
    /// raises `state`'s version. A failed write poisons the registry: what reached the
    /// database is unknown, so changes are refused until it restarts and reloads.
    pub(super) fn apply_state(
        &self,
        state: &mut State,
        mut change: Change,
    ) -> std::result::Result<(), Applied> {
        change.put_raw(
            Key::State.into(),
            state.conf_serial.to_string().into_bytes(),
        );
        let expect = [Expect {
            key: Key::State.into(),
            version: state.version,
        }];
        match self.store.apply(&expect, change.puts) {
            Ok(()) => {
                state.version += 1;
                Ok(())
            }
            Err(ApplyError::Conflict { .. }) => Err(Applied::Conflict),
            Err(ApplyError::Store(e)) => {
                self.poisoned.store(true, Ordering::SeqCst);
                tracing::error!(error = %e, "registry database write failed; refusing changes until restart");
                Err(Applied::Failed(internal(e)))
            }
        }
    }
}
