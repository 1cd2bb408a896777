#!/usr/bin/env python3
"""Summarise the callgrind dumps of bench/callgrind.sh.

    callgrind_summary.py DIR REQUESTS

Each dump covers REQUESTS requests of one path (its description names the
path: gateway, direct, gateway2, direct2); the "idle" dump covers a stretch
without requests, whose rate of background instructions (pollers, timers)
is subtracted from every other dump for the seconds it took
(DIR/seconds-NAME.txt). Prints instructions per request per dump, the
gateway's own cost (gateway minus direct), and the functions (self cost)
that make up that difference, grouped into families as well.
"""

import os

import collections
import glob
import re
import subprocess
import sys

# Families of functions, matched on the symbol, first match wins.
FAMILIES = [
    ("tracing / OpenTelemetry", r"tracing|opentelemetry|sharded_slab"),
    ("metrics", r"metrics"),
    ("allocator", r"mi_|malloc|free|realloc|alloc::alloc|__rust_alloc|__rust_dealloc"),
    ("memcpy/memmove/memset", r"memcpy|memmove|memset|memcmp|bcmp"),
    ("header maps", r"HeaderMap|header::map|HeaderName|HeaderValue"),
    ("hyper", r"hyper"),
    ("tokio", r"tokio"),
    ("axum/tower", r"axum|tower"),
    ("sqlite", r"sqlite"),
    ("hashing", r"hash|Hash|sip"),
]


def dumps(directory):
    """(description, path) of every dump that has a description."""
    found = []
    for path in sorted(glob.glob(f"{directory}/callgrind.out.*")):
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
        match = re.search(r"^desc: Trigger: (?:Client Request: |dump )(\S+)", head, re.M)
        if match:
            found.append((match.group(1), path))
    return found


def functions(path):
    """Self instruction count per function, and the total. Frames still on
    the stack when the dump was taken (thread starts, the runtime's loop)
    come out with their inclusive cost; they are left out."""
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--inclusive=no", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    total = 0
    costs = collections.Counter()
    for line in out.splitlines():
        match = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?\S*?\s*(.+)$", line)
        if not match:
            continue
        value = int(match.group(1).replace(",", ""))
        name = match.group(2).strip()
        if name.startswith("PROGRAM TOTALS"):
            total = value
        elif ":" in name or "[" in name:
            # "file:function [object]": keep the function.
            name = re.sub(r"\s*\[[^\]]*\]$", "", name)
            name = name.split(":", 1)[1] if re.match(r"^[^ ]*\.\w+:|^\?\?\?:", name) else name
            costs[name] += value
    for name in [n for n, v in costs.items() if total and v > 0.2 * total]:
        del costs[name]
    return total, costs


def seconds(directory, desc):
    path = os.path.join(directory, f"seconds-{desc}.txt")
    return float(open(path).read()) if os.path.exists(path) else 0.0


def without_background(results, directory):
    """Subtract the idle dump's per-second cost from every other dump."""
    if "idle" not in results:
        return results
    idle_total, idle_costs = results.pop("idle")
    idle_secs = seconds(directory, "idle") or 1.0
    cleaned = {}
    for desc, (total, costs) in results.items():
        if desc.startswith("floor"):
            # Another process (bench/bare-proxy), without zocalo's pollers.
            cleaned[desc] = (total, costs)
            continue
        scale = seconds(directory, desc) / idle_secs
        adjusted = collections.Counter(costs)
        for name, value in idle_costs.items():
            adjusted[name] -= value * scale
        cleaned[desc] = (total - idle_total * scale, adjusted)
    return cleaned


def family(name):
    for label, pattern in FAMILIES:
        if re.search(pattern, name):
            return label
    return "other"


def main():
    directory, requests = sys.argv[1], int(sys.argv[2])
    results = {}
    for desc, path in dumps(directory):
        results[desc] = functions(path)
    if "idle" in results:
        idle_rate = results["idle"][0] / (seconds(directory, "idle") or 1.0)
        print(f"background (idle) work: {idle_rate:,.0f} instructions/s, subtracted\n")
    results = without_background(results, directory)
    print(f"callgrind, {requests} requests per dump; instructions per request:\n")
    print("| dump | instructions/request |")
    print("|---|---|")
    for desc, (total, _) in results.items():
        what = " (bench/bare-proxy alone: the floor)" if desc == "floor" else ""
        print(f"| {desc}{what} | {total / requests:,.0f} |")

    pairs = [(g, d) for g, d in (("gateway", "direct"), ("gateway2", "direct2")) if g in results and d in results]
    if not pairs:
        return
    gateway = collections.Counter()
    direct = collections.Counter()
    gateway_total = direct_total = 0
    for g, d in pairs:
        gateway.update(results[g][1])
        direct.update(results[d][1])
        gateway_total += results[g][0]
        direct_total += results[d][0]
    n = requests * len(pairs)
    print(
        f"\ngateway path {gateway_total / n:,.0f}, direct {direct_total / n:,.0f}: "
        f"the gateway's own cost is **{(gateway_total - direct_total) / n:,.0f} instructions per request**"
        f" (ratio {gateway_total / direct_total:.2f})\n"
    )
    diff = {name: (gateway[name] - direct[name]) / n for name in set(gateway) | set(direct)}
    families = collections.Counter()
    for name, value in diff.items():
        families[family(name)] += value
    print("| family | extra instructions/request | share |")
    print("|---|---|---|")
    extra = (gateway_total - direct_total) / n
    for label, value in families.most_common():
        print(f"| {label} | {value:,.0f} | {value / extra:.1%} |")
    print("\nTop functions of the difference (self cost):\n")
    print("| function | extra instructions/request |")
    print("|---|---|")
    for name, value in sorted(diff.items(), key=lambda kv: -kv[1])[:40]:
        short = name if len(name) < 140 else name[:137] + "..."
        print(f"| `{short.replace('|', '/')}` | {value:,.0f} |")


if __name__ == "__main__":
    main()
