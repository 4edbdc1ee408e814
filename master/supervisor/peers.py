"""The aggregate view's poller: asks every replica for its /dashboard.json, off the master's loop.

One helper thread does the blocking parts: resolving the peers' names (getaddrinfo blocks,
for seconds when DNS is away) and fetching from each replica with a hard deadline on the
whole exchange, at most PARALLEL at a time and MAX_PEERS in all. The loop only reads the
last rendered /cluster.json under a lock, so a slow, dead or hostile replica can make the
view stale but can never make the master wait. The thread polls only while someone looks
(LINGER seconds after the last /cluster.json): an unwatched cluster pays nothing.

Each replica appears once per address its name resolves to (Docker's DNS gives one A record
per container of a service), and this master finds itself among them by its instance token.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import httptools

from ..core.net import format_bind
from .replicas import BadAnswer, Replicas

log = logging.getLogger("master.dashboard")

INTERVAL = 1.0
TIMEOUT = 0.8           # seconds for one whole exchange with one replica
PARALLEL = 8
MAX_PEERS = 32
MAX_BODY = 4 * 1024 * 1024
LINGER = 30.0
Peers = tuple[tuple[str, int], ...]


class FetchError(Exception):
    """A replica that did not answer in time, or not with a 200 and a whole body; the message says which."""


class _Answer:
    """httptools callbacks: the body, and whether the message is complete."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.complete = False

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete = True


def fetch(host: str, port: int, path: str, timeout: float = TIMEOUT) -> bytes:
    """GET `path` from host:port within `timeout` seconds in all; the body of a 200."""
    deadline = time.monotonic() + timeout
    answer = _Answer()
    parser = httptools.HttpResponseParser(answer)
    received = 0
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {format_bind(host, port)}\r\n"
                         "Connection: close\r\n\r\n".encode("latin-1"))
            while not answer.complete:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FetchError(f"no whole answer within {timeout:.1f} s")
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    break
                received += len(data)
                if received > MAX_BODY:
                    raise FetchError(f"answer larger than {MAX_BODY} bytes")
                parser.feed_data(data)
    except socket.timeout:
        raise FetchError(f"no whole answer within {timeout:.1f} s") from None
    except httptools.HttpParserError:
        raise FetchError("not an HTTP answer") from None
    except OSError as exc:
        raise FetchError(exc.strerror or str(exc)) from None
    if not answer.complete:
        raise FetchError("connection closed before the whole answer")
    if parser.get_status_code() != 200:
        raise FetchError(f"HTTP {parser.get_status_code()}")
    return bytes(answer.body)


def resolve(peers: Peers, getaddrinfo: Callable[..., Any] = socket.getaddrinfo) -> tuple[list[tuple[str, int]], list[str]]:
    """Every address the peers' names resolve to (deduplicated, in order), and the names that did not."""
    found: dict[tuple[str, int], None] = {}
    errors = []
    for host, port in peers:
        try:
            infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            errors.append(f"{format_bind(host, port)}: cannot resolve ({getattr(exc, 'strerror', None) or exc})")
            continue
        for _family, _kind, _proto, _name, address in infos:
            found.setdefault((address[0], address[1]), None)
    return list(found)[:MAX_PEERS], errors


class PeerPoller:
    """Keeps /cluster.json fresh from a helper thread while someone is looking at it."""

    def __init__(self, peers: Peers, instance: str, *, interval: float = INTERVAL, timeout: float = TIMEOUT,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.peers = peers
        self.label = ",".join(format_bind(h, p) for h, p in peers)
        self.interval, self.timeout = interval, timeout
        self.clock, self.wall = clock, wall
        self.replicas = Replicas(instance)
        self._lock = threading.Lock()
        self._body = self._render([])
        self._viewed = float("-inf")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def handle(self) -> tuple[int, str, bytes]:
        """GET /cluster.json, on the loop: the latest view, and a wake-up if nobody was looking."""
        now = self.clock()
        was_idle = now - self._viewed > LINGER
        self._viewed = now
        if was_idle:
            self._wake.set()
        with self._lock:
            return 200, "application/json", self._body

    def start(self) -> None:
        """Start the helper thread (construct before, start after: nothing runs at import)."""
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="dashboard-peer")
        self._thread = threading.Thread(target=self._run, name="dashboard-peers", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling; waits at most about one exchange."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1.0)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.clock() - self._viewed > LINGER:
                self._wake.wait()
                self._wake.clear()
                continue
            started = self.clock()
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a bug here must not end the view, nor the master
                log.exception("dashboard peers: polling failed")
            self._stop.wait(max(0.0, self.interval - (self.clock() - started)))

    def poll_once(self) -> None:
        """Resolve, fetch every replica (in parallel, each within the timeout), render the view."""
        addresses, errors = resolve(self.peers)
        if self._pool is None:  # poll_once() without start(), as the tests call it
            self._pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="dashboard-peer")
        pool = self._pool
        futures = {(host, port): pool.submit(fetch, host, port,
                                             f"/dashboard.json?since={self.replicas.since(format_bind(host, port))}",
                                             self.timeout)
                   for host, port in addresses}
        now = self.wall()
        for (host, port), future in futures.items():
            address = format_bind(host, port)
            try:
                self.replicas.merge(address, json.loads(future.result()), now)
            except FetchError as exc:
                self.replicas.failed(address, str(exc), now)
            except (BadAnswer, ValueError, RecursionError) as exc:
                self.replicas.failed(address, f"unreadable answer: {str(exc)[:120]}", now)
        self.replicas.forget_unlisted(now)
        body = self._render(errors)
        with self._lock:
            self._body = body

    def _render(self, errors: list[str]) -> bytes:
        return json.dumps(self.replicas.view(self.label, errors, self.wall()), separators=(",", ":")).encode()
