//! `ServerConn` against nghttp2's own clients, when installed (`apt-get install
//! nghttp2-client`): `nghttp` uploads and downloads bodies bigger than the windows, and
//! `h2load` drives many concurrent streams on several connections. Skipped (with a note)
//! when the binaries are absent.

#![allow(clippy::unwrap_used)] // test helpers may panic

mod common;

use std::process::Command;

use common::{pattern, serve};
use fulcrum_h2::Settings;
use tokio::net::TcpListener;

fn installed(bin: &str) -> bool {
    Command::new(bin).arg("--version").output().is_ok()
}

/// Serves every connection on a loopback port; returns the port.
async fn listen() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            sock.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let log = serve(sock, Settings::default()).await;
                assert_eq!(log.error, None, "{log:?}");
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_uploads_and_downloads() {
    if !installed("nghttp") {
        eprintln!("nghttp not installed: skipped");
        return;
    }
    let port = listen().await;
    let dir = std::env::temp_dir().join(format!("fulcrum-h2-nghttp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let upload = dir.join("up.bin");
    std::fs::write(&upload, pattern(3_000_000)).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("nghttp")
            .args(["--no-dep", "-H", "x-size: 2500000", "-d"])
            .arg(&upload)
            .arg(format!("http://127.0.0.1:{port}/up"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == pattern(2_500_000),
        "body differs ({} bytes)",
        out.stdout.len()
    );

    // Verbose: frames as nghttp saw them, headers included.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("nghttp")
            .args(["-v", "-n", "-H", "x-size: 10", "-H", "cookie: a=1"])
            .arg(format!("http://127.0.0.1:{port}/v"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(":status: 200"), "{text}");
    assert!(text.contains("x-path: /v"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_many_concurrent_streams() {
    if !installed("h2load") {
        eprintln!("h2load not installed: skipped");
        return;
    }
    let port = listen().await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("h2load")
            .args(["-n", "20000", "-c", "4", "-m", "64", "-H", "x-size: 512"])
            .arg(format!("http://127.0.0.1:{port}/load"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("20000 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
}
