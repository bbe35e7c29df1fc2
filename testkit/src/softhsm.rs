//! A SoftHSM2 token of a test's own: its token directory and configuration in a
//! temporary directory, initialised with `softhsm2-util` from Debian's softhsm2.
//!
//! SoftHSM reads the configuration named by `SOFTHSM2_CONF` when a process first loads
//! it, so the processes a test starts get [`SoftHsm::env`]; a test that loads the
//! module itself sets that variable before anything loads it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's softhsm2 puts its PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The user PIN of every token made here.
pub const PIN: &str = "4711-lintas";

pub struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    /// An empty token directory with its configuration. Panics with what to install
    /// when SoftHSM2 is missing.
    pub fn new() -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: install Debian's softhsm2 (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, format!("{PIN}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        SoftHsm { dir }
    }

    /// The configuration file `SOFTHSM2_CONF` must name.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// A file holding [`PIN`], mode 0600.
    pub fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    /// What a process started by the test needs in its environment.
    pub fn env(&self) -> (&'static str, PathBuf) {
        ("SOFTHSM2_CONF", self.conf())
    }

    /// Initialises a new token labelled `label` in a free slot, with user PIN [`PIN`].
    pub fn add_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", self.conf())
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                "so-4711",
            ])
            .args(["--pin", PIN])
            .output()
            .expect("softhsm2-util runs (install Debian's softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}
