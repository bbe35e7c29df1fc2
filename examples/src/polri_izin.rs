use std::collections::BTreeMap;
use std::future::Future;

use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::incoming;
use crate::lintas_events::v1::PublishRequest;
use crate::lintas_events::v1::events_client::EventsClient;
use crate::polri::v1::perizinan_server::{Perizinan, PerizinanServer};
use crate::polri::v1::{Izin, Keputusan, LihatRequest, Permohonan};

/// The topic each change of a permit's status is published on.
pub const TOPIC: &str = "polri.v1.StatusIzin";

/// Where the permit office publishes: its own security server's consumer endpoint, as
/// its subsystem.
pub struct Bus {
    channel: Channel,
    publisher: String,
}

impl Bus {
    /// `consumer_url`: the security server's consumer endpoint (plaintext on loopback,
    /// `dev_plaintext_loopback`); `publisher`: the office's subsystem.
    pub fn new(consumer_url: &str, publisher: &str) -> Result<Self, String> {
        let channel = tonic::transport::Endpoint::from_shared(consumer_url.to_owned())
            .map_err(|e| format!("{consumer_url}: {e}"))?
            .connect_lazy();
        Ok(Bus {
            channel,
            publisher: publisher.to_owned(),
        })
    }

    async fn publish(&self, izin: &Izin) -> Result<(), Status> {
        let mut request = Request::new(PublishRequest {
            topic: TOPIC.into(),
            key: izin.id.clone(),
            payload: izin.encode_to_vec(),
        });
        let publisher = self
            .publisher
            .parse()
            .map_err(|_| Status::internal("the publisher is not valid metadata"))?;
        request.metadata_mut().insert("lintas-client", publisher);
        EventsClient::new(self.channel.clone())
            .publish(request)
            .await
            .map(|_| ())
            .map_err(|e| {
                Status::unavailable(format!(
                    "the change of permit {} could not be published: {}",
                    izin.id,
                    e.message()
                ))
            })
    }
}

/// The permit office: every permit, the last id given out, and the bus its changes are
/// published on.
pub struct Kantor {
    izin: Mutex<(BTreeMap<String, Izin>, u64)>,
    bus: Bus,
}

impl Kantor {
    pub fn new(bus: Bus) -> Self {
        Kantor {
            izin: Mutex::new((BTreeMap::new(), 0)),
            bus,
        }
    }
}

/// The subsystem a call came through the bus for (`lintas-client`), if it did.
fn through_bus<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("lintas-client")
        .and_then(|v| v.to_str().ok())
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether a permit in status `from` may go to `to`.
pub fn may_go(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("DIAJUKAN", "DIPROSES" | "DISETUJUI" | "DITOLAK") | ("DIPROSES", "DISETUJUI" | "DITOLAK")
    )
}

#[tonic::async_trait]
impl Perizinan for Kantor {
    async fn ajukan(&self, request: Request<Permohonan>) -> Result<Response<Izin>, Status> {
        let Some(pemohon) = through_bus(&request) else {
            return Err(Status::unauthenticated(
                "an application comes through the bus, which names the applicant",
            ));
        };
        let p = request.into_inner();
        if p.jenis.is_empty() || p.jenis.len() > 64 || p.uraian.len() > 4096 {
            return Err(Status::invalid_argument(
                "jenis is 1 to 64 characters, uraian at most 4096",
            ));
        }
        // The change is published before it is kept: an applicant never misses one.
        let mut office = self.izin.lock().await;
        // An id is never given twice, even to an application whose event was published
        // and which was then lost.
        office.1 += 1;
        let izin = Izin {
            id: format!("IZN-{:06}", office.1),
            jenis: p.jenis,
            pemohon,
            uraian: p.uraian,
            status: "DIAJUKAN".into(),
            catatan: String::new(),
            diubah_unix: now_unix(),
        };
        self.bus.publish(&izin).await?;
        office.0.insert(izin.id.clone(), izin.clone());
        Ok(Response::new(izin))
    }

    async fn putuskan(&self, request: Request<Keputusan>) -> Result<Response<Izin>, Status> {
        if let Some(client) = through_bus(&request) {
            return Err(Status::permission_denied(format!(
                "permits are decided by officers on the police's own network, not by {client}"
            )));
        }
        let k = request.into_inner();
        let mut office = self.izin.lock().await;
        let all = &mut office.0;
        let Some(current) = all.get(&k.id) else {
            return Err(Status::not_found(format!("no permit {}", k.id)));
        };
        if !may_go(&current.status, &k.status) {
            return Err(Status::failed_precondition(format!(
                "permit {} is {}: it cannot become {}",
                k.id, current.status, k.status
            )));
        }
        let izin = Izin {
            status: k.status,
            catatan: k.catatan,
            diubah_unix: now_unix(),
            ..current.clone()
        };
        self.bus.publish(&izin).await?;
        all.insert(izin.id.clone(), izin.clone());
        Ok(Response::new(izin))
    }

    async fn lihat(&self, request: Request<LihatRequest>) -> Result<Response<Izin>, Status> {
        let asker = through_bus(&request);
        let id = request.into_inner().id;
        let office = self.izin.lock().await;
        // Through the bus an agency sees its own permits only.
        match office.0.get(&id) {
            Some(izin) if asker.as_ref().is_none_or(|a| *a == izin.pemohon) => {
                Ok(Response::new(izin.clone()))
            }
            _ => Err(Status::not_found(format!("no permit {id}"))),
        }
    }
}

/// Serves the office on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    kantor: Kantor,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(PerizinanServer::new(kantor))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_decided_permit_stays_decided() {
        let cases = [
            ("DIAJUKAN", "DIPROSES", true),
            ("DIAJUKAN", "DISETUJUI", true),
            ("DIAJUKAN", "DITOLAK", true),
            ("DIPROSES", "DISETUJUI", true),
            ("DIPROSES", "DIAJUKAN", false),
            ("DIPROSES", "DIPROSES", false),
            ("DISETUJUI", "DITOLAK", false),
            ("DITOLAK", "DISETUJUI", false),
            ("DIAJUKAN", "HILANG", false),
        ];
        for (from, to, ok) in cases {
            assert_eq!(super::may_go(from, to), ok, "{from} -> {to}");
        }
    }
}
