//! What a distribution's service manager sees of the `lintas` binary: readiness,
//! watchdog and stopping notifications (`Type=notify` units).

use super::*;
use binary::lintas_cmd;
use std::os::unix::net::UnixDatagram;

/// The next notification the daemon sent (waiting up to 30 s).
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_registry_tells_its_service_manager_it_is_ready_alive_and_stopping() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("registry");
    run(lintas_cmd(&["registry", "init", "--instance", "ID"])
        .arg("--dir")
        .arg(&dir)
        .env("LINTAS_ADMIN_PASSWORD", "a-long-enough-password"));
    let socket_path = root.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let child = lintas_cmd(&["registry", "serve", "--config"])
        .arg(dir.join("registry.toml"))
        .env("LINTAS_REGISTRY_GRPC_LISTEN", "127.0.0.1:0")
        .env("LINTAS_REGISTRY_HTTP_LISTEN", "127.0.0.1:0")
        .env("LINTAS_REGISTRY_OPS_LISTEN", "127.0.0.1:0")
        .env("LINTAS_REGISTRY_MANAGEMENT_LISTEN", "127.0.0.1:0")
        .env("NOTIFY_SOCKET", &socket_path)
        // A watchdog of 0.2 s: kept alive every 0.1 s.
        .env("WATCHDOG_USEC", "200000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(Some(child));

    let ready = next_notification(&socket);
    assert!(
        ready.starts_with("READY=1\nSTATUS=lintas registry listening: grpc="),
        "{ready}"
    );
    // The configuration is checked beside the running registry, which holds its
    // database.
    let checked = run(
        lintas_cmd(&["registry", "serve", "--check-config", "--config"])
            .arg(dir.join("registry.toml")),
    );
    assert!(
        checked.contains("configuration and keys are valid (instance ID; the registry is running"),
        "{checked}"
    );
    for _ in 0..3 {
        assert_eq!(next_notification(&socket), "WATCHDOG=1");
    }
    // A refusal from the running registry exits 5.
    let grpc = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .unwrap()
        .to_owned();
    let admin = |args: &[&str]| {
        lintas_cmd(&["registry", "admin", "--url", &format!("https://{grpc}")])
            .arg("--admin-dir")
            .arg(dir.join("admin"))
            .args(args)
            .output()
            .unwrap()
    };
    let refused = admin(&["approve", "no-such-request"]);
    for list in ["requests", "members", "servers"] {
        let out = admin(&[list, "--json"]);
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed, serde_json::json!({"items": []}), "{list}");
    }
    let shown = run(lintas_cmd(&["certs", "show", "--json"]).arg(dir.join("tls.crt.pem")));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["role"], "registry", "{shown}");
    assert_eq!(shown["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");

    // SIGTERM: the daemon says it is stopping, then ends cleanly.
    let mut child = daemon.0.take().unwrap();
    run(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let stopping = loop {
        let n = next_notification(&socket);
        if n != "WATCHDOG=1" {
            break n;
        }
    };
    assert_eq!(stopping, "STOPPING=1\nSTATUS=stopping");
    assert!(child.wait().unwrap().success());

    // With the registry gone, the same command exits 4.
    let unreachable = admin(&["requests"]);
    assert_eq!(unreachable.status.code(), Some(4), "{unreachable:?}");
}

/// The exit status of `lintas` with `args` (and, after them, `paths`), and what it
/// said on standard output and error.
fn status_of(args: &[&str], paths: &[&std::path::Path]) -> (i32, String) {
    let out = lintas_cmd(args).args(paths).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn exit_statuses_tell_usage_configuration_unreachable_and_verification_apart() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("registry");
    run(lintas_cmd(&["registry", "init", "--instance", "ID"])
        .arg("--dir")
        .arg(&dir)
        .env("LINTAS_ADMIN_PASSWORD", "a-long-enough-password"));
    let ss = root.path().join("ss");
    run(lintas_cmd(&[
        "ss",
        "init",
        "--server-id",
        "ID/GOV/A/SS1",
        "--client",
        "ID/GOV/A/APP",
        "--address",
        "127.0.0.1:1",
    ])
    .arg("--dir")
    .arg(&ss)
    .arg("--anchor")
    .arg(dir.join("anchor.toml"))
    .env("LINTAS_ADMIN_PASSWORD", "a-long-enough-password"));
    let config = ss.join("ss.toml");

    // A wrong command line: 2.
    assert_eq!(status_of(&["ss", "no-such-command"], &[]).0, 2);
    // A configuration that is missing, has an unknown key, or an unknown override: 3,
    // naming the file and the key.
    let missing = root.path().join("absent.toml");
    let (code, said) = status_of(&["ss", "status", "--config"], &[&missing]);
    assert_eq!(code, 3, "{said}");
    assert!(said.contains("absent.toml"), "{said}");
    let bad = root.path().join("bad.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&bad, format!("{text}\nno_such_key = 1\n")).unwrap();
    let (code, said) = status_of(&["ss", "serve", "--check-config", "--config"], &[&bad]);
    assert_eq!(code, 3, "{said}");
    assert!(
        said.contains("bad.toml") && said.contains("no_such_key"),
        "{said}"
    );
    // The server is not running: 4.
    let (code, said) = status_of(&["ss", "service", "list", "--config"], &[&config]);
    assert_eq!(code, 4, "{said}");
    assert!(said.contains("is `lintas ss serve` running?"), "{said}");
    // Evidence that is not a bundle: 6.
    let damaged = root.path().join("damaged.bundle");
    std::fs::write(&damaged, b"\xff\xff\xff not a bundle").unwrap();
    let anchor = dir.join("anchor.toml");
    let (code, said) = status_of(
        &["audit", "verify"],
        &[&damaged, "--anchor".as_ref(), &anchor],
    );
    assert_eq!(code, 6, "{said}");
    assert!(said.contains("is not an evidence bundle"), "{said}");
}

/// The systemd units in `packaging/systemd`, as installed (`/usr/bin/lintas` as the
/// binary under test), in a directory of their own.
fn units_as_installed() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd");
    for entry in std::fs::read_dir(units).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".service") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/bin/lintas", env!("CARGO_BIN_EXE_lintas"));
        // A template is checked as one of its instances.
        let name = name.replace("@.service", "@simponi.service");
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn the_systemd_units_are_valid_and_sandboxed() {
    let Ok(analyze) = which("systemd-analyze") else {
        panic!("systemd-analyze is needed (Debian package systemd)");
    };
    let dir = units_as_installed();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "lintas-adapter@simponi.service",
            "lintas-registry.service",
            "lintas-ss.service"
        ]
    );
    for name in &names {
        // Every key known, every command executable: nothing said at all.
        let out = std::process::Command::new(&analyze)
            .args(["verify", "--man=no", name])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.is_empty(), "{name}: {said}");
        // systemd's own exposure score (0 to 10) is at most 2 ("OK").
        let out = std::process::Command::new(&analyze)
            .args(["security", "--offline=yes", "--threshold=20", name])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} is exposed more than 2.0: {}",
            said.lines().last().unwrap_or_default()
        );
    }
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn man_pages_and_completions_are_generated_from_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    run(lintas_cmd(&["man", "--dir"]).arg(dir.path()));
    let pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for page in [
        "lintas.1",
        "lintas-ss-serve.1",
        "lintas-registry-serve.1",
        "lintas-audit-verify.1",
        "lintas-adapter-serve.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} not in {pages:?}");
    }
    // Each page is valid roff: groff (with its preprocessor for UTF-8) has no warning.
    for page in &pages {
        let out = std::process::Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.path().join(page))
            .output()
            .expect("groff runs (Debian package groff-base)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let serve = std::fs::read_to_string(dir.path().join("lintas-ss-serve.1")).unwrap();
    assert!(serve.contains("check\\-config"), "{serve}");

    // Bash completes `lintas ss se` with the subcommands that start so.
    let script = dir.path().join("lintas.bash");
    std::fs::write(&script, run(&mut lintas_cmd(&["completions", "bash"]))).unwrap();
    let completed = run(std::process::Command::new("bash").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(lintas ss se); COMP_CWORD=2; _lintas lintas se ss; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    )));
    assert_eq!(completed.trim(), "serve service");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(run(&mut lintas_cmd(&["completions", shell])).contains("lintas"));
    }
    let refused = lintas_cmd(&["completions", "tcsh"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid value 'tcsh'"));
}
