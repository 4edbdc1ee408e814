"""How much the shape of the queue moves the wrk mixed keep-alive profile's p99, without any server stack.

gunicorn sync closes every connection after one answer, so all requests wait in one accept queue
and whichever worker is free takes the next; a keep-alive connection waits in its own worker's
queue. This experiment isolates that difference: two processes serve the same 32 keep-alive
connections from wrk (the bench's mixed script: every 8th request is `/work`), with 10 ms of CPU
for `/work` and nothing else to do for the rest.

- `split`: each process serves its own 16 connections (the queues of keep-alive workers).
- `pooled`: both take the next ready connection from one shared epoll set (EPOLLONESHOT, so each
  request goes to one process): one queue, like sync's accept queue.

    python -m loadtest.queue_shape --runs 2        # about 40 s; prints p50/p90/p99 per mode and run
    python -m loadtest.queue_shape --work-ms 12 --fast-us 80   # the CPU pycluster's requests take

`--work-ms` and `--fast-us` set the CPU a `/work` and any other request take (the app's `/work?ms=10`
costs a worker 11–13 ms of CPU in all, and `/` about 80 µs).

Requests are parsed with httptools. This is a measurement fixture, not a server: GET only, no
request bodies, and a connection's requests may be parsed in either process (wrk sends each
request whole, in one segment, after the previous answer).
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
import time

import httptools

from loadtest import wrk

CONNECTIONS = 32
SETTLE_S = 0.05  # accept until no new connection came for this long (wrk opens all of them at once)


def answer() -> bytes:
    """This process's answer to every request: its pid is the body, so a client sees who served it."""
    body = f"{os.getpid()}\n".encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def burn(seconds: float) -> None:
    """Spin until this process has used `seconds` of CPU."""
    if seconds <= 0:
        return
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Exchange:
    """One connection's parser in one process: the targets of the requests it has completed."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.paths: list[bytes] = []
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.paths.append(self.url)
        self.url = b""


def serve(conns: list[socket.socket], epoll: select.epoll, pooled: bool, cost: tuple[float, float]) -> None:
    """One process: answer requests on the connections `epoll` reports, until wrk has closed them all.

    `cost`: the CPU seconds of a `/work` and of any other request. Pooled, only one process learns
    of a connection's end from the shared set; the other finds it when it looks over its connections
    after a second without events.
    """
    work_s, fast_s = cost
    reply = answer()
    by_fd = {c.fileno(): c for c in conns}
    exchanges = {fd: Exchange() for fd in by_fd}
    open_fds = set(by_fd)
    while open_fds:
        events = epoll.poll(1.0, 1)
        if not events:
            open_fds = {fd for fd in open_fds if _alive(by_fd[fd])}
        for fd, _events in events:
            conn, exchange = by_fd[fd], exchanges[fd]
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                open_fds.discard(fd)
                if not pooled:
                    epoll.unregister(fd)
                continue  # pooled: left disarmed
            if data:
                try:
                    exchange.parser.feed_data(data)
                except httptools.HttpParserError:
                    exchanges[fd] = Exchange()  # a request split across the two processes: drop it
                for path in exchange.paths:
                    burn(work_s if path.startswith(b"/work") else fast_s)
                    conn.sendall(reply)
                exchange.paths.clear()
            if pooled:
                epoll.modify(fd, select.EPOLLIN | select.EPOLLONESHOT)


def _alive(conn: socket.socket) -> bool:
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def accept_all(listener: socket.socket) -> list[socket.socket]:
    """The connections wrk opens at its start (its first, probing one closes at once: it is left out)."""
    conns = [listener.accept()[0]]
    listener.settimeout(SETTLE_S)
    while len(conns) < CONNECTIONS + 1:
        try:
            conns.append(listener.accept()[0])
        except TimeoutError:
            break
    for conn in conns:
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    live = [c for c in conns if _alive(c)]
    for conn in conns:
        if conn not in live:
            conn.close()
    return live


def server(mode: str, listener: socket.socket, cost: tuple[float, float] = (0.010, 0.0)) -> None:
    """Accept wrk's connections, then serve them from two processes, split or pooled."""
    conns = accept_all(listener)
    pooled = mode == "pooled"
    shared = select.epoll()
    if pooled:
        for conn in conns:
            shared.register(conn.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
    children = []
    for index in range(2):
        pid = os.fork()
        if pid == 0:
            if pooled:
                serve(conns, shared, True, cost)
            else:
                own = select.epoll()
                mine = conns[index::2]
                for conn in mine:
                    own.register(conn.fileno(), select.EPOLLIN)
                serve(mine, own, False, cost)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


def measure(mode: str, seconds: float, cost: tuple[float, float] = (0.010, 0.0)) -> dict:
    """One wrk run of the mixed script against a fresh server in `mode`."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)  # its own group, so one kill ends it and both children
        try:
            server(mode, listener, cost)
        finally:
            os._exit(0)
    listener.close()
    try:
        return wrk.run(f"http://127.0.0.1:{port}/", seconds, CONNECTIONS, script=wrk.MIXED_KEEPALIVE_SCRIPT)
    finally:
        deadline = time.monotonic() + 5  # wrk has closed its connections: the server ends by itself
        while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.05)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # reaped above


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.queue_shape", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs per mode, alternating (default 2)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run (default 8)")
    parser.add_argument("--work-ms", type=float, default=10.0, help="CPU per /work request, ms (default 10)")
    parser.add_argument("--fast-us", type=float, default=0.0, help="CPU per other request, µs (default 0)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 10 or not 1 <= args.duration <= 60:
        parser.error("--runs takes 1 to 10, --duration 1 to 60 seconds")
    if not 0 <= args.work_ms <= 1000 or not 0 <= args.fast_us <= 100_000:
        parser.error("--work-ms takes 0 to 1000, --fast-us 0 to 100000")
    cost = (args.work_ms / 1000, args.fast_us / 1e6)
    if not wrk.available():
        print("wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    for run in range(1, args.runs + 1):
        for mode in ("split", "pooled"):
            r = measure(mode, args.duration, cost)
            print(f"{mode:<7} run {run}: {r['rps']:,.0f} req/s  p50 {r['p50_ms']} ms  p90 {r.get('p90_ms')} ms  "
                  f"p99 {r['p99_ms']} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
