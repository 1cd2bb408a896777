#!/usr/bin/env python3
"""Load on one popular showtime: seat-map readers and ticket buyers at once.

Readers GET the showtime's seat map (anonymous, through the gateway, or
straight at a service with --read-base) in a loop; buyers POST purchases of
one seat each (`quantity: 1`, own Idempotency-Key) until the showtime is
sold out. For every 10th purchase a watcher polls the seat map on the query
service until the bought seat shows as sold: the time from the purchase's
201 to that is the projection lag a customer sees. Only 127.0.0.1 is
targeted; every loop stops at the deadline.

Prints one JSON object: counts, rates, latency percentiles, lag samples.
"""
import argparse
import http.client
import json
import threading
import time
import uuid
from urllib.parse import urlparse


def connect(base):
    url = urlparse(base)
    assert url.hostname in ("127.0.0.1", "localhost"), base
    return http.client.HTTPConnection(url.hostname, url.port, timeout=30)


def request(conn, method, path, body=None, headers=None):
    payload = json.dumps(body).encode() if body is not None else None
    headers = dict(headers or {})
    if payload is not None:
        headers["content-type"] = "application/json"
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, data


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    index = min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))
    return values[index]


def summary(values):
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="gateway URL")
    parser.add_argument("--read-base", help="where readers read (default: --base)")
    parser.add_argument("--query-base", required=True, help="the query service, for the lag watcher")
    parser.add_argument("--showtime", required=True)
    parser.add_argument("--tokens", required=True, help="file with one buyer token a line")
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--buyers", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20)
    args = parser.parse_args()

    tokens = [line.strip() for line in open(args.tokens) if line.strip()]
    seats_path = f"/api/cinema/showtimes/{args.showtime}/seats"
    buy_path = f"/api/cinema/showtimes/{args.showtime}/purchases"
    deadline = time.monotonic() + args.duration
    lock = threading.Lock()
    reads, read_errors = [], [0]
    buys, sold_out, buy_errors = [], [0], [0]
    lags, lag_missed = [], [0]
    watch = []
    sold_out_at = [None]
    started = time.monotonic()

    def reader():
        conn = connect(args.read_base or args.base)
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                status, _ = request(conn, "GET", seats_path)
            except Exception:
                status = 0
                conn = connect(args.read_base or args.base)
            elapsed = (time.monotonic() - t0) * 1000
            with lock:
                if status == 200:
                    reads.append(elapsed)
                else:
                    read_errors[0] += 1

    def buyer(index):
        conn = connect(args.base)
        token = tokens[index % len(tokens)]
        while time.monotonic() < deadline and sold_out_at[0] is None:
            t0 = time.monotonic()
            headers = {"authorization": f"Bearer {token}", "idempotency-key": str(uuid.uuid4())}
            try:
                status, data = request(conn, "POST", buy_path,
                                       {"quantity": 1, "card": "4242424242424242"}, headers)
            except Exception:
                status, data = 0, b""
                conn = connect(args.base)
            done = time.monotonic()
            elapsed = (done - t0) * 1000
            with lock:
                if status == 201:
                    buys.append(elapsed)
                    if len(buys) % 10 == 0:
                        seat = json.loads(data)["tickets"][0]["seat"]
                        watch.append((seat, done))
                elif status == 409:
                    sold_out[0] += 1
                    if sold_out_at[0] is None:
                        sold_out_at[0] = done
                else:
                    buy_errors[0] += 1

    def watcher():
        conn = connect(args.query_base)
        while time.monotonic() < deadline + 10:
            with lock:
                pending = list(watch)
                watch.clear()
            if not pending and (time.monotonic() >= deadline or sold_out_at[0] is not None):
                if not pending:
                    break
            for seat, bought_at in pending:
                while True:
                    status, data = request(conn, "GET", seats_path)
                    if status == 200:
                        rows = json.loads(data)["rows"]
                        row = next(r for r in rows if r["row"] == seat.rstrip("0123456789"))
                        state = next(s["state"] for s in row["seats"] if s["seat"] == seat)
                        if state == "sold":
                            lags.append((time.monotonic() - bought_at) * 1000)
                            break
                    if time.monotonic() > bought_at + 30:
                        lag_missed[0] += 1
                        break
                    time.sleep(0.005)
            time.sleep(0.01)

    threads = [threading.Thread(target=reader) for _ in range(args.readers)]
    threads += [threading.Thread(target=buyer, args=(i,)) for i in range(args.buyers)]
    lag_thread = threading.Thread(target=watcher)
    for t in threads:
        t.start()
    lag_thread.start()
    for t in threads:
        t.join()
    ended = time.monotonic()
    lag_thread.join()
    buy_window = (sold_out_at[0] or ended) - started
    print(json.dumps({
        "duration_s": round(ended - started, 2),
        "readers": args.readers,
        "buyers": args.buyers,
        "reads": summary(reads),
        "reads_per_s": round(len(reads) / (ended - started), 1),
        "read_errors": read_errors[0],
        "purchases": summary(buys),
        "purchase_window_s": round(buy_window, 2),
        "purchases_per_s": round(len(buys) / buy_window, 1) if buy_window > 0 else None,
        "sold_out_answers": sold_out[0],
        "purchase_errors": buy_errors[0],
        "seat_visible_after_purchase": summary(lags),
        "lag_not_seen_within_30s": lag_missed[0],
    }))


if __name__ == "__main__":
    main()
