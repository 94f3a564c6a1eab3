//! The HTTP server loop: hyper with the limits a server facing the network needs, which
//! `axum::serve` does not set. HTTP/1.1 only (Bouncer needs neither HTTP/2 nor upgrades, and
//! guessing the protocol first is a read without a timeout): a client has
//! `BOUNCER_HEADER_READ_TIMEOUT` (10 s) to send its request headers, from the first byte, so
//! a connection that sends nothing or trickles is dropped; headers are bounded; and on
//! shutdown the connections finish what they are doing (up to 30 seconds).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long a connection accepted just before shutdown has to send its request.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(300);
/// How long connections in flight may take to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` completes, then lets the connections finish.
pub async fn serve(listener: TcpListener, app: Router, header_timeout: Duration, shutdown: impl Future<Output = ()>) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(64 * 1024);
    let graceful = GracefulShutdown::new();
    let serve_one = |stream: tokio::net::TcpStream, peer: SocketAddr| {
        let service = app.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            request
        });
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            // Accepting first: a connection the kernel already holds is served, not reset.
            biased;
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        serve_one(stream, peer);
    }
    // Serve what is still queued in the kernel, then give the connections that have not sent
    // their first request yet a moment to do so: shutting down closes a connection whose
    // request has not been read, and its client would see a reset instead of an answer.
    while let Ok(Ok((stream, peer))) = tokio::time::timeout(Duration::from_millis(5), listener.accept()).await {
        serve_one(stream, peer);
    }
    drop(listener);
    tokio::time::sleep(FIRST_REQUEST_GRACE).await;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open after the grace period; closing them"),
    }
}
