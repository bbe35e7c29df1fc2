//! What both sides of a stream do with its messages: the sender chains, signs and
//! records each before it leaves; the receiver, once the signature is verified, chains
//! and records each before passing it on. Bodies are kept like those of unary
//! exchanges.

use lintas_log::RecordKind;
use lintas_proto::exchange::v1 as ex;
use tonic::{Code, Status};

use crate::chain::{Chain, MESSAGE_DOMAIN};
use crate::envelope::Context;
use crate::errors::{ErrorSource, error};
use crate::own::Own;
use crate::recorder::Recorder;

/// The next message of `chain` (an end when `end`, with no body), signed with this
/// server's member key and durably recorded: ready to send.
pub(crate) async fn sign_next(
    own: &Own,
    recorder: &Recorder,
    ctx: &Context,
    chain: &mut Chain,
    body: &[u8],
    end: bool,
    side: ErrorSource,
) -> Result<ex::SignedMessage, Status> {
    let header = chain
        .next(body, recorder.now_ms(), end)
        .map_err(|e| error(Code::Internal, side, e))?;
    let signature = own
        .signer
        .sign(MESSAGE_DOMAIN, &header)
        .await
        .map_err(|e| error(Code::Internal, side, format!("signing a message: {e}")))?;
    let index = recorder
        .record(
            ctx.record(
                RecordKind::MessageSent,
                recorder.now_ms(),
                &header,
                Some(&signature),
                &own.sign_cert,
                &lintas_certs::sha256(body),
                body.len() as u64,
                Code::Ok,
                "",
            ),
            side,
        )
        .await?;
    recorder.keep_bodies(&[(index, body)]);
    Ok(ex::SignedMessage {
        header,
        signature: Some(signature),
        signer_cert: Vec::new(),
        body: body.to_vec(),
    })
}

/// Records a received message whose signature by `signer_cert` the caller verified and
/// whose place in `chain` was accepted (`header`).
pub(crate) async fn record_received(
    recorder: &Recorder,
    ctx: &Context,
    m: &ex::SignedMessage,
    header: &ex::MessageHeader,
    signer_cert: &[u8],
    side: ErrorSource,
) -> Result<(), Status> {
    let index = recorder
        .record(
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
        )
        .await?;
    recorder.keep_bodies(&[(index, &m.body)]);
    Ok(())
}
