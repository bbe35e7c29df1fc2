//! Bodies in chunks: a REST call's body larger than one chunk travels between the
//! security servers as a sequence of signed messages (`Exchange.Stream`), each chunk
//! read, hashed, signed and recorded on its own, so no body is ever whole in memory.
//! [`fill`] reads the next chunk from an HTTP body, within an idle deadline and the
//! configured size limit; [`Received`] is the HTTP body a receiving server hands on,
//! fed chunk by chunk, which fails (so the peer sees a cut-off body, not a short one)
//! unless the sender's signed end arrived.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// Most bytes of one chunk; a body of at most this many travels in one piece.
pub const CHUNK: usize = 1 << 20;

/// Chunks signed and sent whose records are not yet known to be durable: the sender
/// goes on while the log writes them, in order, and waits when this many are pending.
pub const PENDING: usize = 8;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum Unread {
    /// The next chunk did not arrive within the deadline.
    Slow(Duration),
    /// The body is larger than the limit.
    TooLarge(u64),
    /// The sender failed or went away.
    Broken(String),
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::Slow(d) => write!(
                f,
                "the body did not deliver its next {CHUNK} bytes (or its end) within {} s",
                d.as_secs()
            ),
            Unread::TooLarge(max) => write!(f, "the body is larger than {max} bytes"),
            Unread::Broken(why) => write!(f, "the body was cut off: {why}"),
        }
    }
}

/// Where reading a body stands: bytes so far, and whether it ended.
#[derive(Debug, Default)]
pub struct Progress {
    pub total: u64,
    pub ended: bool,
}

/// How long an eager read waits for more before passing on what it holds.
const COALESCE: Duration = Duration::from_millis(2);

/// Reads the next part of `body` into `buf`: until it holds [`CHUNK`] bytes or the body
/// ends; with `eager`, also as soon as it holds something and nothing more arrives
/// within [`COALESCE`] (a body that trickles, such as a feed of events, is passed on as
/// it comes, and one that flows fills whole chunks). The
/// whole read is bounded by `limit`, so a body that trickles too slowly is given up on;
/// more than `max` bytes in all is refused.
pub async fn fill<B>(
    body: &mut B,
    buf: &mut BytesMut,
    progress: &mut Progress,
    limit: Duration,
    max: u64,
    eager: bool,
) -> Result<(), Unread>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    tokio::time::timeout(limit, read(body, buf, progress, max, eager))
        .await
        .map_err(|_| Unread::Slow(limit))?
}

async fn read<B>(
    body: &mut B,
    buf: &mut BytesMut,
    progress: &mut Progress,
    max: u64,
    eager: bool,
) -> Result<(), Unread>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    while buf.len() < CHUNK && !progress.ended {
        let frame = if eager && !buf.is_empty() {
            match tokio::time::timeout(COALESCE, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Ok(()),
            }
        } else {
            body.frame().await
        };
        match frame {
            None => progress.ended = true,
            Some(Err(e)) => return Err(Unread::Broken(e.to_string())),
            Some(Ok(frame)) => {
                // Trailers are not carried.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                progress.total += data.len() as u64;
                if progress.total > max {
                    return Err(Unread::TooLarge(max));
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(())
}

/// The next chunk out of `buf` (at most [`CHUNK`] bytes).
pub fn take(buf: &mut BytesMut) -> Bytes {
    let n = buf.len().min(CHUNK);
    buf.split_to(n).freeze()
}

/// An HTTP body fed with verified chunks. It ends well only once `ended` is set (the
/// sender's signed end arrived); a feed that stops before fails the body, so whoever
/// reads it sees a body cut off, never a complete-looking short one.
pub struct Received {
    chunks: mpsc::Receiver<Bytes>,
    ended: Box<dyn Fn() -> bool + Send + Sync>,
}

impl Received {
    /// The body of the chunks sent on `chunks`; `ended` says whether the sender's
    /// signed end arrived.
    pub fn new(
        chunks: mpsc::Receiver<Bytes>,
        ended: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        Received {
            chunks,
            ended: Box::new(ended),
        }
    }
}

impl Body for Received {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(None) if (self.ended)() => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(
                "the body was cut off before the sender's signed end".into(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    type Parts = Vec<Result<&'static [u8], &'static str>>;
    /// Bytes read and whether the body ended, or why not.
    type Read = Result<(u64, bool), Unread>;

    fn frames(
        parts: Vec<Result<&'static [u8], &'static str>>,
    ) -> impl Body<Data = Bytes, Error = String> + Unpin {
        StreamBody::new(tokio_stream::iter(parts.into_iter().map(|p| {
            p.map(|b| Frame::data(Bytes::from_static(b)))
                .map_err(|e| e.to_string())
        })))
    }

    #[tokio::test]
    async fn bodies_are_read_in_chunks_within_their_limit() {
        let big = vec![7u8; CHUNK + 10];
        let mut body = Full::new(Bytes::from(big.clone()));
        let (mut buf, mut p) = (BytesMut::new(), Progress::default());
        fill(
            &mut body,
            &mut buf,
            &mut p,
            Duration::from_secs(1),
            u64::MAX,
            false,
        )
        .await
        .unwrap();
        // A chunk's worth is there: the end is not looked for yet.
        assert!(!p.ended);
        assert_eq!(take(&mut buf).len(), CHUNK);
        fill(
            &mut body,
            &mut buf,
            &mut p,
            Duration::from_secs(1),
            u64::MAX,
            false,
        )
        .await
        .unwrap();
        assert!(p.ended);
        assert_eq!(take(&mut buf).len(), 10);
        assert!(buf.is_empty());

        let cases: Vec<(Parts, u64, bool, Read)> = vec![
            (vec![Ok(b"abc"), Ok(b"de")], 10, false, Ok((5, true))),
            (vec![Ok(b"abc"), Ok(b"de")], 5, false, Ok((5, true))),
            (
                vec![Ok(b"abc"), Ok(b"de")],
                4,
                false,
                Err(Unread::TooLarge(4)),
            ),
            (
                vec![Ok(b"abc"), Err("reset")],
                10,
                false,
                Err(Unread::Broken("reset".into())),
            ),
            (vec![], 10, false, Ok((0, true))),
            // Eager: the frames are all ready, so all are read.
            (vec![Ok(b"abc"), Ok(b"de")], 10, true, Ok((5, true))),
        ];
        for (parts, max, eager, want) in cases {
            let mut body = frames(parts);
            let (mut buf, mut p) = (BytesMut::new(), Progress::default());
            let got = fill(
                &mut body,
                &mut buf,
                &mut p,
                Duration::from_secs(1),
                max,
                eager,
            )
            .await
            .map(|()| (p.total, p.ended));
            assert_eq!(got, want);
        }
    }

    #[tokio::test]
    async fn a_slow_body_is_given_up_on_and_an_eager_read_returns_what_it_has() {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, String>>(1);
        let mut body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .unwrap();
        let (mut buf, mut p) = (BytesMut::new(), Progress::default());
        fill(
            &mut body,
            &mut buf,
            &mut p,
            Duration::from_millis(50),
            100,
            true,
        )
        .await
        .unwrap();
        assert_eq!((&buf[..], p.ended), (&b"first"[..], false));
        let idle = fill(
            &mut body,
            &mut BytesMut::new(),
            &mut p,
            Duration::from_millis(50),
            100,
            false,
        )
        .await;
        assert_eq!(idle, Err(Unread::Slow(Duration::from_millis(50))));
        drop(tx);
    }

    #[tokio::test]
    async fn a_received_body_ends_well_only_after_the_signed_end() {
        for ended in [true, false] {
            let (tx, rx) = mpsc::channel(2);
            let flag = Arc::new(AtomicBool::new(false));
            tx.send(Bytes::from_static(b"chunk")).await.unwrap();
            flag.store(ended, Ordering::SeqCst);
            drop(tx);
            let got = Received::new(rx, move || flag.load(Ordering::SeqCst))
                .collect()
                .await;
            assert_eq!(got.is_ok(), ended);
            if let Ok(all) = got {
                assert_eq!(all.to_bytes(), Bytes::from_static(b"chunk"));
            }
        }
    }
}
