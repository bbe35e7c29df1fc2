//! What the fuzz targets share: an anchor of a throw-away instance, made once.

use std::sync::OnceLock;

/// A trust anchor of a fresh instance (its CA and configuration-signing certificate).
pub fn anchor() -> &'static lintas_globalconf::Anchor {
    static ANCHOR: OnceLock<lintas_globalconf::Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        use lintas_certs::ca::{Ca, Validity};
        let instance: lintas_identifiers::Code = "ID".parse().unwrap();
        let validity = Validity::starting(
            std::time::SystemTime::now(),
            std::time::Duration::from_secs(86400),
        )
        .unwrap();
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
        lintas_globalconf::Anchor::new(
            instance,
            vec!["https://127.0.0.1:4400".into()],
            vec!["http://127.0.0.1:4401/globalconf".into()],
            &[ca.cert_der().to_vec()],
            &[signer],
        )
        .unwrap()
    })
}
