use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::echo::v1::echo_server::{Echo, EchoServer};
use crate::echo::v1::{CountRequest, EchoMessage};
use crate::incoming;

/// What the streams did, for tests that watch flow control and cancellation.
#[derive(Default)]
pub struct Watch {
    /// Messages `Count` handed to its stream so far.
    pub produced: AtomicU64,
    /// A `Count` or `Chat` stream saw its caller go away.
    pub cancelled: AtomicBool,
}

#[derive(Default)]
pub struct Echoer {
    pub watch: Arc<Watch>,
}

type Stream = Pin<Box<dyn tokio_stream::Stream<Item = Result<EchoMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Echoer {
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn fill(&self, request: Request<CountRequest>) -> Result<Response<EchoMessage>, Status> {
        let size = request.into_inner().size as usize;
        let payload = (0..size).map(|i| (i % 251) as u8).collect();
        Ok(Response::new(EchoMessage { payload }))
    }

    type CountStream = Stream;

    async fn count(&self, request: Request<CountRequest>) -> Result<Response<Stream>, Status> {
        let r = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        let watch = self.watch.clone();
        tokio::spawn(async move {
            for i in 0..r.count {
                let mut payload = i.to_be_bytes().to_vec();
                payload.resize((r.size as usize).max(4), b'x');
                if tx.send(Ok(EchoMessage { payload })).await.is_err() {
                    watch.cancelled.store(true, Ordering::SeqCst);
                    return;
                }
                watch.produced.fetch_add(1, Ordering::SeqCst);
            }
            if r.fail_at_end {
                let _ = tx.send(Err(Status::aborted("gagal di akhir"))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn join(
        &self,
        request: Request<Streaming<EchoMessage>>,
    ) -> Result<Response<EchoMessage>, Status> {
        let mut stream = request.into_inner();
        let mut payload = Vec::new();
        while let Some(m) = stream.message().await? {
            payload.extend(m.payload);
        }
        Ok(Response::new(EchoMessage { payload }))
    }

    type ChatStream = Stream;

    async fn chat(
        &self,
        request: Request<Streaming<EchoMessage>>,
    ) -> Result<Response<Stream>, Status> {
        let mut stream = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        let watch = self.watch.clone();
        tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(m)) => {
                        let mut payload = b"re: ".to_vec();
                        payload.extend(m.payload);
                        if tx.send(Ok(EchoMessage { payload })).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            watch.cancelled.store(true, Ordering::SeqCst);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves the echo service on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_watched(listener, Arc::default(), shutdown).await
}

/// Serves the echo service, reporting what its streams do to `watch`.
pub async fn serve_watched(
    listener: TcpListener,
    watch: Arc<Watch>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // Messages of up to 64 MiB: tests send ones larger than gRPC's default 4 MiB.
    let echo = EchoServer::new(Echoer { watch })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    tonic::transport::Server::builder()
        .add_service(echo)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}
