"""A small threaded HTTP load generator that records every request, for fairness and chaos runs.

wrk measures raw throughput better; this one exists because we need per-request facts: which worker
answered (X-Worker-Pid), what kind of failure it was, and when it happened.
"""

import errno
import http.client
import itertools
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """One request: when it started and ended (monotonic s), its path, outcome kind and worker pid."""

    start: float
    end: float
    path: str
    kind: str          # "ok", "http_503", "refused", "reset", "timeout", "closed", "error"
    status: int
    pid: str


def classify(exc: BaseException) -> str:
    """The failure kind of a client-side exception."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    # Before the reset test: RemoteDisconnected is a ConnectionResetError subclass, though it
    # means the peer closed (a FIN) without answering, not a reset.
    if isinstance(exc, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return "closed"  # the peer closed without (a whole) answer: a dropped request
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return "refused"
    return "error"


class LoadGen:
    """Threads that send requests until told to stop, the time is up or the count is reached."""

    def __init__(self, host: str, port: int, paths=("/",), concurrency: int = 8, keepalive: bool = True,
                 timeout: float = 2.0, duration: float = 10.0, max_requests: int = 1_000_000,
                 pause_on_refused: float = 0.01):
        self.host, self.port = host, port
        self.paths = list(paths)
        self.concurrency = concurrency
        self.keepalive = keepalive
        self.timeout = timeout
        self.duration = duration
        self.max_requests = max_requests
        self.pause_on_refused = pause_on_refused
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._issued = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t0 = 0.0

    def start(self) -> "LoadGen":
        """Start the client threads; returns at once."""
        self.t0 = time.monotonic()
        for i in range(self.concurrency):
            t = threading.Thread(target=self._loop, args=(i,), daemon=True, name=f"loadgen-{i}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Ask every thread to finish its current request and return."""
        self._stop.set()

    def join(self) -> list[Record]:
        """Wait for the threads (bounded by duration + timeout); the records, sorted by start."""
        for t in self._threads:
            t.join(timeout=max(0.0, self.t0 + self.duration - time.monotonic()) + self.timeout + 5)
        self._stop.set()
        with self._lock:
            return sorted(self.records, key=lambda r: r.start)

    def run(self) -> list[Record]:
        """Start, wait, return the records."""
        return self.start().join()

    def _loop(self, index: int) -> None:
        conn = None
        paths = itertools.cycle(self.paths[index % len(self.paths):] + self.paths[:index % len(self.paths)])
        deadline = self.t0 + self.duration
        while not self._stop.is_set() and time.monotonic() < deadline:
            if next(self._issued) >= self.max_requests:
                break
            path = next(paths)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            start = time.monotonic()
            status, pid, kind = 0, "", "ok"
            try:
                headers = {} if self.keepalive else {"Connection": "close"}
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status, pid = resp.status, resp.getheader("X-Worker-Pid", "")
                kind = "ok" if 200 <= status < 400 else f"http_{status}"
                if not self.keepalive or resp.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:  # every failure is data here, never a crash of the generator
                kind = classify(exc)
                conn.close()
                conn = None
            end = time.monotonic()
            with self._lock:
                self.records.append(Record(start, end, path, kind, status, pid))
            if kind == "refused":
                # Nobody listens: spinning would only burn the CPU the server needs to come back.
                time.sleep(self.pause_on_refused)
        if conn is not None:
            conn.close()


def kinds(records) -> dict[str, int]:
    """Count of records per outcome kind."""
    return dict(Counter(r.kind for r in records))
