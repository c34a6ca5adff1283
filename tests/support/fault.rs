//! The one fault layer every fake shares.
//!
//! A [`Fault`] is switched at runtime on a fake's [`FakeServer`]
//! (`fake.server()`): for every request ([`FakeServer::set_fault`]), or
//! through [`Rule`]s for the requests a [`Match`] selects (method and a
//! path fragment), optionally for the next N of them only. A [`Hold`] gate
//! stops matching requests until the test releases them, and tells the test
//! when one has arrived.
//!
//! The layer runs in front of the fake's own routes: the fake first records
//! the request ([`Service::record`]), then holds, then faults apply, and
//! only a request without a fault reaches the fake. What a fault looks like
//! on the wire (the error body, the 401, the 429, the garbage) is the
//! service's, through [`Service`], so each fake keeps its own error shape.
//!
//! [`FakeServer`]: super::harness::FakeServer
//! [`FakeServer::set_fault`]: super::harness::FakeServer::set_fault

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::harness::{ConnId, Registry};

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Down. For every request: the port is closed (connection refused)
    /// and open connections are dropped; the fake keeps its state and comes
    /// back on the same port when the fault is cleared. In a [`Rule`] it
    /// acts as [`Fault::Drop`] (a port cannot refuse some requests only).
    Refuse,
    /// Accept the request, then close the connection without an answer
    /// (a server crashing mid-request, a proxy dropping it).
    Drop,
    /// Accept the request and never answer.
    Hang,
    /// Answer normally, after this delay.
    Slow(Duration),
    /// Answer this status with the service's error body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with a JSON body of exactly this many bytes.
    Oversized(usize),
    /// 200 with a chunked body that never ends.
    Endless,
    /// 429 with `Retry-After` (whole seconds, rounded up).
    RateLimited {
        /// How long the client is told to wait.
        retry_after: Duration,
    },
    /// 401 for the requests that need credentials (logins still work).
    Unauthorized,
}

/// Which requests a rule or a hold applies to: an optional method and an
/// optional fragment of the path (`contains`, or the whole path); the empty
/// match is every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    method: Option<String>,
    path: Option<String>,
    /// `path` is the whole path, not a fragment.
    exact: bool,
}

impl Match {
    /// Every request.
    pub fn any() -> Match {
        Match::default()
    }

    /// Requests whose path contains `fragment`, any method.
    pub fn path(fragment: &str) -> Match {
        Match::any().and_path(fragment)
    }

    /// Requests with this method, any path.
    pub fn method(method: &str) -> Match {
        Match {
            method: Some(method.to_ascii_uppercase()),
            ..Match::default()
        }
    }

    /// `GET` requests whose path contains `fragment`.
    pub fn get(fragment: &str) -> Match {
        Match::method("GET").and_path(fragment)
    }

    /// `POST` requests whose path contains `fragment`.
    pub fn post(fragment: &str) -> Match {
        Match::method("POST").and_path(fragment)
    }

    /// `POST` requests to exactly `path` (`/api/v4/posts`, not
    /// `/api/v4/posts/ids/reactions`).
    pub fn post_to(path: &str) -> Match {
        Match {
            exact: true,
            ..Match::post(path)
        }
    }

    /// Narrows to paths containing `fragment`.
    pub fn and_path(mut self, fragment: &str) -> Match {
        self.path = Some(fragment.to_string());
        self
    }

    /// Whether a request matches.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && self.path.as_deref().is_none_or(|p| {
                if self.exact {
                    path == p
                } else {
                    path.contains(p)
                }
            })
    }
}

/// A fault for the requests a [`Match`] selects, until cleared or for the
/// next `n` of them. Rules are tried in the order they were added, before
/// the fault set for every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    when: Match,
    fault: Fault,
    left: Option<u32>,
}

impl Rule {
    /// `fault` for every request (narrow it with [`Rule::when`]).
    pub fn new(fault: Fault) -> Rule {
        Rule {
            when: Match::any(),
            fault,
            left: None,
        }
    }

    /// Only for requests matching `m`.
    pub fn when(mut self, m: Match) -> Rule {
        self.when = m;
        self
    }

    /// Only for the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Rule {
        self.left = Some(n);
        self
    }
}

/// One request as it reached the server, for [`Service`] hooks.
pub struct Req<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI (path and query).
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a Bytes,
}

impl Req<'_> {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.uri.path()
    }
}

/// What a fake tells the fault layer about itself: how it records a
/// request, and what its answers look like when a fault applies.
pub trait Service: Send + Sync + 'static {
    /// Called for every request that reaches the server, before any hold
    /// or fault: what the fake records.
    fn record(&self, req: &Req<'_>);

    /// The service's answer with this status and its error body shape.
    fn error(&self, status: StatusCode) -> Response;

    /// [`Fault::Garbage`]: 200 with a body that is not JSON.
    fn garbage(&self) -> Response {
        (StatusCode::OK, "<html><body>not JSON</body></html>").into_response()
    }

    /// [`Fault::RateLimited`]: 429 with `Retry-After`.
    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        let mut r = self.error(StatusCode::TOO_MANY_REQUESTS);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        r
    }

    /// [`Fault::Unauthorized`]: the 401 for a request that needs
    /// credentials, `None` for one that does not (a login), which is then
    /// served normally.
    fn unauthorized(&self, req: &Req<'_>) -> Option<Response> {
        let _ = req;
        Some(self.error(StatusCode::UNAUTHORIZED))
    }

    /// Applied to every answer, faulty or not (headers the service always
    /// sends).
    fn finish(&self, resp: &mut Response) {
        let _ = resp;
    }
}

/// The fault state of one server.
#[derive(Default)]
pub(crate) struct Faults {
    /// For every request (`None`: behave).
    pub(crate) all: Option<Fault>,
    rules: Vec<Rule>,
    holds: Vec<Arc<HoldInner>>,
    /// Requests being served now, and the most there ever were at once.
    pub(crate) in_flight: usize,
    pub(crate) peak_in_flight: usize,
}

/// Counts one request in flight until dropped (served, or its client gone).
struct InFlight(Arc<Mutex<Faults>>);

impl InFlight {
    fn start(faults: &Arc<Mutex<Faults>>) -> InFlight {
        let mut f = faults.lock().unwrap();
        f.in_flight += 1;
        f.peak_in_flight = f.peak_in_flight.max(f.in_flight);
        InFlight(faults.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

impl Faults {
    pub(crate) fn add_rule(&mut self, rule: Rule) {
        if rule.left != Some(0) {
            self.rules.push(rule);
        }
    }

    pub(crate) fn clear_rules(&mut self) {
        self.rules.clear();
    }

    pub(crate) fn add_hold(&mut self, h: Arc<HoldInner>) {
        self.holds.push(h);
    }

    /// Releases every hold (when the server goes away).
    pub(crate) fn release_all(&mut self) {
        for h in self.holds.drain(..) {
            h.release();
        }
    }

    /// The fault for one request; counts it against a limited rule.
    fn pick(&mut self, method: &Method, path: &str) -> Option<Fault> {
        let i = self
            .rules
            .iter()
            .position(|r| r.when.matches(method, path))?;
        let fault = self.rules[i].fault;
        if let Some(left) = &mut self.rules[i].left {
            *left -= 1;
            if *left == 0 {
                self.rules.remove(i);
            }
        }
        Some(fault)
    }

    fn holds_for(&mut self, method: &Method, path: &str) -> Vec<Arc<HoldInner>> {
        self.holds.retain(|h| !h.is_released());
        self.holds
            .iter()
            .filter(|h| h.when.matches(method, path))
            .cloned()
            .collect()
    }
}

/// A gate that stops the requests a [`Match`] selects until
/// [`Hold::release`]: "the fake holds the request that marks the boundary
/// while the test kills the process". A held request is already recorded
/// but not served; if its client goes away meanwhile (the test killed it),
/// the server drops the request when it sees the connection close, so
/// releasing it changes nothing in the fake (unless the server only sees the
/// close after the release: then it is served; [`FakeServer::wait_idle`]
/// waits until it is one or the other). An answer hold
/// ([`FakeServer::hold_answer`]) serves the request first and holds the
/// answer: the effect is committed whatever the kill's timing. Dropping the
/// gate releases it too, so keep it in a named binding.
///
/// [`FakeServer::wait_idle`]: super::harness::FakeServer::wait_idle
/// [`FakeServer::hold_answer`]: super::harness::FakeServer::hold_answer
#[must_use = "dropping a Hold releases it at once"]
pub struct Hold {
    inner: Arc<HoldInner>,
}

pub(crate) struct HoldInner {
    when: Match,
    /// Serve the request first and hold its answer: the side effect is
    /// committed and its client may never learn of it.
    answer: bool,
    /// Matching requests still let through before the gate closes.
    skip: std::sync::atomic::AtomicUsize,
    arrived: watch::Sender<usize>,
    released: watch::Sender<bool>,
}

impl HoldInner {
    pub(crate) fn new(when: Match, skip: usize, answer: bool) -> Arc<HoldInner> {
        Arc::new(HoldInner {
            when,
            answer,
            skip: skip.into(),
            arrived: watch::channel(0).0,
            released: watch::channel(false).0,
        })
    }

    fn is_released(&self) -> bool {
        *self.released.borrow()
    }

    fn release(&self) {
        self.released.send_replace(true);
    }

    /// Counts the request in, then waits for the release (the first
    /// `skip` requests go through uncounted).
    async fn pass(&self) {
        use std::sync::atomic::Ordering;
        if self
            .skip
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return;
        }
        let mut open = self.released.subscribe();
        self.arrived.send_modify(|n| *n += 1);
        let _ = open.wait_for(|r| *r).await;
    }
}

impl Hold {
    pub(crate) fn new(inner: Arc<HoldInner>) -> Hold {
        Hold { inner }
    }

    /// How many matching requests have arrived (held, or let through after
    /// the release).
    pub fn arrived_count(&self) -> usize {
        *self.inner.arrived.borrow()
    }

    /// Blocks this thread until a matching request is held, or `timeout`
    /// passes; true when one arrived. For tests that drive the real binary
    /// while the fake serves in the background; in an async test on the
    /// fake's own runtime use [`Hold::arrived`].
    pub fn wait_arrived(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.arrived_count() == 0 {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Waits until a matching request is held.
    pub async fn arrived(&self) {
        let mut rx = self.inner.arrived.subscribe();
        let _ = rx.wait_for(|n| *n > 0).await;
    }

    /// Lets the held requests, and every later one, through.
    pub fn release(&self) {
        self.inner.release();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.inner.release();
    }
}

/// The layer's state, shared by every request of one server.
pub(crate) struct Gate {
    pub(crate) faults: Arc<Mutex<Faults>>,
    pub(crate) service: Arc<dyn Service>,
    pub(crate) conns: Arc<Registry>,
}

/// The middleware: record, hold, fault, or pass to the fake's routes.
pub(crate) async fn gate(
    State(g): State<Arc<Gate>>,
    ConnectInfo(conn): ConnectInfo<ConnId>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let info = Req {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
    };
    g.service.record(&info);
    let _in_flight = InFlight::start(&g.faults);
    let holds = g
        .faults
        .lock()
        .unwrap()
        .holds_for(&parts.method, parts.uri.path());
    let (answer_holds, holds): (Vec<_>, Vec<_>) = holds.into_iter().partition(|h| h.answer);
    for h in holds {
        h.pass().await;
    }
    let fault = {
        let mut f = g.faults.lock().unwrap();
        f.pick(&parts.method, parts.uri.path()).or(f.all)
    };
    let mut resp = match fault {
        None => next.run(Request::from_parts(parts, Body::from(body))).await,
        Some(Fault::Refuse | Fault::Drop) => {
            // The port closes for `set_fault(Refuse)`; a request that got
            // in anyway, or one a rule selects, loses its connection.
            g.conns.kill(conn.id);
            return std::future::pending().await;
        }
        Some(Fault::Hang) => return std::future::pending().await,
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Some(Fault::Status(s)) => g
            .service
            .error(StatusCode::from_u16(s).expect("a valid status code")),
        Some(Fault::Garbage) => g.service.garbage(),
        Some(Fault::Oversized(n)) => json_answer(Body::from(padded_json(n))),
        Some(Fault::Endless) => json_answer(Body::new(Endless::default())),
        Some(Fault::RateLimited { retry_after }) => {
            let secs = retry_after.as_millis().div_ceil(1000) as u64;
            g.service.rate_limited(secs)
        }
        Some(Fault::Unauthorized) => match g.service.unauthorized(&info) {
            Some(r) => r,
            None => next.run(Request::from_parts(parts, Body::from(body))).await,
        },
    };
    for h in answer_holds {
        h.pass().await;
    }
    g.service.finish(&mut resp);
    resp
}

fn json_answer(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A JSON object of exactly `n` bytes (`{"pad":"xxx…"}`), or `n` bytes of
/// `x` when `n` is too small for one.
pub fn padded_json(n: usize) -> Vec<u8> {
    const FRAME: &[u8] = b"{\"pad\":\"\"}";
    if n < FRAME.len() {
        return vec![b'x'; n];
    }
    let mut v = Vec::with_capacity(n);
    v.extend_from_slice(b"{\"pad\":\"");
    v.resize(n - 2, b'x');
    v.extend_from_slice(b"\"}");
    v
}

/// A body that never ends: `{"pad":"` and then `x` forever, 64 KiB a frame.
#[derive(Default)]
struct Endless {
    started: bool,
}

impl HttpBody for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        let data = if self.started {
            Bytes::from_static(&CHUNK)
        } else {
            self.started = true;
            Bytes::from_static(b"{\"pad\":\"")
        };
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}
