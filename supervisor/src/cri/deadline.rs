//! The client's gRPC deadline (`grpc-timeout`), answered as `DeadlineExceeded`.
//!
//! tonic enforces the header itself but reports an expired deadline as `Cancelled`
//! ("Timeout expired"); CRI clients expect `DeadlineExceeded`, as containerd answers. tonic's
//! timer wraps every `Server::layer` and reads the header before this layer sees it, so it
//! cannot be turned off from here: this layer starts its own timer first and sets it slightly
//! earlier, so the deadline always ends here. On expiry the handler future is dropped, which
//! cancels it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tonic::codegen::http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// How much earlier than the client's deadline this layer answers: tonic's timer starts a
/// moment later and rounds to the same millisecond ticks, so a millisecond keeps it behind.
const AHEAD_OF_TONIC: Duration = Duration::from_millis(1);

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`), per the gRPC over HTTP/2 spec. Anything else is `None`.
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    // 8 digits keep even hours far from overflowing
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Removes a well-formed `grpc-timeout` header and returns its duration; a malformed one
/// stays for tonic to judge.
fn take_timeout(headers: &mut HeaderMap) -> Option<Duration> {
    let timeout = parse_timeout(headers.get(GRPC_TIMEOUT)?.as_bytes())?;
    headers.remove(GRPC_TIMEOUT);
    Some(timeout)
}

/// Wraps a gRPC server's services in [`Deadline`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// Runs each request under its client's deadline, if it sent one.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Deadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clock starts here, inside tonic's call and before its own timer starts.
        let timer = take_timeout(req.headers_mut()).map(|timeout| {
            let deadline = Instant::now() + timeout.saturating_sub(AHEAD_OF_TONIC);
            Timer {
                timeout,
                deadline,
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
            }
        });
        ResponseFuture {
            inner: Box::pin(self.inner.call(req)),
            timer,
        }
    }
}

struct Timer {
    /// As the client sent it, for the message.
    timeout: Duration,
    deadline: Instant,
    sleep: Pin<Box<Sleep>>,
}

/// The handler's response, or `DeadlineExceeded` once the deadline has passed.
pub struct ResponseFuture<F> {
    inner: Pin<Box<F>>,
    timer: Option<Timer>,
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if let Poll::Ready(out) = self.inner.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        let Some(timer) = self.timer.as_mut() else {
            return Poll::Pending;
        };
        // The clock as well as the timer: tonic's timer may fire on another thread after
        // ours was checked but before tonic checks its own.
        if timer.sleep.as_mut().poll(cx).is_ready() || Instant::now() >= timer.deadline {
            let status = tonic::Status::deadline_exceeded(format!(
                "deadline of {:?} exceeded",
                timer.timeout
            ));
            return Poll::Ready(Ok(status.into_http()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tonic::codegen::http::HeaderValue;
    use tonic::Code;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn parses_every_unit() {
        let cases = [
            ("3H", Duration::from_secs(3 * 3600)),
            ("2M", Duration::from_secs(120)),
            ("42S", Duration::from_secs(42)),
            ("13m", Duration::from_millis(13)),
            ("1000000u", Duration::from_secs(1)),
            ("82n", Duration::from_nanos(82)),
            ("0S", Duration::ZERO),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
            ("00000001m", Duration::from_millis(1)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timeout(text.as_bytes()), Some(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_the_spec_does_not_allow() {
        for text in [
            "",
            "S",
            "1",
            "10",
            "1s",
            "1h",
            "1x",
            "123456789S",
            "+1S",
            "-1S",
            " 1S",
            "1 S",
            "1.5S",
            "1SS",
            "oneS",
            "\u{ff11}S",
        ] {
            assert_eq!(parse_timeout(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn only_a_well_formed_header_is_taken() {
        let mut headers = HeaderMap::new();
        assert_eq!(take_timeout(&mut headers), None);
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("soon"));
        assert_eq!(take_timeout(&mut headers), None);
        assert!(headers.contains_key(GRPC_TIMEOUT));
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("250m"));
        assert_eq!(take_timeout(&mut headers), Some(Duration::from_millis(250)));
        assert!(!headers.contains_key(GRPC_TIMEOUT));
    }

    type Body = tonic::body::Body;

    /// Answers after `delay` with a 200 whose `x-saw-timeout` says whether the request
    /// still carried `grpc-timeout`; `dropped` turns true when the handler is dropped.
    #[derive(Clone)]
    struct Handler {
        delay: Duration,
        dropped: Arc<AtomicBool>,
    }

    struct OnDrop(Arc<AtomicBool>);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Service<Request<Body>> for Handler {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future =
            Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send + 'static>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<Body>) -> Self::Future {
            let saw = req.headers().get(GRPC_TIMEOUT).cloned();
            let delay = self.delay;
            let guard = OnDrop(self.dropped.clone());
            Box::pin(async move {
                let _guard = guard;
                tokio::time::sleep(delay).await;
                let mut res = Response::new(Body::default());
                let saw = saw.unwrap_or_else(|| HeaderValue::from_static("none"));
                res.headers_mut().insert("x-saw-timeout", saw);
                Ok(res)
            })
        }
    }

    fn handler(delay: Duration) -> (Deadline<Handler>, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        let svc = DeadlineLayer.layer(Handler {
            delay,
            dropped: dropped.clone(),
        });
        (svc, dropped)
    }

    fn request(timeout: Option<&'static str>) -> Request<Body> {
        let mut req = Request::new(Body::default());
        if let Some(t) = timeout {
            req.headers_mut()
                .insert(GRPC_TIMEOUT, HeaderValue::from_static(t));
        }
        req
    }

    #[tokio::test]
    async fn a_slow_handler_is_cut_off_with_deadline_exceeded() {
        let (svc, dropped) = handler(Duration::from_secs(30));
        let start = std::time::Instant::now();
        let res = svc.oneshot(request(Some("200m"))).await.unwrap();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
        assert!(
            took >= Duration::from_millis(150),
            "answered after {took:?}"
        );
        // trailers-only: HTTP 200 with the status in the headers
        assert_eq!(res.status(), 200);
        let status = tonic::Status::from_header_map(res.headers()).expect("grpc-status");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("200ms"), "{}", status.message());
        assert!(
            dropped.load(Ordering::SeqCst),
            "the handler is still running"
        );
    }

    #[tokio::test]
    async fn a_fast_handler_passes_through_without_the_header() {
        let (svc, _) = handler(Duration::from_millis(10));
        let res = svc.oneshot(request(Some("5S"))).await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("grpc-status").is_none());
        assert_eq!(res.headers()["x-saw-timeout"], "none");
    }

    #[tokio::test]
    async fn without_a_usable_header_the_request_is_left_alone() {
        let (svc, _) = handler(Duration::from_millis(300));
        let res = svc.clone().oneshot(request(None)).await.unwrap();
        assert_eq!(res.headers()["x-saw-timeout"], "none");
        // malformed: untouched, for tonic to judge; and no deadline from this layer
        let res = svc.oneshot(request(Some("10x"))).await.unwrap();
        assert!(res.headers().get("grpc-status").is_none());
        assert_eq!(res.headers()["x-saw-timeout"], "10x");
    }

    #[tokio::test]
    async fn a_spent_deadline_answers_at_once() {
        let (svc, _) = handler(Duration::from_secs(30));
        let start = std::time::Instant::now();
        let res = svc.oneshot(request(Some("0n"))).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        let status = tonic::Status::from_header_map(res.headers()).expect("grpc-status");
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }
}
