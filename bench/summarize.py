#!/usr/bin/env python3
"""Turn the raw outputs of bench/reviews.sh (one directory) into markdown.

    summarize.py /tmp/zocalo-bench.XXXXXX > summary.md
"""

import glob
import json
import os
import re
import statistics
import sys

TARGETS = ("direct", "gateway", "nginx")
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


def backend_section(directory, backend):
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
        "| path | requests/s | vs direct | p50 ms | p99 ms | max ms | non-2xx/3xx | socket errors | zocalo CPU µs/req | nginx CPU µs/req |",
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
            f"| {t} | {mean_rps[t]:.0f} [{per_round}] | {ratio:.3f} | {ms(p50)} | "
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

    rate_rows = []
    for t in TARGETS:
        path = os.path.join(directory, f"rate-{t}.json")
        if not os.path.exists(path):
            continue
        r = load(path)
        lat = r.get("latencyPercentiles", {})
        statuses = r.get("statusCodeDistribution", {})
        non2xx = sum(v for k, v in statuses.items() if not k.startswith("2"))
        # oha cancels the requests still in flight when -z ends and lists them
        # as "aborted due to deadline": not an answer of the server.
        errors = sum(
            v for k, v in r.get("errorDistribution", {}).items() if "deadline" not in k
        )
        rate_rows.append(
            f"| {t} | {r['summary']['requestsPerSec']:.0f} | {lat.get('p50', 0) * 1000:.3f} | "
            f"{lat.get('p99', 0) * 1000:.3f} | {lat.get('p99.9', 0) * 1000:.3f} | "
            f"{r['summary']['slowest'] * 1000:.2f} | {non2xx} | {errors} | "
            f"{'met' if lat.get('p99', 1) * 1000 < P99_TARGET_MS else 'missed'} |"
        )
    if rate_rows:
        out += [
            "Fixed rate (oha, latency-corrected, 64 connections):",
            "",
            "| path | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | non-2xx | errors | p99 < 1 ms |",
            "|---|---|---|---|---|---|---|---|---|",
            *rate_rows,
            "",
        ]

    post_path = os.path.join(directory, "post.json")
    if os.path.exists(post_path):
        p = load(post_path)
        out += [
            f"POST /api/reviews through the gateway (load_reviews.py, {p['threads']} threads, "
            f"{p['count']} reviews): {p['per_second']:.0f}/s, p50 {p['p50_ms']} ms, "
            f"p90 {p['p90_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms, "
            f"non-201 {p['non_201']}.",
            "",
        ]
    return out


def main():
    directory = sys.argv[1]
    lines = ["## Run " + os.path.basename(directory.rstrip("/")), ""]
    machine = os.path.join(directory, "machine.txt")
    if os.path.exists(machine):
        lines += ["```", open(machine).read().rstrip(), "```", ""]
    for backend in ("sqlite", "postgres"):
        sub = os.path.join(directory, backend)
        if os.path.isdir(sub):
            lines += backend_section(sub, backend)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
