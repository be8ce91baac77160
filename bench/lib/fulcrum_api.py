#!/usr/bin/env python3
"""Drives fulcrum's native API for the benchmark harness (Python standard library only).

Subcommands (each prints one JSON object on stdout):
  setup        create the load balancer, pools, members and listeners the traffic tests use
               (HTTP, h2c, TLS, TCP and, with --udp and --quic, UDP and QUIC_CID)
  propagation  replace a pool's member, then time until the proxy serves from it (test 6), or
               every node of a fleet does (--proxy-hosts)
  scale        load N pools x M members through the batch endpoint; RSS and batch times (test 7)

The load on the API itself (churn, writes) comes from fulcrum-loadgen (crates/loadgen).
"""

import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.parse


class Api:
    """One keep-alive connection to the API; reconnects once on a dropped connection."""

    def __init__(self, base, token, timeout=30):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.token = token
        self.timeout = timeout
        self.conn = None

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def call(self, method, path, body=None):
        """Returns (status, headers dict with lower-case names, decoded JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self._connect()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                return resp.status, hdrs, parsed
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")

    def ok(self, method, path, body=None):
        status, hdrs, parsed = self.call(method, path, body)
        if status >= 300:
            sys.exit(f"{method} {path} -> {status}: {parsed}")
        return hdrs, parsed

    def wait(self, hdrs, timeout_ms=30000):
        wr = hdrs.get("x-work-request-id")
        if not wr:
            return None
        _, body = self.ok("GET", f"/v1/work-requests/{wr}/wait?timeout_ms={timeout_ms}")
        status = (body or {}).get("status")
        if status != "SUCCEEDED":
            sys.exit(f"work request {wr} ended {status}: {body}")
        return body


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


# ---- setup -------------------------------------------------------------------------------


def cmd_setup(a):
    api = Api(a.api, a.token)
    backends = [int(p) for p in a.backends.split(",")]
    hdrs, lb = api.ok("POST", "/v1/loadbalancers", {"name": "bench", "vip_address": "127.0.0.1"})
    api.wait(hdrs)
    lb_id = lb["id"]

    def pool(name, protocol, ports):
        hdrs, p = api.ok(
            "POST",
            f"/v1/loadbalancers/{lb_id}/pools",
            {"name": name, "protocol": protocol, "algorithm": "ROUND_ROBIN"},
        )
        api.wait(hdrs)
        members = []
        for port in ports:
            hdrs, m = api.ok(
                "POST", f"/v1/pools/{p['id']}/members", {"address": "127.0.0.1", "port": port}
            )
            api.wait(hdrs)
            members.append(m["id"])
        return p["id"], members

    def listener(name, protocol, port, pool_id, tls=None):
        # The access log (when the node keeps one) is switched on per scenario: `log`.
        body = {
            "name": name,
            "protocol": protocol,
            "port": port,
            "default_pool_id": pool_id,
            "access_log": {"enabled": False},
        }
        if tls:
            body["tls"] = tls
        hdrs, l = api.ok("POST", f"/v1/loadbalancers/{lb_id}/listeners", body)
        api.wait(hdrs)
        return l["id"]

    http_pool, http_members = pool("http", "HTTP", backends)
    tcp_pool, _ = pool("tcp", "TCP", backends)
    http1 = listener("http1", "HTTP", a.http, http_pool)
    listener("h2c", "HTTP", a.h2c, http_pool)
    with open(a.cert) as f:
        cert = f.read()
    with open(a.key) as f:
        key = f.read()
    listener(
        "tls",
        "TERMINATED_HTTPS",
        a.tls,
        http_pool,
        {"certificate_chain_pem": cert, "private_key_pem": key},
    )
    listener("tcp", "TCP", a.tcp, tcp_pool)
    prop_pool, _ = pool("prop", "HTTP", backends[:1])
    listener("prop", "HTTP", a.prop, prop_pool)
    if a.udp:
        udp_pool, _ = pool("udp", "UDP", [int(p) for p in a.udp_backends.split(",")])
        listener("udp", "UDP", a.udp, udp_pool)
    if a.quic:
        # QUIC_CID (the seed wants SOURCE_IP persistence with it); the members encode these
        # server IDs in their connection IDs (QUIC-LB plaintext, 3-byte server IDs).
        ids = a.quic_server_ids.split(",")
        hdrs, p = api.ok(
            "POST",
            f"/v1/loadbalancers/{lb_id}/pools",
            {
                "name": "quic",
                "protocol": "QUIC",
                "algorithm": "QUIC_CID",
                "session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 1},
                "quic_lb": {"server_id_len": len(ids[0]) // 2},
            },
        )
        api.wait(hdrs)
        for port, sid in zip([int(x) for x in a.quic_backends.split(",")], ids):
            hdrs, _ = api.ok(
                "POST",
                f"/v1/pools/{p['id']}/members",
                {"address": "127.0.0.1", "port": port, "server_id": sid},
            )
            api.wait(hdrs)
        listener("quic", "UDP", a.quic, p["id"])
    print(
        json.dumps(
            {
                "lb": lb_id,
                "http_pool": http_pool,
                "http_members": http_members,
                "prop_pool": prop_pool,
                "http1_listener": http1,
            }
        )
    )


def cmd_log(a):
    """Switches the http1 listener's access log on or off, waiting until it is served."""
    api = Api(a.api, a.token)
    with open(a.state) as f:
        state = json.load(f)
    hdrs, _ = api.ok(
        "PATCH",
        f"/v1/listeners/{state['http1_listener']}",
        {"access_log": {"enabled": a.switch == "on"}},
    )
    api.wait(hdrs)


# ---- propagation -------------------------------------------------------------------------


def cmd_propagation(a):
    state = json.load(open(a.state))
    pool = state["prop_pool"]
    backends = [int(p) for p in a.backends.split(",")]
    bodies = [b.encode() for b in a.bodies.split(",")]
    hosts = a.proxy_hosts.split(",")
    api = Api(a.api, a.token)
    conns = {h: http.client.HTTPConnection(h, a.proxy_port, timeout=5) for h in hosts}

    def served_by(host):
        try:
            conns[host].request("GET", "/")
            r = conns[host].getresponse()
            return r.read()
        except (http.client.HTTPException, OSError):
            conns[host].close()
            conns[host] = http.client.HTTPConnection(host, a.proxy_port, timeout=5)
            return None

    # The same request with nothing changing: what one poll costs (the resolution).
    rtt = []
    for _ in range(200):
        t0 = time.monotonic()
        served_by(hosts[0])
        rtt.append(time.monotonic() - t0)

    # upper: ack -> every host seen answering from the new member (one host: that host);
    # lower: ack -> the last host's successful poll sent; first: ack -> the first host seen.
    upper, lower, first, applied, stale, timeouts = [], [], [], [], 0, 0
    current = 0
    for _ in range(a.writes):
        target = (current + 1) % len(backends)
        t0 = time.monotonic()
        hdrs, _ = api.ok(
            "POST",
            f"/v1/pools/{pool}/members/batch",
            {"action": "replace", "members": [{"address": "127.0.0.1", "port": backends[target]}]},
        )
        ack = time.monotonic()
        deadline = ack + a.timeout
        seen_all, sent = True, ack
        for i, host in enumerate(hosts):
            seen = False
            while time.monotonic() < deadline:
                sent = time.monotonic()
                body = served_by(host)
                if body == bodies[target]:
                    seen = True
                    if i == 0:
                        first.append(time.monotonic() - ack)
                    break
                stale += 1
            if not seen:
                seen_all = False
                break
        if seen_all:
            # Served by the new member everywhere: the change took effect at most `upper`
            # after the acknowledgement, and not before `lower` if earlier polls of the last
            # host saw the old member.
            upper.append(time.monotonic() - ack)
            lower.append(sent - ack)
        else:
            timeouts += 1
        # Keep writes apart and learn the full write-to-SUCCEEDED time as well.
        api.wait(hdrs, timeout_ms=int(a.timeout * 1000))
        applied.append(time.monotonic() - t0)
        current = target

    def pct(xs, p):
        return round(1000 * percentile(xs, p), 3) if xs else None

    print(
        json.dumps(
            {
                "writes": a.writes,
                "hosts": len(hosts),
                "observed": len(upper),
                "timeouts": timeouts,
                "stale_responses": stale,
                "p50_ms": pct(upper, 50),
                "p99_ms": pct(upper, 99),
                "max_ms": pct(upper, 100),
                "first_host_p50_ms": pct(first, 50),
                "first_host_p99_ms": pct(first, 99),
                "sent_after_ack_p50_ms": pct(lower, 50),
                "sent_after_ack_p99_ms": pct(lower, 99),
                "poll_rtt_p50_ms": pct(rtt, 50),
                "poll_rtt_p99_ms": pct(rtt, 99),
                "write_to_succeeded_p50_ms": pct(applied, 50),
                "write_to_succeeded_p99_ms": pct(applied, 99),
            }
        )
    )


# ---- scale -------------------------------------------------------------------------------


def rss_kib(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                vals[k] = int(v.split()[0])
    return vals


def members_for(pool_index, count, start=0):
    # Distinct addresses nothing listens on (no listener points at these pools): the test is
    # about the control plane and the compiled snapshot, not traffic.
    return [
        {"address": f"10.77.{(pool_index >> 8) & 255}.{pool_index & 255}", "port": 1024 + start + j}
        for j in range(count)
    ]


def cmd_scale(a):
    api = Api(a.api, a.token, timeout=120)
    before = rss_kib(a.pid)
    hdrs, lb = api.ok("POST", "/v1/loadbalancers", {"name": "scale", "vip_address": "127.0.0.1"})
    api.wait(hdrs)
    lb_id = lb["id"]
    t_start = time.monotonic()
    pools = []
    for i in range(a.pools):
        hdrs, p = api.ok(
            "POST",
            f"/v1/loadbalancers/{lb_id}/pools",
            {"name": f"p{i}", "protocol": "HTTP", "algorithm": "ROUND_ROBIN"},
        )
        pools.append(p["id"])
    t_pools = time.monotonic() - t_start
    load_times = []
    last = None
    for i, pid in enumerate(pools):
        left = a.members
        while left > 0:
            n = min(left, 200)
            t0 = time.monotonic()
            last, _ = api.ok(
                "POST",
                f"/v1/pools/{pid}/members/batch",
                {"action": "add", "members": members_for(i, n, a.members - left)},
            )
            load_times.append(time.monotonic() - t0)
            left -= n
    if last is not None:
        api.wait(last, timeout_ms=120000)
    t_loaded = time.monotonic() - t_start
    time.sleep(1)
    loaded = rss_kib(a.pid)

    # 200-member batches into fresh pools of the loaded system: API response time, and time
    # until the work request has SUCCEEDED (the data plane serves the change).
    ack, applied = [], []
    for k in range(a.probe_batches):
        hdrs, p = api.ok(
            "POST",
            f"/v1/loadbalancers/{lb_id}/pools",
            {"name": f"probe{k}", "protocol": "HTTP", "algorithm": "ROUND_ROBIN"},
        )
        api.wait(hdrs)
        t0 = time.monotonic()
        hdrs, _ = api.ok(
            "POST",
            f"/v1/pools/{p['id']}/members/batch",
            {"action": "add", "members": members_for(60000 + k, 200)},
        )
        ack.append(time.monotonic() - t0)
        api.wait(hdrs, timeout_ms=120000)
        applied.append(time.monotonic() - t0)
    after = rss_kib(a.pid)
    ms = lambda xs, p: round(1000 * percentile(xs, p), 2)  # noqa: E731
    print(
        json.dumps(
            {
                "pools": a.pools,
                "members_per_pool": a.members,
                "rss_before_mib": round(before["VmRSS"] / 1024, 1),
                "rss_loaded_mib": round(loaded["VmRSS"] / 1024, 1),
                "rss_peak_mib": round(after["VmHWM"] / 1024, 1),
                "pool_create_s": round(t_pools, 2),
                "load_total_s": round(t_loaded, 2),
                "load_batch_size": min(a.members, 200),
                "load_batch_p50_ms": ms(load_times, 50),
                "load_batch_p99_ms": ms(load_times, 99),
                "batch200_ack_p50_ms": ms(ack, 50),
                "batch200_ack_p99_ms": ms(ack, 99),
                "batch200_applied_p50_ms": ms(applied, 50),
                "batch200_applied_p99_ms": ms(applied, 99),
                "batch200_samples": len(ack),
                "batch200_ack_mean_ms": round(1000 * statistics.mean(ack), 2) if ack else None,
            }
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--api", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--token", required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("setup")
    s.add_argument("--backends", required=True, help="comma-separated backend ports")
    for name in ("http", "h2c", "tls", "tcp", "prop"):
        s.add_argument(f"--{name}", type=int, required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--udp", type=int, help="port of a UDP listener (a UDP pool of --udp-backends)")
    s.add_argument("--udp-backends", default="", help="comma-separated UDP member ports")
    s.add_argument("--quic", type=int, help="port of a UDP listener in front of a QUIC_CID pool")
    s.add_argument("--quic-backends", default="", help="comma-separated QUIC member ports")
    s.add_argument("--quic-server-ids", default="", help="comma-separated hex server IDs")
    s.set_defaults(fn=cmd_setup)

    s = sub.add_parser("log")
    s.add_argument("--state", required=True)
    s.add_argument("switch", choices=("on", "off"))
    s.set_defaults(fn=cmd_log)

    s = sub.add_parser("propagation")
    s.add_argument("--state", required=True)
    s.add_argument("--backends", required=True)
    s.add_argument("--bodies", required=True, help="comma-separated body of each backend")
    s.add_argument("--proxy-port", type=int, required=True)
    s.add_argument(
        "--proxy-hosts",
        default="127.0.0.1",
        help="comma-separated addresses serving --proxy-port (a fleet's nodes): a write counts "
        "as served once every one answers from the new member, polled in this order",
    )
    s.add_argument("--writes", type=int, default=1000)
    s.add_argument("--timeout", type=float, default=5.0)
    s.set_defaults(fn=cmd_propagation)

    s = sub.add_parser("scale")
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--pools", type=int, default=1000)
    s.add_argument("--members", type=int, default=100)
    s.add_argument("--probe-batches", type=int, default=20)
    s.set_defaults(fn=cmd_scale)

    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
