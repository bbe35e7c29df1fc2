//! The standalone `lintas-audit` binary: its command line, words, JSON and exit statuses
//! (the checks themselves are tested on real bundles by the end-to-end tests, through
//! `lintas audit verify`, which runs the same code).

use std::process::Command;

use lintas_certs::ca::{Ca, Validity};

fn lintas_audit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lintas-audit"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_standalone_verifier_refuses_what_is_not_evidence_with_its_own_status() {
    let dir = tempfile::tempdir().unwrap();
    let instance = "ID".parse().unwrap();
    let now = std::time::SystemTime::now();
    let validity = Validity::starting(now, std::time::Duration::from_secs(86400)).unwrap();
    let ca = Ca::create(&instance, validity).unwrap();
    let signer = ca
        .issue_for_key(
            &lintas_certs::keys::generate().unwrap(),
            &lintas_certs::Profile::GlobalConf {
                instance: instance.clone(),
            },
            validity,
        )
        .unwrap();
    let anchor = lintas_globalconf::Anchor::new(
        instance,
        vec!["https://127.0.0.1:4400".into()],
        vec!["http://127.0.0.1:4401/globalconf".into()],
        &[ca.cert_der().to_vec()],
        &[signer],
    )
    .unwrap();
    let anchor_path = dir.path().join("anchor.toml");
    std::fs::write(&anchor_path, &anchor.text).unwrap();
    let anchor_arg = anchor_path.to_str().unwrap();

    // Bytes that are no bundle: not verified (6), said in words and in JSON.
    let garbage = dir.path().join("garbage.bundle");
    std::fs::write(&garbage, b"\xff\xff not a bundle").unwrap();
    let garbage_arg = garbage.to_str().unwrap();
    let (code, out, err) = lintas_audit(&["verify", garbage_arg, "--anchor", anchor_arg]);
    assert_eq!(code, 6, "{out}{err}");
    assert!(out.contains("is not an evidence bundle"), "{out}");
    assert!(
        out.contains("Result: the evidence does NOT verify."),
        "{out}"
    );
    let (code, out, _) = lintas_audit(&["verify", garbage_arg, "--anchor", anchor_arg, "--json"]);
    assert_eq!(code, 6);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["verified"], false);

    // A well-formed bundle of another format: refused for that.
    let other = dir.path().join("other.bundle");
    let bundle = lintas_proto::audit::v1::EvidenceBundle {
        format: "something-else/v1".into(),
        ..Default::default()
    };
    std::fs::write(&other, prost::Message::encode_to_vec(&bundle)).unwrap();
    let (code, out, _) = lintas_audit(&["verify", other.to_str().unwrap(), "--anchor", anchor_arg]);
    assert_eq!(code, 6);
    assert!(out.contains("not a lintas evidence bundle"), "{out}");

    // No anchor: 3; a wrong command line: 2.
    let missing = dir.path().join("absent.toml");
    let (code, _, err) =
        lintas_audit(&["verify", garbage_arg, "--anchor", missing.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("absent.toml"), "{err}");
    assert_eq!(lintas_audit(&["verify"]).0, 2);
}
