//! WebSockets through fulcrum: a real echo server (tokio-tungstenite) as the member and a
//! real client, on an HTTP and on a TERMINATED_HTTPS listener; an open socket survives its
//! member being drained while new requests go elsewhere; and an Upgrade the member
//! declines (200, not 101) is an ordinary response on a connection that stays HTTP.

mod common;

use std::time::Duration;

use common::backend::Backend;
use common::capture::{Answer, Capture};
use common::raw::RawConn;
use common::stack::{Stack, client, get};
use common::tls::{cert, listener_tls, tls_connect};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// How long one message may take.
const MESSAGE_WITHIN: Duration = Duration::from_secs(5);

/// A WebSocket member: greets each client with `welcome from <name>` before it says
/// anything, echoes text and binary messages, and answers `push N` with N text and N
/// binary messages of its own.
struct WsServer {
    port: u16,
    task: JoinHandle<()>,
}

impl WsServer {
    async fn start(name: &'static str) -> WsServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                conns.spawn(serve_ws(stream, name));
                while conns.try_join_next().is_some() {}
            }
        });
        WsServer { port, task }
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_ws(stream: TcpStream, name: &'static str) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    if tx
        .send(Message::text(format!("welcome from {name}")))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = rx.next().await {
        let replies = match msg {
            Message::Text(t) => match t.as_str().strip_prefix("push ") {
                Some(n) => (0..n.parse::<u8>().unwrap_or(0))
                    .flat_map(|i| {
                        [
                            Message::text(format!("push {i}")),
                            Message::binary(vec![i; 3]),
                        ]
                    })
                    .collect(),
                None => vec![Message::Text(t)],
            },
            Message::Binary(b) => vec![Message::Binary(b)],
            Message::Close(_) => return,
            _ => Vec::new(),
        };
        for r in replies {
            if tx.send(r).await.is_err() {
                return;
            }
        }
    }
}

/// The next data or close message, within [`MESSAGE_WITHIN`] (pings and pongs skipped).
async fn recv<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + MESSAGE_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no WebSocket message within {MESSAGE_WITHIN:?}"),
            Ok(None) => panic!("the WebSocket ended"),
            Ok(Some(Err(e))) => panic!("WebSocket error: {e}"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(m))) => return m,
        }
    }
}

/// Text and binary both ways, and pushes the server starts.
async fn converse<S>(ws: &mut WebSocketStream<S>, tag: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let text = Message::text(format!("hello {tag}"));
    ws.send(text.clone()).await.expect("send text");
    assert_eq!(recv(ws).await, text, "{tag}: text echo");

    // Binary, not UTF-8, larger than a frame buffer.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 ^ 0x80).collect();
    ws.send(Message::binary(data.clone()))
        .await
        .expect("send binary");
    assert_eq!(recv(ws).await, Message::binary(data), "{tag}: binary echo");

    ws.send(Message::text("push 3")).await.expect("send push");
    for i in 0..3u8 {
        assert_eq!(recv(ws).await, Message::text(format!("push {i}")), "{tag}");
        assert_eq!(recv(ws).await, Message::binary(vec![i; 3]), "{tag}");
    }
}

/// Connects a WebSocket client over `stream` and checks the server's greeting.
async fn open<S>(stream: S, url: &str, server: &str) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws, resp) =
        tokio::time::timeout(MESSAGE_WITHIN, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("WebSocket handshake in time")
            .expect("WebSocket handshake through fulcrum");
    assert_eq!(resp.status(), 101);
    assert_eq!(
        recv(&mut ws).await,
        Message::text(format!("welcome from {server}")),
        "the server speaks first"
    );
    ws
}

async fn close<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.close(None).await.expect("close");
    // The close handshake completes: the stream ends (after the server's Close frame).
    let ended = tokio::time::timeout(MESSAGE_WITHIN, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the WebSocket did not close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_an_http_listener() {
    let server = WsServer::start("ws").await;
    let s = Stack::with(
        "ROUND_ROBIN",
        &[(server.port, json!({}))],
        "HTTP",
        json!({}),
    )
    .await;
    let tcp = TcpStream::connect(s.addr()).await.expect("connect");
    let mut ws = open(tcp, &format!("ws://127.0.0.1:{}/chat", s.port), "ws").await;
    converse(&mut ws, "http").await;
    close(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_a_terminated_https_listener() {
    let server = WsServer::start("wss").await;
    let c = cert(&["ws.test"]);
    let s = Stack::with(
        "ROUND_ROBIN",
        &[(server.port, json!({}))],
        "TERMINATED_HTTPS",
        listener_tls(&c),
    )
    .await;
    let tls = tls_connect(s.port, "ws.test", &c.der, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut ws = open(tls, "wss://ws.test/chat", "wss").await;
    converse(&mut ws, "https").await;
    close(ws).await;
}

/// Draining a member keeps its open WebSocket working, while new requests go to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_members_websocket_keeps_working() {
    let server = WsServer::start("ws").await;
    let b = Backend::start("b").await;
    // b starts offline so the WebSocket surely lands on the WebSocket member.
    let s = Stack::with(
        "ROUND_ROBIN",
        &[
            (server.port, json!({})),
            (b.port(), json!({"offline": true})),
        ],
        "HTTP",
        json!({}),
    )
    .await;
    let tcp = TcpStream::connect(s.addr()).await.expect("connect");
    let mut ws = open(tcp, &format!("ws://127.0.0.1:{}/chat", s.port), "ws").await;
    converse(&mut ws, "before the drain").await;

    s.f.patch_member(&s.pool, &s.members[1], json!({"offline": false}))
        .await;
    s.f.patch_member(&s.pool, &s.members[0], json!({"drain": true}))
        .await;
    converse(&mut ws, "draining").await;

    let c = client();
    for i in 0..10 {
        let (status, body) = get(&c, &format!("{}/plain/{i}", s.url)).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "b"),
            "a new request goes to the other member"
        );
    }
    converse(&mut ws, "after new requests").await;
    close(ws).await;
}

/// An Upgrade the member answers with 200 is an ordinary response: the connection stays
/// HTTP and serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_upgrade_is_an_ordinary_response() {
    let cap = Capture::start().await;
    let s = Stack::with("ROUND_ROBIN", &[(cap.port(), json!({}))], "HTTP", json!({})).await;
    // The member declines and closes its side, so a proxy that went on tunnelling after
    // the Upgrade offer has nowhere to send the next request.
    cap.answer_next(Answer::Raw {
        bytes: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 8\r\n\r\ndeclined"
            .to_vec(),
        close: true,
    });
    let mut c = RawConn::connect(s.port).await;
    c.send(
        b"GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("send");
    let r = c.response().await.expect("an answer to the upgrade");
    assert_eq!(
        (r.status, r.body_text().as_str()),
        (200, "declined"),
        "{}",
        r.head
    );
    c.send(b"GET /next HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .expect("send the next request on the same connection");
    let r = c.response().await.expect("an answer to the next request");
    assert_eq!(
        (r.status, r.body_text().as_str()),
        (200, "GET /next"),
        "{}",
        r.head
    );
    // The next request was read as HTTP (forwarding headers added), not tunnelled.
    let next = cap
        .requests()
        .into_iter()
        .find(|q| q.target == "/next")
        .expect("the member saw the next request");
    assert_eq!(next.all("x-forwarded-for"), ["127.0.0.1"], "{}", next.head);
    // The offer itself was forwarded: the member declined it.
    let offered = cap
        .requests()
        .into_iter()
        .find(|q| q.target == "/ws")
        .expect("the member saw the upgrade request");
    assert_eq!(
        offered
            .header("upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket"),
        "the Upgrade offer reached the member: {}",
        offered.head
    );
}
