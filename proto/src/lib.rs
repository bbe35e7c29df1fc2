//! Wire and storage formats of lintas, generated from the `.proto` files beside this crate.
//!
//! Everything that is signed travels as the exact encoded bytes of one of these messages
//! (for example [`globalconf::v1::SignedGlobalConf::conf`]), so a verifier never re-encodes
//! before checking a signature.

pub mod globalconf {
    pub mod v1 {
        tonic::include_proto!("lintas.globalconf.v1");
    }
}

pub mod registry {
    pub mod v1 {
        tonic::include_proto!("lintas.registry.v1");
    }
}

pub mod exchange {
    pub mod v1 {
        tonic::include_proto!("lintas.exchange.v1");
    }
}

pub mod log {
    pub mod v1 {
        tonic::include_proto!("lintas.log.v1");
    }
}

pub mod ss {
    pub mod v1 {
        tonic::include_proto!("lintas.ss.v1");
    }
}

pub mod audit {
    pub mod v1 {
        tonic::include_proto!("lintas.audit.v1");
    }
}

pub mod discovery {
    pub mod v1 {
        tonic::include_proto!("lintas.discovery.v1");
    }
}
pub mod events {
    pub mod v1 {
        tonic::include_proto!("lintas.events.v1");
    }
}
pub mod opmon {
    pub mod v1 {
        tonic::include_proto!("lintas.opmon.v1");
    }
}

/// Decodes `bytes` as `M` only if they are exactly `M`'s own encoding of what they hold:
/// every byte is a field `M` knows, no field appears twice, fields come in number
/// order, and nothing is encoded that the encoder would leave out (a default value, a
/// longer varint than needed). What is signed or proven is thereby exactly what is read:
/// no byte can be added, repeated or changed without the decoding failing, where a
/// lenient decoder would skip unknown fields and keep the last of repeated ones.
/// Every lintas encoder (prost) writes this form.
pub fn decode_exact<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, String> {
    let m = M::decode(bytes).map_err(|e| e.to_string())?;
    if m.encoded_len() != bytes.len() || m.encode_to_vec() != bytes {
        return Err(
            "it is not in the one encoding lintas writes (a field it does not know, a field twice, fields out of order, or a value encoded at more length than needed)"
                .into(),
        );
    }
    Ok(m)
}

#[cfg(test)]
mod exact_tests {
    use super::exchange::v1::RequestHeader;
    use prost::Message;

    #[test]
    fn only_the_encoders_own_bytes_decode_exactly() {
        let header = RequestHeader {
            client: "ID/GOV/A/APP".into(),
            message_id: "m1".into(),
            time_unix_ms: 5,
            ..Default::default()
        };
        let good = header.encode_to_vec();
        assert_eq!(super::decode_exact::<RequestHeader>(&good).unwrap(), header);
        // (what is appended or changed, refused)
        let mut unknown = good.clone();
        unknown.extend_from_slice(&[0xF8, 0x07, 0x01]); // field 127, varint 1
        let mut twice = good.clone();
        twice.extend_from_slice(&good[..good[1] as usize + 2]); // field 1 again
        let mut reordered = good[good[1] as usize + 2..].to_vec();
        reordered.extend_from_slice(&good[..good[1] as usize + 2]);
        let mut default = good.clone();
        default.extend_from_slice(&[0x22, 0x00]); // field 4, the empty string, written out
        let mut long = good.clone();
        let last = long.len() - 1;
        long[last] |= 0x80; // time 5 as a two-byte varint
        long.push(0x00);
        for (name, bytes) in [
            ("unknown", unknown),
            ("twice", twice),
            ("reordered", reordered),
            ("default", default),
            ("long varint", long),
        ] {
            assert!(
                super::decode_exact::<RequestHeader>(&bytes).is_err(),
                "{name} was accepted"
            );
        }
        assert!(super::decode_exact::<RequestHeader>(&[0xFF]).is_err());
    }
}

/// Pages of long lists: a request names a page size and the token the previous page
/// ended with; the answer carries the next token, empty after the last page. A token is
/// the last key of its page, hex-encoded, so pages stay consistent while items are added
/// or removed between requests (nothing is skipped or repeated that existed throughout).
pub mod paging {
    /// Items on a page when the request names no size.
    pub const DEFAULT_SIZE: usize = 500;
    /// Most items on one page.
    pub const MAX_SIZE: usize = 5000;

    /// The page size for a request's `page_size` (0: the default).
    pub fn size(requested: u32) -> usize {
        match requested as usize {
            0 => DEFAULT_SIZE,
            n => n.min(MAX_SIZE),
        }
    }

    /// The key a page token names (`None` for the first page).
    pub fn after(token: &str) -> Result<Option<String>, String> {
        if token.is_empty() {
            return Ok(None);
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| {
                token
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .filter(|_| token.len().is_multiple_of(2));
        bytes
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| "page_token is not one this server gave".to_owned())
    }

    fn token_of(key: &str) -> String {
        key.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// One page of `items`, each with its key (any order): those after `token` in key
    /// order, at most `size`, and the token of the next page (empty after the last).
    pub fn page<'a, T: Clone + 'a>(
        items: impl IntoIterator<Item = (String, &'a T)>,
        token: &str,
        size: usize,
    ) -> Result<(Vec<T>, String), String> {
        let after = after(token)?;
        let mut keyed: Vec<(String, &T)> = items
            .into_iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let more = keyed.len() > size;
        keyed.truncate(size.max(1));
        let next = match (more, keyed.last()) {
            (true, Some((k, _))) => token_of(k),
            _ => String::new(),
        };
        Ok((keyed.into_iter().map(|(_, v)| v.clone()).collect(), next))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn pages_cover_every_item_once_in_key_order() {
            let items: Vec<(String, u32)> = (0..1234).map(|i| (format!("k{i:05}"), i)).collect();
            for size in [1, 7, 500, 1233, 1234, 5000] {
                let (mut seen, mut token) = (Vec::new(), String::new());
                loop {
                    let (page, next) = page(
                        items.iter().rev().map(|(k, v)| (k.clone(), v)),
                        &token,
                        size,
                    )
                    .unwrap();
                    assert!(page.len() <= size);
                    seen.extend(page);
                    if next.is_empty() {
                        break;
                    }
                    token = next;
                }
                assert_eq!(seen, (0..1234).collect::<Vec<_>>(), "size {size}");
            }
            // Items added before the token's key are not repeated; after it, they show.
            let (first, next) = page(items.iter().map(|(k, v)| (k.clone(), v)), "", 10).unwrap();
            assert_eq!(first.len(), 10);
            let grown: Vec<(String, u32)> = items
                .iter()
                .cloned()
                .chain([("a-before".to_owned(), 9000), ("z-after".to_owned(), 9001)])
                .collect();
            let mut rest = Vec::new();
            let mut token = next;
            while !token.is_empty() {
                let (p, n) = page(grown.iter().map(|(k, v)| (k.clone(), v)), &token, 100).unwrap();
                rest.extend(p);
                token = n;
            }
            assert!(!rest.contains(&9000) && rest.contains(&9001));
            assert_eq!(rest.len(), 1234 - 10 + 1);
        }

        #[test]
        fn sizes_and_tokens_are_checked() {
            let cases = [(0, DEFAULT_SIZE), (1, 1), (MAX_SIZE as u32 + 1, MAX_SIZE)];
            for (asked, given) in cases {
                assert_eq!(size(asked), given);
            }
            for bad in ["zz", "abc", "c3"] {
                // "c3" is one byte that is not UTF-8 on its own.
                assert!(after(bad).is_err(), "{bad}");
            }
            assert_eq!(
                after(&token_of("ID/GOV/A")).unwrap().as_deref(),
                Some("ID/GOV/A")
            );
        }
    }
}
