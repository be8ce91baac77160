//! A test server on `ServerConn` (the driver of `tests/common`), for conformance tools such
//! as h2spec and for trying clients by hand: every request is answered 200 with `x-size`
//! bytes (default 64), and `x-received` says how much request body arrived.
//!
//! `cargo run -p fulcrum-h2 --example serve -- 127.0.0.1:8080`

#[path = "../tests/common/mod.rs"]
mod common;

use fulcrum_h2::Settings;
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (sock, peer) = listener.accept().await?;
        sock.set_nodelay(true)?;
        tokio::spawn(async move {
            let log = common::serve_sized(sock, Settings::default(), 64).await;
            if let Some(e) = log.error {
                eprintln!("{peer}: {e}");
            }
        });
    }
}
