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

/// Where the demo listens.
pub const LISTENER_PORT: u16 = 8080;
/// Where the demo backends listen.
pub const BACKEND_PORTS: [u16; 3] = [18081, 18082, 18083];

/// Starts the demo backends: each answers every request with its name.
pub async fn start_backends() -> anyhow::Result<()> {
    for (i, port) in BACKEND_PORTS.iter().enumerate() {
        let listener = TcpListener::bind(("127.0.0.1", *port))
            .await
            .with_context(|| format!("demo backend cannot listen on 127.0.0.1:{port}"))?;
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
    Ok(())
}

/// The demo configuration, as `apply` takes it.
pub fn document() -> Value {
    json!({
        "loadbalancers": [{
            "name": "demo",
            "vip_address": "127.0.0.1",
            "pools": [{
                "name": "demo-backends",
                "protocol": "HTTP",
                "algorithm": "ROUND_ROBIN",
                "health_monitor": {"type": "HTTP", "url_path": "/", "interval_ms": 2000, "timeout_ms": 1000},
                "members": BACKEND_PORTS.iter().map(|p| json!({"address": "127.0.0.1", "port": p})).collect::<Vec<_>>(),
            }],
            "listeners": [{"name": "demo-http", "protocol": "HTTP", "port": LISTENER_PORT, "default_pool": "demo-backends"}],
        }]
    })
}
