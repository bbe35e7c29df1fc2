//! The few encodings between PKCS#11 and lintas: a token signs with CKM_ECDSA and
//! answers r || s, while lintas signatures are ASN.1 DER (`ECDSA-Sig-Value`); a token
//! gives a public key as CKA_EC_POINT, the point wrapped in a DER OCTET STRING.

/// DER of the named curve P-256 (OID 1.2.840.10045.3.1.7), as CKA_EC_PARAMS holds it.
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Length of an uncompressed P-256 point: 0x04 || X || Y.
const POINT_LEN: usize = 65;

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from a P-256 token's
/// 64-byte r || s.
pub fn signature_from_raw(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.len() != 64 {
        return Err(format!(
            "the token answered a signature of {} bytes, not the 64 of P-256 r || s",
            raw.len()
        ));
    }
    let (r, s) = raw.split_at(32);
    let (r, s) = (integer(r), integer(s));
    // At most 2 × 35 bytes: every length fits in one byte.
    let mut out = Vec::with_capacity(2 + r.len() + s.len());
    out.push(0x30);
    out.push((r.len() + s.len()) as u8);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Ok(out)
}

/// A DER INTEGER of the unsigned big-endian `value`: no leading zero bytes, but one
/// where the high bit would make it negative.
fn integer(value: &[u8]) -> Vec<u8> {
    let first = value
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(value.len() - 1);
    let value = &value[first..];
    let pad = value[0] & 0x80 != 0;
    let mut out = vec![0x02, (value.len() + usize::from(pad)) as u8];
    if pad {
        out.push(0);
    }
    out.extend_from_slice(value);
    out
}

/// The uncompressed point in a CKA_EC_POINT: DER OCTET STRING as PKCS#11 says, or the
/// bare point as some tokens give it.
pub fn point_from_attribute(value: &[u8]) -> Result<Vec<u8>, String> {
    let point = match value {
        [0x04, len, rest @ ..] if usize::from(*len) == POINT_LEN && rest.len() == POINT_LEN => rest,
        bare if bare.len() == POINT_LEN => bare,
        _ => {
            return Err(format!(
                "the token's public key ({} bytes) is not an uncompressed P-256 point",
                value.len()
            ));
        }
    };
    if point[0] != 0x04 {
        return Err("the token's public key is not an uncompressed point".into());
    }
    Ok(point.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_signatures_become_der() {
        let mut high = [0u8; 64];
        high[0] = 0x80;
        high[63] = 0x01;
        let mut zeros = [0u8; 64];
        zeros[31] = 0x05;
        zeros[63] = 0x7f;
        // (r || s, the DER expected; None: refused)
        let cases: [(&[u8], Option<Vec<u8>>); 4] = [
            // r's high bit set: a zero byte keeps it positive; s loses its leading zeros.
            (
                &high,
                Some(
                    [
                        &[0x30, 0x26, 0x02, 0x21, 0x00, 0x80][..],
                        &[0; 31],
                        &[0x02, 0x01, 0x01],
                    ]
                    .concat(),
                ),
            ),
            // Leading zeros go, down to one byte.
            (
                &zeros,
                Some(vec![0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x7f]),
            ),
            (&[0u8; 63], None),
            (&[], None),
        ];
        for (raw, want) in cases {
            assert_eq!(signature_from_raw(raw).ok(), want, "{raw:02x?}");
        }
    }

    #[test]
    fn a_der_signature_made_here_verifies() {
        // A real signature, taken apart into r || s and put back together.
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
            UnparsedPublicKey,
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        for i in 0..32u8 {
            let msg = [i; 7];
            let raw = key.sign(&rng, &msg).unwrap();
            let der = signature_from_raw(raw.as_ref()).unwrap();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref())
                .verify(&msg, &der)
                .unwrap();
        }
    }

    #[test]
    fn points_are_unwrapped_or_refused() {
        let point = [&[0x04][..], &[7; 64]].concat();
        let wrapped = [&[0x04, 0x41][..], &point].concat();
        let mut compressed = point.clone();
        compressed[0] = 0x02;
        let cases: [(&[u8], bool); 5] = [
            (&wrapped, true),
            (&point, true),
            (&compressed, false),
            (&wrapped[..66], false),
            (&[], false),
        ];
        for (value, ok) in cases {
            let got = point_from_attribute(value);
            assert_eq!(got.is_ok(), ok, "{value:02x?}");
            if ok {
                assert_eq!(got.unwrap(), point);
            }
        }
    }
}
