#!/usr/bin/env python3
"""Summarises a callgrind dump per function (inlined code folded into its function).

usage: callgrind_summary.py CALLGRIND_OUT REQUESTS [FUNCTION_SUBSTRING ...]

Prints total instructions and per request, allocator calls per request, the top functions by
self cost, the inclusive cost of each function whose name contains one of the given substrings
and, for those, their biggest callees.
"""

import re
import sys
from collections import defaultdict


def parse(path):
    names = {}
    self_cost = defaultdict(int)
    call_cost = defaultdict(lambda: defaultdict(int))
    call_count = defaultdict(lambda: defaultdict(int))
    fn = None
    pending_call = None  # (callee, count): the next cost line is that call's inclusive cost
    name_re = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def resolve(spec):
        m = name_re.match(spec)
        if not m:
            return spec
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), spec)

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                if len(parts) < 2 or fn is None:
                    continue
                cost = int(parts[1])
                if pending_call:
                    callee, n = pending_call
                    call_cost[fn][callee] += cost
                    call_count[fn][callee] += n
                    pending_call = None
                else:
                    self_cost[fn] += cost
            elif line.startswith("fn="):
                fn = resolve(line[3:])
            elif line.startswith("cfn="):
                callee = resolve(line[4:])
                pending_call = (callee, 0)
            elif line.startswith("calls="):
                n = int(line[6:].split()[0])
                callee = pending_call[0] if pending_call else "?"
                pending_call = (callee, n)
            elif line.startswith(("cfi=", "cfl=", "fl=", "fi=", "fe=", "ob=", "cob=")):
                # File and object names: not needed (folding inlined code into the function).
                spec = line.split("=", 1)[1]
                name_re.match(spec)
    return self_cost, call_cost, call_count


def main():
    path, requests = sys.argv[1], int(sys.argv[2])
    wanted = sys.argv[3:]
    self_cost, call_cost, call_count = parse(path)
    total = sum(self_cost.values())

    def inclusive(fn):
        return self_cost.get(fn, 0) + sum(v for k, v in call_cost[fn].items() if k != fn)

    pr = print
    pr(f"total Ir {total:,}; requests {requests:,}; Ir per request {total / requests:,.0f}")
    alloc = defaultdict(int)
    for callees in call_count.values():
        for k, n in callees.items():
            if k in ("malloc", "free", "realloc", "calloc", "__libc_malloc", "__libc_free",
                     "__libc_realloc", "__libc_calloc") or k.startswith("__rust_"):
                alloc[k] += n
    pr("allocator calls per request: " + ", ".join(
        f"{k} {v / requests:.1f}" for k, v in sorted(alloc.items(), key=lambda kv: -kv[1])))
    alloc_self = sum(v for k, v in self_cost.items()
                     if k in ("malloc", "free", "realloc", "calloc", "_int_malloc", "_int_free",
                              "_int_realloc", "malloc_consolidate", "unlink_chunk.constprop.0",
                              "tcache_init.part.0", "alloc_perturb", "arena_get2.part.0"))
    pr(f"allocator self Ir: {alloc_self:,} ({100 * alloc_self / total:.1f} %, "
       f"{alloc_self / requests:,.0f} per request)")
    pr("")
    pr("top self cost (inlined code folded into its function):")
    for fn, v in sorted(self_cost.items(), key=lambda kv: -kv[1])[:30]:
        pr(f"  {v:>13,} {100 * v / total:5.2f} % {v / requests:8,.0f}/req  {fn}")
    for w in wanted:
        pr("")
        for fn in sorted((f for f in self_cost if w in f), key=lambda f: -inclusive(f))[:4]:
            inc = inclusive(fn)
            pr(f"{fn}: inclusive {inc:,} ({100 * inc / total:.2f} %, {inc / requests:,.0f}/req), "
               f"self {self_cost[fn]:,} ({self_cost[fn] / requests:,.0f}/req)")
            for callee, v in sorted(call_cost[fn].items(), key=lambda kv: -kv[1])[:15]:
                n = call_count[fn][callee]
                pr(f"    {v:>13,} {100 * v / total:5.2f} % {v / requests:8,.0f}/req "
                   f"{n / requests:6.2f} calls/req  {callee}")


if __name__ == "__main__":
    main()
