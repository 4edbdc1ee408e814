"""redis-py's Sentinel, answering the primary's address with its name already resolved, once a second.

The Sentinels name the primary by its Docker name. While a lost primary's name is still their answer
(the seconds before a failover), every request would look that name up again, several times with
retries; Docker's DNS forwards each lookup of a name it no longer knows upstream, and under load the
flood delays the Sentinels' own lookups until they stall (TILT mode) and do not fail over. One
lookup per name per second per process, failures included, keeps the app's share negligible.
"""

import socket
import threading
import time

import redis
from redis.sentinel import Sentinel

CACHE_S = 1.0


class NameCache:
    """Resolve host names to one IPv4 or IPv6 address, remembering answers and failures for CACHE_S."""

    def __init__(self, clock=time.monotonic, lookup=socket.getaddrinfo):
        self._clock = clock
        self._lookup = lookup
        self._answers: dict[str, tuple[float, str | None, str]] = {}
        self._lock = threading.Lock()

    def resolve(self, host: str) -> str:
        """The address of host; redis ConnectionError when it does not resolve."""
        now = self._clock()
        with self._lock:
            cached = self._answers.get(host)
        if cached is None or cached[0] <= now:
            try:
                address, error = self._lookup(host, None, 0, socket.SOCK_STREAM)[0][4][0], ""
            except (OSError, UnicodeError, IndexError) as exc:
                address, error = None, str(exc)
            cached = (now + CACHE_S, address, error)
            with self._lock:
                self._answers[host] = cached
        if cached[1] is None:
            raise redis.exceptions.ConnectionError(f"cannot resolve the Redis primary {host!r}: {cached[2]}")
        return cached[1]


class ResolvingSentinel(Sentinel):
    """Sentinel whose discover_master returns (address, port), the address looked up through a NameCache."""

    def __init__(self, *args, names: NameCache | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.names = names or NameCache()

    def discover_master(self, service_name):
        """The primary's address (not its name) and port."""
        host, port = super().discover_master(service_name)
        return self.names.resolve(host), port
