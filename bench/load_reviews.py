#!/usr/bin/env python3
"""Load reviews into a running Zócalo stack with POST /api/reviews.

Standard library only. Each worker thread keeps one keep-alive HTTP/1.1
connection (http.client) and posts reviews with realistic, varied titles and
contents of a few hundred bytes, spread over the given cameras and lenses.
Every POST's latency is recorded (client-side, from sending the request to
reading the whole response); the script prints p50/p99/max, the throughput
and the count of answers other than 201, and writes them as JSON with
--json-out.

    load_reviews.py --base http://127.0.0.1:18080 --token "$EDITOR" \
        --camera ID --camera ID --lens ID --count 10000 --threads 16
"""

import argparse
import http.client
import json
import math
import random
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

OPENINGS = [
    "After three months of daily use",
    "I took it on a two-week trip through the Andes",
    "Coming from an older body",
    "As a wedding photographer",
    "For street photography in low light",
    "I shot mostly landscapes and some astro",
    "Used for a season of football and birds",
    "My first serious piece of kit",
    "Paired with a couple of fast primes",
    "On a rainy week in Lisbon",
]
BODY = [
    "the autofocus locks quickly and rarely hunts, even on backlit subjects",
    "colours straight out of the camera are pleasant and skin tones look natural",
    "the grip is comfortable for long days but the buttons are a little small",
    "battery life is fine for a day of casual shooting, less so with video",
    "dynamic range lets me recover shadows without ugly noise",
    "the viewfinder is bright and lag-free, which matters for action",
    "weather sealing survived drizzle and dust without complaint",
    "the menus are dense and took a while to learn",
    "image stabilisation buys me two or three stops handheld",
    "high ISO files are clean up to 6400 and usable beyond",
    "sharpness is excellent in the centre and good in the corners stopped down",
    "the rear screen is hard to read in direct sunlight",
    "focus breathing is noticeable when pulling focus in video",
    "build quality feels solid without being heavy",
    "the shutter is quiet enough for ceremonies and theatre",
]
CLOSINGS = [
    "Recommended if it fits your budget.",
    "A keeper for me, with a few reservations.",
    "Good value, though not the best in its class.",
    "I would buy it again.",
    "Not perfect, but it never got in my way.",
    "Hard to fault at this price.",
]
TITLE_WORDS = [
    ("Reliable", "Sharp", "Quiet", "Rugged", "Fast", "Flawed", "Superb", "Honest",
     "Compact", "Versatile"),
    ("workhorse", "travel companion", "street tool", "all-rounder", "upgrade",
     "studio body", "low-light performer", "bargain", "daily shooter", "companion"),
    ("for weddings", "for travel", "on a budget", "for sports", "for hiking",
     "in the city", "after a year", "for beginners", "for video", "for portraits"),
]


def review_body(rng, target_field, target_id, n):
    title = " ".join(rng.choice(words) for words in TITLE_WORDS) + f" (#{n})"
    sentences = [rng.choice(OPENINGS) + ", " + rng.choice(BODY) + "."]
    for _ in range(rng.randint(2, 4)):
        sentence = rng.choice(BODY)
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
    sentences.append(rng.choice(CLOSINGS))
    return {
        "title": title,
        "content": " ".join(sentences),
        "rating": rng.choices([1, 2, 3, 4, 5], weights=[1, 2, 4, 6, 4])[0],
        target_field: target_id,
    }


class Worker(threading.local):
    conn = None


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    # Nearest rank, as wrk and oha report.
    rank = max(1, min(len(sorted_values), math.ceil(p / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="e.g. http://127.0.0.1:18080")
    parser.add_argument("--token", required=True, help="an editor's access token")
    parser.add_argument("--camera", action="append", default=[], help="camera id (repeat)")
    parser.add_argument("--lens", action="append", default=[], help="lens id (repeat)")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json-out", help="write the summary as JSON here")
    args = parser.parse_args()

    targets = [("camera_id", c) for c in args.camera] + [("lens_id", l) for l in args.lens]
    if not targets:
        parser.error("give at least one --camera or --lens")
    url = urllib.parse.urlsplit(args.base)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("only loopback targets are allowed")
    host, port = url.hostname, url.port or 80

    rng = random.Random(args.seed)
    bodies = [
        json.dumps(review_body(rng, *targets[i % len(targets)], i)).encode()
        for i in range(args.count)
    ]
    headers = {
        "authorization": f"Bearer {args.token}",
        "content-type": "application/json",
    }
    local = Worker()
    statuses = {}
    errors = []
    lock = threading.Lock()

    def post(body):
        for attempt in (1, 2):
            if local.conn is None:
                local.conn = http.client.HTTPConnection(host, port, timeout=30)
            start = time.perf_counter()
            try:
                local.conn.request("POST", "/api/reviews", body=body, headers=headers)
                response = local.conn.getresponse()
                payload = response.read()
            except (http.client.HTTPException, OSError) as error:
                # A closed keep-alive connection: reconnect once, then count it.
                local.conn.close()
                local.conn = None
                if attempt == 2:
                    with lock:
                        errors.append(repr(error))
                    return None
                continue
            elapsed = time.perf_counter() - start
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status != 201 and len(errors) < 5:
                    errors.append(f"{response.status}: {payload[:200]!r}")
            return elapsed
        return None

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        latencies = [t for t in pool.map(post, bodies, chunksize=16) if t is not None]
    wall = time.perf_counter() - started

    latencies.sort()
    created = statuses.get(201, 0)
    summary = {
        "count": args.count,
        "threads": args.threads,
        "created": created,
        "non_201": args.count - created,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(wall, 2),
        "per_second": round(args.count / wall, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        "sample_errors": errors[:5],
    }
    print(
        f"POST /api/reviews x{args.count} ({args.threads} threads): "
        f"{summary['per_second']}/s, p50 {summary['p50_ms']} ms, "
        f"p99 {summary['p99_ms']} ms, max {summary['max_ms']} ms, "
        f"non-201 {summary['non_201']}"
    )
    for error in errors[:5]:
        print("  e.g.", error, file=sys.stderr)
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(summary, out, indent=2)
    return 0 if summary["non_201"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
