"""The Redis client of one worker process: created on first use, never inherited across fork.

The client is either a plain one for REDIS_URL, or one that follows the primary through Redis
Sentinel (REDIS_SENTINELS); app/redis_settings.py says which, and checks the settings at start-up.
"""

import os
import threading
import time

import redis
from flask import current_app
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from . import redis_settings
from .acknowledged import AcknowledgedRedis
from .resolving_sentinel import ResolvingSentinel

# Errors that mean "Redis is not reachable right now" (BusyLoadingError, raised while Redis
# replays its AOF after a restart, is a ConnectionError, and so are MasterNotFoundError, raised
# while no Sentinel knows a primary, and NotReplicated); the views answer 503 for these.
UNAVAILABLE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

_WARN_EVERY_S = 5.0


def _command_retry():
    """Retry only ConnectionError (refused, reset), never a timeout: within the 1 s budget."""
    # A timed-out command may have run already; with a single server, retrying an INCR could
    # count twice (with Sentinels the increment runs once whatever happens: app/acknowledged.py).
    # Refused connects fail at once, so three tries with 50/100 ms backoff stay far below the
    # 1 s budget even when a stale pooled connection makes redis-py reconnect inside its retry.
    return Retry(
        ExponentialBackoff(cap=0.1, base=0.025),
        retries=2,
        supported_errors=(redis.exceptions.ConnectionError,),
    )


class RedisStore:
    """Holds one lazily created client per process for one app."""

    def __init__(self, settings: redis_settings.RedisSettings):
        """Remember the settings; no socket, pool or client is created here."""
        self.settings = settings
        self._client = None
        self._pid = None
        self._lock = threading.Lock()
        self._last_warning = float("-inf")

    def _make_plain_client(self):
        """A client of the one server at REDIS_URL, with its own bounded pool."""
        s = self.settings
        # A plain (non-blocking) pool: a greenlet never queues for a connection, so a busy
        # worker cannot turn a pool wait into a spurious 503; max_connections only caps the
        # sockets one worker may open, and going past it fails fast as unavailable.
        options = {"password": s.password} if s.password else {}
        pool = redis.ConnectionPool.from_url(
            s.url,
            max_connections=s.max_connections,
            socket_connect_timeout=s.connect_timeout,
            socket_timeout=s.socket_timeout,
            retry=_command_retry(),
            decode_responses=True,
            **options,
        )
        return redis.Redis(connection_pool=pool)

    def _make_sentinel_client(self):
        """A client of whichever server the Sentinels name primary; increments are acknowledged."""
        s = self.settings
        # Asking a dead Sentinel must cost one connect timeout, then the next one is asked:
        # no retries there (redis-py's default would back off for seconds).
        sentinel = ResolvingSentinel(
            list(s.sentinels),
            sentinel_kwargs={
                "password": s.password,
                "socket_connect_timeout": s.connect_timeout,
                "socket_timeout": s.socket_timeout,
                "retry": Retry(NoBackoff(), 0),
            },
        )
        client = sentinel.master_for(
            s.master_name,
            redis_class=AcknowledgedRedis,
            password=s.password,
            max_connections=s.max_connections,
            socket_connect_timeout=s.connect_timeout,
            socket_timeout=s.socket_timeout,
            retry=_command_retry(),
            decode_responses=True,
        )
        return client.configure(s.wait_replicas, s.wait_timeout_ms, s.wait_strict)

    def _make_client(self):
        return self._make_sentinel_client() if self.settings.uses_sentinel else self._make_plain_client()

    @property
    def client(self):
        """Return this process's client, creating it on first use or after a fork."""
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    # Drop, don't close, an inherited client: its sockets belong to the parent.
                    self._client = self._make_client()
                    self._pid = pid
        return self._client

    def ping(self):
        """Return True when Redis answers PING, False when it is unavailable."""
        try:
            return bool(self.client.ping())
        except (*UNAVAILABLE_ERRORS, redis.exceptions.ResponseError) as exc:
            self.report_unavailable(exc)
            return False

    def report_unavailable(self, exc):
        """Log that Redis is unavailable, at most once every few seconds per process."""
        # During an outage every request fails; one line per request would flood the log.
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            current_app.logger.warning("redis unavailable (pid %d): %s", os.getpid(), exc)

    def close(self):
        """Disconnect this process's pool, if one was created here."""
        client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.connection_pool.disconnect()


def get_store(app=None):
    """Return the RedisStore of app, or of the current app."""
    return (app or current_app).extensions["pycluster.redis"]


def get_redis():
    """Return the current process's Redis client for the current app."""
    return get_store().client


def init_app(app):
    """Check the Redis settings (ValueError naming the bad one) and attach a RedisStore."""
    app.extensions["pycluster.redis"] = RedisStore(redis_settings.from_config(app.config))
