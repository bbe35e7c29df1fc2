//! The security server's web console in a real headless Chromium (WebDriver): an
//! administrator logs in with the keyboard alone, provides a service, grants access,
//! a call made through the bus is found on the message-log page and its evidence,
//! downloaded from the page's link, verifies with `lintas audit verify`; a user without
//! the role is refused. With LINTAS_SCREENSHOTS=DIR the main pages are saved there.

use lintas_testkit::browser::Browser;

use super::*;

const PASSWORD: &str = USER_PASSWORD;
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
const TOPIC: &str = "kependudukan.v1.StatusPenduduk";

/// Saves a screenshot of the page as DIR/NAME.png when LINTAS_SCREENSHOTS=DIR.
async fn keep(browser: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("LINTAS_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/{name}.png"), browser.screenshot().await).unwrap();
    }
}

/// Logs `name` in with the keyboard alone: the name field has the focus, Tab to the
/// password, Enter to send.
async fn log_in(browser: &Browser, base: &str, name: &str) {
    browser.goto(&format!("{base}/")).await;
    assert!(
        browser.url().await.contains("/login"),
        "{}",
        browser.url().await
    );
    let focused = browser.focused().await;
    assert_eq!(
        browser.attribute(&focused, "id").await.as_deref(),
        Some("name")
    );
    browser.keys(name).await;
    browser.keys(TAB).await;
    browser.keys(PASSWORD).await;
    browser.navigating(browser.keys(ENTER)).await;
    let user = browser.find("#current-user").await;
    assert_eq!(browser.text(&user).await, name);
}

/// Submits the form that `button` (a CSS selector) belongs to, after filling `fields`
/// (selector, text).
async fn fill_and_send(browser: &Browser, fields: &[(&str, &str)], button: &str) {
    for (selector, text) in fields {
        let field = browser.find(selector).await;
        browser.type_into(&field, text).await;
    }
    let button = browser.find(button).await;
    browser.navigating(browser.click(&button)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_runs_the_server_from_the_browser() {
    let net = network().await;
    let users = net.provider.manage().plane.users.clone();
    users
        .add_user(
            "admin",
            PASSWORD,
            &[lintas_manage::Role::SystemAdministrator],
        )
        .unwrap();
    users
        .add_user("auditor", PASSWORD, &[lintas_manage::Role::Auditor])
        .unwrap();
    let base = format!("https://{}", net.provider_management);
    let browser = Browser::start().await;

    // The login page, then the dashboard; the session cookie is HttpOnly, Secure and
    // SameSite=Strict.
    browser.goto(&format!("{base}/login")).await;
    keep(&browser, "login").await;
    log_in(&browser, &base, "admin").await;
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c.0 == "__Host-lintas-session")
        .expect("a session cookie");
    assert!(
        session.2 && session.3 && session.4 == "Strict",
        "{session:?}"
    );
    assert!(browser.page_text().await.contains("ready"));

    // Provide a REST service from the services page.
    browser.goto(&format!("{base}/services")).await;
    let rest = browser.find("#rest").await;
    browser.click(&rest).await;
    fill_and_send(
        &browser,
        &[
            ("#service", "penduduk"),
            ("#endpoint", "http://127.0.0.1:9/api"),
        ],
        "#add-service",
    )
    .await;
    let notice = browser.find("#notice").await;
    assert!(browser.text(&notice).await.contains("penduduk"));
    let table = browser.text(&browser.find("#services").await).await;
    assert!(
        table.contains("penduduk") && table.contains("REST"),
        "{table}"
    );
    keep(&browser, "services").await;
    // A topic to publish events on, without an endpoint.
    let topic = browser.find("#topic").await;
    browser.click(&topic).await;
    fill_and_send(&browser, &[("#service", TOPIC)], "#add-service").await;
    let table = browser.text(&browser.find("#services").await).await;
    assert!(table.contains(TOPIC) && table.contains("topic"), "{table}");
    assert!(net.provider.access.services().iter().any(|s| s.topic));

    // Another client may not call CariNik yet; the administrator grants it from the
    // access page, and the call goes through.
    let refused = net.cari(OTHER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    browser.goto(&format!("{base}/access")).await;
    let option = browser
        .find(&format!(
            "#service option[value='{PROVIDER_CLIENT} {SERVICE}']"
        ))
        .await;
    browser.click(&option).await;
    fill_and_send(
        &browser,
        &[("#subject", OTHER_CLIENT), ("#method", "CariNik")],
        "#grant",
    )
    .await;
    let notice = browser.text(&browser.find("#notice").await).await;
    assert!(notice.contains(OTHER_CLIENT), "{notice}");
    keep(&browser, "access").await;
    // A quota for that client from the same page; a rate that is not one is refused
    // with the field named.
    let set_quota = |rate: &'static str| {
        let browser = &browser;
        async move {
            let option = browser
                .find(&format!(
                    "#quota-service option[value='{PROVIDER_CLIENT} {SERVICE}']"
                ))
                .await;
            browser.click(&option).await;
            fill_and_send(
                browser,
                &[
                    ("#quota-method", "CariNik"),
                    ("#quota-client", OTHER_CLIENT),
                    ("#quota-rate", rate),
                    ("#quota-burst", "5"),
                ],
                "#set-quota",
            )
            .await;
        }
    };
    set_quota("banyak").await;
    let error = browser.text(&browser.find("#error").await).await;
    assert!(error.contains("rate"), "{error}");
    set_quota("600/min").await;
    let notice = browser.text(&browser.find("#notice").await).await;
    assert!(notice.contains(OTHER_CLIENT), "{notice}");
    let quotas = browser.text(&browser.find("#quotas").await).await;
    assert!(
        quotas.contains("600/min") && quotas.contains(OTHER_CLIENT),
        "{quotas}"
    );
    let held = net.provider.access.quotas();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (held[0].calls, held[0].per_secs, held[0].burst),
        (600, 60, 5)
    );
    let answer = net.cari(OTHER_CLIENT, NIK).await.unwrap();
    assert_eq!(answer.nama, "Siti Rahayu");

    // A subscriber's dead letter, from the events page: delivered again, then
    // discarded. (The subscriber is not granted the topic, so nothing is delivered.)
    let events = net.provider.events();
    let subscription = lintas_ss::events::SubKey {
        publisher: PROVIDER_CLIENT.into(),
        topic: TOPIC.into(),
        subscriber: CONSUMER_CLIENT.into(),
    };
    events.subscribe(&subscription, false).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    events
        .publish(
            PROVIDER_CLIENT,
            TOPIC,
            "3174012305870001",
            b"WAFAT".to_vec(),
            now,
        )
        .unwrap();
    for _ in 0..events.retry.max_attempts {
        events
            .failed(&subscription, 1, true, "InvalidArgument: tidak terbaca", 1)
            .unwrap();
    }
    browser.goto(&format!("{base}/events")).await;
    let listed = browser.text(&browser.find("#subscriptions").await).await;
    assert!(
        listed.contains(TOPIC) && listed.contains(CONSUMER_CLIENT),
        "{listed}"
    );
    let letters = browser.text(&browser.find(".dead-letters").await).await;
    assert!(
        letters.contains("3174012305870001") && letters.contains("tidak terbaca"),
        "{letters}"
    );
    keep(&browser, "events").await;
    let again = browser.find(".dead-letters button.redeliver").await;
    browser.navigating(browser.click(&again)).await;
    let notice = browser.text(&browser.find("#notice").await).await;
    assert!(notice.contains("deliver again: 1"), "{notice}");
    assert!(
        browser.page_text().await.contains("being delivered again"),
        "{}",
        browser.page_text().await
    );
    let discard = browser.find(".dead-letters button.discard").await;
    browser.navigating(browser.click(&discard)).await;
    let notice = browser.text(&browser.find("#notice").await).await;
    assert!(notice.contains("discarded: 1"), "{notice}");
    assert!(browser.find_all(".dead-letters").await.is_empty());
    assert!(events.dead_letters(&subscription).unwrap().is_empty());
    let end = browser.find("#subscriptions button.end").await;
    browser.navigating(browser.click(&end)).await;
    let notice = browser.text(&browser.find("#notice").await).await;
    assert!(notice.contains(CONSUMER_CLIENT), "{notice}");
    assert!(events.place(&subscription).unwrap().is_none());

    // Both calls (refused, then answered) are on the message-log page, found by their
    // client, once the provider's server has written their monitoring records.
    tokio::time::timeout(Duration::from_secs(10), net.provider.opmon().written(2))
        .await
        .expect("the provider's records are written");
    browser.goto(&format!("{base}/messages")).await;
    fill_and_send(&browser, &[("#client", OTHER_CLIENT)], "#search").await;
    let rows = browser.find_all("#messages tbody tr").await;
    assert_eq!(rows.len(), 2, "{}", browser.page_text().await);
    let mut answered = None;
    for (i, row) in rows.iter().enumerate() {
        let text = browser.text(row).await;
        if text.contains("CariNik Ok") {
            answered = Some(i);
        } else {
            assert!(
                text.contains("PermissionDenied (provider-server)"),
                "{text}"
            );
        }
    }
    let answered = answered.expect("the answered call");
    let id = browser
        .text(&browser.find_all("#messages td.message-id").await[answered])
        .await;
    let total = browser.text(&browser.find("#chart-total").await).await;
    assert_eq!(total, "2");
    keep(&browser, "messages").await;

    // Its evidence, downloaded by the browser from the page's link, verifies.
    let link = &browser.find_all("#messages a.evidence").await[answered];
    let href = browser.attribute(link, "href").await.unwrap();
    assert_eq!(href, format!("/api/v1/evidence?message_id={id}"));
    browser.click(link).await;
    let out = browser.downloaded(&format!("evidence-{id}.bundle")).await;
    let verified = run(binary::lintas_cmd(&["audit", "verify"])
        .arg(&out)
        .arg("--anchor")
        .arg(net.inst.anchor()));
    assert!(
        verified.contains("Result: the evidence verifies."),
        "{verified}"
    );

    // The dashboard counts it; the console speaks Indonesian when asked.
    browser.goto(&format!("{base}/")).await;
    let records: u64 = browser
        .text(&browser.find("#log-records").await)
        .await
        .parse()
        .unwrap();
    assert!(records >= 2, "{records}");
    let serial: u64 = browser
        .text(&browser.find("#conf-serial").await)
        .await
        .parse()
        .unwrap();
    assert!(serial >= 1, "{serial}");
    keep(&browser, "dashboard").await;
    let indonesian = browser.find("a[lang='id']").await;
    browser.navigating(browser.click(&indonesian)).await;
    let nav = browser.text(&browser.find("nav").await).await;
    assert!(
        nav.contains("Layanan") && nav.contains("Hak akses"),
        "{nav}"
    );
    keep(&browser, "dashboard-id").await;
    let english = browser.find("a[lang='en']").await;
    browser.navigating(browser.click(&english)).await;

    // The audit log page shows what the administrator did, from the console.
    browser.goto(&format!("{base}/audit")).await;
    let log = browser.page_text().await;
    assert!(
        log.contains("grant.add")
            && log.contains("service.add")
            && log.contains("dead-letters.redeliver")
            && log.contains("dead-letters.discard"),
        "{log}"
    );
    assert!(log.contains("console"), "{log}");

    // Users and API keys from the browser: a service administrator, a key for a script.
    browser.goto(&format!("{base}/users")).await;
    let role = browser.find("#role-service-administrator").await;
    browser.click(&role).await;
    fill_and_send(
        &browser,
        &[("#new-name", "siti"), ("#new-password", PASSWORD)],
        "#add-user",
    )
    .await;
    let notice = browser.text(&browser.find("#notice").await).await;
    assert!(notice.contains("siti"), "{notice}");
    let role = browser.find("#key-role-auditor").await;
    browser.click(&role).await;
    fill_and_send(&browser, &[("#key-name", "laporan harian")], "#add-key").await;
    let key = browser.text(&browser.find("#new-key code").await).await;
    assert!(key.starts_with("lintas_"), "{key}");
    assert!(
        net.provider
            .manage()
            .plane
            .users
            .verify_api_key(&key)
            .is_ok()
    );
    let users = browser.text(&browser.find("#users").await).await;
    assert!(
        users.contains("siti") && users.contains("service-administrator"),
        "{users}"
    );
    keep(&browser, "users").await;

    // Log out; an auditor reads but is refused a change, and the refusal is recorded.
    let logout = browser.find("#logout").await;
    browser.navigating(browser.click(&logout)).await;
    assert!(browser.url().await.contains("/login"));
    log_in(&browser, &base, "auditor").await;
    browser.goto(&format!("{base}/access")).await;
    fill_and_send(&browser, &[("#subject", CONSUMER_CLIENT)], "#grant").await;
    let error = browser.text(&browser.find("#error").await).await;
    assert!(error.contains("needs the role"), "{error}");
    let audit = net
        .provider
        .manage()
        .plane
        .audit
        .page(0, 5, "auditor")
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "grant.add" && e.outcome.starts_with("refused")),
        "{audit:?}"
    );
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registration_is_decided_from_the_registry_console() {
    let inst = Instance::start_with_users(&[
        ("petugas", lintas_manage::Role::RegistrationOfficer),
        ("auditor", lintas_manage::Role::Auditor),
    ])
    .await;
    let base = format!("https://{}", inst.management);

    // Two servers ask to join.
    let joining = inst.node_at(
        "ID/GOV/KEMENKEU/SS1",
        &["ID/GOV/KEMENKEU/SIMPONI"],
        "127.0.0.1:1",
    );
    let forged = inst.node_at(
        "ID/GOV/KEMENKEU/SS2",
        &["ID/GOV/KEMENKEU/SIMPONI"],
        "127.0.0.1:2",
    );
    let request = joining.register(None).await.unwrap().request_id;
    let other = forged.register(None).await.unwrap().request_id;

    let browser = Browser::start().await;
    log_in(&browser, &base, "petugas").await;
    let pending = browser.text(&browser.find("#pending-count").await).await;
    assert_eq!(pending, "2");
    browser.goto(&format!("{base}/registrations")).await;
    keep(&browser, "registry-registrations").await;

    // The page shows each request's key fingerprints, as the server's operator reads
    // them from `lintas ss register`.
    let (tls, signing) = joining.key_fingerprints().unwrap();
    let cards = browser.find_all("section.registration").await;
    assert_eq!(cards.len(), 2);
    let mut texts = Vec::new();
    for card in &cards {
        texts.push(browser.text(card).await);
    }
    let at = texts
        .iter()
        .position(|t| t.contains(&request))
        .expect("the request's card");
    assert!(
        texts[at].contains(&tls) && texts[at].contains(&signing),
        "{}",
        texts[at]
    );

    // Approve it; reject the other with a reason its operator sees.
    let approve = &browser
        .find_all("section.registration button.approve")
        .await[at];
    browser.navigating(browser.click(approve)).await;
    let notice = browser.text(&browser.find("#notice").await).await;
    assert!(notice.contains("ID/GOV/KEMENKEU/SS1"), "{notice}");
    assert!(matches!(
        joining.poll().await.unwrap(),
        Enrolment::Approved(_)
    ));
    fill_and_send(
        &browser,
        &[(
            &format!("#reason-{other}"),
            "the fingerprints did not match",
        )],
        "section.registration button.reject",
    )
    .await;
    let notice = browser.text(&browser.find("#notice").await).await;
    assert!(notice.contains("ID/GOV/KEMENKEU/SS2"), "{notice}");
    match forged.poll().await {
        Err(SsError::Rejected { reason }) => assert_eq!(reason, "the fingerprints did not match"),
        other => panic!("the request was not rejected: {other:?}"),
    }
    assert!(browser.find_all("#no-pending").await.len() == 1);

    // The approved server is listed with its certificates; a group is added.
    browser.goto(&format!("{base}/servers")).await;
    let servers = browser.text(&browser.find("#servers").await).await;
    assert!(
        servers.contains("ID/GOV/KEMENKEU/SS1") && servers.contains("signing"),
        "{servers}"
    );
    browser.goto(&format!("{base}/groups")).await;
    fill_and_send(
        &browser,
        &[
            ("#group-code", "bansos"),
            ("#group-description", "Bantuan sosial"),
        ],
        "#add-group",
    )
    .await;
    let groups = browser.text(&browser.find("#groups").await).await;
    assert!(groups.contains("group:bansos"), "{groups}");
    browser.goto(&format!("{base}/")).await;
    keep(&browser, "registry-overview").await;
    let serial = browser.text(&browser.find("#conf-serial").await).await;

    // The history of generations: the newest is the one in force, caused by the group
    // just added, by this user.
    browser.goto(&format!("{base}/generations")).await;
    let rows = browser.find_all("#generations tbody tr").await;
    let newest = browser.text(&rows[0]).await;
    assert!(
        newest.starts_with(&format!("{serial} ")) && newest.contains("petugas"),
        "{newest} (serial {serial})"
    );
    assert!(newest.contains("bansos"), "{newest}");
    assert!(rows.len() >= 3, "{}", rows.len());

    // An auditor reads, and is refused a change.
    let logout = browser.find("#logout").await;
    browser.navigating(browser.click(&logout)).await;
    log_in(&browser, &base, "auditor").await;
    browser.goto(&format!("{base}/groups")).await;
    fill_and_send(&browser, &[("#group-code", "lain")], "#add-group").await;
    let error = browser.text(&browser.find("#error").await).await;
    assert!(error.contains("needs the role"), "{error}");
    browser.goto(&format!("{base}/audit")).await;
    let log = browser.page_text().await;
    for action in ["registration.approve", "registration.reject", "group.add"] {
        assert!(log.contains(action), "{action}: {log}");
    }
    browser.quit().await;
}

/// Reads lines of a child's output until one contains `what`, in a blocking task.
async fn line_with(
    out: std::io::BufReader<std::process::ChildStdout>,
    what: &'static str,
) -> (std::io::BufReader<std::process::ChildStdout>, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut out = out;
        for _ in 0..20 {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if line.contains(what) {
                return (out, line);
            }
        }
        panic!("the server never said '{what}'");
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_server_is_enrolled_from_the_browser_after_init() {
    let inst =
        Instance::start_with_users(&[("petugas", lintas_manage::Role::RegistrationOfficer)]).await;
    inst.follow_system_clock();

    // `init`, then `serve` before enrolment: only the console runs.
    let dir = inst.root.join("kemenkeu");
    let peer = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    run(binary::lintas_cmd(&[
        "ss",
        "init",
        "--server-id",
        "ID/GOV/KEMENKEU/SS1",
        "--client",
        "ID/GOV/KEMENKEU/SIMPONI",
        "--address",
        &peer,
    ])
    .arg("--dir")
    .arg(&dir)
    .arg("--anchor")
    .arg(inst.anchor())
    .env("LINTAS_ADMIN_PASSWORD", PASSWORD));
    let mut child = binary::lintas_cmd(&["ss", "serve"])
        .current_dir(&dir)
        .env("LINTAS_SS_CONSUMER_LISTEN", "127.0.0.1:0")
        .env("LINTAS_SS_DEV_PLAINTEXT_LOOPBACK", "true")
        .env("LINTAS_SS_PROVIDER_LISTEN", &peer)
        .env("LINTAS_SS_OPS_LISTEN", "127.0.0.1:0")
        .env("LINTAS_SS_MANAGEMENT_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let _daemon = Daemon(Some(child));
    let (out, line) = line_with(out, "is not enrolled").await;
    let address = line
        .split("https://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    // Browsers keep cookies by host, not port: the server's console is reached as
    // `localhost`, the registry's as 127.0.0.1, so each keeps its own session.
    let port = address.rsplit(':').next().unwrap();
    let server = format!("https://localhost:{port}");
    let registry = format!("https://{}", inst.management);

    // The server's console: the fingerprints, then the registration.
    let browser = Browser::start().await;
    log_in(&browser, &server, "admin").await;
    let state = browser.text(&browser.find("#enrolment-state").await).await;
    assert_eq!(state, "not registered yet");
    let tls = browser.text(&browser.find("#tls-fingerprint").await).await;
    let button = browser.find("#register").await;
    browser.navigating(browser.click(&button)).await;
    let notice = browser.text(&browser.find("#notice").await).await;
    assert!(notice.starts_with("Registration sent"), "{notice}");
    let state = browser.text(&browser.find("#enrolment-state").await).await;
    assert!(state.starts_with("pending"), "{state}");
    keep(&browser, "enrolment").await;

    // The registry's console: the same fingerprint, approved.
    log_in(&browser, &registry, "petugas").await;
    browser.goto(&format!("{registry}/registrations")).await;
    let shown = browser.text(&browser.find(".tls-fingerprint").await).await;
    assert_eq!(shown, tls);
    let approve = browser.find("button.approve").await;
    browser.navigating(browser.click(&approve)).await;

    // Back on the server: asked now, it stores its certificates and starts for real on
    // the same address.
    browser.goto(&format!("{server}/")).await;
    let check = browser.find("#check").await;
    browser.navigating(browser.click(&check)).await;
    let (_out, line) = line_with(out, "listening: consumer=").await;
    assert!(
        line.contains(&format!("management=https://{address}/")),
        "{line}"
    );
    log_in(&browser, &server, "admin").await;
    let nav = browser.text(&browser.find("nav").await).await;
    assert!(
        nav.contains("Services") && nav.contains("Message log"),
        "{nav}"
    );
    browser.goto(&format!("{server}/audit")).await;
    let log = browser.page_text().await;
    assert!(log.contains("registration.submit"), "{log}");
    browser.quit().await;
}
