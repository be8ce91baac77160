//! Active health checks, run off the request path: one task per checked member, restarted
//! when its pool (and so its monitor) changes. The counting is a pure state machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_model::{HealthMonitorSpec, HealthMonitorType, MemberId};
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use crate::connect::connect_tcp;
use crate::settings::Target;
use crate::snapshot::Snapshot;
use crate::state::Registry;
use crate::state::{Health, MemberState};

/// Rise/fall counting: `rise` successes in a row make a member healthy, `fall` failures
/// in a row unhealthy. Pure.
#[derive(Debug, Clone)]
pub struct HealthCounter {
    rise: u8,
    fall: u8,
    successes: u8,
    failures: u8,
    state: Health,
}

impl HealthCounter {
    pub fn new(rise: u8, fall: u8, state: Health) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            successes: 0,
            failures: 0,
            state,
        }
    }

    /// Takes a state set outside the checks (passive ejection after failed connects) as the
    /// current one, counting afresh from it. Without this, a member ejected passively
    /// while its checks still counted it healthy would stay out for good: passing checks
    /// report no change from "healthy".
    pub fn sync(&mut self, actual: Health) {
        if actual != self.state {
            self.state = actual;
            self.successes = 0;
            self.failures = 0;
        }
    }

    /// Records one check; returns the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<Health> {
        let next = if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes >= self.rise).then_some(Health::Healthy)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= self.fall).then_some(Health::Unhealthy)
        };
        match next {
            Some(s) if s != self.state => {
                self.state = s;
                Some(s)
            }
            _ => None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Checks {
    /// Per member: the pool revision the task was started for, and the task.
    tasks: HashMap<MemberId, (i64, JoinHandle<()>)>,
}

impl Drop for Checks {
    fn drop(&mut self) {
        for (_, (_, t)) in self.tasks.drain() {
            t.abort();
        }
    }
}

impl Checks {
    /// Starts checks for members of pools with a monitor, stops the rest.
    pub(crate) fn reconcile(&mut self, snap: &Snapshot, registry: &Registry) {
        type Check = (
            i64,
            HealthMonitorSpec,
            Target,
            String,
            Arc<MemberState>,
            fulcrum_model::PoolId,
        );
        let mut desired: HashMap<MemberId, Check> = HashMap::new();
        for pool in snap.pools.values() {
            let Some(monitor) = &pool.monitor else {
                continue;
            };
            for m in &pool.members {
                desired.insert(
                    m.id.clone(),
                    (
                        pool.revision,
                        monitor.clone(),
                        m.target.clone(),
                        m.authority.clone(),
                        m.state.clone(),
                        pool.id.clone(),
                    ),
                );
            }
        }
        let checks = self;
        checks.tasks.retain(|id, (rev, task)| {
            let keep = desired.get(id).is_some_and(|d| d.0 == *rev);
            if !keep {
                task.abort();
                if !desired.contains_key(id)
                    && let Some(state) = registry.get(id)
                {
                    // No monitor any more: no evidence either way.
                    state.set_health(Health::Unknown);
                }
            }
            keep
        });
        for (id, (rev, monitor, target, authority, state, pool)) in desired {
            if checks.tasks.contains_key(&id) {
                continue;
            }
            let task = tokio::spawn(check_loop(monitor, target, authority, state, pool));
            checks.tasks.insert(id, (rev, task));
        }
    }
}

async fn check_loop(
    monitor: HealthMonitorSpec,
    target: Target,
    authority: String,
    state: Arc<MemberState>,
    pool: fulcrum_model::PoolId,
) {
    let target = match (monitor.port, target) {
        (Some(port), Target::Addr(a)) => Target::Addr(std::net::SocketAddr::new(a.ip(), port)),
        (Some(port), Target::Host(h, _)) => Target::Host(h, port),
        (None, t) => t,
    };
    let mut counter = HealthCounter::new(
        monitor.healthy_threshold,
        monitor.unhealthy_threshold,
        state.health(),
    );
    let interval = Duration::from_millis(u64::from(monitor.interval_ms));
    let timeout = Duration::from_millis(u64::from(monitor.timeout_ms));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let began = std::time::Instant::now();
        let ok = if monitor.kind == HealthMonitorType::UdpConnect {
            udp_check(&target, timeout).await
        } else {
            tokio::time::timeout(timeout, check_once(&monitor, &target, &authority))
                .await
                .unwrap_or(false)
        };
        state.checked(ok, began.elapsed());
        if ok {
            state.check_passed();
        }
        // The proxy may have ejected the member (failed connects) since the last check.
        counter.sync(state.health());
        if let Some(new) = counter.record(ok) {
            tracing::info!(%pool, member = %authority, state = ?new, "health changed");
            state.set_health(new);
        }
    }
}

async fn check_once(monitor: &HealthMonitorSpec, target: &Target, authority: &str) -> bool {
    let Ok(stream) = connect_tcp(target, Duration::from_secs(3600)).await else {
        return false;
    };
    match monitor.kind {
        HealthMonitorType::Tcp => true,
        HealthMonitorType::Http => http_check(monitor, stream, authority).await,
        HealthMonitorType::Https => {
            let Ok(config) = crate::tls::health_check_client() else {
                return false;
            };
            let host = monitor.domain_name.as_deref().unwrap_or(authority);
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let Ok(name) = rustls::pki_types::ServerName::try_from(host.to_owned()) else {
                return false;
            };
            match tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
            {
                Ok(tls) => http_check(monitor, tls, authority).await,
                Err(_) => false,
            }
        }
        // Checked by `udp_check`, without a TCP connection.
        HealthMonitorType::UdpConnect => false,
    }
}

/// The probe of a `UDP_CONNECT` check: shorter than any QUIC packet a server would answer
/// (21 bytes), so QUIC members ignore it.
const UDP_PROBE: &[u8] = b"fulcrum-health";

/// Huawei's `UDP_CONNECT`: a probe datagram on a socket connected to the member; an ICMP port
/// unreachable within `window` (Linux reports it to a connected socket as ECONNREFUSED) fails
/// the check, and a reply or silence passes it. The ICMP echo Huawei sends first needs a raw
/// socket (CAP_NET_RAW) and is not sent.
async fn udp_check(target: &Target, window: Duration) -> bool {
    let probe = async {
        let addr = match target {
            Target::Addr(a) => *a,
            Target::Host(h, p) => tokio::net::lookup_host((h.as_str(), *p))
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("the name resolves to no address"))?,
        };
        let local: std::net::SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        socket.send(UDP_PROBE).await?;
        let mut answer = [0u8; 64];
        socket.recv(&mut answer).await.map(|_| ())
    };
    match tokio::time::timeout(window, probe).await {
        // Silence: the port is open (or filtered), as Huawei reads it.
        Err(_) => true,
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "UDP_CONNECT check failed");
            false
        }
    }
}

async fn http_check<S>(monitor: &HealthMonitorSpec, stream: S, authority: &str) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let method = Method::from_bytes(monitor.http_method.as_bytes()).unwrap_or(Method::GET);
    let host = monitor.domain_name.as_deref().unwrap_or(authority);
    let Ok(req) = Request::builder()
        .method(method)
        .uri(monitor.url_path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "fulcrum-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
    else {
        return false;
    };
    match sender.send_request(req).await {
        Ok(resp) => monitor.expects(resp.status().as_u16()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut c = HealthCounter::new(2, 3, Health::Unknown);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a success resets the failure run");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(Health::Unhealthy));
        assert_eq!(c.record(false), None, "no repeated transitions");
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(Health::Healthy));
        assert_eq!(c.record(true), None);
    }

    #[test]
    fn passive_ejection_is_undone_by_passing_checks() {
        let mut c = HealthCounter::new(2, 3, Health::Unknown);
        c.record(true);
        assert_eq!(c.record(true), Some(Health::Healthy));
        // The proxy marks the member unhealthy after failed connects; checks pass again.
        c.sync(Health::Unhealthy);
        assert_eq!(c.record(true), None, "rise counts afresh");
        assert_eq!(c.record(true), Some(Health::Healthy));
        c.sync(Health::Healthy);
        assert_eq!(c.record(true), None, "no change, no transition");
    }
}
