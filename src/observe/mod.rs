//! What operators see of a running server: a request id and a tracing span around every
//! request (so every log line of a request carries its id, in text and in JSON), and the
//! Prometheus metrics ([`metrics`]). The log lines themselves are written where things
//! happen (login, sessions, settings); `docs/OBSERVABILITY.md` lists them.

pub mod metrics;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Response, header};
use tracing::Span;
use tracing::field::Empty;

use crate::AppState;
pub use metrics::{LoginOutcome, Metrics};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client.
pub const MAX_REQUEST_ID: usize = 64;

/// The id of a request: the client's `X-Request-Id` when it is sane, else one of ours.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id if it is 1 to 64 characters of `[A-Za-z0-9._-]` (anything else could
    /// forge log lines or carry a secret into them), else a new one.
    pub fn of(request: &Request) -> RequestId {
        match request.headers().get(X_REQUEST_ID) {
            Some(value) if is_sane(value.as_bytes()) => RequestId(value.clone()),
            _ => RequestId::generate(),
        }
    }

    /// A new id: this process's random prefix and a counter (unique without a random draw per
    /// request), 16 hex digits or more.
    pub fn generate() -> RequestId {
        static PREFIX: OnceLock<u32> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| u32::from_le_bytes(crate::auth::token::random_bytes::<4>()));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // By hand rather than `format!`: this runs on every request.
        let value = (u64::from(prefix) << 32) | (n & 0xffff_ffff);
        let mut hex = [0u8; 16];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((value >> (60 - 4 * i)) & 0xf) as usize];
        }
        RequestId(HeaderValue::from_bytes(&hex).expect("hex digits are a header value"))
    }

    pub fn as_str(&self) -> &str {
        // Checked (or made) of ASCII letters, digits and `._-` only.
        self.0.to_str().unwrap_or_default()
    }
}

pub fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Where the router leaves the template of the route that a request matched, for the
/// outermost middleware (which runs before routing) to label its metrics with.
#[derive(Clone, Default)]
pub struct RouteSlot(Arc<OnceLock<MatchedPath>>);

/// The outermost layer: gives the request its id (answered in `X-Request-Id`) and records
/// its duration in the metrics. The span is made by `TraceLayer`, inside, with [`span`].
///
/// A plain service with a future of its own rather than `middleware::from_fn`, which boxes
/// the inner service and the future on every request: this runs ~40,000 times a second.
#[derive(Clone)]
pub struct ObserveLayer(pub AppState);

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, state: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: AppState,
}

impl<S, B> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let id = RequestId::of(&request);
        let method = metrics::method_index(request.method());
        let route = RouteSlot::default();
        request.extensions_mut().insert(id.clone());
        request.extensions_mut().insert(route.clone());
        Observed { inner: self.inner.call(request), state: self.state.clone(), started, id: Some(id), method, route }
    }
}

pin_project_lite::pin_project! {
    /// The response of an observed request: gets its `X-Request-Id` and `nosniff`, and is timed.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        state: AppState,
        started: Instant,
        id: Option<RequestId>,
        method: usize,
        route: RouteSlot,
    }
}

impl<F, B, E> Future for Observed<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let Ok(response) = &mut result {
            if let Some(id) = this.id.take() {
                response.headers_mut().insert(X_REQUEST_ID, id.0);
            }
            // No response is for a browser to sniff into something else (JSON as HTML, say).
            response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            let template = this.route.0.get().map(MatchedPath::as_str);
            this.state.metrics.request(template, *this.method, response.status(), this.started.elapsed());
        }
        Poll::Ready(result)
    }
}

/// The span of a request (for `TraceLayer::make_span_with`): at INFO, so that the default
/// filter keeps it and every line logged while the request is served carries `request_id`.
/// `actor` and `actor_id` are filled in by [`record_actor`] once the request has said who it
/// is (logins, logouts, and authenticated requests that may change something). The method
/// and path are not in it: formatting them cost every request about as much as the rest of
/// the span; [`on_request`] logs them at DEBUG.
pub fn span<B>(request: &axum::http::Request<B>) -> Span {
    let id = request.extensions().get::<RequestId>().map_or("-", RequestId::as_str);
    tracing::info_span!("request", request_id = %id, actor = Empty, actor_id = Empty)
}

/// The trace layer's first line of a request (DEBUG): what was asked.
pub fn on_request<B>(request: &axum::http::Request<B>, _span: &Span) {
    tracing::debug!(method = %request.method(), path = request.uri().path(), "started processing request");
}

/// Names who the current request acts as in its span (a no-op outside a request span).
/// Once per request: the text format appends a field recorded twice rather than replace it.
pub fn record_actor(id: Option<i64>, username: &str) {
    let span = Span::current();
    span.record("actor", username);
    if let Some(id) = id {
        span.record("actor_id", id);
    }
}

/// Adds the actor's id, once known, to a span that has its name already.
pub fn record_actor_id(id: i64) {
    Span::current().record("actor_id", id);
}

/// A layer for the API router (where the matched route is known) that writes the route's
/// template into the request's [`RouteSlot`]. A plain service, not a boxed middleware: it
/// costs the request one atomic increment.
#[derive(Clone, Copy, Default)]
pub struct NoteRouteLayer;

impl<S> tower::Layer<S> for NoteRouteLayer {
    type Service = NoteRoute<S>;

    fn layer(&self, inner: S) -> NoteRoute<S> {
        NoteRoute(inner)
    }
}

#[derive(Clone)]
pub struct NoteRoute<S>(S);

impl<S: tower::Service<Request>> tower::Service<Request> for NoteRoute<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> S::Future {
        if let (Some(slot), Some(path)) =
            (request.extensions().get::<RouteSlot>(), request.extensions().get::<MatchedPath>())
        {
            let _ = slot.0.set(path.clone());
        }
        self.0.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_taken_from_clients() {
        assert!(is_sane(b"abc-123_X.y"));
        assert!(is_sane(&[b'a'; MAX_REQUEST_ID]));
        assert!(!is_sane(&[b'a'; MAX_REQUEST_ID + 1]));
        assert!(!is_sane(b""));
        for hostile in [&b"a b"[..], b"a\"b", b"a\nb", b"bnc_token=x", b"a/b", "é".as_bytes()] {
            assert!(!is_sane(hostile), "{hostile:?}");
        }
    }

    #[test]
    fn generated_ids_are_unique_and_sane() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a.as_str(), b.as_str());
        assert!(is_sane(a.as_str().as_bytes()) && a.as_str().len() >= 16);
    }
}
