#!/usr/bin/env python3
"""Book-store load for bench/orders.sh: browsing mixed with order creation,
then the settle and oversell check.

Standard library only. Two subcommands:

  run     For --duration seconds, --concurrency threads (one keep-alive
          HTTP/1.1 connection each, through the gateway) loop over a mix:
          --order-share of POST /api/orders (one or two books, quantity 1-2,
          a fresh Idempotency-Key each, card 4242 4242 4242 4242) and the
          rest browsing (GET /api/books with q/author/sort/limit variations,
          GET /api/books/{id}). Books are picked with Zipf-like weights so
          the first ones sell out first. Every --sample-every-th accepted
          order is polled by a separate thread (GET /api/orders/{id}, backing
          off from 50 ms to 500 ms) until it is paid or later, or failed; that
          gives client-side completion times. Latencies are client-side,
          from sending a request to reading the whole answer. Accepted orders
          are written to --orders-out (JSON lines), the summary to --json-out.
          With --settle-json it then does what `settle` does, while the
          poller follows the last sampled orders (which it does for at most
          --settle-max seconds after the load, 60 without --settle-json).

  settle  Lists every buyer's orders (GET /api/orders, all pages) until none
          is pending or reserved and none still holds stock (bounded by
          --max-wait; looked at every 2 s), then until every paid order is
          delivered (same bound); reads each book's final stock (GET /api/books/{id}) and
          checks, per book: initial - final == copies in orders that reached
          paid/shipped/delivered, final >= 0, sold <= initial. Also checks
          that every accepted order is listed. Summary to --json-out; exit
          status 1 if stock does not add up.

    orders_load.py run --base http://127.0.0.1:18080 --tokens tokens.txt \\
        --books books.json --duration 30 --concurrency 32 --json-out run.json \\
        --orders-out orders.jsonl
    orders_load.py settle --base ... --tokens tokens.txt --books books.json \\
        --orders-in orders.jsonl --json-out settle.json
(or `run ... --settle-json settle.json --settle-max 180` for both at once).
"""

import argparse
import collections
import http.client
import json
import math
import os
import random
import re
import sys
import threading
import time
import urllib.parse
import uuid

CARD = "4242 4242 4242 4242"
PROVIDERS = ["dhl", "fedex", "envia", "servientrega"]
ADDRESSES = [
    "Corrientes 1234, Buenos Aires",
    "Calle 85 # 11-53, Bogotá",
    "Avenida Paulista 1578, São Paulo",
    "Insurgentes Sur 1605, Ciudad de México",
    "Jirón de la Unión 500, Lima",
]
DONE = ("paid", "shipped", "delivered")
SETTLING = ("pending", "reserved")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    # Nearest rank, as wrk and oha report.
    rank = max(1, min(len(sorted_values), math.ceil(p / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def latency_summary(values):
    """Seconds in, milliseconds out."""
    values = sorted(values)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        "count": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(values[-1] if values else None),
    }


def loopback(base):
    url = urllib.parse.urlsplit(base)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("only loopback targets are allowed")
    return url.hostname, url.port or 80


class Client:
    """One keep-alive connection; reconnects once on a dropped connection."""

    def __init__(self, host, port, timeout=30):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """-> (status, payload bytes, seconds) or (None, error text, seconds)."""
        headers = headers or {}
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            start = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                payload = response.read()
            except (http.client.HTTPException, OSError) as error:
                self.conn.close()
                self.conn = None
                # A POST is not repeated: it may have been received.
                if attempt == 2 or method == "POST":
                    return None, repr(error), time.perf_counter() - start
                continue
            if response.getheader("connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return response.status, payload, time.perf_counter() - start
        return None, "unreachable", 0.0


def read_tokens(path):
    with open(path) as f:
        tokens = [line.strip() for line in f if line.strip()]
    if not tokens:
        sys.exit(f"no tokens in {path}")
    return tokens


def read_books(path):
    with open(path) as f:
        books = json.load(f)
    if not books:
        sys.exit(f"no books in {path}")
    return books


# --- run -------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = collections.defaultdict(list)  # kind -> [seconds]
        self.statuses = collections.defaultdict(collections.Counter)  # kind -> status -> n
        self.samples = []  # a few non-2xx answers, for the report
        self.accepted_per_second = collections.Counter()

    def record(self, kind, status, payload, seconds):
        with self.lock:
            self.statuses[kind][str(status) if status is not None else "error"] += 1
            if status is not None:
                self.latency[kind].append(seconds)
            if (status is None or status >= 300) and len(self.samples) < 20:
                text = payload if isinstance(payload, str) else payload[:300].decode("utf-8", "replace")
                self.samples.append(f"{kind} {status}: {text}")


class Poller(threading.Thread):
    """Follows sampled orders until they are paid or later, or failed."""

    def __init__(self, host, port, stop_at):
        super().__init__(daemon=True)
        self.client = Client(host, port)
        self.lock = threading.Lock()
        self.watched = {}  # id -> [token, accepted_at, next_poll, interval, last_pending_at]
        self.completed = []  # seconds from 202 to first seen paid-or-later
        self.failed = []  # seconds from 202 to first seen failed
        self.gaps = []  # poll resolution: first-seen minus last-seen-pending
        self.statuses = collections.Counter()
        self.unresolved = 0
        self.accepting = True
        self.stop_at = stop_at  # perf_counter deadline for polling at all
        self.polls = 0
        self.max_interval = 0.5

    def watch(self, order_id, token, accepted_at):
        with self.lock:
            self.watched[order_id] = [token, accepted_at, accepted_at + 0.05, 0.05, accepted_at]

    def run(self):
        while True:
            now = time.perf_counter()
            with self.lock:
                if not self.watched and not self.accepting:
                    return
                due = [(k, v) for k, v in self.watched.items() if v[2] <= now]
            if now > self.stop_at:
                with self.lock:
                    self.unresolved = len(self.watched)
                return
            if not due:
                time.sleep(0.01)
                continue
            due.sort(key=lambda kv: kv[1][2])
            for order_id, entry in due:
                token = entry[0]
                status, payload, _ = self.client.request(
                    "GET", f"/api/orders/{order_id}", headers={"authorization": f"Bearer {token}"}
                )
                self.polls += 1
                seen = time.perf_counter()
                if status != 200:
                    self.statuses[f"http {status}"] += 1
                    entry[2] = seen + 0.5
                    continue
                order_status = json.loads(payload)["status"]
                if order_status in DONE or order_status in ("failed", "cancelled"):
                    elapsed = seen - entry[1]
                    (self.completed if order_status in DONE else self.failed).append(elapsed)
                    self.gaps.append(seen - entry[4])
                    self.statuses[order_status] += 1
                    with self.lock:
                        del self.watched[order_id]
                else:
                    entry[4] = seen
                    entry[3] = min(self.max_interval, entry[3] * 1.5)
                    entry[2] = seen + entry[3]


def run(args):
    host, port = loopback(args.base)
    tokens = read_tokens(args.tokens)
    books = read_books(args.books)
    ids = [b["id"] for b in books]
    # Zipf-like popularity: book k is picked with weight 1 / (k + 1).
    weights = [1.0 / (k + 1) for k in range(len(ids))]
    words = sorted({w.lower() for b in books for w in re.findall(r"[A-Za-zÀ-ÿ]{4,}", b["title"])})
    authors = sorted({b["author"].split()[-1] for b in books})
    stats = Stats()
    orders_out = open(args.orders_out, "w") if args.orders_out else None
    orders_lock = threading.Lock()
    started = time.perf_counter()
    warm_until = started + args.warmup
    deadline = warm_until + args.duration
    poller = Poller(host, port, deadline + (args.settle_max if args.settle_json else 60))
    poller.start()
    accepted_count = [0]

    def browse(client, rng, record):
        r = rng.random()
        if r < 0.45:
            book = ids[rng.choices(range(len(ids)), weights)[0]]
            status, payload, secs = client.request("GET", f"/api/books/{book}")
            kind = "browse_one"
        else:
            params = {}
            choice = rng.random()
            if choice < 0.4:
                params["q"] = rng.choice(words)
            elif choice < 0.55:
                params["author"] = rng.choice(authors)
            elif choice < 0.65:
                params["max_price"] = rng.choice(["10.00", "15.00", "25.00"])
            params["sort"] = rng.choice(["newest", "price_asc", "price_desc"])
            if rng.random() < 0.3:
                params["limit"] = rng.choice([5, 10, 50])
            status, payload, secs = client.request("GET", "/api/books?" + urllib.parse.urlencode(params))
            kind = "browse_list"
        if record:
            stats.record(kind, status, payload, secs)

    def order(client, rng, token, buyer):
        lines = 2 if rng.random() < 0.15 else 1
        picked = []
        while len(picked) < lines:
            book = ids[rng.choices(range(len(ids)), weights)[0]]
            if book not in picked:
                picked.append(book)
        items = [{"book_id": b, "quantity": rng.randint(1, 2)} for b in picked]
        key = str(uuid.uuid4())
        body = json.dumps({
            "items": items,
            "shipping_address": rng.choice(ADDRESSES),
            "provider": rng.choice(PROVIDERS),
            "card": CARD,
        }).encode()
        headers = {
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "idempotency-key": key,
        }
        status, payload, secs = client.request("POST", "/api/orders", body=body, headers=headers)
        done_at = time.perf_counter()
        stats.record("order_post", status, payload, secs)
        if status == 202:
            order_id = json.loads(payload)["id"]
            with stats.lock:
                stats.accepted_per_second[int(done_at - warm_until)] += 1
                accepted_count[0] += 1
                n = accepted_count[0]
            if orders_out:
                record = {"id": order_id, "buyer": buyer, "key": key, "items": items,
                          "accepted_at": round(done_at - warm_until, 4)}
                with orders_lock:
                    orders_out.write(json.dumps(record) + "\n")
            if args.sample_every and n % args.sample_every == 0:
                poller.watch(order_id, token, done_at)

    def worker(index):
        rng = random.Random(args.seed * 1000 + index)
        client = Client(host, port)
        buyer = index % len(tokens)
        token = tokens[buyer]
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            if now < warm_until:
                browse(client, rng, record=False)
            elif rng.random() < args.order_share:
                order(client, rng, token, buyer)
            else:
                browse(client, rng, record=True)

    cpu0 = os.times()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    measured = time.perf_counter() - warm_until
    load_ended_epoch = time.time()
    cpu1 = os.times()
    poller.accepting = False
    if orders_out:
        orders_out.close()
    # The settle check runs while the poller follows the last sampled
    # orders, so that neither delays the other's clock.
    settle_rc = 0
    if args.settle_json:
        settle_args = argparse.Namespace(
            base=args.base, tokens=args.tokens, books=args.books, orders_in=args.orders_out,
            max_wait=args.settle_max, since=load_ended_epoch, json_out=args.settle_json,
        )
        settle_rc = settle(settle_args)
    poller.join()

    def count(kind, pred):
        return sum(n for s, n in stats.statuses[kind].items() if pred(s))

    per_second = [stats.accepted_per_second.get(s, 0) for s in range(int(args.duration))]
    browse_total = count("browse_list", lambda s: True) + count("browse_one", lambda s: True)
    browse_lat = stats.latency["browse_list"] + stats.latency["browse_one"]
    summary = {
        "duration_s": round(measured, 2),
        "load_ended_epoch": round(load_ended_epoch, 3),
        "warmup_s": args.warmup,
        "concurrency": args.concurrency,
        "order_share": args.order_share,
        "buyers": len(tokens),
        "books": len(ids),
        "orders_accepted": count("order_post", lambda s: s == "202"),
        "orders_per_s": round(count("order_post", lambda s: s == "202") / measured, 1),
        "orders_per_s_by_second": {
            "min": min(per_second) if per_second else None,
            "median": sorted(per_second)[len(per_second) // 2] if per_second else None,
            "max": max(per_second) if per_second else None,
            "first5": per_second[:5],
            "last5": per_second[-5:],
        },
        "browse_requests": browse_total,
        "browse_per_s": round(browse_total / measured, 1),
        "total_per_s": round((browse_total + sum(stats.statuses["order_post"].values())) / measured, 1),
        "statuses": {k: dict(sorted(v.items())) for k, v in sorted(stats.statuses.items())},
        "latency": {
            "order_post": latency_summary(stats.latency["order_post"]),
            "browse": latency_summary(browse_lat),
            "browse_list": latency_summary(stats.latency["browse_list"]),
            "browse_one": latency_summary(stats.latency["browse_one"]),
        },
        "completion_sampled": {
            "sample_every": args.sample_every,
            "polls": poller.polls,
            "paid_or_later": latency_summary(poller.completed),
            "failed": latency_summary(poller.failed),
            "poll_gap": latency_summary(poller.gaps),
            "statuses": dict(poller.statuses),
            "unresolved": poller.unresolved,
        },
        "client_cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1),
        "sample_errors": stats.samples[:10],
    }
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(summary, out, indent=2)
    lat = summary["latency"]
    comp = summary["completion_sampled"]["paid_or_later"]
    print(
        f"{summary['orders_accepted']} orders accepted ({summary['orders_per_s']}/s), "
        f"{browse_total} browses ({summary['browse_per_s']}/s) in {measured:.1f} s; "
        f"POST p50 {lat['order_post']['p50_ms']} ms p99 {lat['order_post']['p99_ms']} ms; "
        f"browse p50 {lat['browse']['p50_ms']} ms p99 {lat['browse']['p99_ms']} ms; "
        f"202→paid (sampled {comp['count']}) p50 {comp['p50_ms']} ms p99 {comp['p99_ms']} ms; "
        f"statuses {json.dumps(summary['statuses'])}"
    )
    for sample in stats.samples[:5]:
        print("  e.g.", sample, file=sys.stderr)
    return settle_rc


# --- settle ----------------------------------------------------------------


def list_all_orders(client, tokens):
    orders = []
    for buyer, token in enumerate(tokens):
        cursor = None
        while True:
            path = "/api/orders?limit=100" + (f"&cursor={cursor}" if cursor else "")
            status, payload, _ = client.request("GET", path, headers={"authorization": f"Bearer {token}"})
            if status != 200:
                raise RuntimeError(f"GET {path} as buyer {buyer}: {status} {payload[:200]!r}")
            page = json.loads(payload)
            for o in page["items"]:
                o["_buyer"] = buyer
            orders.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
    return orders


def reason_kind(reason):
    if not reason:
        return "(none)"
    if reason.startswith("not enough stock"):
        return "insufficient stock"
    return UUID_RE.sub("<id>", reason)


def settle(args):
    host, port = loopback(args.base)
    tokens = read_tokens(args.tokens)
    books = read_books(args.books)
    client = Client(host, port)
    started = time.perf_counter()
    deadline = started + args.max_wait
    # Times are reported from the end of the load (--since, epoch seconds).
    since = args.since or time.time()

    def census(orders):
        return (
            collections.Counter(o["status"] for o in orders),
            collections.Counter(o["reservation"] for o in orders),
        )

    history = []
    settled_after = delivered_after = None
    while True:
        orders = list_all_orders(client, tokens)
        statuses, reservations = census(orders)
        elapsed = round(time.time() - since, 1)
        history.append({"t": elapsed, "statuses": dict(statuses), "reservations": dict(reservations)})
        stock_settled = not any(statuses[s] for s in SETTLING) and not reservations["held"]
        if stock_settled and settled_after is None:
            settled_after = elapsed
        if stock_settled and not statuses["paid"] and not statuses["shipped"]:
            delivered_after = elapsed
            break
        if time.perf_counter() > deadline:
            break
        time.sleep(2.0)

    # Final stock; GET /api/books/{id} shows copies available now (held
    # reservations already taken out).
    final = {}
    for book in books:
        status, payload, _ = client.request("GET", f"/api/books/{book['id']}")
        if status != 200:
            raise RuntimeError(f"GET /api/books/{book['id']}: {status} {payload[:200]!r}")
        final[book["id"]] = json.loads(payload)["stock"]

    sold = collections.Counter()
    held = collections.Counter()
    for o in orders:
        for line in o["items"]:
            if o["status"] in DONE:
                sold[line["book_id"]] += line["quantity"]
            elif o["reservation"] == "held":
                held[line["book_id"]] += line["quantity"]
    per_book = []
    problems = []
    for k, book in enumerate(books):
        initial, now = book["stock"], final[book["id"]]
        row = {
            "rank": k,
            "title": book["title"],
            "initial": initial,
            "final": now,
            "sold": sold[book["id"]],
            "still_held": held[book["id"]],
            "balanced": initial - now == sold[book["id"]] + held[book["id"]],
        }
        per_book.append(row)
        if now < 0:
            problems.append(f"{book['title']}: final stock {now} < 0")
        if sold[book["id"]] > initial:
            problems.append(f"{book['title']}: sold {sold[book['id']]} > initial {initial} (oversold)")
        if not row["balanced"]:
            problems.append(
                f"{book['title']}: initial {initial} - final {now} = {initial - now}, "
                f"but sold {sold[book['id']]} + held {held[book['id']]}"
            )

    accepted = []
    if args.orders_in:
        with open(args.orders_in) as f:
            accepted = [json.loads(line) for line in f if line.strip()]
    listed = {o["id"] for o in orders}
    missing = [a["id"] for a in accepted if a["id"] not in listed]
    # An accepted order must carry what was asked for.
    asked = {a["id"]: sorted((i["book_id"], i["quantity"]) for i in a["items"]) for a in accepted}
    altered = [
        o["id"] for o in orders
        if o["id"] in asked and sorted((l["book_id"], l["quantity"]) for l in o["items"]) != asked[o["id"]]
    ]
    failed = [o for o in orders if o["status"] == "failed"]
    summary = {
        "waited_s": round(time.perf_counter() - started, 1),
        "times_from": "end of load" if args.since else "start of settle",
        "stock_settled_after_s": settled_after,
        "all_delivered_after_s": delivered_after,
        "orders_listed": len(orders),
        "orders_accepted_in_run": len(accepted),
        "accepted_but_not_listed": len(missing),
        "items_differ_from_request": len(altered),
        "statuses": dict(statuses),
        "reservations": dict(reservations),
        "failure_reasons": dict(collections.Counter(reason_kind(o.get("failure_reason")) for o in failed)),
        "failed_still_holding": sum(1 for o in failed if o["reservation"] == "held"),
        "copies_initial": sum(b["stock"] for b in books),
        "copies_sold": sum(sold.values()),
        "copies_final": sum(final.values()),
        "books_sold_out": sum(1 for b in books if final[b["id"]] == 0),
        "oversold_books": sum(1 for r in per_book if r["sold"] > r["initial"] or r["final"] < 0),
        "unbalanced_books": sum(1 for r in per_book if not r["balanced"]),
        "stock_ok": not problems,
        "problems": problems,
        "per_book": per_book,
        "history": history,
    }
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(summary, out, indent=2)
    print(
        f"settled after {settled_after} s (all delivered after {delivered_after} s); "
        f"{len(orders)} orders {json.dumps(dict(statuses))}; "
        f"copies initial {summary['copies_initial']} sold {summary['copies_sold']} "
        f"final {summary['copies_final']}; {summary['books_sold_out']} books sold out; "
        f"oversold books {summary['oversold_books']}, unbalanced {summary['unbalanced_books']}; "
        f"failures {json.dumps(summary['failure_reasons'])}; "
        f"accepted but not listed {len(missing)}"
    )
    for problem in problems:
        print("  PROBLEM:", problem, file=sys.stderr)
    return 0 if summary["stock_ok"] and not missing and not altered else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base", required=True, help="e.g. http://127.0.0.1:18080")
    common.add_argument("--tokens", required=True, help="buyers' access tokens, one a line")
    common.add_argument("--books", required=True, help="JSON list of {id, title, author, stock}")
    common.add_argument("--json-out")
    r = sub.add_parser("run", parents=[common])
    r.add_argument("--duration", type=float, default=30)
    r.add_argument("--warmup", type=float, default=3, help="browse-only seconds, not recorded")
    r.add_argument("--concurrency", type=int, default=32)
    r.add_argument("--order-share", type=float, default=0.2)
    r.add_argument("--sample-every", type=int, default=10, help="poll every n-th accepted order")
    r.add_argument("--settle-json", help="then settle and check (as `settle`), summary here")
    r.add_argument("--settle-max", type=float, default=120, help="bound of the settle wait, seconds")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--orders-out")
    s = sub.add_parser("settle", parents=[common])
    s.add_argument("--orders-in")
    s.add_argument("--max-wait", type=float, default=120)
    s.add_argument("--since", type=float, help="epoch seconds the load ended; times are from there")
    args = parser.parse_args()
    return run(args) if args.command == "run" else settle(args)


if __name__ == "__main__":
    sys.exit(main())
