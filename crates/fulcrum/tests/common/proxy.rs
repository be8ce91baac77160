//! A forward proxy on 127.0.0.1, as members reached through a corporate proxy see it:
//! absolute-form requests (`GET http://host:port/path`) are sent on to the origin in
//! origin form, `CONNECT host:port` opens a tunnel. It keeps the head of every request it
//! read, so a test sees the request line, `Proxy-Authorization` and headers fulcrum sent.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

type Heads = Arc<parking_lot::Mutex<Vec<String>>>;

pub struct ForwardProxy {
    pub port: u16,
    heads: Heads,
    task: JoinHandle<()>,
}

impl ForwardProxy {
    pub async fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let heads = Heads::default();
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(relay(client, seen.clone()));
            }
        });
        ForwardProxy { port, heads, task }
    }

    /// The heads of the requests read so far (request line and headers, as sent).
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().clone()
    }

    pub fn clear(&self) {
        self.heads.lock().clear();
    }

    /// Each request line read so far, with the `Proxy-Authorization` it came with.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.heads()
            .iter()
            .map(|head| {
                let line = head.lines().next().unwrap_or_default().to_owned();
                let auth = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("proxy-authorization")
                        .then(|| value.trim().to_owned())
                });
                (line, auth)
            })
            .collect()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, seen: Heads) {
    // Byte by byte up to the blank line: what follows (a body, TLS) is the origin's.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    seen.lock().push(text.clone());
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "CONNECT" {
        let Ok(mut origin) = TcpStream::connect(target).await else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        };
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut origin).await;
    } else {
        let rest = target.trim_start_matches("http://");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let Ok(mut origin) = TcpStream::connect(authority).await else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        };
        let _ = origin.set_nodelay(true);
        let origin_form = text.replacen(target, if path.is_empty() { "/" } else { path }, 1);
        if origin.write_all(origin_form.as_bytes()).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut origin).await;
    }
}
