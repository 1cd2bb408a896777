#!/usr/bin/env python3
"""List or delete the JetStream streams whose names start with a prefix,
speaking the NATS client protocol directly (standard library only; the
`nats` CLI is not needed).

    nats_streams.py --url nats://127.0.0.1:4222 --prefix bench123 list
    nats_streams.py --url nats://127.0.0.1:4222 --prefix bench123 delete

A bus opened with `nats://…?prefix=bench123` names its streams
`bench123_ZOCALO_JOBS`, `bench123_ZOCALO_DEAD` and `bench123_ZOCALO_EVENTS`.
"""

import argparse
import json
import socket
import sys
import urllib.parse


class Nats:
    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.sid = 0
        info = self._line()
        if not info.startswith(b"INFO "):
            raise RuntimeError(f"not a NATS server: {info[:80]!r}")
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\nPING\r\n')
        while True:
            line = self._line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def request(self, subject, payload=b""):
        """One request/reply; returns the reply's JSON."""
        self.sid += 1
        inbox = f"_INBOX.bench.{self.sid}"
        self.sock.sendall(
            f"SUB {inbox} {self.sid}\r\nUNSUB {self.sid} 1\r\n"
            f"PUB {subject} {inbox} {len(payload)}\r\n".encode() + payload + b"\r\n"
        )
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                return json.loads(self._exact(size))
            elif line.startswith(b"HMSG "):
                parts = line.split()
                header_size, total = int(parts[-2]), int(parts[-1])
                data = self._exact(total)
                headers, body = data[:header_size], data[header_size:]
                if b" 503" in headers.split(b"\r\n")[0]:
                    raise RuntimeError(f"no responders for {subject} (JetStream off?)")
                return json.loads(body) if body else {}
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())

    def stream_names(self):
        names, offset = [], 0
        while True:
            reply = self.request("$JS.API.STREAM.NAMES", json.dumps({"offset": offset}).encode())
            if "error" in reply:
                raise RuntimeError(reply["error"])
            page = reply.get("streams") or []
            names += page
            offset += len(page)
            if not page or offset >= reply.get("total", 0):
                return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("action", choices=["list", "delete"])
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("only loopback servers are allowed")
    if not args.prefix:
        parser.error("an empty prefix would match every stream")
    nats = Nats(url.hostname, url.port or 4222)
    mine = [n for n in nats.stream_names() if n.startswith(args.prefix + "_")]
    for name in mine:
        if args.action == "delete":
            reply = nats.request(f"$JS.API.STREAM.DELETE.{name}")
            ok = reply.get("success", False)
            print(f"{name}: {'deleted' if ok else reply.get('error')}")
            if not ok:
                return 1
        else:
            print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
