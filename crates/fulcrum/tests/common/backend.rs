//! In-test backends on 127.0.0.1: an HTTP/1.1 server that answers with its name (plain
//! or TLS; slow, failing, health-flapping, cookie-issuing or hanging up as a test sets it),
//! and a TCP echo server. Both can be shut down (listener and open connections closed, as
//! when the process dies) and the HTTP one restarted on the same port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::tls::Cert;

/// What a backend has seen, kept across a restart.
#[derive(Default)]
struct Shared {
    /// Requests answered or being answered (health checks on `/health` not counted).
    requests: AtomicU64,
    in_flight: AtomicU64,
    /// Delay for every request without `?delay_ms=`.
    delay_ms: AtomicU64,
    /// What `/health` answers (0: 200).
    health_status: AtomicU16,
    last_headers: parking_lot::Mutex<Option<HeaderMap>>,
    last_uri: parking_lot::Mutex<Option<String>>,
    /// Status of ordinary answers (0: 200), and a Retry-After to send with them.
    status: std::sync::atomic::AtomicU16,
    retry_after: parking_lot::Mutex<Option<String>>,
    /// Close the connection on every POST instead of answering it.
    drop_posts: std::sync::atomic::AtomicBool,
    /// Requests answered on one connection before the next is read and the connection
    /// closed without an answer (0: no limit).
    answers_per_connection: AtomicU64,
    /// A cookie issued (`<cookie>=<name>-<n>`) to every request that does not carry it.
    session_cookie: parking_lot::Mutex<Option<String>>,
    cookies_issued: AtomicU64,
}

/// An HTTP/1.1 backend: answers every request with its name (header `x-backend` and the
/// body), after `?delay_ms=N` or its own delay. `/health` answers 200 (or what
/// [`Backend::set_health`] says) and is not counted.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// Set for a backend that speaks TLS.
    tls: Option<tokio_rustls::TlsAcceptor>,
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, None).await
    }

    /// A backend that speaks TLS with `cert`; given `client_root`, it accepts only clients
    /// presenting a certificate that root signed.
    pub async fn start_tls(name: &str, cert: &Cert, client_root: Option<&Cert>) -> Backend {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match client_root {
            None => builder.with_no_client_auth(),
            Some(root) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(root.der.clone()).expect("client root");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).expect("backend key");
        let config = builder
            .with_single_cert(vec![cert.der.clone()], key)
            .expect("backend certificate");
        Self::start_with(
            name,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn start_with(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let mut b = Backend {
            name: name.to_owned(),
            addr,
            shared: Arc::default(),
            tls,
            running: None,
        };
        b.serve(listener);
        b
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests seen so far (not health checks).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    pub fn set_delay_ms(&self, ms: u64) {
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn set_health(&self, status: u16) {
        self.shared.health_status.store(status, Ordering::SeqCst);
    }

    /// The headers of the last request (not health checks).
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.shared.last_headers.lock().clone()
    }

    /// Answers ordinary requests with `status` (and `Retry-After: retry_after` if given).
    pub fn set_status(&self, status: u16, retry_after: Option<&str>) {
        self.shared.status.store(status, Ordering::SeqCst);
        *self.shared.retry_after.lock() = retry_after.map(str::to_owned);
    }

    /// Closes the connection on every POST, after reading it, without answering (as a
    /// member that crashes on one kind of request).
    pub fn set_drop_posts(&self, on: bool) {
        self.shared.drop_posts.store(on, Ordering::SeqCst);
    }

    /// Answers `n` requests on each connection, then reads the next and hangs up without
    /// answering it, as a member closing kept-alive connections at will (0: no limit).
    pub fn set_answers_per_connection(&self, n: u64) {
        self.shared
            .answers_per_connection
            .store(n, Ordering::SeqCst);
    }

    /// Issues `cookie` (`<cookie>=<name>-<n>; Path=/`) to every request that does not
    /// carry it, as an application starting sessions (None: no cookie).
    pub fn set_session_cookie(&self, cookie: Option<&str>) {
        *self.shared.session_cookie.lock() = cookie.map(str::to_owned);
    }

    /// Path and query of the last request (health checks excluded).
    pub fn last_uri(&self) -> Option<String> {
        self.shared.last_uri.lock().clone()
    }

    /// Closes the listener and every open connection, as a dying process would.
    pub async fn shutdown(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(true);
            let _ = task.await;
            // Connection tasks see the stop on their next poll; give them that poll.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Serves again on the same address.
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "{} is running", self.name);
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stop_rx) = watch::channel(false);
        let shared = self.shared.clone();
        let name: Arc<str> = self.name.as_str().into();
        let task = tokio::spawn(accept_loop(
            listener,
            self.tls.clone(),
            shared,
            name,
            stop_rx,
        ));
        self.running = Some((stop, task));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(true);
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    name: Arc<str>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let (shared, name, stop, tls) = (shared.clone(), name.clone(), stop.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, shared, name, stop).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_connection(stream, shared, name, stop).await;
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    shared: Arc<Shared>,
    name: Arc<str>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let answered = Arc::new(AtomicU64::new(0));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (shared, name, answered) = (shared.clone(), name.clone(), answered.clone());
        async move {
            let limit = shared.answers_per_connection.load(Ordering::SeqCst);
            let over_limit = limit > 0 && answered.fetch_add(1, Ordering::SeqCst) >= limit;
            let dropped_post =
                req.method() == hyper::Method::POST && shared.drop_posts.load(Ordering::SeqCst);
            if over_limit || dropped_post {
                shared.requests.fetch_add(1, Ordering::SeqCst);
                let _ = req.into_body().collect().await;
                // An error from the service makes hyper close the connection.
                return Err(std::io::Error::other("dropped"));
            }
            Ok(answer(&shared, &name, req).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    // Dropping the connection closes the socket, in-flight requests included.
    tokio::select! {
        _ = conn => {}
        _ = stop.changed() => {}
    }
}

struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(shared: &Shared, name: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/health" {
        let status = match shared.health_status.load(Ordering::SeqCst) {
            0 => 200,
            s => s,
        };
        let mut resp = Response::new(Full::new(Bytes::from_static(b"health")));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        return resp;
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight(&shared.in_flight);
    *shared.last_headers.lock() = Some(req.headers().clone());
    *shared.last_uri.lock() = Some(req.uri().to_string());
    let cookie = shared.session_cookie.lock().clone().filter(|cookie| {
        let prefix = format!("{cookie}=");
        !req.headers()
            .get_all("cookie")
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains(&prefix)))
    });
    let delay = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay_ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| shared.delay_ms.load(Ordering::SeqCst));
    // Read the whole request body before answering.
    let _ = req.into_body().collect().await;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut resp = Response::new(Full::new(Bytes::from(name.to_owned())));
    resp.headers_mut()
        .insert("x-backend", name.parse().expect("header value"));
    if let Some(cookie) = cookie {
        let n = shared.cookies_issued.fetch_add(1, Ordering::SeqCst);
        let value = format!("{cookie}={name}-{n}; Path=/");
        resp.headers_mut()
            .insert("set-cookie", value.parse().expect("header value"));
    }
    let status = shared.status.load(Ordering::SeqCst);
    if status != 0 {
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        if let Some(ra) = shared.retry_after.lock().clone() {
            resp.headers_mut()
                .insert("retry-after", ra.parse().expect("header value"));
        }
    }
    resp
}

/// A TCP server that echoes every byte back.
pub struct Echo {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Echo { addr, task }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}
