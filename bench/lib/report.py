#!/usr/bin/env python3
"""Writes bench/RESULTS.md from the harness's raw results (one JSON object per line)."""

import argparse
import json
import os
import statistics

SCENARIO_TITLES = {
    "http1": "HTTP/1.1 keep-alive, small responses",
    "h2c": "HTTP/2 cleartext (h2c, prior knowledge)",
    "h2tls": "HTTP/2 over TLS (ALPN h2)",
    "tls": "TLS termination, HTTP/1.1 keep-alive",
    "tcp": "TCP (L4) throughput, 100 MB transfers",
    "conn": "New connections per second (Connection: close)",
}
MODE_TITLES = {"1t": "one worker each", "all": "all cores"}
PROXIES = ["fulcrum", "haproxy", "nginx"]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def traffic_medians(rows, scenario, mode):
    out = {}
    for proxy in PROXIES:
        rs = [r for r in rows if r.get("scenario") == scenario and r.get("mode") == mode
              and r.get("proxy") == proxy]
        if not rs:
            continue
        out[proxy] = {
            "rps": median([r["rps"] for r in rs]),
            "bytes_per_s": median([r["bytes_per_s"] for r in rs]),
            "p50_ms": median([r.get("p50_ms") for r in rs]),
            "p99_ms": median([r.get("p99_ms") for r in rs]),
            "mean_ms": median([r.get("mean_ms") for r in rs]),
            "cpu_per_100k": median([r.get("cpu_per_100k") for r in rs]),
            "errors": sum(r["errors"] + r["non_2xx"] for r in rs),
            "rounds": len(rs),
            "cmd": rs[0]["cmd"],
        }
    return out


def udp_rows(rows, proxy=None):
    """The udp scenario's measured rounds (failed ones left out), of one proxy or all."""
    return [r for r in rows if r.get("scenario") == "udp" and r.get("result")
            and (proxy is None or r.get("proxy") == proxy)]


def udp_medians(rows):
    """Per proxy: medians over rounds of packets/s, round trips, CPU per packet (µs)."""
    out = {}
    for proxy in ("fulcrum", "nginx"):
        rs = udp_rows(rows, proxy)
        if not rs:
            continue
        out[proxy] = {
            "pps": median([r["result"]["replies_per_s"] for r in rs]),
            "p50_ms": median([r["result"].get("p50_ms") for r in rs]),
            "p99_ms": median([r["result"].get("p99_ms") for r in rs]),
            "cpu_us": median([r["cpu_s"] / r["result"]["replies"] * 1e6 for r in rs
                              if r["result"].get("replies")]),
            "losses": sum(r["result"]["losses"] for r in rs),
            "replies": sum(r["result"]["replies"] for r in rs),
            "rounds": len(rs),
            "cmd": rs[0]["cmd"],
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--haproxy-cfg")
    ap.add_argument("--nginx-conf")
    ap.add_argument("--backend-conf")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    meta = json.load(open(a.meta))
    rows = load(a.results)
    md = []
    w = md.append

    w("# fulcrum benchmark results")
    w("")
    w("Written by `bench/run` (see README, \"Benchmarks\"). Do not edit by hand: run it again.")
    w("")
    if meta["quick"]:
        w(f"> **{meta['label']}.** `--quick`: {meta['rounds']} round(s) of {meta['duration_s']} s, "
          "reduced sizes. The figures show that every scenario works end to end; they are "
          "**not** measurements to draw conclusions from.")
    else:
        w(f"> **{meta['label']}.**")
    w("")
    w("## Run")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| Date | {meta['started']} ({meta['elapsed_s']} s) |")
    w(f"| Machine | {meta['nproc']} CPUs, {meta['cpu_model']}, {meta['mem']}, kernel {meta['kernel']} |")
    w(f"| Load average | {meta['load_start']} at start, {meta['load_end']} at end |")
    w(f"| fulcrum | commit {meta['fulcrum_commit']}, release build, {meta['rustc']} |")
    w(f"| HAProxy | {meta['haproxy']} |")
    w(f"| nginx | {meta['nginx']} |")
    w(f"| wrk / h2load | {meta['wrk']} / {meta['h2load']} |")
    w(f"| Backends | {meta['backend']} |")
    w(f"| Rounds | {meta['rounds']} × {meta['duration_s']} s per proxy, interleaved "
      "fulcrum, HAProxy, nginx, fulcrum, … |")
    w(f"| Load | {meta['load_threads']} load-generator thread(s), {meta['connections']} "
      "connections (4 for tcp), h2load 10 streams per connection |")
    w(f"| Pinning | {meta['pinning']} |")
    w(f"| Scenarios | {meta['scenarios']} |")
    w("")

    # ---- targets ----
    t = []
    m1 = traffic_medians(rows, "http1", "1t")
    f1, h1 = m1.get("fulcrum"), m1.get("haproxy")
    if f1 and h1:
        r = ratio(f1["rps"], h1["rps"])
        t.append(("(1) req/s ≥ 1.15× HAProxy, one worker", fmt_ratio(r), r is not None and r >= 1.15))
        r = ratio(f1["cpu_per_100k"], h1["cpu_per_100k"])
        t.append(("(1) CPU per request ≤ 0.85× HAProxy", fmt_ratio(r), r is not None and r <= 0.85))
        ok = f1["p99_ms"] is not None and h1["p99_ms"] is not None and f1["p99_ms"] <= h1["p99_ms"]
        t.append(("(1) p99 no worse than HAProxy",
                  f"{fmt(f1['p99_ms'], 2)} ms vs {fmt(h1['p99_ms'], 2)} ms", ok))
    for scen, label, key in (("tcp", "(3) TCP bytes/s ≥ 1.0× HAProxy", "bytes_per_s"),
                             ("conn", "(4) new connections/s ≥ 1.0× HAProxy", "rps")):
        mm = traffic_medians(rows, scen, "1t")
        if mm.get("fulcrum") and mm.get("haproxy"):
            r = ratio(mm["fulcrum"][key], mm["haproxy"][key])
            t.append((label + ", one worker", fmt_ratio(r), r is not None and r >= 1.0))
    udp = udp_medians(rows)
    udp_failed = [r for r in rows if r.get("scenario") == "udp" and r.get("failed")]
    if udp.get("fulcrum") and udp.get("nginx"):
        r = ratio(udp["fulcrum"]["pps"], udp["nginx"]["pps"])
        cpu = ratio(udp["fulcrum"]["cpu_us"], udp["nginx"]["cpu_us"])
        t.append(("(issue 18) UDP packets/s ≥ 1.0× nginx, one worker",
                  f"{fmt_ratio(r)} (CPU per packet {fmt_ratio(cpu)})",
                  r is not None and r >= 1.0 and not udp_failed))
    elif udp_failed:
        t.append(("(issue 18) UDP packets/s ≥ 1.0× nginx, one worker",
                  f"the driver failed in {len(udp_failed)} run(s)", False))
    quic = [r for r in rows if r.get("scenario") == "quic"]
    quic_ok = [r for r in quic if r.get("result") and r.get("proxy") == "fulcrum"]
    if quic:
        cps = median([r["result"]["connections_per_s"] for r in quic_ok])
        failed = [r for r in quic if r.get("failed")]
        t.append(("(issue 18) QUIC connection throughput through fulcrum reported (QUIC_CID)",
                  f"{fmt(cps)} connections/s" if quic_ok else "no run completed",
                  bool(quic_ok) and not failed))
    log_off = [r for r in rows if r.get("scenario") == "http1-log-off"]
    log_on = [r for r in rows if r.get("scenario") == "http1-log-on"]
    if log_off and log_on:
        loss = 1 - median([r["rps"] for r in log_on]) / median([r["rps"] for r in log_off])
        t.append(("(16) access log on: ≤ 5 % req/s loss", f"{loss * 100:.1f} % loss", loss <= 0.05))
    base = [r for r in rows if r.get("scenario") == "churn-baseline"]
    churn = [r for r in rows if r.get("scenario") == "churn-churn"]
    churn_api = [r["api"] for r in rows if r.get("scenario") == "churn-api" and r.get("api")]
    if base and churn:
        failed = sum(r["errors"] + r["non_2xx"] for r in churn)
        loss = 1 - median([r["rps"] for r in churn]) / median([r["rps"] for r in base])
        achieved = median([c.get("achieved_per_s") for c in churn_api])
        t.append(("(5) churn: 0 failed requests", f"{failed} failed", failed == 0))
        t.append(("(5) churn: ≤ 5 % req/s loss at 500 changes/s",
                  f"{100 * loss:.1f} % at {fmt(achieved)} changes/s achieved",
                  loss <= 0.05 and achieved is not None and achieved >= 475))
    prop = [r["result"] for r in rows if r.get("scenario") == "propagation"]
    if prop:
        p = prop[-1]
        t.append(("(6) propagation p99 ≤ 2 ms",
                  f"p99 {fmt(p['p99_ms'], 2)} ms (p50 {fmt(p['p50_ms'], 2)} ms, "
                  f"{p['observed']}/{p['writes']} writes; includes one request through fulcrum, "
                  f"whose own p99 is {fmt(p.get('poll_rtt_p99_ms'), 2)} ms; "
                  f"{p.get('stale_responses', '?')} answers from the old member after the ack)",
                  p["p99_ms"] is not None and p["p99_ms"] <= 2.0 and p["timeouts"] == 0))
    fleet = [r["result"] for r in rows if r.get("scenario") == "fleet" and r.get("result")]
    fleet_failed = any(r.get("scenario") == "fleet" and r.get("failed") for r in rows)
    if fleet or fleet_failed:
        p = fleet[-1] if fleet else None
        t.append(("(issue 15) 3-node fleet: a change served on every node, p99 ≤ 50 ms",
                  f"p99 {fmt(p['p99_ms'], 2)} ms (p50 {fmt(p['p50_ms'], 2)} ms, "
                  f"{p['observed']}/{p['writes']} writes)" if p else "the scenario failed",
                  p is not None and p["p99_ms"] is not None and p["p99_ms"] <= 50
                  and p["timeouts"] == 0))
    scale = [r["result"] for r in rows if r.get("scenario") == "scale"]
    if scale:
        s = scale[-1]
        t.append((f"(7) RSS ≤ 200 MB with {s['pools']} pools × {s['members_per_pool']} members",
                  f"{fmt(s['rss_loaded_mib'], 1)} MiB (peak {fmt(s['rss_peak_mib'], 1)})",
                  s["rss_loaded_mib"] <= 200 * 1e6 / 2**20))
        t.append(("(7) 200-member batch applied ≤ 20 ms",
                  f"p50 {fmt(s['batch200_applied_p50_ms'], 1)} ms, p99 "
                  f"{fmt(s['batch200_applied_p99_ms'], 1)} ms to SUCCEEDED "
                  f"(API answer p50 {fmt(s['batch200_ack_p50_ms'], 1)} ms)",
                  s["batch200_applied_p99_ms"] <= 20))
    sel = [r["result"] for r in rows if r.get("scenario") == "select"]
    if sel and sel[-1]:
        s = sel[-1]
        for algo in ("round_robin", "least_connections", "consistent_hash"):
            a10, a10k = s.get(f"select/{algo}/10"), s.get(f"select/{algo}/10000")
            if a10 and a10k:
                t.append((f"(7) select() flat from 10 to 10,000 members: {algo} (≤ 2× taken as flat)",
                          f"{a10} ns → {a10k} ns ({a10k / a10:.2f}×)", a10k / a10 <= 2.0))
        t.append(("(7) select() allocation-free",
                  "proved by `crates/balance/tests/no_alloc.rs` (counting allocator, 10/1,000/10,000 "
                  "members, every algorithm) — run by `cargo test`, not by this harness", True))
    writes = [r for r in rows if r.get("scenario") == "writes"]
    writes_ok = [r["result"] for r in writes if r.get("result")]
    writes_failed = [r["round"] for r in writes if r.get("failed")]
    if writes:
        acked = median([x.get("acked_per_s") for x in writes_ok])
        p99 = median([x.get("p99_ms") for x in writes_ok])
        parts = []
        if writes_ok:
            parts.append(f"{fmt(acked)} writes/s, ack p99 {fmt(p99, 2)} ms (medians of "
                         f"{len(writes_ok)} round(s))")
        if writes_failed:
            parts.append(f"the driver failed in round(s) {', '.join(map(str, writes_failed))}")
        val = "; ".join(parts)
        t.append(("(8) writes: ≥ 5,000 acknowledged durable writes/s, ack p99 ≤ 10 ms", val,
                  not writes_failed and acked is not None and acked >= 5000
                  and p99 is not None and p99 <= 10))
    w("## Targets (issue 9, and issue 18 for UDP and QUIC)")
    w("")
    if meta["quick"]:
        w("Verdicts from a smoke run say nothing: the load is too short and the machine busy.")
        w("")
    w("| Target | Measured | Met |")
    w("|---|---|---|")
    for label, val, ok in t:
        w(f"| {label} | {val} | {'met' if ok else '**not met**'} |")
    if not t:
        w("| (no target scenario ran) | | |")
    w("")

    # ---- traffic scenarios ----
    for scen in ("http1", "h2c", "h2tls", "tls", "tcp", "conn"):
        for mode in ("1t", "all"):
            mm = traffic_medians(rows, scen, mode)
            if not mm:
                continue
            h = mm.get("haproxy")
            w(f"## {SCENARIO_TITLES[scen]} — {MODE_TITLES[mode]}")
            w("")
            w("Medians over rounds; ratios against HAProxy (CPU: lower is better).")
            w("")
            if scen == "tcp":
                w("| Proxy | MB/s | × HAProxy | CPU s / GB | × HAProxy | errors |")
                w("|---|---|---|---|---|---|")
                for proxy, v in mm.items():
                    rs = [r for r in rows if r.get("scenario") == scen and r.get("mode") == mode
                          and r.get("proxy") == proxy]
                    cpu_gb = median([r["cpu_s"] / (r["detail"]["bytes"] / 1e9) for r in rs
                                     if r.get("detail", {}).get("bytes")])
                    hrs = [r for r in rows if r.get("scenario") == scen and r.get("mode") == mode
                           and r.get("proxy") == "haproxy"]
                    hcpu = median([r["cpu_s"] / (r["detail"]["bytes"] / 1e9) for r in hrs
                                   if r.get("detail", {}).get("bytes")])
                    w(f"| {proxy} | {fmt(v['bytes_per_s'] / 1e6)} | "
                      f"{fmt_ratio(ratio(v['bytes_per_s'], h and h['bytes_per_s']))} | "
                      f"{fmt(cpu_gb, 3)} | {fmt_ratio(ratio(cpu_gb, hcpu))} | {v['errors']} |")
            else:
                lat = "p50 / p99 ms" if scen not in ("h2c", "h2tls") else "mean ms"
                w(f"| Proxy | req/s | × HAProxy | {lat} | CPU s / 100k req | × HAProxy | errors |")
                w("|---|---|---|---|---|---|---|")
                for proxy, v in mm.items():
                    if scen in ("h2c", "h2tls"):
                        latv = fmt(v["mean_ms"], 2)
                    else:
                        latv = f"{fmt(v['p50_ms'], 2)} / {fmt(v['p99_ms'], 2)}"
                    w(f"| {proxy} | {fmt(v['rps'])} | {fmt_ratio(ratio(v['rps'], h and h['rps']))} | "
                      f"{latv} | {fmt(v['cpu_per_100k'], 2)} | "
                      f"{fmt_ratio(ratio(v['cpu_per_100k'], h and h['cpu_per_100k']))} | {v['errors']} |")
            w("")
            w("Raw rounds:")
            w("")
            w("| Round | Proxy | req/s | MB/s | p50 ms | p99 ms | CPU s | requests | errors | non-2xx |")
            w("|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                if r.get("scenario") == scen and r.get("mode") == mode:
                    w(f"| {r['round']} | {r['proxy']} | {fmt(r['rps'])} | {fmt(r['bytes_per_s'] / 1e6, 1)} | "
                      f"{fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} | {fmt(r['cpu_s'], 2)} | "
                      f"{r['requests']} | {r['errors']} | {r['non_2xx']} |")
            w("")
            w("Commands:")
            w("")
            w("```")
            for proxy, v in mm.items():
                w(f"{v['cmd']}    # {proxy}")
            w("```")
            w("")

    # ---- UDP ----
    if udp or udp_failed:
        w("## UDP request/response — one worker each")
        w("")
        w(f"`fulcrum-loadgen udp`: {meta.get('udp_flows', '?')} flows, each its own socket (its own "
          f"source port), send a {meta.get('udp_size', '?')}-byte datagram and wait for the one "
          f"datagram that answers it (a loss after {meta.get('udp_timeout_ms', '?')} ms), back to "
          "back. Members: the backends' nginx, stream `return` of a 15-byte body over UDP on "
          "three ports. fulcrum: a UDP listener and a ROUND_ROBIN UDP pool of the three (each "
          "flow keeps its member and its member-side socket). nginx: `stream` with `listen ... "
          "udp; proxy_pass; proxy_responses 1;` (each datagram a session that ends at the "
          "member's reply). HAProxy has no UDP proxying (its `mode tcp` and `mode http` are "
          "TCP only), so it is not in this table. A packet is one request answered (one datagram "
          "each way between client and proxy and between proxy and member); CPU per packet is "
          "the proxy's user + system time over the round divided by the packets answered.")
        w("")
        w("Medians over rounds; ratios against nginx (CPU: lower is better).")
        w("")
        w("| Proxy | packets/s | × nginx | p50 / p99 ms | CPU µs / packet | × nginx | losses |")
        w("|---|---|---|---|---|---|---|")
        n = udp.get("nginx")
        for proxy, v in udp.items():
            w(f"| {proxy} | {fmt(v['pps'])} | {fmt_ratio(ratio(v['pps'], n and n['pps']))} | "
              f"{fmt(v['p50_ms'], 3)} / {fmt(v['p99_ms'], 3)} | {fmt(v['cpu_us'], 2)} | "
              f"{fmt_ratio(ratio(v['cpu_us'], n and n['cpu_us']))} | {v['losses']} |")
        w("| haproxy | – (no UDP) | | | | | |")
        w("")
        w("Raw rounds:")
        w("")
        w("| Round | Proxy | packets/s | p50 ms | p99 ms | max ms | CPU s | packets | losses | stray replies |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r.get("scenario") != "udp":
                continue
            x = r.get("result")
            if not x:
                w(f"| {r['round']} | {r['proxy']} | driver failed | | | | | | | |")
                continue
            w(f"| {r['round']} | {r['proxy']} | {fmt(x['replies_per_s'])} | {fmt(x.get('p50_ms'), 3)} | "
              f"{fmt(x.get('p99_ms'), 3)} | {fmt(x.get('max_ms'), 3)} | {fmt(r['cpu_s'], 2)} | "
              f"{x['replies']} | {x['losses']} | {x['stray_replies']} |")
        w("")
        if udp:
            w("Commands:")
            w("")
            w("```")
            for proxy, v in udp.items():
                w(f"{v['cmd']}    # {proxy}")
            w("```")
            w("")

    if quic:
        w("## QUIC connections through a QUIC_CID pool (fulcrum only, one worker)")
        w("")
        w(f"`fulcrum-loadgen quic`: {meta.get('quic_clients', '?')} clients (quinn), each with its "
          "own endpoint (socket), back to back: handshake (TLS 1.3), one bidirectional stream "
          "asking the member's name, read to the end, connection closed. Members: three quinn "
          "servers (`fulcrum-loadgen quic-members`, one process) that issue their connection IDs "
          "in the QUIC-LB plaintext layout with 3-byte server IDs; fulcrum: a UDP listener in "
          "front of a `QUIC_CID` pool (`quic_lb.server_id_len` 3, each member's `server_id`). "
          "`direct` is the same load straight at one member, no proxy: what the client and "
          "member cost on their own. nginx and HAProxy do not balance QUIC by connection ID, so "
          "there is no comparison. CPU is the measured process's (fulcrum's, or the members' "
          "for `direct`) per connection. Latency: connect to answer.")
        w("")
        w("| Round | Path | connections/s | p50 ms | p99 ms | failures | CPU s | CPU µs / connection | members |")
        w("|---|---|---|---|---|---|---|---|---|")
        for r in quic:
            x = r.get("result")
            if not x:
                w(f"| {r['round']} | {r['proxy']} | driver failed | | | | | | |")
                continue
            per = r["cpu_s"] / x["connections"] * 1e6 if x.get("connections") else None
            w(f"| {r['round']} | {r['proxy']} | {fmt(x['connections_per_s'])} | {fmt(x.get('p50_ms'), 2)} | "
              f"{fmt(x.get('p99_ms'), 2)} | {x['failures']} | {fmt(r['cpu_s'], 2)} | {fmt(per, 1)} | "
              f"{', '.join(f'{k}: {v}' for k, v in x['members'].items())} |")
        flows = next((r.get("metrics") for r in rows if r.get("scenario") == "quic-flows"), None)
        if flows:
            w("")
            w("fulcrum's new QUIC flows by how they found their member, after the runs:")
            w("")
            w("```")
            w(flows.strip())
            w("```")
        w("")
        cmds = {r["proxy"]: r["cmd"] for r in quic if r.get("cmd")}
        if cmds:
            w("Commands:")
            w("")
            w("```")
            for k, c in cmds.items():
                w(f"{c}    # {k}")
            w("```")
            w("")

    # ---- fulcrum only ----
    if base or churn:
        w("## Config churn during HTTP/1.1 load (fulcrum only, one worker)")
        w("")
        w("Each round: a baseline run, then the same run while `fulcrum-loadgen churn` "
          "PATCHes the serving pool's members' weights (1 ↔ 2) at 500 changes/s (open loop: "
          "change i is due at i / 500 s) from 16 keep-alive API connections, pinned with the "
          "load generator; every change recompiles the pool the traffic uses. Late: changes "
          "sent more than 5 ms after they were due.")
        w("")
        w("| Round | Run | req/s | p99 ms | errors | non-2xx | API changes ok | API statuses | "
          "changes/s achieved | API p50 / p99 ms | late |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        api_by_round = {r["round"]: r.get("api") for r in rows if r.get("scenario") == "churn-api"}
        for r in rows:
            if r.get("scenario") in ("churn-baseline", "churn-churn"):
                c = api_by_round.get(r["round"]) if r["scenario"] == "churn-churn" else None
                extra = "| | | | | |"
                if c:
                    extra = (f"| {c['ok']}/{c['attempted']} | {c['statuses']} "
                             f"{'(+' + str(c['exceptions']) + ' exceptions)' if c['exceptions'] else ''} | "
                             f"{fmt(c['achieved_per_s'])} | {c['api_p50_ms']} / {c['api_p99_ms']} | "
                             f"{c.get('late', '–')} |")
                w(f"| {r['round']} | {r['scenario'][6:]} | {fmt(r['rps'])} | {fmt(r.get('p99_ms'), 2)} | "
                  f"{r['errors']} | {r['non_2xx']} {extra}")
        w("")
    if log_off or log_on:
        w("## Access log cost (fulcrum only, one worker)")
        w("")
        w("Each round: the http1 run with the listener's access log off, then on (one JSON "
          "record per request, written to a file by the log thread), the listener switched "
          "through the API in the same process.")
        w("")
        w("| Round | Access log | req/s | p99 ms | CPU s per 100k requests | errors |")
        w("|---|---|---|---|---|---|")
        for r in rows:
            if r.get("scenario") in ("http1-log-off", "http1-log-on"):
                w(f"| {r['round']} | {r['scenario'][10:]} | {fmt(r['rps'])} | "
                  f"{fmt(r.get('p99_ms'), 2)} | {fmt(r.get('cpu_per_100k'), 2)} | {r['errors']} |")
        size = next((r.get("bytes") for r in rows if r.get("scenario") == "http1-log-file"), None)
        if size is not None:
            w("")
            w(f"Access log written: {size / 1e6:.1f} MB.")
        w("")
    if writes:
        first = writes_ok[0] if writes_ok else {}
        fs = next((r.get("fs") for r in writes if r.get("fs")), "unknown")
        w(f"## Control plane: durable writes ({first.get('clients', 16)} clients, "
          f"{first.get('loadbalancers', 4)} load balancers)")
        w("")
        w("fulcrum only, its own instance: embedded store in a fresh data directory "
          f"(file system: {fs}), API rate limit raised, no traffic. Each round, "
          "`fulcrum-loadgen writes` creates the load balancers (one pool each) and one member "
          "per client through the API, then every client PATCHes its own member's weight "
          "(1 ↔ 2) back to back on its own keep-alive connection: 1 s unmeasured, then the "
          "round's duration measured. A 2xx answer is an acknowledged durable write; latency "
          "is per acknowledged write.")
        w("")
        w("| Round | acked/s | p50 ms | p99 ms | max ms | statuses | transport errors |")
        w("|---|---|---|---|---|---|---|")
        for r in writes:
            x = r.get("result")
            if not x:
                w(f"| {r['round']} | driver failed | | | | | |")
                continue
            w(f"| {r['round']} | {fmt(x['acked_per_s'])} | {fmt(x['p50_ms'], 2)} | "
              f"{fmt(x['p99_ms'], 2)} | {fmt(x['max_ms'], 2)} | "
              f"{', '.join(f'{k}: {v}' for k, v in x['statuses'].items())} | {x['errors']} |")
        if writes_ok:
            w(f"| **median** | **{fmt(median([x['acked_per_s'] for x in writes_ok]))}** | "
              f"{fmt(median([x['p50_ms'] for x in writes_ok]), 2)} | "
              f"**{fmt(median([x['p99_ms'] for x in writes_ok]), 2)}** | "
              f"{fmt(median([x['max_ms'] for x in writes_ok]), 2)} | | |")
        w("")
    if prop:
        p = prop[-1]
        w("## Propagation (fulcrum only, one worker)")
        w("")
        w(f"{p['writes']} writes. Each write is a batch `replace` of a one-member pool with another "
          "backend; the clock starts when the API answers (acknowledged) and stops when a request "
          "through fulcrum's listener (polled back to back on one keep-alive connection) is "
          "answered by the new member.")
        w("")
        w("| | p50 ms | p99 ms |")
        w("|---|---|---|")
        w(f"| Ack → answer from the new member (the figure; includes one request) | "
          f"{fmt(p['p50_ms'], 3)} | {fmt(p['p99_ms'], 3)} (max {fmt(p['max_ms'], 3)}) |")
        w(f"| Ack → that request sent | {fmt(p['sent_after_ack_p50_ms'], 3)} | "
          f"{fmt(p['sent_after_ack_p99_ms'], 3)} |")
        w(f"| One request through fulcrum, nothing changing (poll resolution) | "
          f"{fmt(p['poll_rtt_p50_ms'], 3)} | {fmt(p['poll_rtt_p99_ms'], 3)} |")
        w(f"| Write sent → work request SUCCEEDED | {fmt(p['write_to_succeeded_p50_ms'], 2)} | "
          f"{fmt(p['write_to_succeeded_p99_ms'], 2)} |")
        w("")
        w(f"Requests answered by the old member after the acknowledgement: {p['stale_responses']}; "
          f"writes whose new member was not seen within 5 s: {p['timeouts']}.")
        w("")
    if fleet:
        p = fleet[-1]
        w("## Propagation through a fleet (fulcrum only, 3 nodes on a 3-member etcd cluster)")
        w("")
        w(f"{p['writes']} writes through node 0's API, each a batch `replace` of a one-member pool "
          "with another backend. Three `fulcrum serve --store etcd://…` nodes (release build, one "
          "traffic worker each, listeners on 127.0.0.2, .3 and .4) and three etcd members, all on "
          "this machine. The clock starts when node 0's API answers and stops when every node has "
          "answered a request from the new member (polled in turn, node 0 first).")
        w("")
        w("| | p50 ms | p99 ms |")
        w("|---|---|---|")
        w(f"| Ack → every node answers from the new member (the figure) | "
          f"{fmt(p['p50_ms'], 3)} | {fmt(p['p99_ms'], 3)} (max {fmt(p['max_ms'], 3)}) |")
        w(f"| Ack → node 0 (the one written to) answers from it | "
          f"{fmt(p.get('first_host_p50_ms'), 3)} | {fmt(p.get('first_host_p99_ms'), 3)} |")
        w(f"| One request through node 0, nothing changing (poll resolution) | "
          f"{fmt(p['poll_rtt_p50_ms'], 3)} | {fmt(p['poll_rtt_p99_ms'], 3)} |")
        w(f"| Write sent → work request SUCCEEDED (every node serves it) | "
          f"{fmt(p['write_to_succeeded_p50_ms'], 2)} | {fmt(p['write_to_succeeded_p99_ms'], 2)} |")
        w("")
        w(f"Requests answered by the old member after the acknowledgement: {p['stale_responses']}; "
          f"writes not seen on every node within 5 s: {p['timeouts']}.")
        w("")
    if scale:
        s = scale[-1]
        w("## Scale (fulcrum only, its own instance, all cores)")
        w("")
        w(f"{s['pools']} pools created one by one, then {s['members_per_pool']} members each with batch "
          f"`add` calls of {s['load_batch_size']}; then {s['batch200_samples']} batches of 200 members "
          "into fresh pools of the loaded system. Members are addresses nothing listens on, with no "
          "listener (the cost measured is the control plane's and the compiled snapshot's).")
        w("")
        w("| | |")
        w("|---|---|")
        w(f"| RSS before / loaded / peak | {s['rss_before_mib']} / {s['rss_loaded_mib']} / {s['rss_peak_mib']} MiB |")
        w(f"| Pool creation, total | {s['pool_create_s']} s |")
        w(f"| Loading everything, total | {s['load_total_s']} s |")
        w(f"| {s['load_batch_size']}-member load batch, API time p50 / p99 | "
          f"{s['load_batch_p50_ms']} / {s['load_batch_p99_ms']} ms |")
        w(f"| 200-member batch, API time p50 / p99 | {s['batch200_ack_p50_ms']} / {s['batch200_ack_p99_ms']} ms |")
        w(f"| 200-member batch, to work request SUCCEEDED p50 / p99 | "
          f"{s['batch200_applied_p50_ms']} / {s['batch200_applied_p99_ms']} ms |")
        w("")
    if sel and sel[-1]:
        w("## select() micro-benchmark (criterion, `crates/balance/benches/select.rs`)")
        w("")
        w("Median time per pick, all members eligible. Allocation-free: "
          "`crates/balance/tests/no_alloc.rs`.")
        w("")
        w("| Benchmark | ns per pick |")
        w("|---|---|")
        for k, v in sel[-1].items():
            w(f"| {k} | {v} |")
        w("")

    # ---- configurations ----
    w("## Configurations")
    w("")
    w("fulcrum: `TOKIO_WORKER_THREADS=<n> fulcrum serve --config fulcrum.toml` (API rate limit "
      "raised), then through the API: one load balancer, an HTTP pool (ROUND_ROBIN, the three "
      "backends) behind an HTTP listener, a second HTTP listener (h2c) and a TERMINATED_HTTPS "
      "listener, a TCP pool behind a TCP listener, and a UDP pool (the UDP members) behind a "
      "UDP listener. No health monitors, for anyone. fulcrum "
      "keeps upstream HTTP/1.1 connections alive per member and adds X-Forwarded-For and "
      "Forwarded; HAProxy (`option forwardfor`) and nginx (`proxy_set_header X-Forwarded-For`) "
      "add X-Forwarded-For too.")
    w("")
    for title, path in (("HAProxy (last mode run)", a.haproxy_cfg),
                        ("nginx proxy (last mode run)", a.nginx_conf),
                        ("nginx backends", a.backend_conf)):
        if path and os.path.exists(path):
            w(f"{title}:")
            w("")
            w("```")
            w(open(path).read().rstrip())
            w("```")
            w("")
    with open(a.out, "w") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
