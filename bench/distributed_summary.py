#!/usr/bin/env python3
"""Markdown tables from a bench/distributed.sh output directory.

For each number of reviews instances (1, 2, 3) and each front (our gateway,
nginx as a plain proxy): mean throughput over the rounds, p99, errors, and
CPU time per request of the front, the reviews instances and PostgreSQL.
"""

import glob
import json
import os
import re
import sys


def runs(directory):
    """{(front, instances): [run, ...]} from wrk-<front>-<n>-r<round>.json."""
    found = {}
    for path in sorted(glob.glob(os.path.join(directory, "wrk-*-r*.json"))):
        match = re.match(r"wrk-(\w+)-(\d+)-r\d+\.json", os.path.basename(path))
        with open(path) as f:
            run = json.load(f)
        found.setdefault((match.group(1), int(match.group(2))), []).append(run)
    return found


def per_request_us(runs_, key):
    requests = sum(r["requests"] for r in runs_)
    return 1000 * sum(r[key] for r in runs_) / requests if requests else 0


def row(front, n, runs_):
    rps = [r["rps"] for r in runs_]
    front_key = "gateway_cpu_ms" if front == "gateway" else "nginx_cpu_ms"
    front_us = per_request_us(runs_, front_key)
    reviews_us = per_request_us(runs_, "reviews_cpu_ms")
    pg_us = per_request_us(runs_, "postgres_cpu_ms")
    return {
        "front": front,
        "n": n,
        "rps": sum(rps) / len(rps),
        "rounds": ", ".join(f"{x:.0f}" for x in rps),
        "p99_ms": sum(r["p99_us"] for r in runs_) / len(runs_) / 1000,
        "errors": sum(
            r["non_2xx_3xx"] + r["connect_errors"] + r["read_errors"] + r["timeouts"]
            for r in runs_
        ),
        "front_us": front_us,
        "reviews_us": reviews_us,
        "pg_us": pg_us,
        "total_us": front_us + reviews_us + pg_us,
    }


def main():
    directory = sys.argv[1]
    found = runs(directory)
    rows = [row(front, n, r) for (front, n), r in sorted(found.items(), key=lambda k: (k[0][1], k[0][0]))]
    print("| instances | front | requests/s (rounds) | p99 ms | errors | front CPU µs/req | reviews CPU µs/req | PostgreSQL CPU µs/req | total CPU µs/req |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['front']} | {r['rps']:.0f} [{r['rounds']}] | {r['p99_ms']:.2f} | {r['errors']} "
            f"| {r['front_us']:.0f} | {r['reviews_us']:.0f} | {r['pg_us']:.0f} | {r['total_us']:.0f} |"
        )
    print()
    print("| instances | gateway / nginx throughput | gateway − nginx front CPU µs/req |")
    print("|---|---|---|")
    by = {(r["front"], r["n"]): r for r in rows}
    for n in sorted({r["n"] for r in rows}):
        gateway, nginx = by.get(("gateway", n)), by.get(("nginx", n))
        if gateway and nginx:
            print(
                f"| {n} | {gateway['rps'] / nginx['rps']:.3f} "
                f"| {gateway['front_us'] - nginx['front_us']:+.0f} |"
            )


if __name__ == "__main__":
    main()
