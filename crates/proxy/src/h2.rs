//! HTTP/2 requests (hyper's server): route, pick a member, forward over hyper's HTTP/1.1
//! client, stream the answer back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Incoming};

use crate::DataPlaneInner;
use crate::exchange::{self, ConnInfo, MAX_ATTEMPTS};
use crate::hyper_upstream::{ResponseBody, UpstreamBody, acquire};
use crate::persistence::Session;
use crate::select::{Tried, pick};
use crate::snapshot::{ListenerRt, PoolRt};
use crate::state::Lease;
use crate::stats::ErrorKind;

fn reply(status: StatusCode, reason: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "{} {}: {reason}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP_COUNT: usize = 8;
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which hop-by-hop headers are present (most messages
    // carry none, a response often only Connection); only those are looked up again.
    let mut present = [false; HOP_BY_HOP_COUNT];
    let mut upgrade = false;
    for name in headers.keys() {
        if name == header::UPGRADE {
            upgrade = true;
        } else if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !upgrade && !present.contains(&true) {
        return;
    }
    // Headers named in Connection are hop-by-hop too (HOP_BY_HOP[0] is Connection).
    let named: Vec<HeaderName> = if present[0] {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .filter(|n| !HOP_BY_HOP.contains(n))
            .collect()
    } else {
        Vec::new()
    };
    for (h, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(h);
    }
    for h in &named {
        headers.remove(h);
    }
    if upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Requests we may resend after a failure before any response byte (RFC 9110 §9.2.2).
pub(crate) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

pub(crate) async fn handle(
    dp: Arc<DataPlaneInner>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, std::convert::Infallible> {
    let start = std::time::Instant::now();
    // One snapshot read per request: the listener (routes, timeouts, counters) it serves.
    let Some(listener) = dp.snapshot.load().listeners.get(&conn.listener).cloned() else {
        return Ok(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "listener is being removed",
        ));
    };
    let resp = proxy(&dp, &conn, &listener, req).await;
    listener
        .stats
        .record(resp.status().as_u16(), start.elapsed());
    Ok(resp)
}

async fn proxy(
    dp: &DataPlaneInner,
    conn: &ConnInfo,
    listener: &ListenerRt,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    // Ambiguous framing (Content-Length with Transfer-Encoding) never reaches here as
    // such: hyper lets Transfer-Encoding win, drops Content-Length, and closes the
    // connection after the response, so nothing can be smuggled behind the body.
    // The Host header is kept as it came (a cheap shared copy); only an absolute-form
    // request without one needs its authority turned into a value.
    let host = match req.headers().get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    let Some(pool) = listener.route(host_str, req.uri().path().as_bytes()) else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no pool serves this request",
        );
    };
    forward(dp, conn, req, host, pool, listener.timeouts).await
}

async fn forward(
    dp: &DataPlaneInner,
    conn: &ConnInfo,
    req: Request<Incoming>,
    host: Option<HeaderValue>,
    pool: &PoolRt,
    timeouts: fulcrum_model::ListenerTimeouts,
) -> Response<ResponseBody> {
    let (mut parts, body) = req.into_parts();
    prepare_upstream_headers(&mut parts.headers, conn, host.as_ref());
    parts.version = Version::HTTP_11;
    parts.uri = match parts.uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };
    let bodyless = body.is_end_stream();
    let retryable = bodyless && idempotent(&parts.method);
    let mut body = Some(body);
    let client_hash = conn.client_hash;
    let connect_timeout = Duration::from_millis(u64::from(timeouts.connect_ms));
    let response_timeout = Duration::from_millis(u64::from(timeouts.upstream_response_ms));
    let mut tried = Tried::default();
    let mut last_error = "no member is available";
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    let session = Session::of(
        pool,
        conn.peer.ip(),
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let mut bound = session.bound;
    let mut parts = Some(parts);

    for _ in 0..MAX_ATTEMPTS {
        let Some(idx) = bound.take().or_else(|| pick(pool, client_hash, &tried)) else {
            break;
        };
        tried.add(idx);
        let member = &pool.members[idx];
        let lease = Lease::new(&member.state);
        let (mut sender, reused) = match acquire(member, connect_timeout).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(member = %member.authority, error = %e, "connect failed");
                exchange::failed(member, ErrorKind::Connect);
                dp.passive_failure(pool, idx);
                last_error = "could not connect to a member";
                status = StatusCode::BAD_GATEWAY;
                continue;
            }
        };
        member.state.connect_succeeded();
        let upstream_body: UpstreamBody = match body.take() {
            Some(b) if !bodyless => Either::Left(b),
            _ => Either::Right(Empty::new()),
        };
        // Only a request that may be resent after a reset keeps a copy; any other is sent
        // at most once (a failed connect comes back before this point).
        let Some(mut member_parts) = (if retryable {
            parts.clone()
        } else {
            parts.take()
        }) else {
            break;
        };
        apply_upstream(&mut member_parts, &member.upstream);
        if let Some(proxy) = &member.upstream.proxy
            && member.upstream.tls.is_none()
        {
            // Plain HTTP through a forward proxy: absolute-form, with its credentials.
            let pq = member_parts
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned();
            if let Ok(uri) = format!("http://{}{pq}", member.authority).parse::<Uri>() {
                member_parts.uri = uri;
            }
            if let Some(auth) = &proxy.authorization {
                member_parts
                    .headers
                    .insert(header::PROXY_AUTHORIZATION, auth.clone());
            }
        }
        let mut upstream_req = Request::from_parts(member_parts, upstream_body);
        if bodyless {
            upstream_req.headers_mut().remove(header::CONTENT_LENGTH);
        }
        let sent_at = std::time::Instant::now();
        let sent = tokio::time::timeout(response_timeout, sender.send_request(upstream_req)).await;
        match sent {
            Ok(Ok(resp)) => {
                exchange::answered(
                    dp,
                    member,
                    resp.status().as_u16(),
                    sent_at.elapsed(),
                    || {
                        resp.headers()
                            .get(header::RETRY_AFTER)
                            .map(HeaderValue::as_bytes)
                    },
                );
                let keep_alive = !resp
                    .headers()
                    .get(header::CONNECTION)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                let cookie = session.remember(
                    pool,
                    idx,
                    rparts
                        .headers
                        .get_all(header::SET_COOKIE)
                        .iter()
                        .map(HeaderValue::as_bytes),
                );
                if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
                    rparts.headers.append(header::SET_COOKIE, v);
                }
                let body = crate::hyper_upstream::PooledBody::new(
                    rbody,
                    sender,
                    member.state.clone(),
                    member.upstream.clone(),
                    lease,
                    keep_alive,
                );
                return Response::from_parts(rparts, Either::Left(body));
            }
            Ok(Err(e)) => {
                tracing::debug!(member = %member.authority, error = %e, reused, "upstream request failed");
                exchange::failed(member, ErrorKind::Reset);
                last_error = "the member closed the connection";
                status = StatusCode::BAD_GATEWAY;
                if !retryable {
                    break;
                }
                if !reused {
                    dp.passive_failure(pool, idx);
                }
            }
            Err(_) => {
                exchange::failed(member, ErrorKind::Timeout);
                last_error = "the member did not answer in time";
                status = StatusCode::GATEWAY_TIMEOUT;
                break;
            }
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        last_error = exchange::unavailable_reason(pool);
    }
    reply(status, last_error)
}

/// Adds a member's credentials and base path to a request bound for it.
fn apply_upstream(parts: &mut http::request::Parts, u: &crate::snapshot::UpstreamRt) {
    if u.is_empty() {
        return;
    }
    for (name, values) in &u.headers {
        parts.headers.remove(name);
        for v in values {
            parts.headers.append(name.clone(), v.clone());
        }
    }
    if u.base_path.is_empty() && u.query.is_empty() {
        return;
    }
    let path = parts.uri.path();
    let mut target = String::with_capacity(u.base_path.len() + path.len() + u.query.len() + 2);
    target.push_str(&u.base_path);
    target.push_str(if path.is_empty() { "/" } else { path });
    let query = parts.uri.query().filter(|q| !q.is_empty());
    if query.is_some() || !u.query.is_empty() {
        target.push('?');
        if let Some(q) = query {
            target.push_str(q);
            if !u.query.is_empty() {
                target.push('&');
            }
        }
        target.push_str(&u.query);
    }
    if let Ok(uri) = target.parse::<Uri>() {
        parts.uri = uri;
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The pieces, in order, as one header value.
fn joined(parts: &[&[u8]]) -> Option<HeaderValue> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        v.extend_from_slice(p);
    }
    HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
}

fn prepare_upstream_headers(headers: &mut HeaderMap, conn: &ConnInfo, host: Option<&HeaderValue>) {
    strip_hop_by_hop(headers);
    let xff = match headers.get(X_FORWARDED_FOR) {
        Some(prev) => joined(&[prev.as_bytes(), b", ", conn.client_ip.as_bytes()]),
        None => Some(conn.client_ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = if conn.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    let forwarded = match host {
        Some(h) => joined(&[conn.forwarded.as_bytes(), b";host=\"", h.as_bytes(), b"\""]),
        None => Some(conn.forwarded.clone()),
    };
    if let Some(v) = forwarded {
        headers.append(header::FORWARDED, v);
    }
    if let Some(h) = host
        && !headers.contains_key(header::HOST)
    {
        headers.insert(header::HOST, h.clone());
    }
}
