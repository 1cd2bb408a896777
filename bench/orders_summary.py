#!/usr/bin/env python3
"""Turn the raw outputs of bench/orders.sh (one directory) into markdown.

    orders_summary.py /tmp/zocalo-bench-orders.XXXXXX > summary.md
"""

import json
import math
import os
import sys

SETUPS = (("embedded", "embedded (SQLite + SQLite bus)"),
          ("postgres-nats", "PostgreSQL + NATS"))


def load(path):
    with open(path) as f:
        return json.load(f)


def server_orders(path):
    """server-orders.csv: status, created, finished (epoch seconds)."""
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                status, created, finished = line.strip().split(",")
                rows.append((status, float(created), float(finished) if finished else None))
    return rows


def server_view(rows, run):
    """Delays from creation to payment captured / to failure, how fast the
    saga got through the orders during and after the load, and how the
    delay grew during the run."""
    if not rows:
        return None
    load_seconds = run["duration_s"]
    end = run["load_ended_epoch"]
    start = end - load_seconds
    done = [(s, c, f) for s, c, f in rows if f is not None]
    paid = sorted(f - c for s, c, f in done if s in ("paid", "shipped", "delivered"))
    failed = sorted(f - c for s, c, f in done if s == "failed")
    last = max(f for _, _, f in done) if done else end
    during = sum(1 for _, _, f in done if f <= end)

    def median_delay(lo, hi):
        delays = sorted(f - c for _, c, f in done if lo <= c - start < hi)
        return pct(delays, 50)

    return {
        "paid": paid,
        "failed": failed,
        "unfinished": len(rows) - len(done),
        "done_during_per_s": during / load_seconds,
        "last_done_after_s": last - end,
        "done_after_per_s": (len(done) - during) / (last - end) if last > end else None,
        "first5": median_delay(0, 5),
        "last5": median_delay(load_seconds - 5, load_seconds),
    }


def pct(values, p):
    if not values:
        return None
    rank = max(1, min(len(values), math.ceil(p / 100.0 * len(values))))
    return values[rank - 1]


def ms(value):
    return "–" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def lat(summary):
    return f"{ms(summary['p50_ms'])} / {ms(summary['p99_ms'])}"


def server_lat(values):
    if not values:
        return "–"
    return f"{ms(pct(values, 50) * 1000)} / {ms(pct(values, 99) * 1000)} (n={len(values)})"


def statuses(counts):
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "–"


def backlog(path, run):
    """backlog.csv -> markdown rows: seconds from the start of the load,
    unsent outbox rows, job queue depths, process jobs done so far."""
    if not os.path.exists(path):
        return []
    start = run["load_ended_epoch"] - run["duration_s"]
    rows = []
    with open(path) as f:
        for line in f:
            epoch, unsent, metrics = line.rstrip("\n").split(",", 2)
            values = {}
            for item in metrics.split(";"):
                if " " in item:
                    name, value = item.rsplit(" ", 1)
                    values[name] = float(value)

            def get(name):
                value = values.get(name)
                return "–" if value is None else f"{value:.0f}"

            cells = [
                f"{float(epoch) - start:+.0f}",
                unsent,
                get('job_queue_depth{queue="orders.process"}'),
                get('job_queue_depth{queue="orders.shipping"}'),
                get('jobs_processed_total{queue="orders.process",outcome="ok"}'),
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def main():
    directory = sys.argv[1]
    runs = {}
    for key, label in SETUPS:
        sub = os.path.join(directory, key)
        if not os.path.exists(os.path.join(sub, "run.json")):
            continue
        settle_path = os.path.join(sub, "settle.json")
        problems_path = os.path.join(sub, "log-problems.txt")
        runs[key] = {
            "label": label,
            "run": load(os.path.join(sub, "run.json")),
            "settle": load(settle_path) if os.path.exists(settle_path) else None,
            "server": None,
            "log_problems": open(problems_path).read().strip() if os.path.exists(problems_path) else "?",
        }
    lines = ["## Run " + os.path.basename(directory.rstrip("/")), ""]
    machine = os.path.join(directory, "machine.txt")
    if os.path.exists(machine):
        lines += ["```", open(machine).read().rstrip(), "```", ""]
    if not runs:
        print("\n".join(lines + ["(no results)"]))
        return
    keys = list(runs)
    for k in keys:
        runs[k]["server"] = server_view(
            server_orders(os.path.join(directory, k, "server-orders.csv")), runs[k]["run"]
        )
    first = runs[keys[0]]["run"]
    lines += [
        f"{first['warmup_s']:.0f} s browse-only warm-up, then {first['duration_s']:.0f} s; "
        f"{first['concurrency']} client threads, {first['buyers']} buyers, "
        f"{first['order_share'] * 100:.0f} % orders; {first['books']} books. "
        "Latencies in ms, p50 / p99.",
        "",
        "| | " + " | ".join(runs[k]["label"] for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]

    def row(name, fn):
        cells = []
        for k in keys:
            try:
                cells.append(fn(runs[k]))
            except (KeyError, TypeError):
                cells.append("–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("orders accepted (202)", lambda r: f"{r['run']['orders_accepted']}")
    row("**orders accepted/s**", lambda r: f"**{r['run']['orders_per_s']}**")
    row("orders/s per second: min / median / max",
        lambda r: "{min} / {median} / {max}".format(**r["run"]["orders_per_s_by_second"]))
    row("browse requests/s", lambda r: f"{r['run']['browse_per_s']}")
    row("all requests/s", lambda r: f"{r['run']['total_per_s']}")
    row("**POST /api/orders** (202)", lambda r: f"**{lat(r['run']['latency']['order_post'])}**")
    row("browse, all", lambda r: lat(r["run"]["latency"]["browse"]))
    row("GET /api/books (list)", lambda r: lat(r["run"]["latency"]["browse_list"]))
    row("GET /api/books/{id}", lambda r: lat(r["run"]["latency"]["browse_one"]))
    row("202 → paid or later, client-polled sample (upper bound)",
        lambda r: f"{lat(r['run']['completion_sampled']['paid_or_later'])} "
                  f"(n={r['run']['completion_sampled']['paid_or_later']['count']})")
    row("202 → failed, client-polled sample (upper bound)",
        lambda r: f"{lat(r['run']['completion_sampled']['failed'])} "
                  f"(n={r['run']['completion_sampled']['failed']['count']})")
    row("**created → payment captured**, server, every paid order", lambda r: f"**{server_lat(r['server']['paid'])}**")
    row("created → failed, server, every failed order", lambda r: server_lat(r["server"]["failed"]))
    row("median created → done, orders created in the first / last 5 s",
        lambda r: f"{ms(r['server']['first5'] * 1000)} / {ms(r['server']['last5'] * 1000)}")
    row("**orders paid or failed per s during the load**, server",
        lambda r: f"**{r['server']['done_during_per_s']:.1f}**")
    row("… after the load; last one paid/failed at",
        lambda r: f"{r['server']['done_after_per_s']:.1f}/s; +{r['server']['last_done_after_s']:.1f} s")
    row("HTTP statuses, POST /api/orders", lambda r: statuses(r["run"]["statuses"]["order_post"]))
    row("HTTP statuses, browsing",
        lambda r: statuses({**{f"list {k}": v for k, v in r["run"]["statuses"].get("browse_list", {}).items()},
                            **{f"one {k}": v for k, v in r["run"]["statuses"].get("browse_one", {}).items()}}))
    row("poll resolution (gap before first seen done), p50 / p99",
        lambda r: lat(r["run"]["completion_sampled"]["poll_gap"]))
    row("zocalo CPU s (load + settle) / client CPU s (load)",
        lambda r: f"{r['run']['zocalo_cpu_ms'] / 1000:.1f} / {r['run']['client_cpu_s']}")
    row("census: settled (none pending/reserved/held), s after the load",
        lambda r: f"{r['settle']['stock_settled_after_s']}")
    row("census: every paid order delivered, s after the load",
        lambda r: f"{r['settle']['all_delivered_after_s']}")
    row("final order statuses", lambda r: statuses(r["settle"]["statuses"]))
    row("failure reasons", lambda r: statuses(r["settle"]["failure_reasons"]))
    row("copies: initial / sold / left",
        lambda r: f"{r['settle']['copies_initial']} / {r['settle']['copies_sold']} / {r['settle']['copies_final']}")
    row("books sold out", lambda r: f"{r['settle']['books_sold_out']} of {len(r['settle']['per_book'])}")
    row("**oversold books** (sold > initial or stock < 0)", lambda r: f"**{r['settle']['oversold_books']}**")
    row("books where initial − final ≠ sold", lambda r: f"{r['settle']['unbalanced_books']}")
    row("accepted orders missing from listings",
        lambda r: f"{r['settle']['accepted_but_not_listed']} of {r['settle']['orders_accepted_in_run']}")
    row("warn/error/panic lines in zocalo's log", lambda r: r["log_problems"])
    lines.append("")

    for k in keys:
        s = runs[k]["settle"]
        if not s:
            continue
        lines += [
            f"Per book, {runs[k]['label']} (popularity rank 0 = most ordered): "
            + "; ".join(
                f"{b['rank']}: {b['initial']}→{b['final']} (sold {b['sold']})" for b in s["per_book"]
            )
            + ".",
            "",
        ]
        if s["problems"]:
            lines += ["Stock problems:", ""] + [f"- {p}" for p in s["problems"]] + [""]
        probe = backlog(os.path.join(directory, k, "backlog.csv"), runs[k]["run"])
        if probe:
            lines += [
                f"Backlog, {runs[k]['label']} (every 5 s; t from the start of the measured load, "
                f"which ends at +{runs[k]['run']['duration_s']:.0f}; queue depth sampled by the "
                "worker every 5 s):",
                "",
                "| t s | outbox rows not yet relayed | orders.process queue | orders.shipping queue | process jobs done |",
                "|---|---|---|---|---|",
                *probe,
                "",
            ]
        errors = runs[k]["run"].get("sample_errors") or []
        if errors:
            lines += [f"Sample non-2xx answers ({runs[k]['label']}):", ""] + [f"- `{e}`" for e in errors[:5]] + [""]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
