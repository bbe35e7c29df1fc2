//! The demo's payment step: the state treasury's PNBP register joins on a security server
//! of its own; social assistance pays a bill under an idempotency key, sends the same
//! payment again (as after a lost answer) and gets the first payment's proof, paid once.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lintas_examples::pnbp::v1::pembayaran_client::PembayaranClient;
use lintas_examples::pnbp::v1::{BayarRequest, BuktiBayar};
use lintas_examples::pnbp_kas::Kas;
use tokio::net::TcpListener;

use super::events::Local;
use super::legacy::{join, publish};
use super::{AdminClient, DTKS, app_channel};

const TREASURY_SERVER: &str = "ID/GOV/KEMENKEU/SS1";
const TREASURY: &str = "ID/GOV/KEMENKEU/PNBP";
const SERVICE: &str = "pnbp.v1.Pembayaran";
const KEY: &str = "bansos-2026-12-0001";

/// Pays `jumlah` under the idempotency key: the proof, the message id the answer was
/// signed under, and the one it repeats, if any.
async fn pay(
    caller: &Local<'_>,
    jumlah: i64,
) -> Result<(BuktiBayar, String, Option<String>), tonic::Status> {
    let channel = app_channel(caller.url, caller.cert, caller.app).await?;
    let mut request = tonic::Request::new(BayarRequest {
        kode_billing: "820261207000123".into(),
        jumlah,
        rekening: "1234567890".into(),
    });
    for (k, v) in [
        ("lintas-client", DTKS),
        ("lintas-service", TREASURY),
        ("lintas-idempotency-key", KEY),
    ] {
        let v = v.parse().map_err(|_| tonic::Status::internal("metadata"))?;
        request.metadata_mut().insert(k, v);
    }
    let answer = PembayaranClient::new(channel).bayar(request).await?;
    let header = |name: &str| {
        answer
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (id, repeats) = (
        header("lintas-message-id").unwrap_or_default(),
        header("lintas-repeats-message-id"),
    );
    Ok((answer.into_inner(), id, repeats))
}

pub(super) async fn paid_once(
    root: &Path,
    anchor: &Path,
    admin: &mut AdminClient,
    running: &mut crate::network::Running,
    caller: Local<'_>,
) -> Result<()> {
    let treasury = join(
        root,
        anchor,
        admin,
        running,
        TREASURY_SERVER,
        TREASURY,
        "Kementerian Keuangan (state revenue)",
    )
    .await?;
    let kas = Arc::new(Kas::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = running.stopper();
    let register = kas.clone();
    running.tasks.push(tokio::spawn(async move {
        Ok(lintas_examples::pnbp_kas::serve(listener, register, stop).await?)
    }));
    println!("    {TREASURY_SERVER} enrols with a one-time token and starts");
    publish(&treasury.server, TREASURY, SERVICE, url).await?;
    caller.server.conf().fetch().await?;

    let (first, id, repeats) = pay(&caller, 150_000).await.context("the payment failed")?;
    println!(
        "    {DTKS} pays Rp 150.000 under idempotency key {KEY}: NTPN {} (exchange {id}){}",
        first.ntpn,
        repeats.map_or(String::new(), |r| format!(", repeating {r}"))
    );
    let (again, id_again, repeats) = pay(&caller, 150_000)
        .await
        .context("the repeated payment failed")?;
    if again != first || repeats.as_deref() != Some(id.as_str()) {
        bail!("the repeat was not answered with the first payment's proof");
    }
    println!(
        "    it sends the same payment again, as after a lost answer: the same NTPN {}, answered by the treasury's server without calling its register (exchange {id_again} repeats {id})",
        again.ntpn
    );
    let other = pay(&caller, 200_000)
        .await
        .err()
        .context("another payment under the same key was made")?;
    println!(
        "    another amount under the same key: refused: {:?}: {}",
        other.code(),
        other.message()
    );
    let made = kas.payments().len();
    if made != 1 {
        bail!("the register holds {made} payments, not one");
    }
    println!("    the treasury's register holds one payment");
    Ok(())
}
