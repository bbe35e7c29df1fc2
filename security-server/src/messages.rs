//! What both sides of a stream do with its messages: the sender chains, signs and
//! records each before it leaves; the receiver, once the signature is verified, chains
//! and records each before passing it on. Bodies are kept like those of unary
//! exchanges.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use lintas_log::RecordKind;
use lintas_proto::exchange::v1 as ex;
use tonic::{Code, Status};

use crate::chain::{Chain, MESSAGE_DOMAIN};
use crate::envelope::Context;
use crate::errors::{ErrorSource, error};
use crate::own::OwnKeys;
use crate::recorder::Recorder;

/// The next message of `chain` (an end when `end`, with no body), signed with this
/// server's member key and durably recorded: ready to send.
pub(crate) async fn sign_next(
    keys: &OwnKeys,
    recorder: &Arc<Recorder>,
    ctx: &Context,
    chain: &mut Chain,
    body: &Bytes,
    end: bool,
    side: ErrorSource,
) -> Result<ex::SignedMessage, Status> {
    let (message, durable) = sign_soon(keys, recorder, ctx, chain, body, end, None, side).await?;
    durable.await?;
    Ok(message)
}

/// The next message of `chain`, signed (its header carrying `rest`, the first of a REST
/// answer's chunks), and its record handed to the log: the future resolves once the
/// record is durable and the body kept. Records become durable in the order they are
/// handed over.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn sign_soon(
    keys: &OwnKeys,
    recorder: &Arc<Recorder>,
    ctx: &Context,
    chain: &mut Chain,
    body: &Bytes,
    end: bool,
    rest: Option<ex::RestResponse>,
    side: ErrorSource,
) -> Result<
    (
        ex::SignedMessage,
        impl Future<Output = Result<u64, Status>> + Send + use<>,
    ),
    Status,
> {
    let body_sha256 = lintas_certs::sha256(body);
    let header = chain
        .next_with((body_sha256, body.len()), recorder.now_ms(), end, rest)
        .map_err(|e| error(Code::Internal, side, e))?;
    let signature = keys
        .signer
        .sign(MESSAGE_DOMAIN, &header)
        .await
        .map_err(|e| error(Code::Internal, side, format!("signing a message: {e}")))?;
    let durable = recorder.record_soon(
        ctx.record(
            RecordKind::MessageSent,
            recorder.now_ms(),
            &header,
            Some(&signature),
            &keys.sign_cert,
            &body_sha256,
            body.len() as u64,
            Code::Ok,
            "",
        ),
        side,
    )?;
    let message = ex::SignedMessage {
        header,
        signature: Some(signature),
        signer_cert: Vec::new(),
        body: body.clone(),
        secret_headers: Vec::new(),
    };
    Ok((message, kept_when_durable(recorder, durable, body)))
}

/// Records a received message whose signature by `signer_cert` the caller verified and
/// whose place in `chain` was accepted (`header`).
pub(crate) async fn record_received(
    recorder: &Arc<Recorder>,
    ctx: &Context,
    m: &ex::SignedMessage,
    header: &ex::MessageHeader,
    signer_cert: &[u8],
    side: ErrorSource,
) -> Result<(), Status> {
    record_received_soon(recorder, ctx, m, header, signer_cert, side)?.await?;
    Ok(())
}

/// [`record_received`], the record handed to the log: the future resolves once it is
/// durable and the body kept.
pub(crate) fn record_received_soon(
    recorder: &Arc<Recorder>,
    ctx: &Context,
    m: &ex::SignedMessage,
    header: &ex::MessageHeader,
    signer_cert: &[u8],
    side: ErrorSource,
) -> Result<impl Future<Output = Result<u64, Status>> + Send + use<>, Status> {
    let durable = recorder.record_soon(
        ctx.record(
            RecordKind::MessageReceived,
            recorder.now_ms(),
            &m.header,
            m.signature.as_ref(),
            signer_cert,
            &header.body_sha256,
            header.body_len,
            Code::Ok,
            "",
        ),
        side,
    )?;
    Ok(kept_when_durable(recorder, durable, &m.body))
}

/// Once `durable` resolves, keeps `body` beside the record (held meanwhile only when
/// bodies are kept).
fn kept_when_durable<F>(
    recorder: &Arc<Recorder>,
    durable: F,
    body: &Bytes,
) -> impl Future<Output = Result<u64, Status>> + Send + use<F>
where
    F: Future<Output = Result<u64, Status>> + Send + 'static,
{
    let kept = recorder
        .keeps_bodies()
        .then(|| (recorder.clone(), body.clone()));
    async move {
        let index = durable.await?;
        if let Some((recorder, body)) = kept {
            recorder.keep_bodies(&[(index, &body)]);
        }
        Ok(index)
    }
}
