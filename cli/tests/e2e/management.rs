//! The security server's management REST API over HTTPS, called with curl as an
//! operator's script would: login sessions with CSRF tokens, API keys, roles, every
//! change in the admin audit log, evidence of a real call downloaded and verified.

use serde_json::{Value, json};

use super::rest_services::curl;
use super::*;

/// The provider's management API, called with curl trusting its own certificate.
struct Api {
    base: String,
    cacert: String,
    /// curl's cookie jar, for a session.
    jar: tempfile::NamedTempFile,
}

impl Api {
    fn new(net: &Network) -> Self {
        Api {
            base: format!("https://{}", net.provider_management),
            cacert: net.provider_paths.management_cert().display().to_string(),
            jar: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    /// `method path` with `extra` curl arguments; status, headers and body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        extra: &[String],
    ) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
        let jar = self.jar.path().display().to_string();
        let args = [
            vec![
                "--cacert".into(),
                self.cacert.clone(),
                "-b".into(),
                jar.clone(),
                "-c".into(),
                jar,
                "-X".into(),
                method.into(),
                format!("{}{path}", self.base),
            ],
            extra.to_vec(),
        ]
        .concat();
        curl(args).await
    }

    /// A JSON call: status and the JSON answer (Null when empty).
    async fn json(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut extra = auth.headers();
        if let Some(body) = body {
            extra.extend([
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                body.to_string(),
            ]);
        }
        let (status, _, body) = self.call(method, path, &extra).await;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
        };
        (status, value)
    }
}

/// How a call authenticates.
enum Auth {
    None,
    /// The session cookie in the jar, and the CSRF token (or none, to test refusal).
    Session(Option<String>),
    Key(String),
}

impl Auth {
    fn headers(&self) -> Vec<String> {
        match self {
            Auth::None | Auth::Session(None) => Vec::new(),
            Auth::Session(Some(csrf)) => vec!["-H".into(), format!("X-CSRF-Token: {csrf}")],
            Auth::Key(key) => vec!["-H".into(), format!("Authorization: Bearer {key}")],
        }
    }
}

const PASSWORD: &str = "kata sandi yang panjang";

#[tokio::test(flavor = "multi_thread")]
async fn the_management_api_is_authenticated_role_checked_and_audited() {
    let net = network().await;
    let users = net.provider.manage().plane.users.clone();
    users
        .add_user(
            "admin",
            PASSWORD,
            &[lintas_manage::Role::SystemAdministrator],
        )
        .unwrap();
    let api = Api::new(&net);

    // The OpenAPI document is generated from the handlers and names every operation.
    let (status, doc) = api
        .json("GET", "/api/v1/openapi.json", &Auth::None, None)
        .await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/api/v1/session",
        "/api/v1/users",
        "/api/v1/api-keys",
        "/api/v1/audit-log",
        "/api/v1/services",
        "/api/v1/grants",
        "/api/v1/quotas",
        "/api/v1/subscriptions",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters/redeliver",
        "/api/v1/dead-letters/discard",
        "/api/v1/client-certs",
        "/api/v1/maintenance",
        "/api/v1/configuration",
        "/api/v1/opmon",
        "/api/v1/evidence",
        "/api/v1/evidence/bundles",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not in the document");
    }
    assert!(doc["components"]["schemas"]["ServiceSpec"].is_object());

    // Nothing without credentials; security headers on every answer.
    let (status, headers, _) = api.call("GET", "/api/v1/services", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers["content-security-policy"].contains("frame-ancestors 'none'"));
    assert_eq!(headers["cache-control"], "no-store");
    let (status, e) = api
        .json(
            "POST",
            "/api/v1/session",
            &Auth::None,
            Some(json!({"name": "admin", "password": "not the password"})),
        )
        .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (401, Some("unauthenticated"))
    );

    // A session: the cookie is HttpOnly, Secure, SameSite=Strict and host-only.
    let (status, headers, body) = api
        .call(
            "POST",
            "/api/v1/session",
            &[
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                json!({"name": "admin", "password": PASSWORD}).to_string(),
            ],
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let cookie = &headers["set-cookie"];
    for part in [
        "__Host-lintas-session=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let session: Value = serde_json::from_slice(&body).unwrap();
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(session["roles"], json!(["system-administrator"]));

    // A change with the cookie alone (as a forged cross-site request would be) is
    // refused; with the session's token it is made.
    let rest = json!({"provider": PROVIDER_CLIENT, "service": "penduduk",
        "endpoint": "http://127.0.0.1:9/api", "rest": true});
    let (status, e) = api
        .json(
            "POST",
            "/api/v1/services",
            &Auth::Session(None),
            Some(rest.clone()),
        )
        .await;
    assert_eq!(status, 403, "{e}");
    assert!(e["message"].as_str().unwrap().contains("CSRF"), "{e}");
    let admin = Auth::Session(Some(csrf.clone()));
    let (status, added) = api
        .json("POST", "/api/v1/services", &admin, Some(rest))
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["service"]["rest"], json!(true));
    // Bad input gets a specific error: unknown fields, a subsystem not hosted here.
    let (status, e) = api
        .json(
            "POST",
            "/api/v1/services",
            &admin,
            Some(json!({"provider": PROVIDER_CLIENT, "service": "x", "endpoint": "http://a:1", "bogus": 1})),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {e}");
    let (status, e) = api
        .json(
            "POST",
            "/api/v1/grants",
            &admin,
            Some(json!({"provider": "ID/GOV/9/NOPE", "service": "penduduk", "subject": CONSUMER_CLIENT})),
        )
        .await;
    assert_eq!(status, 412, "{e}");
    assert!(e["message"].as_str().unwrap().contains("not hosted"), "{e}");
    let grant = json!({"provider": PROVIDER_CLIENT, "service": "penduduk",
        "subject": CONSUMER_CLIENT, "method": "GET", "path": "/persons/*"});
    let (status, g) = api
        .json("POST", "/api/v1/grants", &admin, Some(grant.clone()))
        .await;
    assert_eq!((status, &g), (201, &grant));
    let (status, _) = api
        .json("POST", "/api/v1/grants", &admin, Some(grant.clone()))
        .await;
    assert_eq!(status, 409);
    let (status, page) = api
        .json(
            "GET",
            "/api/v1/grants?filter=DUKCAPIL%20penduduk%20GET",
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"], json!([grant]));
    // Quotas: set (the burst defaults to the rate's calls), replaced, refused with the
    // field named, listed.
    let quota = json!({"provider": PROVIDER_CLIENT, "service": "penduduk",
        "method": "GET", "rate": "600/min"});
    let (status, q) = api
        .json("PUT", "/api/v1/quotas", &admin, Some(quota.clone()))
        .await;
    assert_eq!(status, 200, "{q}");
    assert_eq!(q["burst"], json!(600), "{q}");
    let quota = json!({"provider": PROVIDER_CLIENT, "service": "penduduk",
        "method": "GET", "rate": "10/s", "burst": 20});
    let (status, q) = api
        .json("PUT", "/api/v1/quotas", &admin, Some(quota.clone()))
        .await;
    assert_eq!((status, &q), (200, &quota));
    for (bad, field) in [
        (
            json!({"provider": PROVIDER_CLIENT, "service": "penduduk", "rate": "10/fortnight"}),
            "rate",
        ),
        (
            json!({"provider": PROVIDER_CLIENT, "service": "penduduk", "rate": "10/s", "client": "ID/GOV"}),
            "client",
        ),
        (
            json!({"provider": PROVIDER_CLIENT, "service": "penduduk", "rate": "10/s", "method": "GE T"}),
            "method",
        ),
        (
            json!({"provider": PROVIDER_CLIENT, "service": "penduduk", "rate": "10/s", "burst": 0}),
            "burst",
        ),
    ] {
        let (status, e) = api.json("PUT", "/api/v1/quotas", &admin, Some(bad)).await;
        assert_eq!(status, 400, "{e}");
        assert!(
            e["message"].as_str().unwrap().contains(field),
            "{field}: {e}"
        );
    }
    let (status, e) = api
        .json(
            "PUT",
            "/api/v1/quotas",
            &admin,
            Some(json!({"provider": PROVIDER_CLIENT, "service": "nope", "rate": "1/s"})),
        )
        .await;
    assert_eq!(status, 412, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("no service nope"),
        "{e}"
    );
    let (status, page) = api.json("GET", "/api/v1/quotas", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"], json!([quota]));

    // An auditor's API key reads but changes nothing.
    let (status, made) = api
        .json(
            "POST",
            "/api/v1/api-keys",
            &admin,
            Some(json!({"name": "ekspor malam", "roles": ["auditor"]})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    let auditor = Auth::Key(key.clone());
    let (status, page) = api.json("GET", "/api/v1/services", &auditor, None).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    let (status, e) = api
        .json(
            "DELETE",
            &format!(
                "/api/v1/grants?provider={PROVIDER_CLIENT}&service=penduduk&subject={CONSUMER_CLIENT}&method=GET&path=/persons/*"
            ),
            &auditor,
            None,
        )
        .await;
    assert_eq!(status, 403, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("needs the role"),
        "{e}"
    );
    let quota_url =
        format!("/api/v1/quotas?provider={PROVIDER_CLIENT}&service=penduduk&method=GET");
    let (status, _) = api.json("DELETE", &quota_url, &auditor, None).await;
    assert_eq!(status, 403);
    let (status, removed) = api.json("DELETE", &quota_url, &admin, None).await;
    assert_eq!((status, &removed), (200, &quota));
    let (status, _) = api.json("DELETE", &quota_url, &admin, None).await;
    assert_eq!(status, 404);

    // Dead letters: read by anyone signed in, redelivered or discarded by those who
    // administer services, each change audited; a subscription ended the same way.
    let topic = "kependudukan.v1.StatusPenduduk";
    net.provider
        .events()
        .subscribe(
            &lintas_ss::events::SubKey {
                publisher: PROVIDER_CLIENT.into(),
                topic: topic.into(),
                subscriber: CONSUMER_CLIENT.into(),
            },
            false,
        )
        .unwrap();
    let (status, letters) = api
        .json(
            "GET",
            &format!(
                "/api/v1/dead-letters?publisher={PROVIDER_CLIENT}&topic={topic}&subscriber={CONSUMER_CLIENT}"
            ),
            &auditor,
            None,
        )
        .await;
    assert_eq!((status, letters), (200, json!([])));
    let selection = |sequence: Option<u64>, publisher: &str| {
        let mut s = json!({"publisher": publisher, "topic": topic, "subscriber": CONSUMER_CLIENT});
        if let Some(n) = sequence {
            s["sequence"] = json!(n);
        }
        s
    };
    for (path, auth, body, want) in [
        ("redeliver", &auditor, selection(None, PROVIDER_CLIENT), 403),
        ("redeliver", &admin, selection(None, PROVIDER_CLIENT), 200),
        (
            "redeliver",
            &admin,
            selection(Some(7), PROVIDER_CLIENT),
            404,
        ),
        (
            "redeliver",
            &admin,
            selection(Some(0), PROVIDER_CLIENT),
            400,
        ),
        ("discard", &admin, selection(Some(7), PROVIDER_CLIENT), 404),
        // No subscription: nothing to redeliver to; letters of any can be discarded.
        ("redeliver", &admin, selection(None, CONSUMER_CLIENT), 412),
        ("discard", &admin, selection(None, CONSUMER_CLIENT), 200),
        ("discard", &admin, selection(None, "bukan/pengenal"), 400),
        (
            "discard",
            &admin,
            json!({"publisher": PROVIDER_CLIENT}),
            422,
        ),
    ] {
        let (status, answer) = api
            .json(
                "POST",
                &format!("/api/v1/dead-letters/{path}"),
                auth,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, want, "{path} {body}: {answer}");
        if want == 200 {
            assert_eq!(answer, json!({"count": 0}));
        }
    }
    let end = format!(
        "/api/v1/subscriptions?publisher={PROVIDER_CLIENT}&topic={topic}&subscriber={CONSUMER_CLIENT}"
    );
    let (status, _) = api.json("DELETE", &end, &auditor, None).await;
    assert_eq!(status, 403);
    let (status, ended) = api.json("DELETE", &end, &admin, None).await;
    assert_eq!(
        (status, &ended["subscriber"]),
        (200, &json!(CONSUMER_CLIENT))
    );
    let (status, _) = api.json("DELETE", &end, &admin, None).await;
    assert_eq!(status, 404);
    let (status, _) = api
        .json(
            "PUT",
            "/api/v1/maintenance",
            &auditor,
            Some(json!({"on": true, "reason": "x"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = api
        .json(
            "GET",
            "/api/v1/services",
            &Auth::Key(format!("{key}x")),
            None,
        )
        .await;
    assert_eq!(status, 401);

    let (status, conf) = api
        .json("GET", "/api/v1/configuration", &auditor, None)
        .await;
    assert_eq!(status, 200);
    assert!(
        conf["serial"].as_u64().unwrap() >= 1 && conf["servers"] == 2,
        "{conf}"
    );

    // A real call through the bus, found in operational monitoring and its evidence
    // downloaded and verified offline.
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let (status, page) = api
        .json(
            "GET",
            &format!("/api/v1/opmon?client={CONSUMER_CLIENT}"),
            &auditor,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let record = &page["records"][0];
    assert_eq!(record["method"], "CariNik", "{page}");
    let id = record["message_id"].as_str().unwrap();
    let (status, headers, bundle) = api
        .call(
            "GET",
            &format!("/api/v1/evidence?message_id={id}"),
            &auditor.headers(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
    assert_eq!(headers["content-type"], "application/octet-stream");
    let file = net.provider_paths.0.join("downloaded.evidence");
    std::fs::write(&file, &bundle).unwrap();
    let verified = run(binary::lintas_cmd(&["audit", "verify"])
        .arg(&file)
        .arg("--anchor")
        .arg(net.inst.anchor()));
    assert!(
        verified.contains("Result: the evidence verifies."),
        "{verified}"
    );

    // Any number of exchanges, streamed in bundles, verify too.
    let (status, _, bundles) = api
        .call(
            "GET",
            &format!("/api/v1/evidence/bundles?client={CONSUMER_CLIENT}&exchanges_per_bundle=1"),
            &auditor.headers(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(bundles.starts_with(b"lintas-evidence-bundles/v1\n"));
    let file = net.provider_paths.0.join("streamed.evidence");
    std::fs::write(&file, &bundles).unwrap();
    let verified = run(binary::lintas_cmd(&["audit", "verify"])
        .arg(&file)
        .arg("--anchor")
        .arg(net.inst.anchor()));
    assert!(
        verified.contains("Result: the evidence verifies."),
        "{verified}"
    );

    // The last system administrator stays; users and keys go.
    let (status, e) = api
        .json("DELETE", "/api/v1/users/admin", &admin, None)
        .await;
    assert_eq!(status, 412, "{e}");
    let (status, _) = api
        .json(
            "DELETE",
            &format!("/api/v1/api-keys/{}", made["info"]["id"].as_str().unwrap()),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api.json("GET", "/api/v1/services", &auditor, None).await;
    assert_eq!(status, 401, "a revoked key is refused at once");

    // Every change, refusal and login is in the audit log, with who and from where; the
    // export's chain is intact.
    let (status, page) = api
        .json("GET", "/api/v1/audit-log?limit=1000", &admin, None)
        .await;
    assert_eq!(status, 200);
    let entries = page["entries"].as_array().unwrap();
    let seen = |action: &str, actor: &str, outcome: &str| {
        entries.iter().any(|e| {
            e["action"] == action
                && e["actor"].as_str().unwrap().starts_with(actor)
                && e["outcome"].as_str().unwrap().starts_with(outcome)
                && e["from"].as_str().unwrap().starts_with("127.0.0.1:")
        })
    };
    assert!(seen("login", "user:admin", "refused"), "{page}");
    assert!(seen("login", "user:admin", "ok"));
    assert!(seen("service.add", "user:admin", "ok"));
    assert!(seen("grant.add", "user:admin", "ok"));
    assert!(seen("grant.add", "user:admin", "failed: already granted"));
    assert!(seen(
        "grant.add",
        "user:admin",
        "failed: ID/GOV/9/NOPE is not hosted"
    ));
    assert!(seen("api-key.add", "user:admin", "ok"));
    assert!(seen(
        "grant.remove",
        "api-key:",
        "refused: grant.remove needs the role"
    ));
    assert!(seen("evidence.export", "api-key:", "ok"));
    assert!(seen("dead-letters.redeliver", "user:admin", "ok"));
    assert!(seen("dead-letters.discard", "user:admin", "failed: "));
    assert!(seen("subscription.end", "user:admin", "ok"));
    assert!(seen("user.remove", "user:admin", "failed"));
    let (status, _, jsonl) = api
        .call("GET", "/api/v1/audit-log/export", &admin.headers())
        .await;
    assert_eq!(status, 200);
    let chain = lintas_manage::audit::verify(&jsonl, "export").unwrap();
    // The export holds everything up to the listing's newest entry (the export itself
    // is recorded after it was read).
    assert_eq!(chain.len() as u64, entries[0]["seq"].as_u64().unwrap());
    assert_eq!(
        chain.last().unwrap().seq,
        entries[0]["seq"].as_u64().unwrap()
    );

    // Logging out ends the session.
    let (status, _) = api.json("DELETE", "/api/v1/session", &admin, None).await;
    assert_eq!(status, 204);
    let (status, _) = api.json("GET", "/api/v1/services", &admin, None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_throttled_by_address_and_name() {
    let net = network().await;
    net.provider
        .manage()
        .plane
        .users
        .add_user("operator", PASSWORD, &[lintas_manage::Role::Auditor])
        .unwrap();
    let api = Api::new(&net);
    let login = |from: &'static str, password: &'static str| {
        let api = &api;
        async move {
            api.call(
                "POST",
                "/api/v1/session",
                &[
                    "--interface".into(),
                    from.into(),
                    "-H".into(),
                    "Content-Type: application/json".into(),
                    "--data-binary".into(),
                    json!({"name": "operator", "password": password}).to_string(),
                ],
            )
            .await
        }
    };
    for _ in 0..lintas_manage::sessions::FREE_FAILURES {
        assert_eq!(login("127.0.0.7", "wrong password!!").await.0, 401);
    }
    // Now even the right password waits, from that address and for that name.
    let (status, headers, body) = login("127.0.0.7", PASSWORD).await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    assert!(headers["retry-after"].parse::<u64>().unwrap() >= 1);
    assert_eq!(login("127.0.0.8", PASSWORD).await.0, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_management_api_decides_registrations_by_role() {
    let inst =
        Instance::start_with_users(&[("kepala", lintas_manage::Role::SystemAdministrator)]).await;
    let api = Api {
        base: format!("https://{}", inst.management),
        cacert: lintas_registry::Paths(inst.config.data_dir.clone())
            .management_cert()
            .display()
            .to_string(),
        jar: tempfile::NamedTempFile::new().unwrap(),
    };
    // The system administrator logs in and makes a key for each role.
    let (status, session) = api
        .json(
            "POST",
            "/api/v1/session",
            &Auth::None,
            Some(json!({"name": "kepala", "password": USER_PASSWORD})),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let head = Auth::Session(Some(session["csrf_token"].as_str().unwrap().to_owned()));
    let key = async |name: &str, role: &str| {
        let (status, made) = api
            .json(
                "POST",
                "/api/v1/api-keys",
                &head,
                Some(json!({"name": name, "roles": [role]})),
            )
            .await;
        assert_eq!(status, 201, "{made}");
        made["key"].as_str().unwrap().to_owned()
    };
    let officer = key("pendaftaran", "registration-officer").await;
    let auditor = key("pemeriksa", "auditor").await;
    let (status, doc) = api
        .json("GET", "/api/v1/openapi.json", &Auth::None, None)
        .await;
    assert_eq!(status, 200);
    for path in [
        "/api/v1/registrations",
        "/api/v1/registrations/{id}/approve",
        "/api/v1/registrations/{id}/reject",
        "/api/v1/members",
        "/api/v1/subsystems",
        "/api/v1/servers",
        "/api/v1/groups",
        "/api/v1/revocations",
        "/api/v1/enrolment-tokens",
        "/api/v1/timestamping-authorities",
        "/api/v1/admin-certificates",
        "/api/v1/configuration",
        "/api/v1/configuration/generations",
        "/api/v1/users",
        "/api/v1/audit-log",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not in the document");
    }

    let node = inst.node_at(
        "ID/GOV/KEMENKEU/SS1",
        &["ID/GOV/KEMENKEU/SIMPONI"],
        "127.0.0.1:1",
    );
    let request = node.register(None).await.unwrap().request_id;
    let (status, page) = api
        .json(
            "GET",
            "/api/v1/registrations?state=pending",
            &Auth::Key(auditor.clone()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let listed = &page["items"][0];
    assert_eq!(listed["request_id"], request.as_str());
    assert_eq!(
        listed["tls_key_fingerprint"],
        node.key_fingerprints().unwrap().0.as_str()
    );
    let (status, e) = api
        .json(
            "GET",
            "/api/v1/registrations?state=maybe",
            &Auth::Key(auditor.clone()),
            None,
        )
        .await;
    assert_eq!(status, 400, "{e}");

    // The auditor may not decide; the registration officer may.
    let approve = format!("/api/v1/registrations/{request}/approve");
    let (status, e) = api
        .json("POST", &approve, &Auth::Key(auditor.clone()), None)
        .await;
    assert_eq!(status, 403, "{e}");
    let (status, decided) = api
        .json("POST", &approve, &Auth::Key(officer.clone()), None)
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["state"], "approved");
    assert!(
        decided["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("api-key:")
    );
    assert!(matches!(node.poll().await.unwrap(), Enrolment::Approved(_)));
    let (status, _) = api
        .json("POST", &approve, &Auth::Key(officer.clone()), None)
        .await;
    assert!(status == 404 || status == 412, "{status}");

    // Members, groups and tokens; a revocation needs a security officer.
    let (status, published) = api
        .json(
            "POST",
            "/api/v1/groups",
            &Auth::Key(officer.clone()),
            Some(json!({"code": "bansos", "description": "Bantuan sosial"})),
        )
        .await;
    assert_eq!(status, 201, "{published}");
    assert!(published["conf_serial"].as_u64().unwrap() > 1);
    let (status, token) = api
        .json(
            "POST",
            "/api/v1/enrolment-tokens",
            &Auth::Key(officer.clone()),
            Some(json!({"server_id": "ID/GOV/KEMENKEU/SS2"})),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    assert!(!token["token"].as_str().unwrap().is_empty());
    let (status, e) = api
        .json(
            "POST",
            "/api/v1/revocations",
            &Auth::Key(officer.clone()),
            Some(json!({"serial": "01", "reason": "x"})),
        )
        .await;
    assert_eq!(status, 403, "{e}");
    let (status, conf) = api
        .json(
            "GET",
            "/api/v1/configuration",
            &Auth::Key(auditor.clone()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(conf["servers"], 1, "{conf}");
    assert_eq!(conf["groups"], 1);
    // The history of generations, newest first, pages of two: the newest is the one in
    // force.
    let (status, history) = api
        .json(
            "GET",
            "/api/v1/configuration/generations?page_size=2",
            &Auth::Key(auditor.clone()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{history}");
    assert_eq!(items[0]["serial"], conf["serial"], "{history}");
    assert!(items[0]["serial"].as_u64() > items[1]["serial"].as_u64());
    assert_eq!(items[0]["sha256"].as_str().unwrap().len(), 64);
    let next = history["next_page_token"].as_str().unwrap();
    let (status, older) = api
        .json(
            "GET",
            &format!("/api/v1/configuration/generations?page_size=2&page_token={next}"),
            &Auth::Key(auditor.clone()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{older}");
    assert!(older["items"][0]["serial"].as_u64() < items[1]["serial"].as_u64());

    // A decision through the certificate-authenticated gRPC admin API is in the same
    // audit log, with the administrator certificate's name.
    let second = inst.node_at(
        "ID/GOV/KEMENKEU/SS3",
        &["ID/GOV/KEMENKEU/SIMPONI"],
        "127.0.0.1:3",
    );
    inst.enrol(&second).await;
    let log = lintas_manage::audit::verify(
        &std::fs::read(lintas_registry::Paths(inst.config.data_dir.clone()).admin_audit_log())
            .unwrap(),
        "registry",
    )
    .unwrap();
    assert!(
        log.iter().any(|e| e.actor.starts_with("admin-cert:")
            && e.actor.ends_with("admin")
            && e.via == "grpc"
            && e.action == "registration.approve"
            && e.outcome == "ok"),
        "{log:?}"
    );
    assert!(log.iter().any(|e| e.actor.starts_with("api-key:")
        && e.action == "registration.approve"
        && e.outcome.starts_with("refused")));
}
