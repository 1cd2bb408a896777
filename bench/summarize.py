#!/usr/bin/env python3
"""Turn the raw outputs of bench/reviews.sh (one directory) into markdown.

    summarize.py /tmp/zocalo-bench.XXXXXX > summary.md
    summarize.py --hey rate-gateway.csv      (one line about a hey run)

Fixed-rate runs are read from oha's JSON (rate-PATH.json) or hey's CSV
(rate-PATH.csv, one line per request).
"""

import collections
import csv
import glob
import json
import math
import os
import re
import statistics
import sys

TARGETS = ("direct", "gateway", "nginx", "floor")
LABELS = {
    "direct": "direct",
    "gateway": "gateway",
    "nginx": "nginx",
    "floor": "bare hyper proxy",
}
CACHE_LABELS = {
    "direct": "direct",
    "gateway": "gateway, response cache on",
    "nginx": "nginx, proxy_cache on",
}
GATEWAY_RATIO_TARGET = 0.85
P99_TARGET_MS = 1.0


def load(path):
    with open(path) as f:
        return json.load(f)


def ms(us):
    return f"{us / 1000:.2f}"


def wrk_runs(directory, target):
    def round_of(path):
        return int(re.search(r"-r(\d+)\.json$", path).group(1))

    paths = sorted(glob.glob(os.path.join(directory, f"wrk-{target}-r*.json")), key=round_of)
    return [load(p) for p in paths]


def percentile(sorted_values, fraction):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def hey_summary(path):
    """oha's JSON fields that the tables use, from hey's per-request CSV
    (response-time in seconds, status-code, offset in seconds from the
    start)."""
    latencies, statuses, last = [], collections.Counter(), 0.0
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                latencies.append(float(row["response-time"]))
                statuses[row["status-code"]] += 1
                last = max(last, float(row["offset"]) + float(row["response-time"]))
            except (KeyError, ValueError):
                continue
    latencies.sort()
    return {
        "tool": "hey",
        "summary": {
            "requestsPerSec": len(latencies) / last if last else 0.0,
            "slowest": latencies[-1] if latencies else 0.0,
        },
        "latencyPercentiles": {
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "p99.9": percentile(latencies, 0.999),
        },
        "statusCodeDistribution": dict(statuses),
        "errorDistribution": {},
        "count": len(latencies),
    }


def rate_result(directory, target):
    json_path = os.path.join(directory, f"rate-{target}.json")
    csv_path = os.path.join(directory, f"rate-{target}.csv")
    if os.path.exists(json_path):
        result = load(json_path)
        result["tool"] = "oha"
        return result
    if os.path.exists(csv_path):
        return hey_summary(csv_path)
    return None


def backend_section(directory, backend, labels=None):
    labels = labels or LABELS
    out = []
    runs = {t: wrk_runs(directory, t) for t in TARGETS}
    if not runs["direct"]:
        return [f"### {backend}", "", "(no wrk results)", ""]
    rounds = len(runs["direct"])
    mean_rps = {t: statistics.mean(r["rps"] for r in runs[t]) for t in TARGETS if runs[t]}
    page = ""
    page_file = os.path.join(directory, "page-bytes.txt")
    if os.path.exists(page_file):
        page = f", response body {open(page_file).read().strip()} bytes"

    out += [f"### {backend}", ""]
    out += [
        f"wrk, 64 connections, GET /api/content (20 reviews{page}); "
        f"{rounds} rounds, mean shown, per-round in brackets.",
        "",
        "| path | requests/s | vs direct | p50 ms | p99 ms | max ms | non-2xx/3xx | socket errors | zocalo CPU µs/req | proxy CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in TARGETS:
        rs = runs[t]
        if not rs:
            continue
        per_round = ", ".join(f"{r['rps']:.0f}" for r in rs)
        ratio = mean_rps[t] / mean_rps["direct"]
        p50 = statistics.mean(r["p50_us"] for r in rs)
        p99 = statistics.mean(r["p99_us"] for r in rs)
        p99s = ", ".join(ms(r["p99_us"]) for r in rs)
        worst = max(r["max_us"] for r in rs)
        non2xx = sum(r["non_2xx_3xx"] for r in rs)
        sock = sum(r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"] for r in rs)
        total = sum(r["requests"] for r in rs)
        zcpu = sum(r["zocalo_cpu_ms"] for r in rs) * 1000 / total
        ncpu = sum(r["nginx_cpu_ms"] for r in rs) * 1000 / total
        out.append(
            f"| {labels.get(t, t)} | {mean_rps[t]:.0f} [{per_round}] | {ratio:.3f} | {ms(p50)} | "
            f"{ms(p99)} [{p99s}] | {ms(worst)} | {non2xx} | {sock} | {zcpu:.0f} | "
            f"{ncpu:.0f} |"
        )
    out.append("")
    if "gateway" in mean_rps and "nginx" in mean_rps:
        g = mean_rps["gateway"] / mean_rps["direct"]
        n = mean_rps["nginx"] / mean_rps["direct"]
        out.append(
            f"gateway/direct = **{g:.3f}** (target ≥ {GATEWAY_RATIO_TARGET}: "
            f"{'met' if g >= GATEWAY_RATIO_TARGET else 'missed'}); nginx/direct = **{n:.3f}**; "
            f"gateway {'≥' if g >= n else '<'} nginx ratio "
            f"({'met' if g >= n else 'missed'})."
        )
        out.append("")
    if "floor" in mean_rps:
        out.append(
            f"bare hyper proxy/direct = **{mean_rps['floor'] / mean_rps['direct']:.3f}** "
            "(the floor for a proxy built on hyper on this machine)."
        )
        out.append("")

    rate_rows = []
    tools = set()
    for t in TARGETS:
        r = rate_result(directory, t)
        if r is None:
            continue
        tools.add(r["tool"])
        lat = r.get("latencyPercentiles", {})
        statuses = r.get("statusCodeDistribution", {})
        non2xx = sum(v for k, v in statuses.items() if not k.startswith("2"))
        # oha cancels the requests still in flight when -z ends and lists them
        # as "aborted due to deadline": not an answer of the server.
        errors = sum(
            v for k, v in r.get("errorDistribution", {}).items() if "deadline" not in k
        )
        rate_rows.append(
            f"| {labels.get(t, t)} | {r['summary']['requestsPerSec']:.0f} | {lat.get('p50', 0) * 1000:.3f} | "
            f"{lat.get('p99', 0) * 1000:.3f} | {lat.get('p99.9', 0) * 1000:.3f} | "
            f"{r['summary']['slowest'] * 1000:.2f} | {non2xx} | {errors} | "
            f"{'met' if lat.get('p99', 1) * 1000 < P99_TARGET_MS else 'missed'} |"
        )
    if rate_rows:
        how = (
            "oha, latency-corrected"
            if tools == {"oha"}
            else "hey, 64 workers at rate/64 each, latency from each actual send"
        )
        out += [
            f"Fixed rate ({how}, 64 connections):",
            "",
            "| path | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | non-2xx | errors | p99 < 1 ms |",
            "|---|---|---|---|---|---|---|---|---|",
            *rate_rows,
            "",
        ]

    out += post_line(directory)
    return out


def post_line(directory):
    post_path = os.path.join(directory, "post.json")
    if not os.path.exists(post_path):
        return []
    p = load(post_path)
    return [
        f"POST /api/reviews through the gateway (load_reviews.py, {p['threads']} threads, "
        f"{p['count']} reviews): {p['per_second']:.0f}/s, p50 {p['p50_ms']} ms, "
        f"p90 {p['p90_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms, "
        f"non-201 {p['non_201']}.",
        "",
    ]


def main():
    if sys.argv[1] == "--hey":
        r = hey_summary(sys.argv[2])
        lat = r["latencyPercentiles"]
        print(
            f"{r['summary']['requestsPerSec']:.0f} req/s, p50 {lat['p50'] * 1e6:.0f} µs, "
            f"p99 {lat['p99'] * 1e6:.0f} µs, statuses {r['statusCodeDistribution']}"
        )
        return
    directory = sys.argv[1]
    lines = ["## Run " + os.path.basename(directory.rstrip("/")), ""]
    machine = os.path.join(directory, "machine.txt")
    if os.path.exists(machine):
        lines += ["```", open(machine).read().rstrip(), "```", ""]
    for backend in ("sqlite", "postgres"):
        sub = os.path.join(directory, backend)
        if os.path.isdir(sub) and glob.glob(os.path.join(sub, "wrk-*.json")):
            lines += backend_section(sub, f"{backend}, proxy path (response caches off)")
        elif os.path.exists(os.path.join(sub, "post.json")):
            lines += [f"### {backend}", ""] + post_line(sub)
        cached = sub + "-cache"
        if os.path.isdir(cached):
            lines += backend_section(
                cached, f"{backend}, caches on (gateway response cache vs nginx proxy_cache)",
                CACHE_LABELS,
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
