"""fulcrum's /metrics, read the way a Prometheus server reads it.

Starts a real fulcrum (sdk/harness.py) with real backends, makes known API calls and
sends known requests through a load balancer, then scrapes /metrics and parses it with
prometheus_client's OpenMetrics parser (which refuses malformed pages), and checks what
the numbers say: histograms cumulative with +Inf == _count, API request counters moved by
exactly the calls made, work requests timed, build_info and process metrics present.
"""

import collections
import json
import math
import sys
import time
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from harness import TOKEN, Backend, Fulcrum, Steps, check, free_port, native, spread, wait_port, wait_until

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TRAFFIC = 40

steps = Steps("/metrics against a Prometheus parser")


class Ctx:
    pass


def call(c, method, path, body=None, token=TOKEN):
    """One API call; returns (status, parsed body or None, headers)."""
    status, parsed, hdrs = native(c.fulcrum.api_url, method, path, body, token)
    return status, parsed, dict(hdrs)


def change(c, method, path, body):
    """A change through the native API, waited on until its work request is final."""
    status, created, headers = call(c, method, path, body)
    check(200 <= status < 300, f"{method} {path}: {status} {created}")
    wr = headers["x-work-request-id"]
    status, done, _ = call(c, "GET", f"/v1/work-requests/{wr}/wait?timeout_ms=10000")
    check(status == 200 and done["status"] == "SUCCEEDED", f"work request {wr}: {done}")
    c.changes += 1
    return created


def scrape(c):
    """Scrapes /metrics; returns {family name: family} as the parser read them."""
    with urllib.request.urlopen(c.fulcrum.api_url + "/metrics", timeout=10) as r:
        check(r.headers["content-type"] == CONTENT_TYPE, r.headers["content-type"])
        text = r.read().decode()
    check(text.endswith("# EOF\n"), "the page ends with # EOF")
    check(text.count("# EOF") == 1, "a single # EOF")
    # The parser raises on anything malformed: names, ordering, +Inf != _count, a
    # line after # EOF, metadata after samples, a family twice.
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    dupes = [n for n, k in collections.Counter(names).items() if k > 1]
    check(not dupes, f"families encoded once each: {dupes}")
    return {f.name: f for f in families}


def series(family, suffix=""):
    """{frozenset(labels): value} of the samples named family.name + suffix."""
    return {
        frozenset(s.labels.items()): s.value
        for s in family.samples
        if s.name == family.name + suffix
    }


def api_requests(page):
    return series(page["fulcrum_api_requests"], "_total")


def check_histograms(page):
    """Every histogram: buckets cumulative (non-decreasing in le), +Inf == _count, _sum
    consistent. Returns {family: total _count}."""
    totals = {}
    for fam in page.values():
        if fam.type != "histogram":
            continue
        by_series = collections.defaultdict(dict)
        for s in fam.samples:
            key = frozenset((k, v) for k, v in s.labels.items() if k != "le")
            if s.name == fam.name + "_bucket":
                by_series[key][float(s.labels["le"])] = s.value
            elif s.name == fam.name + "_count":
                by_series[key]["count"] = s.value
            elif s.name == fam.name + "_sum":
                by_series[key]["sum"] = s.value
        total = 0
        for key, values in by_series.items():
            buckets = sorted((le, v) for le, v in values.items() if isinstance(le, float))
            check(buckets and math.isinf(buckets[-1][0]), f"{fam.name}{dict(key)}: +Inf bucket")
            counts = [v for _, v in buckets]
            check(all(a <= b for a, b in zip(counts, counts[1:])),
                  f"{fam.name}{dict(key)}: buckets not cumulative: {buckets}")
            check(buckets[-1][1] == values["count"],
                  f"{fam.name}{dict(key)}: +Inf {buckets[-1][1]} != _count {values['count']}")
            check(values["sum"] >= 0 and (values["count"] > 0 or values["sum"] == 0),
                  f"{fam.name}{dict(key)}: _sum {values['sum']} with _count {values['count']}")
            total += values["count"]
        totals[fam.name] = total
    return totals


@steps.step
def build_a_load_balancer(c):
    lb = change(c, "POST", "/v1/loadbalancers", {"name": "metrics"})
    pool = change(c, "POST", f"/v1/loadbalancers/{lb['id']}/pools", {"name": "p", "protocol": "HTTP"})
    for b in c.backends:
        change(c, "POST", f"/v1/pools/{pool['id']}/members", {"address": "127.0.0.1", "port": b.port})
    c.port = free_port()
    change(c, "POST", f"/v1/loadbalancers/{lb['id']}/listeners",
           {"protocol": "HTTP", "port": c.port, "default_pool_id": pool["id"]})
    c.lb = lb["id"]
    wait_port(c.port)


@steps.step
def page_parses_and_histograms_hold(c):
    page = scrape(c)
    check_histograms(page)
    for name in ("fulcrum_api_requests", "fulcrum_api_request_duration_seconds",
                 "fulcrum_work_request_duration_seconds"):
        check(name in page, f"{name} is served")


@steps.step
def traffic_is_counted_by_the_data_plane(c):
    before = check_histograms(scrape(c))
    counts = spread(f"http://127.0.0.1:{c.port}/", TRAFFIC)
    check(sum(n for k, n in counts.items() if not k.startswith("status:")) == TRAFFIC, counts)
    after = check_histograms(scrape(c))
    # The data plane's families share the page: one of its latency histograms counts
    # each request sent exactly once.
    moved = {name: after[name] - before.get(name, 0) for name in after
             if not name.startswith(("fulcrum_api_", "fulcrum_work_request_"))}
    check(TRAFFIC in moved.values(), f"a data-plane histogram moved by {TRAFFIC}: {moved}")


@steps.step
def api_counters_move_by_the_calls_made(c):
    page = scrape(c)
    before = api_requests(page)
    before_latency = series(page["fulcrum_api_request_duration_seconds"], "_count")
    made = collections.Counter()

    def expect(front_door, operation, method, status, n):
        made[frozenset({"front_door": front_door, "operation": operation,
                        "method": method, "status": str(status)}.items())] += n

    for _ in range(7):
        status, _, _ = call(c, "GET", "/v1/loadbalancers")
        check(status == 200, status)
    expect("native", "/v1/loadbalancers", "GET", 200, 7)
    for _ in range(3):
        status, _, _ = call(c, "GET", "/v1/loadbalancers", token=None)
        check(status == 401, status)
    expect("native", "/v1/loadbalancers", "GET", 401, 3)
    for _ in range(4):
        status, _, _ = call(c, "GET", f"/v1/loadbalancers/{c.lb}")
        check(status == 200, status)
    expect("native", "/v1/loadbalancers/{id}", "GET", 200, 4)
    for _ in range(2):
        status, _, _ = call(c, "GET", "/v1/loadbalancers/no-such-id")
        check(status == 404, status)
    expect("native", "/v1/loadbalancers/{id}", "GET", 404, 2)
    # A dialect: OCI refuses unsigned requests.
    for _ in range(5):
        status, _, _ = call(c, "GET", "/20170115/loadBalancers?compartmentId=x", token=None)
        check(status == 401, status)
    expect("oci", "/20170115/loadBalancers", "GET", 401, 5)

    page = scrape(c)
    after = api_requests(page)
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    moved = {k: v for k, v in moved.items() if v}
    check(moved == dict(made),
          f"API counters moved by exactly the calls made:\n moved {sorted(map(sorted, moved))}"
          f" {sorted(moved.values())}\n made  {sorted(map(sorted, made))} {sorted(made.values())}")
    latency = series(page["fulcrum_api_request_duration_seconds"], "_count")
    key = frozenset({"front_door": "native", "operation": "/v1/loadbalancers", "method": "GET"}.items())
    check(latency[key] - before_latency.get(key, 0) == 10, f"latency counts 10 calls: {latency[key]}")


@steps.step
def work_requests_are_timed(c):
    def succeeded():
        fam = scrape(c)["fulcrum_work_request_duration_seconds"]
        counts = series(fam, "_count")
        return counts.get(frozenset({"status": "SUCCEEDED"}.items()), 0) == c.changes

    # A final status is recorded (and timed) at most 20 ms after it is reached.
    wait_until(succeeded, timeout=5, what=f"{c.changes} SUCCEEDED work requests timed")
    fam = scrape(c)["fulcrum_work_request_duration_seconds"]
    total = series(fam, "_sum")[frozenset({"status": "SUCCEEDED"}.items())]
    check(0 < total < 10 * c.changes, f"work request seconds: {total}")


@steps.step
def build_info_and_process_metrics(c):
    page = scrape(c)
    info = page["fulcrum_build_info"]
    check(info.type == "gauge", info.type)
    check(len(info.samples) == 1 and info.samples[0].value == 1, info.samples)
    check(info.samples[0].labels.get("version"), info.samples)

    def value(name, suffix=""):
        fam = page[name]
        check(len(fam.samples) == 1, fam.samples)
        return fam.samples[0].value, fam

    cpu, fam = value("process_cpu_seconds", "_total")
    check(fam.type == "counter" and cpu > 0, (fam.type, cpu))
    rss, _ = value("process_resident_memory_bytes")
    check(rss > 1 << 20, f"resident memory {rss}")
    fds, _ = value("process_open_fds")
    max_fds, _ = value("process_max_fds")
    check(3 <= fds <= max_fds, (fds, max_fds))
    start, _ = value("process_start_time_seconds")
    check(time.time() - 600 < start <= time.time(), f"start time {start}")


def main():
    c = Ctx()
    c.changes = 0
    c.backends = [Backend(n) for n in ("a", "b")]
    c.fulcrum = Fulcrum()
    ok = False
    try:
        ok = steps.run(c)
    finally:
        if not ok:
            c.fulcrum.dump_log()
        c.fulcrum.stop()
        for b in c.backends:
            b.stop()
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
