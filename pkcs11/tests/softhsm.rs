//! Keys in a real SoftHSM2 token: made, named by a reference file, loaded again, used
//! for signatures and certificate requests, and every wrong setting refused clearly.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use lintas_certs::{CertError, sig};
use lintas_pkcs11::{Pkcs11Config, generate, is_reference, load};
use lintas_testkit::softhsm::{MODULE, PIN, SoftHsm};

fn config(hsm: &SoftHsm, token: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: PathBuf::from(MODULE),
        token: token.into(),
        pin_file: hsm.pin_file(),
    }
}

fn refused(r: Result<lintas_certs::SharedSigner, CertError>) -> String {
    match r {
        Ok(key) => panic!("accepted: {}", key.held_in()),
        Err(e) => e.to_string(),
    }
}

/// One test: SoftHSM reads `SOFTHSM2_CONF` when the module is first loaded, and the
/// module stays loaded for the whole process.
#[test]
fn keys_in_a_softhsm_token() {
    let hsm = SoftHsm::new();
    hsm.add_token("node-a");
    hsm.add_token("node-b");
    let (name, value) = hsm.env();
    // SAFETY: set before any thread of this test binary loads SoftHSM or reads the
    // environment; this binary has this one test.
    unsafe { std::env::set_var(name, value) };
    let a = config(&hsm, "node-a");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sign.key.pem");

    // Made in the token: the file names it and holds no key.
    let made = generate(&path, Some(&a), "ss1 signing").unwrap();
    assert!(is_reference(&path).unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("PRIVATE KEY") && text.contains("node-a"),
        "{text}"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(made.held_in().contains("'ss1 signing' in token 'node-a'"));
    let signature = sig::sign(&*made, "lintas/test/v1", b"hello").unwrap();
    sig::verify(
        made.public_key_raw(),
        "lintas/test/v1",
        b"hello",
        &signature,
    )
    .unwrap();
    assert!(matches!(
        generate(&path, Some(&a), "again"),
        Err(CertError::AlreadyExists { .. })
    ));

    // Loaded again: the same key.
    let loaded = load(&path, Some(&a)).unwrap();
    assert_eq!(loaded.public_key_raw(), made.public_key_raw());
    sig::verify(
        loaded.public_key_raw(),
        "lintas/test/v1",
        b"hello",
        &sig::sign(&*loaded, "lintas/test/v1", b"hello").unwrap(),
    )
    .unwrap();

    // A certificate request made with the token's key, issued by a CA.
    let csr = lintas_certs::ca::make_csr(&*loaded, "ss1 signing").unwrap();
    let csr_key = lintas_certs::ca::CsrKey::from_der(&csr).unwrap();
    let day = std::time::Duration::from_secs(86400);
    let now = std::time::SystemTime::now();
    let ca = lintas_certs::Ca::create(
        &lintas_identifiers::Code::parse_part("ID", "instance").unwrap(),
        lintas_certs::ca::Validity::starting(now, 30 * day).unwrap(),
    )
    .unwrap();
    let member: lintas_identifiers::MemberId = "ID/GOV/KEMENDAGRI".parse().unwrap();
    let cert = ca
        .issue(
            &csr_key,
            &lintas_certs::Profile::Member(member),
            lintas_certs::ca::Validity::starting(now, day).unwrap(),
        )
        .unwrap();
    let info = lintas_certs::CertInfo::parse(&cert).unwrap();
    assert_eq!(info.public_key, loaded.public_key_raw());

    // Signing from many threads at once goes through the one session in turn.
    std::thread::scope(|s| {
        for i in 0..8u8 {
            let key = &loaded;
            s.spawn(move || {
                for j in 0..8u8 {
                    let msg = [i, j];
                    let signature = sig::sign(&**key, "lintas/test/v1", &msg).unwrap();
                    sig::verify(key.public_key_raw(), "lintas/test/v1", &msg, &signature).unwrap();
                }
            });
        }
    });

    // The token forgets the login (as after a restart of the token): the key logs in
    // again and signs.
    {
        let (ctx, slot) = token_slot("node-a");
        ctx.open_ro_session(slot).unwrap().logout().unwrap();
    }
    let signature = sig::sign(&*loaded, "lintas/test/v1", b"again").unwrap();
    sig::verify(
        loaded.public_key_raw(),
        "lintas/test/v1",
        b"again",
        &signature,
    )
    .unwrap();

    // A key file still loads, with or without a token configured.
    let file = dir.path().join("file.key.pem");
    let file_key = generate(&file, None, "unused").unwrap();
    assert!(!is_reference(&file).unwrap());
    assert_eq!(file_key.held_in(), "a key file");
    load(&file, Some(&a)).unwrap();
    load(&file, None).unwrap();

    // Every wrong setting is refused, naming the file, the token or the key.
    let e = refused(load(&path, None));
    assert!(
        e.contains("no [pkcs11] section") && e.contains("node-a"),
        "{e}"
    );
    let e = refused(load(&path, Some(&config(&hsm, "node-b"))));
    assert!(
        e.contains("token 'node-a'") && e.contains("'node-b'"),
        "{e}"
    );
    // The other token has no such key.
    let other = dir.path().join("other.key.pem");
    write_private(&other, text.replace("node-a", "node-b")).unwrap();
    let e = refused(load(&other, Some(&config(&hsm, "node-b"))));
    assert!(e.contains("no EC private key has this id"), "{e}");
    // A key swapped under the same id and label: the token's key does not sign for the
    // public key the file names.
    let swapped = dir.path().join("swapped.key.pem");
    let public = text.lines().find(|l| l.starts_with("public_key")).unwrap();
    let other_point = lintas_certs::hex(file_key.public_key_raw());
    write_private(
        &swapped,
        text.replace(public, &format!("public_key = \"{other_point}\"")),
    )
    .unwrap();
    let e = refused(load(&swapped, Some(&a)));
    assert!(
        e.contains("the token holds another key under this id"),
        "{e}"
    );
    // A reference without its comment line is still one.
    let bare = dir.path().join("bare.key.pem");
    let without_comment: Vec<&str> = text.lines().skip(1).collect();
    write_private(&bare, without_comment.join("\n")).unwrap();
    assert!(is_reference(&bare).unwrap());
    load(&bare, Some(&a)).unwrap();
    let e = refused(load(&path, Some(&config(&hsm, "nowhere"))));
    assert!(e.contains("'nowhere'"), "{e}");
    let garbage = dir.path().join("garbage.key.pem");
    write_private(&garbage, "key = [").unwrap();
    let e = refused(load(&garbage, Some(&a)));
    assert!(
        e.contains("neither a PEM private key nor a reference"),
        "{e}"
    );
    let e = refused(generate(
        &dir.path().join("missing-token.key.pem"),
        Some(&config(&hsm, "no-such-token")),
        "x",
    ));
    assert!(
        e.contains("no token is labelled 'no-such-token'") && e.contains("node-a"),
        "{e}"
    );

    // PIN: a wrong one is refused without being shown; a readable PIN file is refused.
    let wrong = dir.path().join("wrong-pin");
    std::fs::write(&wrong, "0000-wrong").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let wrong_pin = Pkcs11Config {
        pin_file: wrong.clone(),
        ..config(&hsm, "node-b")
    };
    let e = refused(generate(
        &dir.path().join("w.key.pem"),
        Some(&wrong_pin),
        "x",
    ));
    assert!(
        e.contains("refused the PIN") && !e.contains("0000-wrong") && !e.contains(PIN),
        "{e}"
    );
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = refused(generate(
        &dir.path().join("w.key.pem"),
        Some(&wrong_pin),
        "x",
    ));
    assert!(e.contains("chmod 600"), "{e}");
    assert!(!dir.path().join("w.key.pem").exists());

    // The token's PIN changes under a loaded key, and the login is gone: the key tries
    // the PIN it has once, and not again (each wrong try counts towards locking the
    // token).
    let (ctx, slot) = token_slot("node-a");
    let session = ctx.open_rw_session(slot).unwrap();
    // The keys loaded here keep the token logged in.
    let _ = session.login(cryptoki::session::UserType::User, Some(&PIN.into()));
    session
        .set_pin(&PIN.into(), &"4712-changed".into())
        .unwrap();
    session.logout().unwrap();
    let first = sig::sign(&*loaded, "lintas/test/v1", b"x")
        .unwrap_err()
        .to_string();
    assert!(first.contains("refused the PIN"), "{first}");
    let e = sig::sign(&*loaded, "lintas/test/v1", b"x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not reached again"), "{e}");
    for said in [&first, &e] {
        assert!(
            !said.contains("4712-changed") && !said.contains(PIN),
            "{said}"
        );
    }
}

/// Writes a key file as lintas does: owner only.
fn write_private(path: &std::path::Path, text: impl AsRef<[u8]>) -> std::io::Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// This process's context of SoftHSM and the slot of the token labelled `label`.
fn token_slot(label: &str) -> (cryptoki::context::Pkcs11, cryptoki::slot::Slot) {
    let ctx = cryptoki::context::Pkcs11::new(MODULE).unwrap();
    let _ = ctx.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ));
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap();
    (ctx, slot)
}
