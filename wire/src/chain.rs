//! The messages of a stream, chained: each direction of a streaming call is a sequence
//! of signed `MessageHeader`s, numbered from 0, each naming the hash of the one before
//! (the request header's for the first), closed by an end that counts them. The sender
//! builds the chain with [`Chain::next`]; the receiver, and an auditor reading a log,
//! checks it with [`Chain::accept`], so a message dropped, repeated, reordered, moved to
//! another stream or to the other direction is caught.

use lintas_proto::exchange::v1::MessageHeader;
use prost::Message;

/// Signature domain of stream message headers.
pub const MESSAGE_DOMAIN: &str = "lintas/message/v1";

/// One direction of one stream.
#[derive(Debug, Clone)]
pub struct Chain {
    request: [u8; 32],
    from_provider: bool,
    seq: u64,
    prev: [u8; 32],
    ended: bool,
}

impl Chain {
    /// The chain of the stream whose signed request header hashes to `request`, in the
    /// client's direction (`from_provider` false) or the application's.
    pub fn new(request: [u8; 32], from_provider: bool) -> Self {
        Chain {
            request,
            from_provider,
            seq: 0,
            prev: request,
            ended: false,
        }
    }

    /// Messages so far (an end not counted).
    pub fn count(&self) -> u64 {
        self.seq
    }

    /// Hash of the last header in the chain (the request header's before any).
    pub fn last(&self) -> [u8; 32] {
        self.prev
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next header to sign, for `body` (empty for an end), and its encoding.
    pub fn next(&mut self, body: &[u8], time_unix_ms: i64, end: bool) -> Result<Vec<u8>, String> {
        self.next_with(
            (lintas_certs::sha256(body), body.len()),
            time_unix_ms,
            end,
            None,
        )
    }

    /// [`Chain::next`] for a body with hash `body_sha256` and length `body_len`, the
    /// header carrying a REST answer's status and headers if `rest` is given.
    pub fn next_with(
        &mut self,
        (body_sha256, body_len): ([u8; 32], usize),
        time_unix_ms: i64,
        end: bool,
        rest: Option<lintas_proto::exchange::v1::RestResponse>,
    ) -> Result<Vec<u8>, String> {
        if self.ended {
            return Err("the stream already ended in this direction".into());
        }
        let header = MessageHeader {
            request_header_sha256: self.request.to_vec(),
            from_provider: self.from_provider,
            seq: self.seq,
            prev_sha256: self.prev.to_vec(),
            body_sha256: body_sha256.to_vec(),
            body_len: body_len as u64,
            time_unix_ms,
            end,
            rest,
        }
        .encode_to_vec();
        self.advance(&header, end);
        Ok(header)
    }

    fn advance(&mut self, header: &[u8], end: bool) {
        self.prev = lintas_certs::sha256(header);
        if end {
            self.ended = true;
        } else {
            self.seq += 1;
        }
    }

    /// Checks that `header` (whose signature the caller verified) is the next one of
    /// this chain and describes `body` (`None`: only the header is known, as in a log
    /// without bodies); on success the chain moves on.
    pub fn accept(&mut self, header: &[u8], body: Option<&[u8]>) -> Result<MessageHeader, String> {
        let h = lintas_proto::decode_exact::<MessageHeader>(header)
            .map_err(|e| format!("message header is malformed: {e}"))?;
        let direction = if self.from_provider {
            "response"
        } else {
            "request"
        };
        if self.ended {
            return Err(format!("a {direction} message after the end of the stream"));
        }
        if h.request_header_sha256 != self.request {
            return Err(format!(
                "{direction} message {} belongs to another stream",
                h.seq
            ));
        }
        if h.from_provider != self.from_provider {
            return Err(format!("message {} claims the other direction", h.seq));
        }
        if h.seq != self.seq {
            return Err(format!(
                "{direction} message {} arrived where message {} was due (one is missing, repeated or out of order)",
                h.seq, self.seq
            ));
        }
        if h.prev_sha256 != self.prev {
            return Err(format!(
                "{direction} message {} does not follow the one before it",
                h.seq
            ));
        }
        if h.end && h.body_len != 0 {
            return Err(format!("the end of the {direction} stream carries a body"));
        }
        if let Some(body) = body
            && !crate::body_matches(&h.body_sha256, h.body_len, body)
        {
            return Err(format!(
                "{direction} message {} does not match its signed hash",
                h.seq
            ));
        }
        self.advance(header, h.end);
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(edit: impl FnOnce(&mut MessageHeader), base: &MessageHeader) -> Vec<u8> {
        let mut h = base.clone();
        edit(&mut h);
        h.encode_to_vec()
    }

    #[test]
    fn a_chain_accepts_its_messages_in_order_and_nothing_else() {
        let request = [7u8; 32];
        let mut sender = Chain::new(request, false);
        let first = sender.next(b"satu", 1, false).unwrap();
        let second = sender.next(b"dua", 2, false).unwrap();
        let end = sender.next(b"", 3, true).unwrap();
        assert!(sender.next(b"tiga", 4, false).is_err());

        let mut receiver = Chain::new(request, false);
        receiver.accept(&first, Some(b"satu")).unwrap();
        receiver.accept(&second, Some(b"dua")).unwrap();
        receiver.accept(&end, Some(b"")).unwrap();
        assert!(receiver.ended());
        assert_eq!(receiver.count(), 2);
        assert_eq!(receiver.last(), lintas_certs::sha256(&end));

        let base = MessageHeader::decode(first.as_slice()).unwrap();
        // (what is wrong, the header, the body, words in the error)
        let cases: Vec<(&str, Vec<u8>, &[u8], &str)> = vec![
            (
                "another stream",
                header(|h| h.request_header_sha256 = vec![8; 32], &base),
                b"satu",
                "another stream",
            ),
            (
                "other direction",
                header(|h| h.from_provider = true, &base),
                b"satu",
                "other direction",
            ),
            (
                "skipped",
                header(|h| h.seq = 1, &base),
                b"satu",
                "where message 0 was due",
            ),
            (
                "wrong link",
                header(|h| h.prev_sha256 = vec![0; 32], &base),
                b"satu",
                "does not follow",
            ),
            ("other body", first.clone(), b"lain", "does not match"),
            (
                "end with a body",
                header(|h| h.end = true, &base),
                b"satu",
                "carries a body",
            ),
            ("garbage", vec![0xff, 0xff], b"", "malformed"),
        ];
        for (what, bytes, body, words) in cases {
            let e = Chain::new(request, false)
                .accept(&bytes, Some(body))
                .unwrap_err();
            assert!(e.contains(words), "{what}: {e}");
        }
        // Replayed after it was accepted, and anything after the end.
        let mut c = Chain::new(request, false);
        c.accept(&first, None).unwrap();
        assert!(
            c.accept(&first, None)
                .unwrap_err()
                .contains("where message 1 was due")
        );
        assert!(
            receiver
                .accept(&second, None)
                .unwrap_err()
                .contains("after the end")
        );
    }
}
