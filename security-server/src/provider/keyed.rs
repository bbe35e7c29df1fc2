//! Idempotency keys at the provider: what a key makes of an accepted request, and
//! keeping the application's answer for the key's repeats.

use super::*;

/// What an idempotency key makes of an accepted request: `None` without a key; the
/// first under its key (held durably before the application sees it) or a repeat; a
/// refusal, recorded and answered.
pub(super) async fn keyed(
    s: &Arc<Provider>,
    accepted: &Accepted,
    signed: &ex::SignedRequest,
    ctx: &Context,
) -> Result<Option<Begun>, Status> {
    let h = &accepted.header;
    if h.idempotency_key.is_empty() {
        return Ok(None);
    }
    let side = ErrorSource::ProviderServer;
    let idem = s.idempotency.clone();
    let now = s.recorder.now_ms();
    let (client, service, method) = (
        accepted.client.to_string(),
        accepted.method.service.to_string(),
        accepted.method.method.clone(),
    );
    let (provider, key, body, id) = (
        h.service_provider.clone(),
        h.idempotency_key.clone(),
        h.body_sha256.clone(),
        h.message_id.clone(),
    );
    let decided = tokio::task::spawn_blocking(move || {
        idem.begin(
            &Keyed {
                client: &client,
                provider: &provider,
                service: &service,
                key: &key,
                method: &method,
                body_sha256: &body,
                message_id: &id,
            },
            now,
        )
    })
    .await
    .map_err(|e| {
        error(
            Code::Internal,
            side,
            format!("idempotency task failed: {e}"),
        )
    })?
    .map_err(|e| {
        not_delivered(error(
            Code::Internal,
            side,
            format!("idempotency keys: {e}"),
        ))
    })?;
    match decided {
        Ok(begun) => Ok(Some(begun)),
        Err(why) => {
            let refusal = checks::idempotency_refusal(why, &h.idempotency_key);
            Err(refused(s, signed, refusal, ctx.peer_cert_sha256.clone()).await)
        }
    }
}

/// Keeps the application's answer to the first request under a key for its repeats;
/// lets the key go when the request never reached the application (`None`: it was not
/// even recorded).
pub(super) async fn settle(s: &Provider, ticket: Ticket, answer: Option<&AppAnswer>) {
    let idem = s.idempotency.clone();
    let kept = answer.filter(|a| !a.unsent).map(|a| Kept {
        code: a.code as i32,
        message: a.message.clone(),
        body: a.body.clone(),
        by_server: a.by_server,
    });
    let done = tokio::task::spawn_blocking(move || match kept {
        Some(kept) => idem.finish(ticket, kept),
        None => idem.release(ticket),
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "keeping an idempotency key's answer failed"),
        Err(e) => tracing::error!(error = %e, "keeping an idempotency key's answer failed"),
    }
}
