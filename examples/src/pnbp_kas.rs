use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tonic::{Request, Response, Status};

use crate::incoming;
use crate::pnbp::v1::pembayaran_server::{Pembayaran, PembayaranServer};
use crate::pnbp::v1::{BayarRequest, BuktiBayar, DaftarBayar, RiwayatRequest};

/// Holds payments before they are made, until released: a slow bank, for showing what
/// happens to a payment in flight.
pub struct Hold {
    /// Woken when a payment arrives and waits.
    pub arrived: Notify,
    /// One permit lets one waiting payment be made.
    pub release: Semaphore,
}

impl Default for Hold {
    fn default() -> Self {
        Hold {
            arrived: Notify::new(),
            release: Semaphore::new(0),
        }
    }
}

/// The state treasury's cash register: every payment made, in order.
#[derive(Default)]
pub struct Kas {
    paid: Mutex<Vec<BuktiBayar>>,
    hold: Option<Arc<Hold>>,
}

impl Kas {
    /// A register whose payments wait for `hold` to release them.
    pub fn holding(hold: Arc<Hold>) -> Self {
        Kas {
            paid: Mutex::new(Vec::new()),
            hold: Some(hold),
        }
    }

    /// Every payment made, in order.
    pub fn payments(&self) -> Vec<BuktiBayar> {
        self.paid.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn check(r: &BayarRequest) -> Result<(), Status> {
    if r.kode_billing.len() != 15 || !r.kode_billing.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Status::invalid_argument("kode_billing must be 15 digits"));
    }
    if r.jumlah <= 0 {
        return Err(Status::invalid_argument("jumlah must be more than zero"));
    }
    if r.rekening.is_empty() || r.rekening.len() > 34 {
        return Err(Status::invalid_argument(
            "rekening must be 1 to 34 characters",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Pembayaran for Arc<Kas> {
    async fn bayar(&self, request: Request<BayarRequest>) -> Result<Response<BuktiBayar>, Status> {
        let r = request.into_inner();
        check(&r)?;
        if let Some(hold) = &self.hold {
            hold.arrived.notify_one();
            hold.release
                .acquire()
                .await
                .map_err(|_| Status::unavailable("the register is closing"))?
                .forget();
        }
        let mut paid = self.paid.lock().unwrap_or_else(|p| p.into_inner());
        let waktu_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let bukti = BuktiBayar {
            ntpn: format!("{:016X}", 0x7A3B_0000_0000_0000_u64 + paid.len() as u64 + 1),
            kode_billing: r.kode_billing,
            jumlah: r.jumlah,
            waktu_unix,
        };
        paid.push(bukti.clone());
        Ok(Response::new(bukti))
    }

    async fn riwayat(
        &self,
        request: Request<RiwayatRequest>,
    ) -> Result<Response<DaftarBayar>, Status> {
        let kode = request.into_inner().kode_billing;
        let pembayaran = self
            .payments()
            .into_iter()
            .filter(|b| b.kode_billing == kode)
            .collect();
        Ok(Response::new(DaftarBayar { pembayaran }))
    }
}

/// Serves `kas` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    kas: Arc<Kas>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(PembayaranServer::new(kas))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}
