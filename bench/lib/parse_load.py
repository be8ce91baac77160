#!/usr/bin/env python3
"""Turns one wrk or h2load output into one JSON line (stdout) and a summary (stderr).

usage: parse_load.py OUTPUT_FILE SCENARIO MODE PROXY ROUND TOOL CPU_SECONDS COMMAND
"""

import json
import re
import sys


def ms(value):
    """h2load durations: '1.23ms', '456us', '2.1s'."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)]


def main():
    path, scenario, mode, proxy, rnd, tool, cpu_s, cmd = sys.argv[1:9]
    out = open(path).read()
    r = {
        "scenario": scenario,
        "mode": mode,
        "proxy": proxy,
        "round": int(rnd),
        "tool": tool,
        "cpu_s": float(cpu_s),
        "cmd": cmd,
    }
    if tool == "wrk":
        m = re.search(r"WRKJSON (\{.*\})", out)
        if not m:
            sys.exit(out[-800:])
        w = json.loads(m.group(1))
        secs = w["duration_us"] / 1e6
        r.update(
            requests=w["requests"],
            rps=w["requests"] / secs,
            bytes_per_s=w["bytes"] / secs,
            p50_ms=w["p50_us"] / 1000,
            p99_ms=w["p99_us"] / 1000,
            mean_ms=w["mean_us"] / 1000,
            errors=w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"],
            non_2xx=w["status_errors"],
            detail=w,
        )
    else:
        m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s, ([\d.]+)([KMG]?)B/s", out)
        q = re.search(
            r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
            r"(\d+) failed, (\d+) errored, (\d+) timeout",
            out,
        )
        t = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
        s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        if not (m and q):
            sys.exit(out[-800:])
        mult = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(4)]
        non_2xx = int(s.group(2)) + int(s.group(3)) + int(s.group(4)) if s else 0
        r.update(
            requests=int(q.group(4)),
            rps=float(m.group(2)),
            bytes_per_s=float(m.group(3)) * mult,
            mean_ms=ms(t.group(3)) if t else None,
            errors=int(q.group(6)) + int(q.group(7)),  # "failed" also counts non-2xx
            non_2xx=non_2xx,
        )
    r["cpu_per_100k"] = r["cpu_s"] / r["requests"] * 1e5 if r.get("requests") else None
    print(json.dumps(r))
    print(
        f"  {scenario}/{mode} {proxy} round {rnd}: {r['rps']:.0f} req/s, "
        f"{r['bytes_per_s'] / 1e6:.1f} MB/s, cpu {r['cpu_s']:.2f} s, "
        f"errors {r['errors']}, non-2xx {r['non_2xx']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
