//! Hitless restarts and upgrades: a `fulcrum serve` started on the data directory of one
//! that runs takes over from it, over a Unix socket in that directory (`takeover.sock`,
//! 0600), the way HAProxy and Envoy hand over their listening sockets.
//!
//! 1. The new process connects and asks ([`Request`]).
//! 2. The old one stops accepting API connections, lets go of its store, and sends an
//!    [`Offer`] with its listening sockets (the API's and every listener's, passed as file
//!    descriptors: the same sockets, so connections waiting in their queues are never
//!    refused) and its members' live state. It goes on serving traffic meanwhile.
//! 3. The new process opens the store, serves the API and the listeners on those sockets,
//!    and once its data plane serves the configuration says [`Outcome::Serving`].
//! 4. The old one stops accepting, lets its connections finish, and exits. Had the new
//!    one failed or gone away first, the old one takes its store back and serves on.
//!
//! Messages are JSON behind a 4-byte big-endian length; descriptors follow the offer in
//! chunks of at most [`FDS_PER_MESSAGE`], each with a one-byte payload.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use fulcrum_proxy::MemberCarry;
use serde::{Deserialize, Serialize};

/// The protocol's version: a process only takes over from one that speaks the same.
const VERSION: u32 = 1;
/// Descriptors per `sendmsg` (the kernel allows 253).
const FDS_PER_MESSAGE: usize = 128;
/// The longest message accepted (a large member list fits many times).
const MAX_MESSAGE: usize = 64 << 20;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("takeover.sock")
}

/// The new process's question.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub pid: u32,
}

/// What the old process hands over. The descriptors come in this order: the API's socket
/// (if `api`), then one per entry of `listeners`.
#[derive(Debug, Serialize, Deserialize)]
struct OfferWire {
    version: u32,
    api: bool,
    listeners: Vec<SocketAddr>,
    members: Vec<MemberCarry>,
}

/// The sockets and state handed over.
pub struct Offer {
    pub api: Option<std::net::TcpListener>,
    pub listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    pub members: Vec<MemberCarry>,
}

/// How a takeover ended, told by the new process to the old.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The new process serves the API and the configuration: the old one may stop.
    Serving,
    /// It could not: the old one carries on.
    Failed(String),
}

fn write_message<T: Serialize>(stream: &mut UnixStream, value: &T) -> anyhow::Result<()> {
    let body = serde_json::to_vec(value)?;
    let len = u32::try_from(body.len()).context("message too large")?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(&body)?;
    Ok(())
}

fn read_message<T: for<'de> Deserialize<'de>>(stream: &mut UnixStream) -> anyhow::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        bail!("takeover message of {len} bytes refused");
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

fn send_fds(stream: &UnixStream, fds: &[std::os::fd::BorrowedFd<'_>]) -> anyhow::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(chunk.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(chunk)) {
            bail!("cannot attach {} descriptors", chunk.len());
        }
        sendmsg(
            stream,
            &[IoSlice::new(&[1])],
            &mut control,
            SendFlags::empty(),
        )
        .context("cannot send the sockets")?;
    }
    Ok(())
}

fn receive_fds(stream: &UnixStream, count: usize) -> anyhow::Result<Vec<OwnedFd>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut fds = Vec::with_capacity(count);
    while fds.len() < count {
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        let got = recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .context("cannot receive the sockets")?;
        if got.bytes == 0 {
            bail!("the process taking over went away");
        }
        let before = fds.len();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if fds.len() == before {
            bail!("a takeover message came without its sockets");
        }
    }
    Ok(fds)
}

// ---- the running process's side ---------------------------------------------------------

/// Listens for a process that wants to take over. A socket file left by a process that is
/// gone is replaced; the socket is the owner's only.
pub fn listen(data_dir: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Waits (blocking) for the next process that asks to take over.
pub fn accept(listener: &UnixListener) -> anyhow::Result<(UnixStream, Request)> {
    loop {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        match read_message::<Request>(&mut stream) {
            Ok(r) if r.version == VERSION => return Ok((stream, r)),
            Ok(r) => {
                tracing::warn!(
                    pid = r.pid,
                    version = r.version,
                    "a process of another takeover version asked to take over; refused"
                );
            }
            Err(e) => tracing::warn!(error = %e, "a takeover request could not be read"),
        }
    }
}

/// Sends the offer (blocking).
pub fn offer(stream: &mut UnixStream, offer: &Offer) -> anyhow::Result<()> {
    let wire = OfferWire {
        version: VERSION,
        api: offer.api.is_some(),
        listeners: offer.listeners.iter().map(|(a, _)| *a).collect(),
        members: offer.members.clone(),
    };
    write_message(stream, &wire)?;
    let mut fds = Vec::new();
    if let Some(api) = &offer.api {
        fds.push(api.as_fd());
    }
    fds.extend(offer.listeners.iter().map(|(_, s)| s.as_fd()));
    send_fds(stream, &fds)
}

/// Waits (blocking, up to `within`) for how the takeover ended; a process that went away
/// or said nothing in time failed.
pub fn outcome(stream: &mut UnixStream, within: Duration) -> Outcome {
    if stream.set_read_timeout(Some(within)).is_err() {
        return Outcome::Failed("cannot wait for the process taking over".into());
    }
    read_message::<Outcome>(stream)
        .unwrap_or_else(|e| Outcome::Failed(format!("the process taking over did not finish: {e}")))
}

// ---- the new process's side -------------------------------------------------------------

/// A takeover under way, from the new process's side.
pub struct Taking {
    stream: UnixStream,
    pub offer: Offer,
}

impl Taking {
    /// Tells the old process how it went; `Serving` lets it stop.
    pub fn finish(mut self, outcome: &Outcome) -> anyhow::Result<()> {
        write_message(&mut self.stream, outcome)
    }
}

/// Asks a fulcrum serving `data_dir` to hand over (blocking). None when none runs there.
pub fn take_over(data_dir: &Path, wait: Duration) -> anyhow::Result<Option<Taking>> {
    let path = socket_path(data_dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        // Nothing there, a process that is gone, or a path no socket can have (too long):
        // nobody to take over from.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::InvalidInput
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot connect to {}", path.display())),
    };
    stream.set_read_timeout(Some(wait))?;
    write_message(
        &mut stream,
        &Request {
            version: VERSION,
            pid: std::process::id(),
        },
    )?;
    let wire: OfferWire = read_message(&mut stream)
        .context("the running fulcrum did not hand over (it may be another version, or busy)")?;
    if wire.version != VERSION {
        bail!(
            "the running fulcrum speaks takeover version {}",
            wire.version
        );
    }
    let count = usize::from(wire.api) + wire.listeners.len();
    let mut fds = receive_fds(&stream, count)?.into_iter();
    let api = if wire.api {
        fds.next().map(std::net::TcpListener::from)
    } else {
        None
    };
    let listeners = wire
        .listeners
        .into_iter()
        .zip(fds.by_ref())
        .map(|(addr, fd)| (addr, std::net::TcpListener::from(fd)))
        .collect();
    Ok(Some(Taking {
        stream,
        offer: Offer {
            api,
            listeners,
            members: wire.members,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same sockets arrive on the other side: a connection made to one after the
    /// handover is accepted from the copy received.
    #[test]
    fn sockets_and_state_cross_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = listen(dir.path()).expect("listen");
        let api = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let api_addr = api.local_addr().expect("addr");
        let traffic: Vec<std::net::TcpListener> = (0..300)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let member = MemberCarry {
            id: "m1".to_owned().into(),
            health: 2,
            ejected_for_ms: 5_000,
            ejected_unreachable: true,
            ejections_in_a_row: 1,
            breaker_open_for_ms: 0,
        };
        let old = std::thread::spawn({
            let member = member.clone();
            move || {
                let (mut stream, request) = accept(&listener).expect("request");
                assert_eq!(request.pid, std::process::id());
                let listeners = traffic
                    .into_iter()
                    .map(|s| (s.local_addr().expect("addr"), s))
                    .collect();
                offer(
                    &mut stream,
                    &Offer {
                        api: Some(api),
                        listeners,
                        members: vec![member],
                    },
                )
                .expect("offer");
                outcome(&mut stream, Duration::from_secs(5))
            }
        });
        let taking = take_over(dir.path(), Duration::from_secs(5))
            .expect("take over")
            .expect("someone to take over from");
        let got_api = taking.offer.api.as_ref().expect("the API socket");
        assert_eq!(got_api.local_addr().expect("addr"), api_addr);
        assert_eq!(taking.offer.listeners.len(), 300);
        for (addr, socket) in &taking.offer.listeners {
            assert_eq!(socket.local_addr().expect("addr"), *addr);
        }
        assert_eq!(taking.offer.members, vec![member]);
        let _client = std::net::TcpStream::connect(api_addr).expect("connect");
        got_api.accept().expect("accepted from the socket received");
        taking.finish(&Outcome::Serving).expect("finish");
        assert_eq!(old.join().expect("old side"), Outcome::Serving);
    }

    #[test]
    fn a_data_directory_too_deep_for_a_socket_is_no_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("d".repeat(120));
        std::fs::create_dir_all(&deep).expect("mkdir");
        assert!(listen(&deep).is_err());
        assert!(
            take_over(&deep, Duration::from_secs(1))
                .expect("no error")
                .is_none()
        );
    }

    #[test]
    fn nobody_to_take_over_from() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            take_over(dir.path(), Duration::from_secs(1))
                .expect("no error")
                .is_none()
        );
        // A socket file left behind by a process that is gone.
        drop(listen(dir.path()).expect("listen"));
        assert!(
            take_over(dir.path(), Duration::from_secs(1))
                .expect("no error")
                .is_none()
        );
    }
}
