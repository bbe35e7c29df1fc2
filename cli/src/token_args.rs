//! `--pkcs11-*`: the hardware token `init` makes a node's signing keys in.

use std::path::PathBuf;

use lintas_pkcs11::Pkcs11Config;

/// Make the signing keys in a PKCS#11 token instead of key files (all three together).
#[derive(clap::Args, Debug, Default)]
pub struct TokenArgs {
    /// The token's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, requires_all = ["pkcs11_token", "pkcs11_pin_file"])]
    pub pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, requires = "pkcs11_module")]
    pub pkcs11_token: Option<String>,
    /// A file holding the token user's PIN (mode 0600). Its absolute path goes into the
    /// configuration.
    #[arg(long, requires = "pkcs11_module")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The `[pkcs11]` section these arguments give, if any.
    pub fn config(self) -> std::io::Result<Option<Pkcs11Config>> {
        let (Some(module), Some(token), Some(pin_file)) =
            (self.pkcs11_module, self.pkcs11_token, self.pkcs11_pin_file)
        else {
            return Ok(None);
        };
        Ok(Some(Pkcs11Config {
            module,
            token,
            pin_file: std::path::absolute(pin_file)?,
        }))
    }
}
