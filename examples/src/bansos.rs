use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tower::ServiceExt;

use crate::bpjs::v1::CekPesertaRequest;
use crate::bpjs::v1::kepesertaan_client::KepesertaanClient;
use crate::dukcapil::v1::CariKeluargaRequest;
use crate::dukcapil::v1::kependudukan_client::KependudukanClient;

/// The provider subsystem of each service.
pub struct Providers {
    pub dukcapil: String,
    pub bpjs: String,
    pub dapodik: String,
}

/// What was found about one member of the household.
pub struct Member {
    pub nik: String,
    pub nama: String,
    /// (status, state-paid, class) of the JKN membership, if any.
    pub jkn: Option<(String, bool, i32)>,
    /// (school, grade) of an active pupil.
    pub school: Option<(String, i64)>,
    /// The message id the school database was asked under.
    pub school_message_id: String,
}

pub struct Assessment {
    pub no_kk: String,
    pub head: String,
    pub members: Vec<Member>,
}

impl Assessment {
    /// Illustrative rule: a household whose contributions the state pays is on the
    /// welfare list and receives PKH; each active pupil adds an education component.
    pub fn eligible(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.jkn.as_ref().is_some_and(|j| j.1))
    }

    pub fn pupils(&self) -> usize {
        self.members.iter().filter(|m| m.school.is_some()).count()
    }
}

impl std::fmt::Display for Assessment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "family card {} (head {}), {} living members:",
            self.no_kk,
            self.head,
            self.members.len()
        )?;
        for m in &self.members {
            let jkn = match &m.jkn {
                Some((status, true, class)) => {
                    format!("JKN {status}, state-paid, class {class}")
                }
                Some((status, false, class)) => format!("JKN {status}, class {class}"),
                None => "no JKN membership".into(),
            };
            let school = match &m.school {
                Some((name, grade)) => format!("pupil at {name}, grade {grade}"),
                None => "not a pupil".into(),
            };
            writeln!(f, "  {} ({}): {jkn}; {school}", m.nama, m.nik)?;
        }
        write!(
            f,
            "PKH: {}; education components: {}",
            if self.eligible() {
                "eligible"
            } else {
                "not eligible"
            },
            self.pupils()
        )
    }
}

fn call<T>(message: T, client: &str, provider: &str) -> Result<Request<T>, String> {
    let mut r = Request::new(message);
    for (k, v) in [("lintas-client", client), ("lintas-service", provider)] {
        r.metadata_mut()
            .insert(k, v.parse().map_err(|_| format!("{k} '{v}' is not ASCII"))?);
    }
    Ok(r)
}

/// POSTs `body` to the X-Road-style REST entry; returns the status, the request id
/// and the JSON answer.
async fn rest(
    channel: &Channel,
    path: &str,
    client: &str,
    body: Value,
) -> Result<(u16, String, Value), String> {
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("x-road-client", client)
        .header("content-type", "application/json")
        .body(tonic::body::Body::new(
            Full::new(Bytes::from(body.to_string())).map_err(|e| match e {}),
        ))
        .map_err(|e| e.to_string())?;
    let response = channel
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| format!("REST call {path}: {e}"))?;
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-road-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("REST call {path}: {e}"))?
        .to_bytes();
    let json = serde_json::from_slice(&bytes)
        .map_err(|e| format!("REST call {path}: the answer is not JSON: {e}"))?;
    Ok((status, id, json))
}

/// Assesses the household of family card `no_kk`, calling as `client` through the
/// security server at the other end of `channel`.
pub async fn assess(
    channel: Channel,
    client: &str,
    providers: &Providers,
    no_kk: &str,
) -> Result<Assessment, String> {
    let family = KependudukanClient::new(channel.clone())
        .cari_keluarga(call(
            CariKeluargaRequest {
                no_kk: no_kk.into(),
                aktif_saja: true,
            },
            client,
            &providers.dukcapil,
        )?)
        .await
        .map_err(|s| format!("Dukcapil: {}", s.message()))?
        .into_inner();
    let mut members = Vec::new();
    for p in family.anggota {
        let jkn = match KepesertaanClient::new(channel.clone())
            .cek_peserta(call(
                CekPesertaRequest { nik: p.nik.clone() },
                client,
                &providers.bpjs,
            )?)
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                Some((r.status, r.pbi, r.kelas_rawat))
            }
            // BPJS answers a fault for someone who is not a member.
            Err(s) if s.code() == Code::InvalidArgument => None,
            Err(s) => return Err(format!("BPJS: {}", s.message())),
        };
        let path = format!("/r1/{}/dapodik.v1.Sekolah/CariSiswa", providers.dapodik);
        let (status, id, answer) =
            rest(&channel, &path, client, serde_json::json!({ "nik": p.nik })).await?;
        let school = match status {
            200 if answer["aktif"] == Value::Bool(true) => Some((
                answer["sekolah"].as_str().unwrap_or("").to_owned(),
                answer["tingkat"].as_i64().unwrap_or(0),
            )),
            200 => None,
            // The database's own "no row": not a pupil (a 404 of the bus is an error).
            404 if answer["type"] == "Service.NotFound" => None,
            _ => {
                return Err(format!(
                    "school database: HTTP {status}: {} {}",
                    answer["type"], answer["message"]
                ));
            }
        };
        members.push(Member {
            nik: p.nik,
            nama: p.nama,
            jkn,
            school,
            school_message_id: id,
        });
    }
    Ok(Assessment {
        no_kk: family.no_kk,
        head: family.kepala_keluarga,
        members,
    })
}
