//! One way to run an axum fake on 127.0.0.1: [`FakeServer`].
//!
//! A fake builds its `Router` and its [`Service`] (how it records requests
//! and what its errors look like) and hands both to [`FakeServer::start`]
//! (inside the current tokio runtime, e.g. a `#[tokio::test]`) or to
//! [`in_background`] (on a process-wide background runtime, so a test can
//! drive the real binary with `std::process::Command` while the fake
//! serves). Every fake then has the same fault switch ([`Fault`], [`Rule`],
//! [`Hold`], see [`super::fault`]) and can go down (connection refused)
//! and come back on the same port with its state.
//!
//! The server stops when the last handle is dropped: the port closes and
//! open connections are dropped.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{crypto, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::fault::{Fault, Faults, Gate, Hold, HoldInner, Match, Rule, Service};

/// Handle on a running fake server; clones share it.
#[derive(Clone)]
pub struct FakeServer {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    scheme: &'static str,
    rt: Handle,
    slot: Arc<Mutex<Slot>>,
    conns: Arc<Registry>,
    faults: Arc<Mutex<Faults>>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
        self.slot.lock().unwrap().close();
        self.conns.kill_all();
        self.faults.lock().unwrap().release_all();
    }
}

impl FakeServer {
    /// Serves `app` on 127.0.0.1 (a free port) inside the current tokio
    /// runtime, behind the fault layer.
    pub async fn start(app: Router, service: Arc<dyn Service>) -> FakeServer {
        Self::launch(app, service, None).await
    }

    /// The same over HTTPS, with a self-signed certificate for `127.0.0.1`
    /// and `localhost` made now. A client that refuses the certificate
    /// never reaches the fake, so it records nothing.
    pub async fn start_tls(app: Router, service: Arc<dyn Service>) -> FakeServer {
        let tls = TlsAcceptor::from(Arc::new(self_signed_config()));
        Self::launch(app, service, Some(tls)).await
    }

    /// The same over HTTPS with the given rustls config (e.g. one that
    /// demands a client certificate, as a Docker engine with `--tlsverify`).
    pub async fn start_with_tls(
        app: Router,
        service: Arc<dyn Service>,
        config: ServerConfig,
    ) -> FakeServer {
        Self::launch(app, service, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn launch(
        app: Router,
        service: Arc<dyn Service>,
        tls: Option<TlsAcceptor>,
    ) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let slot = Arc::new(Mutex::new(Slot {
            listener: Some(listener),
            waker: None,
        }));
        let conns = Arc::new(Registry::default());
        let faults = Arc::new(Mutex::new(Faults::default()));
        let gate = Arc::new(Gate {
            faults: faults.clone(),
            service,
            conns: conns.clone(),
        });
        let app = Router::new()
            .fallback_service(app)
            .layer(axum::middleware::from_fn_with_state(
                gate,
                super::fault::gate,
            ))
            .into_make_service_with_connect_info::<ConnId>();
        let listener = FakeListener {
            addr,
            slot: slot.clone(),
            conns: conns.clone(),
            tls,
            handshakes: JoinSet::new(),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeServer {
            inner: Arc::new(Inner {
                addr,
                scheme,
                rt: Handle::current(),
                slot,
                conns,
                faults,
                task,
            }),
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:port` (`https://` for [`FakeServer::start_tls`]).
    pub fn url(&self) -> String {
        format!("{}://{}", self.inner.scheme, self.inner.addr)
    }

    /// Sets the fault for every request until changed; [`Fault::Refuse`]
    /// closes the port (and drops open connections) at once, any other
    /// fault after it opens the same port again.
    pub fn set_fault(&self, fault: Fault) {
        let refuse = fault == Fault::Refuse;
        self.inner.faults.lock().unwrap().all = Some(fault);
        if refuse {
            self.down();
        } else {
            self.up();
        }
    }

    /// Behave again (rules and holds stay); reopens the port after
    /// [`Fault::Refuse`].
    pub fn clear_fault(&self) {
        self.inner.faults.lock().unwrap().all = None;
        self.up();
    }

    /// The fault for every request, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.inner.faults.lock().unwrap().all
    }

    /// Adds a rule: a fault for the requests it matches (tried in the order
    /// added, before the fault for every request).
    pub fn add_rule(&self, rule: Rule) {
        self.inner.faults.lock().unwrap().add_rule(rule);
    }

    /// `fault` for the next `n` requests matching `when`.
    pub fn fault_next(&self, n: u32, when: Match, fault: Fault) {
        self.add_rule(Rule::new(fault).when(when).times(n));
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.inner.faults.lock().unwrap().clear_rules();
    }

    /// Holds the requests matching `when` (after recording them) until the
    /// returned gate is released or dropped.
    pub fn hold(&self, when: Match) -> Hold {
        self.hold_after(0, when)
    }

    /// Like [`FakeServer::hold`], but the first `n` matching requests are
    /// served: "the first reply is committed, the second is held".
    pub fn hold_after(&self, n: usize, when: Match) -> Hold {
        let inner = HoldInner::new(when, n, false);
        self.inner.faults.lock().unwrap().add_hold(inner.clone());
        Hold::new(inner)
    }

    /// Serves the requests matching `when`, then holds their answers until
    /// the gate is released or dropped: "Planka committed the comment, and
    /// the agent is killed before it hears so".
    pub fn hold_answer(&self, when: Match) -> Hold {
        let inner = HoldInner::new(when, 0, true);
        self.inner.faults.lock().unwrap().add_hold(inner.clone());
        Hold::new(inner)
    }

    /// Blocks this thread until no request is being served (a released
    /// request is served or dropped), or `timeout` passes; true when idle.
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while self.inner.faults.lock().unwrap().in_flight > 0 {
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }

    /// The most requests this server has served at once.
    pub fn peak_in_flight(&self) -> usize {
        self.inner.faults.lock().unwrap().peak_in_flight
    }

    /// Whether the port is closed.
    pub fn is_down(&self) -> bool {
        self.inner.slot.lock().unwrap().listener.is_none()
    }

    fn down(&self) {
        self.inner.slot.lock().unwrap().close();
        self.inner.conns.kill_all();
    }

    fn up(&self) {
        let mut slot = self.inner.slot.lock().unwrap();
        if slot.listener.is_some() {
            return;
        }
        let std_listener =
            std::net::TcpListener::bind(self.inner.addr).expect("re-binding the fake's port");
        std_listener.set_nonblocking(true).unwrap();
        let _guard = self.inner.rt.enter();
        slot.listener = Some(TcpListener::from_std(std_listener).unwrap());
        if let Some(w) = slot.waker.take() {
            w.wake();
        }
    }
}

/// The process-wide runtime background fakes serve on (two worker threads).
pub fn background() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-server")
            .enable_all()
            .build()
            .expect("runtime for background fakes")
    })
}

/// Runs an async fake's `start` on the background runtime and returns the
/// fake, which keeps serving there: for tests that drive the real binary
/// with `std::process::Command`. Callable from sync and async code alike.
pub fn in_background<T, F>(start: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    let handle = background().handle().clone();
    std::thread::spawn(move || handle.block_on(start()))
        .join()
        .expect("background fake started")
}

/// `127.0.0.1:port` where nothing listens (connection refused).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The listening socket, or none while the fake is down.
struct Slot {
    listener: Option<TcpListener>,
    /// The accept loop, to wake when the socket comes back.
    waker: Option<Waker>,
}

impl Slot {
    fn close(&mut self) {
        self.listener = None;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Identifies a connection to the fault layer (the listener's address type).
#[derive(Debug, Clone, Copy)]
pub struct ConnId {
    pub(crate) id: u64,
    /// The client's address.
    pub peer: SocketAddr,
}

impl Connected<IncomingStream<'_, FakeListener>> for ConnId {
    fn connect_info(stream: IncomingStream<'_, FakeListener>) -> Self {
        *stream.remote_addr()
    }
}

/// Live connections, so going down can drop them at once.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    fds: Mutex<HashMap<u64, RawFd>>,
}

impl Registry {
    fn add(&self, fd: RawFd) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.fds.lock().unwrap().insert(id, fd);
        id
    }

    fn remove(&self, id: u64) {
        self.fds.lock().unwrap().remove(&id);
    }

    /// Shuts one connection down (both directions): the client sees it
    /// closed without an answer.
    pub(crate) fn kill(&self, id: u64) {
        if let Some(fd) = self.fds.lock().unwrap().get(&id) {
            // SAFETY: the fd is open: a connection leaves the registry
            // (under this lock) before its socket is closed.
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
    }

    fn kill_all(&self) {
        for fd in self.fds.lock().unwrap().values() {
            // SAFETY: as in `kill`.
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
    }
}

/// A TCP connection known to the [`Registry`] while it is open.
pub struct Tracked {
    tcp: TcpStream,
    id: u64,
    conns: Arc<Registry>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Runs before `tcp` closes the socket.
        self.conns.remove(self.id);
    }
}

/// A served connection, plain or TLS.
pub enum Conn {
    Plain(Tracked),
    Tls(Box<TlsStream<Tracked>>),
}

/// Accepts on the [`Slot`]'s socket while there is one; TLS handshakes run
/// concurrently so a client that never finishes one holds up nobody.
pub struct FakeListener {
    addr: SocketAddr,
    slot: Arc<Mutex<Slot>>,
    conns: Arc<Registry>,
    tls: Option<TlsAcceptor>,
    handshakes: JoinSet<Option<(Conn, ConnId)>>,
}

fn poll_slot(
    slot: &Mutex<Slot>,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<(TcpStream, SocketAddr)>> {
    let mut s = slot.lock().unwrap();
    s.waker = Some(cx.waker().clone());
    match &s.listener {
        Some(l) => l.poll_accept(cx),
        None => Poll::Pending,
    }
}

impl FakeListener {
    fn track(&self, tcp: TcpStream, peer: SocketAddr) -> (Tracked, ConnId) {
        let id = self.conns.add(tcp.as_raw_fd());
        let t = Tracked {
            tcp,
            id,
            conns: self.conns.clone(),
        };
        (t, ConnId { id, peer })
    }
}

impl Listener for FakeListener {
    type Io = Conn;
    type Addr = ConnId;

    async fn accept(&mut self) -> (Conn, ConnId) {
        loop {
            let slot = self.slot.clone();
            let next = poll_fn(move |cx| poll_slot(&slot, cx));
            let accepted = match &self.tls {
                None => next.await,
                Some(_) => tokio::select! {
                    r = next => r,
                    Some(joined) = self.handshakes.join_next() => match joined {
                        Ok(Some(done)) => return done,
                        // A failed handshake: look again, or a finished
                        // one behind it would wait for the next accept.
                        _ => continue,
                    },
                },
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            let (io, id) = self.track(tcp, peer);
            match &self.tls {
                None => return (Conn::Plain(io), id),
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    // A failed handshake is the client refusing our
                    // certificate: nothing to serve.
                    self.handshakes.spawn(async move {
                        let tls = acceptor.accept(io).await.ok()?;
                        Some((Conn::Tls(Box::new(tls)), id))
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<ConnId> {
        Ok(ConnId {
            id: 0,
            peer: self.addr,
        })
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
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
