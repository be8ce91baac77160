//! `fulcrum serve --demo`: three local backends and a listener balancing over them, so a
//! newcomer sees traffic rotate with one command.

use std::convert::Infallible;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Where the demo listens, unless the port is taken.
pub const LISTENER_PORT: u16 = 8080;
/// Where the demo backends listen, unless taken.
pub const BACKEND_PORTS: [u16; 3] = [18081, 18082, 18083];

/// `port` on 127.0.0.1, or any free port if it is taken.
async fn bind_or_any(port: u16) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("demo: cannot listen on 127.0.0.1"),
    }
}

/// The demo listener's port: 8080 if it is free, else a free one (the data plane binds it
/// a moment later).
pub async fn listener_port() -> anyhow::Result<u16> {
    Ok(bind_or_any(LISTENER_PORT).await?.local_addr()?.port())
}

/// Starts the demo backends, each answering every request with its name; returns their
/// ports (the usual ones where free).
pub async fn start_backends() -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::new();
    for (i, port) in BACKEND_PORTS.iter().enumerate() {
        let listener = bind_or_any(*port).await?;
        ports.push(listener.local_addr()?.port());
        let name = format!("demo-backend-{}", i + 1);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let body = format!(
                                "hello from {name} ({} {})\n",
                                req.method(),
                                req.uri().path()
                            );
                            async move {
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }
    Ok(ports)
}

/// The demo configuration, as `apply` takes it.
pub fn document(backends: &[u16], listener: u16) -> Value {
    json!({
        "loadbalancers": [{
            "name": "demo",
            "vip_address": "127.0.0.1",
            "pools": [{
                "name": "demo-backends",
                "protocol": "HTTP",
                "algorithm": "ROUND_ROBIN",
                "health_monitor": {"type": "HTTP", "url_path": "/", "interval_ms": 2000, "timeout_ms": 1000},
                "members": backends.iter().map(|p| json!({"address": "127.0.0.1", "port": p})).collect::<Vec<_>>(),
            }],
            "listeners": [{"name": "demo-http", "protocol": "HTTP", "port": listener, "default_pool": "demo-backends"}],
        }]
    })
}
