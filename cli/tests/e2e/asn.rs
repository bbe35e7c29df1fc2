//! Civil-servant (ASN) records from a BKN-style SQL database, behind the SQL adapter
//! example (`examples/adapters/bkn-sql.toml`), called through the bus: by NIP, by NIK,
//! an agency's list, and the refusals a consumer meets.

use lintas_examples::bkn::v1::kepegawaian_client::KepegawaianClient;
use lintas_examples::bkn::v1::{CariAsnNikRequest, CariAsnRequest, DaftarAsnRequest};

use super::adapters::{example_config, http, publish, serve_adapter};
use super::*;

const BKN: &str = "bkn.v1.Kepegawaian";

fn as_consumer<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    req.metadata_mut()
        .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn civil_servants_are_looked_up_in_a_bkn_database_through_the_sql_adapter() {
    let mut net = network().await;
    let db = net.inst.root.join("asn.db");
    lintas_examples::asn_db::create_sqlite(&db).unwrap();
    let database = format!("sqlite:{}", db.display());
    let config = example_config(&net.inst.root, "bkn-sql.toml", "", |t| {
        t.replace("sqlite:../sql/asn.db", &database)
    });
    let endpoint = serve_adapter(&config, &mut net._stops).await;
    let methods = publish(&net, BKN, &endpoint).await;
    assert_eq!(methods, ["CariAsn", "CariAsnNik", "DaftarAsn"]);
    let mut bkn = KepegawaianClient::new(plain_channel(&net.consumer_url).await.unwrap());

    let siti = bkn
        .cari_asn(as_consumer(CariAsnRequest {
            nip: "198705232010012001".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            siti.nama.as_str(),
            siti.nama_instansi.as_str(),
            siti.golongan.as_str(),
            siti.status.as_str()
        ),
        ("Siti Rahayu", "Kementerian Sosial", "III/c", "AKTIF")
    );
    // By NIK, as a social-assistance check asks whether an applicant is a civil servant.
    let made = bkn
        .cari_asn_nik(as_consumer(CariAsnNikRequest {
            nik: "5171011201650003".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (made.nip.as_str(), made.status.as_str()),
        ("196501121990031001", "PENSIUN")
    );
    let not_one = bkn
        .cari_asn_nik(as_consumer(CariAsnNikRequest {
            nik: "3174019999990009".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(not_one.code(), Code::NotFound, "{not_one:?}");

    // An agency's civil servants in service, by name.
    let kemensos = bkn
        .daftar_asn(as_consumer(DaftarAsnRequest {
            instansi: "4011".into(),
            aktif_saja: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = kemensos.asn.iter().map(|a| a.nama.as_str()).collect();
    assert_eq!(
        names,
        ["Nur Aini", "Siti Rahayu"],
        "on leave is not in service"
    );

    // The same through the X-Road-style REST entry, as an X-Road client asks it.
    let address = net.consumer_url.trim_start_matches("http://").to_owned();
    let (status, _, body) = http(
        &address,
        "POST",
        &format!("/r1/{PROVIDER_CLIENT}/{BKN}/CariAsn"),
        &[("X-Road-Client", CONSUMER_CLIENT)],
        r#"{"nip": "199208172019031002"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let budi: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(budi["nama"], "Budi Santoso");
    assert_eq!(budi["jabatan"], "Pranata Komputer Ahli Pertama");

    // Another subsystem of the consumer's member was granted nothing.
    let mut other = as_consumer(CariAsnRequest {
        nip: "198705232010012001".into(),
    });
    other
        .metadata_mut()
        .insert("lintas-client", OTHER_CLIENT.parse().unwrap());
    let refused = bkn.cari_asn(other).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(source(&refused), "provider-server");
}
