//! Fake HTTP endpoints for the HTTP health checks, on 127.0.0.1.
//!
//! Paths: `/ok` (200 `{"status":"OK"}`), `/slow` (200 after the configured
//! delay), `/hang` (never answers within any check timeout), `/500`
//! (500 with an error body), `/wrong-body` (200 with a maintenance page),
//! `/redirect` (302 to `/ok`; the client follows it) and
//! `/status/{code}`. `/flaky` answers 503 for the next `n` requests (see
//! [`FakeEndpoints::fail_next`]), then 200. Every request is recorded.
//!
//! [`FakeEndpoints::start_tls`] serves the same paths over HTTPS with a
//! self-signed certificate made at start (what an internal service with a
//! home-made certificate looks like to the check).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{crypto, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

#[derive(Default)]
struct Inner {
    requests: Vec<(String, String)>,
    slow_ms: u64,
    flaky_left: u32,
}

/// The fake endpoints.
#[derive(Clone)]
pub struct FakeEndpoints {
    base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeEndpoints {
    /// Starts the server in the current tokio runtime.
    pub async fn start() -> FakeEndpoints {
        let inner = new_inner();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeEndpoints { base, inner }
    }

    /// Starts the same endpoints over HTTPS (`https://127.0.0.1:port`) in
    /// the current tokio runtime, with a self-signed certificate for
    /// `127.0.0.1` and `localhost` generated now: the name matches, so the
    /// only thing a verifying client can object to is the unknown issuer.
    /// A client that refuses the certificate never reaches the handler, so
    /// its probes are not in [`FakeEndpoints::requests`].
    pub async fn start_tls() -> FakeEndpoints {
        let inner = new_inner();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = TlsListener::bind().await;
        let base = format!("https://{}", listener.addr);
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeEndpoints { base, inner }
    }

    /// The URL of a path, e.g. `url("/hang")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// How long `/slow` takes.
    pub fn set_slow_ms(&self, ms: u64) {
        self.inner.lock().unwrap().slow_ms = ms;
    }

    /// `/flaky` fails the next `n` requests.
    pub fn fail_next(&self, n: u32) {
        self.inner.lock().unwrap().flaky_left = n;
    }

    /// `(method, path)` of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().requests.clone()
    }
}

fn new_inner() -> Arc<Mutex<Inner>> {
    Arc::new(Mutex::new(Inner {
        slow_ms: 300,
        ..Inner::default()
    }))
}

/// A TCP listener that hands axum only connections whose TLS handshake
/// finished. Handshakes run in tasks of their own, so a client that
/// rejects the certificate (or never finishes) does not hold up the next.
struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    async fn bind() -> TlsListener {
        let acceptor = TlsAcceptor::from(Arc::new(self_signed_config()));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (tx, ready) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((stream, peer)) = tcp.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    // A failed handshake is the client refusing our
                    // certificate: nothing to serve.
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        TlsListener { addr, ready }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended: serve nothing more, like a closed port.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// A rustls server config with a fresh self-signed certificate. The ring
/// provider is named explicitly: it is the one reqwest already uses, and
/// no process-wide default has to be installed.
fn self_signed_config() -> ServerConfig {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap()
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, method: Method, uri: Uri) -> Response {
    let (slow_ms, flaky) = {
        let mut g = inner.lock().unwrap();
        g.requests
            .push((method.to_string(), uri.path().to_string()));
        let flaky = uri.path() == "/flaky" && g.flaky_left > 0;
        if flaky {
            g.flaky_left -= 1;
        }
        (g.slow_ms, flaky)
    };
    let json = [(header::CONTENT_TYPE, "application/json")];
    match uri.path() {
        "/ok" => (json, r#"{"status":"OK"}"#).into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
            (json, r#"{"status":"OK"}"#).into_response()
        }
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        "/500" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json,
            r#"{"id":"api.context.500","message":"internal error","status_code":500}"#,
        )
            .into_response(),
        "/wrong-body" => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Down for maintenance</body></html>",
        )
            .into_response(),
        "/redirect" => (StatusCode::FOUND, [(header::LOCATION, "/ok")]).into_response(),
        "/flaky" if flaky => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "/flaky" => (json, r#"{"status":"OK"}"#).into_response(),
        p => match p
            .strip_prefix("/status/")
            .and_then(|c| c.parse::<u16>().ok())
        {
            Some(code) => StatusCode::from_u16(code)
                .unwrap_or(StatusCode::BAD_REQUEST)
                .into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
    }
}
