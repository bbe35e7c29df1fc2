use super::*;

/// A cheap KDF so the tests spend their time on the format, not on Argon2.
const QUICK: Kdf = Kdf {
    memory_kib: 64,
    passes: 1,
    lanes: 1,
};

fn pass(s: &str) -> Passphrase {
    Passphrase::for_reading(s.into())
}

fn signer() -> (lintas_certs::KeyPair, Vec<u8>) {
    let year = std::time::Duration::from_secs(365 * 86400);
    let now = std::time::SystemTime::now();
    let ca = lintas_certs::Ca::create(
        &"ID".parse().unwrap(),
        lintas_certs::ca::Validity::starting(now, year).unwrap(),
    )
    .unwrap();
    let key = lintas_certs::keys::generate().unwrap();
    let profile = lintas_certs::Profile::Server {
        id: "ID/GOV/KEMENDAGRI/SS1".parse().unwrap(),
        hosts: vec!["localhost".into()],
    };
    let cert = ca
        .issue_for_key(
            &key,
            &profile,
            lintas_certs::ca::Validity::starting(now, year).unwrap(),
        )
        .unwrap();
    (key, cert)
}

fn head() -> Head {
    Head {
        kind: "security-server".into(),
        id: "ID/GOV/KEMENDAGRI/SS1".into(),
        created_unix_ms: 1,
        details: serde_json::json!({"log_size": 3}),
    }
}

/// An archive of a few files, one larger than a chunk.
fn archive() -> Vec<u8> {
    let (key, cert) = signer();
    let mut w = Writer::with_kdf(Vec::new(), &pass("correct horse battery"), QUICK).unwrap();
    w.add("ss.toml", 0o644, b"server_id = 'x'\n").unwrap();
    w.add("records/00.seg", 0o600, &vec![7u8; 200_000]).unwrap();
    w.add("empty", 0o600, b"").unwrap();
    w.finish(head(), &key, &cert).unwrap().0
}

#[test]
fn round_trip_restores_every_file_and_mode() {
    let bytes = archive();
    let dir = tempfile::tempdir().unwrap();
    let out = unpack(&bytes[..], &pass("correct horse battery"), dir.path()).unwrap();
    assert_eq!(out.manifest.kind, "security-server");
    assert_eq!(out.manifest.details["log_size"], 3);
    assert_eq!(out.manifest.files.len(), 3);
    assert_eq!(
        std::fs::read(dir.path().join("records/00.seg")).unwrap(),
        vec![7u8; 200_000]
    );
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ss.toml"), 0o644);
    assert_eq!(mode("records/00.seg"), 0o600);
    assert_eq!(std::fs::read(dir.path().join("empty")).unwrap(), b"");
    // Nothing of the content is in the clear.
    assert!(!bytes.windows(9).any(|w| w == b"server_id"));
}

#[test]
fn a_wrong_passphrase_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = unpack(&archive()[..], &pass("wrong horse battery"), dir.path())
        .err()
        .unwrap();
    assert!(matches!(err, BackupError::Passphrase(_)), "{err}");
    assert!(err.to_string().contains("passphrase is wrong"), "{err}");
}

#[test]
fn every_damage_is_refused_with_its_place() {
    let bytes = archive();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not a backup", b"hello".to_vec(), "too short"),
        (
            "other magic",
            [b"NOTLINTS".as_slice(), &bytes[8..]].concat(),
            "not a lintas backup",
        ),
        (
            "cut after the header",
            bytes[..seal::HEADER_LEN].to_vec(),
            "cut off",
        ),
        (
            "cut in the middle",
            bytes[..bytes.len() / 2].to_vec(),
            "cut off",
        ),
        ("last chunk dropped", drop_last_chunk(&bytes), "cut off"),
        (
            "a byte flipped in the second chunk",
            flip(&bytes, seal::HEADER_LEN + 70_000),
            "does not authenticate",
        ),
        (
            "bytes appended",
            [bytes.as_slice(), b"x"].concat(),
            "follow the last chunk",
        ),
        (
            "Argon2 cost raised",
            {
                let mut b = bytes.clone();
                b[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
                b
            },
            "more than a restore allows",
        ),
    ];
    for (what, damaged, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&damaged[..], &pass("correct horse battery"), dir.path())
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(err.to_string().contains(expect), "{what}: {err}");
    }
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 1;
    b
}

/// The archive without its last (short) chunk: the full chunks before it still
/// authenticate, so only the missing end tells.
fn drop_last_chunk(bytes: &[u8]) -> Vec<u8> {
    let mut at = seal::HEADER_LEN;
    let mut last = at;
    while at < bytes.len() {
        last = at;
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
    }
    bytes[..last].to_vec()
}

#[test]
fn a_manifest_signed_by_another_key_is_refused() {
    let (_, cert) = signer();
    let (other, _) = signer();
    let mut w = Writer::with_kdf(Vec::new(), &pass("correct horse battery"), QUICK).unwrap();
    w.add("a", 0o600, b"1").unwrap();
    let bytes = w.finish(head(), &other, &cert).unwrap().0;
    let dir = tempfile::tempdir().unwrap();
    let err = unpack(&bytes[..], &pass("correct horse battery"), dir.path())
        .err()
        .unwrap();
    assert!(matches!(err, BackupError::Signature(_)), "{err}");
}

#[test]
fn paths_that_could_leave_the_directory_are_refused() {
    for path in ["", "/etc/passwd", "../x", "a/../../x", "a\\b", "./a"] {
        let mut w = Writer::with_kdf(Vec::new(), &pass("correct horse battery"), QUICK).unwrap();
        assert!(w.add(path, 0o600, b"1").is_err(), "{path:?} accepted");
    }
    let mut w = Writer::with_kdf(Vec::new(), &pass("correct horse battery"), QUICK).unwrap();
    w.add("a", 0o600, b"1").unwrap();
    assert!(w.add("a", 0o600, b"2").is_err(), "a path twice");
}

#[test]
fn a_source_shorter_than_stated_is_an_error() {
    let mut w = Writer::with_kdf(Vec::new(), &pass("correct horse battery"), QUICK).unwrap();
    let err = w
        .add_reader("seg", 0o600, 10, &mut &b"abc"[..])
        .unwrap_err();
    assert!(err.to_string().contains("seg ended 7 bytes short"), "{err}");
}

#[test]
fn short_passphrases_are_refused_for_writing() {
    assert!(Passphrase::new("short".into()).is_err());
    let p = Passphrase::new("long enough phrase".into()).unwrap();
    assert_eq!(format!("{p:?}"), "Passphrase(…)");
}
