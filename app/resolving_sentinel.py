"""redis-py's Sentinel, with every host name looked up under a time limit, once a second at most.

redis-py looks a Sentinel's name up on each new connection, with no limit but the resolver's own.
Where Docker's DNS needs seconds to say that a name is gone (a Swarm node whose Sentinel was lost,
on a host without an upstream resolver: 10 s), every request that reaches for that Sentinel would
wait that long, and a worker's requests all reach for it at once. Here a lookup gets LOOKUP_S;
an unanswered or failed one counts as a connection error (the next Sentinel is asked), the answer
is kept CACHE_S, and a name has at most one lookup in flight.
"""

import ipaddress
import socket
import threading
import time

import redis
from redis.sentinel import Sentinel

CACHE_S = 1.0
LOOKUP_S = 0.25


class NameCache:
    """Host name -> address, looked up in the background under a time limit and remembered briefly."""

    def __init__(self, lookup=socket.getaddrinfo, clock=time.monotonic, limit=LOOKUP_S, keep=CACHE_S):
        self._lookup = lookup
        self._clock = clock
        self._limit = limit
        self._keep = keep
        self._answers: dict[str, tuple[float, str | None, str]] = {}   # host -> (until, address, error)
        self._pending: dict[str, tuple[float, threading.Event]] = {}  # host -> (started, done)
        self._lock = threading.Lock()

    def resolve(self, host: str) -> str:
        """An address of host (host itself when it is one); redis ConnectionError when there is none in time."""
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        now = self._clock()
        with self._lock:
            answer = self._answers.get(host)
            if answer is None or answer[0] <= now:
                started, done = self._pending.get(host) or self._start(host, now)
            else:
                started, done = now, None
        if done is not None:
            # A lookup already late does not make another caller wait: it fails at once.
            if not done.wait(max(0.0, started + self._limit - now)):
                raise redis.exceptions.ConnectionError(f"looking up {host!r} took over {self._limit} s")
            with self._lock:
                answer = self._answers[host]
        if answer[1] is None:
            raise redis.exceptions.ConnectionError(f"cannot resolve {host!r}: {answer[2]}")
        return answer[1]

    def _start(self, host: str, now: float) -> tuple[float, threading.Event]:
        """Begin a background lookup of host (the lock is held)."""
        done = threading.Event()
        self._pending[host] = (now, done)
        threading.Thread(target=self._run, args=(host, done), daemon=True, name=f"lookup-{host}").start()
        return now, done

    def _run(self, host: str, done: threading.Event) -> None:
        try:
            address, error = self._lookup(host, None, 0, socket.SOCK_STREAM)[0][4][0], ""
        except (OSError, UnicodeError, IndexError) as exc:
            address, error = None, str(exc) or type(exc).__name__
        with self._lock:
            self._answers[host] = (self._clock() + self._keep, address, error)
            self._pending.pop(host, None)
        done.set()


NAMES = NameCache()


class LimitedLookupConnection(redis.Connection):
    """A redis.Connection that connects to NAMES' address for its host (see the module doc)."""

    names = NAMES

    def _connect(self):
        name = self.host
        address = self.names.resolve(name)
        if address == name:
            return super()._connect()
        self.host = address
        try:
            return super()._connect()
        finally:
            self.host = name


class ResolvingSentinel(Sentinel):
    """Sentinel whose Sentinel connections, and the primary's address, go through NAMES."""

    def __init__(self, sentinels, sentinel_kwargs=None, **connection_kwargs):
        super().__init__(sentinels, sentinel_kwargs=sentinel_kwargs, **connection_kwargs)
        self.sentinels = [
            redis.Redis(connection_pool=redis.ConnectionPool(
                connection_class=LimitedLookupConnection, host=host, port=port, **self.sentinel_kwargs))
            for host, port in sentinels
        ]

    def discover_master(self, service_name):
        """The primary's address (a name, if the Sentinels answer names, is looked up) and port."""
        host, port = super().discover_master(service_name)
        return NAMES.resolve(host), port
