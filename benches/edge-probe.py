#!/usr/bin/env python3
"""Hostile clients against a posthook binary, from outside (issue 14's probes).

    benches/edge-probe.py BINARY [--port N] [--quick]

Starts BINARY with a `hooks: []` config in front of a small keep-alive HTTP upstream (in this
process), then, one after another:

  half-open   3 000 connections that send half a request head and stop
  idle        3 000 connections that make one request, read the answer and stay open
  slowloris     200 connections that send one more header line every 5 s
  flood      12 000 connections opened at once, nothing sent

and prints, for each, the process's RSS before, with the connections open and 3 s after they
closed, the KiB per connection, and how many connections the server closed (and when). Needs
an open files limit above 12 100 in this process (it raises its soft limit to the hard one).
Loopback only. Run it on an otherwise idle machine: the RSS figures are the process's.
"""

import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import asyncio

HALF = b"POST /api/v4/posts HTTP/1.1\r\nHost: x\r\nContent-Ty"
PING = b"GET /api/v4/system/ping HTTP/1.1\r\nHost: x\r\n\r\n"


def upstream(port, ready):
    """A keep-alive upstream answering every request head with a small 200."""

    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 15\r\n\r\n{\"status\":\"OK\"}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def connect_many(port, n, payload):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(("127.0.0.1", port))
        if payload:
            s.sendall(payload)
        socks.append(s)
    return socks


def watch(socks):
    """A selector over `socks` (made non-blocking), to see which the server closes."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    return sel


def note_closed(sel, closed, start):
    """Waits up to 0.2 s; each socket the server closed meanwhile goes into `closed` with the
    seconds since `start`."""
    for key, _ in sel.select(timeout=0.2):
        s = key.fileobj
        try:
            data = s.recv(65536)
        except ConnectionError:
            data = b""
        if not data:
            closed[s] = time.monotonic() - start
            sel.unregister(s)


def closed_by_server(socks, within):
    """Which of `socks` the server closes within `within` seconds: {socket: seconds}."""
    sel = watch(socks)
    start = time.monotonic()
    closed = {}
    while time.monotonic() - start < within and len(closed) < len(socks):
        note_closed(sel, closed, start)
    sel.close()
    return closed


def close_all(socks):
    for s in socks:
        s.close()


def settle(pid, secs=3.0):
    time.sleep(secs)
    return rss_kib(pid)


def memory_probe(pid, listen, label, payload, answered, wait):
    """3 000 connections that each send `payload` (and read the answer, if `answered`), held
    for `wait` seconds: posthook's RSS before, with them, and 3 s after they closed."""
    before = rss_kib(pid)
    socks = connect_many(listen, 3000, payload)
    if answered:
        for s in socks:
            got = s.recv(4096)
            assert got.startswith(b"HTTP/1.1 200"), got[:40]
    time.sleep(wait)
    with_ = rss_kib(pid)
    close_all(socks)
    after = settle(pid)
    print(f"{label} 3000: RSS {before} -> {with_} KiB ({(with_ - before) / 3000:.1f} KiB "
          f"each); 3 s after they closed {after} KiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--port", type=int, default=18700)
    ap.add_argument("--quick", action="store_true", help="slowloris for 40 s, not 80 s")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    listen, up, metrics = args.port, args.port + 1, args.port + 2
    ready = threading.Event()
    threading.Thread(target=upstream, args=(up, ready), daemon=True).start()
    ready.wait()
    tmp = tempfile.mkdtemp(prefix="edge-probe-")
    config = os.path.join(tmp, "posthook.yaml")
    with open(config, "w") as f:
        f.write(f'listen: "127.0.0.1:{listen}"\nmetrics_listen: "127.0.0.1:{metrics}"\n'
                f'upstream: "http://127.0.0.1:{up}"\nbot_token: "probe"\nhooks: []\n')
    log = open(os.path.join(tmp, "posthook.log"), "w")
    proc = subprocess.Popen([args.binary, "-c", config], stdout=log, stderr=log)
    pid = proc.pid
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen)).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("posthook did not start; see " + log.name)
                time.sleep(0.05)
        time.sleep(1)
        print(f"binary: {args.binary}")
        start = rss_kib(pid)
        print(f"RSS at start: {start} KiB")

        memory_probe(pid, listen, "half-open ", HALF, answered=False, wait=1.5)
        memory_probe(pid, listen, "idle      ", PING, answered=True, wait=2.5)

        # slowloris: a header line every 5 s
        before = rss_kib(pid)
        socks = connect_many(listen, 200, b"GET / HTTP/1.1\r\nHost: x\r\n")
        limit = 40 if args.quick else 80
        sel = watch(socks)
        t0 = time.monotonic()
        closed = {}
        next_line, line = t0 + 5, 0
        while time.monotonic() - t0 < limit and len(closed) < len(socks):
            note_closed(sel, closed, t0)
            if time.monotonic() >= next_line:
                line += 1
                for s in socks:
                    if s not in closed:
                        try:
                            s.send(f"X-Slow-{line}: {line}\r\n".encode())
                        except OSError:
                            pass
                next_line += 5
        with_ = rss_kib(pid)
        sel.close()
        close_all(socks)
        times = sorted(closed.values())
        when = f"between {times[0]:.1f} s and {times[-1]:.1f} s" if times else "-"
        print(f"slowloris   200: {len(closed)} closed by the server within {limit} s ({when}); "
              f"RSS {before} -> {with_} KiB")
        settle(pid, 1)

        # flood
        before = rss_kib(pid)
        socks = connect_many(listen, 12000, b"")
        closed = closed_by_server(socks, 3)
        with_ = rss_kib(pid)
        close_all(socks)
        after = settle(pid)
        print(f"flood     12000: {len(closed)} closed by the server within 3 s; RSS {before} -> "
              f"{with_} KiB; 3 s after they closed {after} KiB")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
