"""The Redis client of one worker process: created on first use, never inherited across fork."""

import os
import threading
import time

import redis
from flask import current_app
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# Errors that mean "Redis is not reachable right now" (BusyLoadingError, raised while Redis
# replays its AOF after a restart, is a ConnectionError); the views answer 503 for these.
UNAVAILABLE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

_WARN_EVERY_S = 5.0


class RedisStore:
    """Holds one lazily created redis.Redis per process for one app."""

    def __init__(self, config):
        """Remember the settings; no socket, pool or client is created here."""
        self.url = config["REDIS_URL"]
        self.connect_timeout = float(config["REDIS_CONNECT_TIMEOUT"])
        self.socket_timeout = float(config["REDIS_SOCKET_TIMEOUT"])
        self.max_connections = int(config["REDIS_MAX_CONNECTIONS"])
        self._client = None
        self._pid = None
        self._lock = threading.Lock()
        self._last_warning = float("-inf")

    def _make_client(self):
        """Build a client with its own pool, bounded so a dead Redis fails fast."""
        # Retry only ConnectionError (refused, reset): a timed-out INCR may have run already,
        # and retrying it would count twice. Refused connects fail at once, so three tries with
        # 50/100 ms backoff stay far below the 1 s budget even when a stale pooled
        # connection makes redis-py reconnect inside its command retry.
        retry = Retry(
            ExponentialBackoff(cap=0.1, base=0.025),
            retries=2,
            supported_errors=(redis.exceptions.ConnectionError,),
        )
        # A plain (non-blocking) pool: a greenlet never queues for a connection, so a busy
        # worker cannot turn a pool wait into a spurious 503; max_connections only caps the
        # sockets one worker may open, and going past it fails fast as unavailable.
        pool = redis.ConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.socket_timeout,
            retry=retry,
            decode_responses=True,
        )
        return redis.Redis(connection_pool=pool)

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
    """Attach a RedisStore built from app.config; it connects on first use."""
    app.extensions["pycluster.redis"] = RedisStore(app.config)
