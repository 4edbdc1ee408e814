"""Increments that count once and survive a failover: the Redis client the app uses with Sentinels.

/count answers with the value of one INCR, so two things must hold when the primary changes:
- Exactly once. redis-py resends a command whose connection broke, and it cannot know whether
  Redis ran it before the break; after a failover the resend reaches another server. A load
  balancer may also send a request again to another replica when the first one died before it
  answered. Each increment therefore runs a script that increments and remembers the result under
  a marker key; a resent call finds the key (it was replicated with the increment) and returns the
  same value. The marker is the request's X-Request-Id when there is one (HAProxy sets it, the same
  on every retry of a request), else a fresh one per call.
- Acknowledged means replicated. After the increment the same connection sends WAIT, so the
  answer goes out once a replica has the write: a primary lost after that loses no answered
  increment. When no replica answers within the timeout (none is attached after a failover, or
  it is gone), the increment is answered anyway, and WAIT is skipped for a second
  (REDIS_WAIT_STRICT=1 answers 503 instead: the increment stays, but is not acknowledged).
"""

import hashlib
import logging
import threading
import time
import uuid

import redis
from flask import has_request_context, request

log = logging.getLogger("app.acknowledged")

# KEYS[1] the counter, KEYS[2] this call's marker; ARGV[1] the marker's lifetime in seconds.
INCR_ONCE = """
local done = redis.call('GET', KEYS[2])
if done then return tonumber(done) end
local value = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], value, 'EX', ARGV[1])
return value
"""
MARKER_PREFIX = "pycluster:incr:"
# Longer than every retry of one request (redis-py's, within a second; HAProxy's, each after up to
# its 5 s server timeout), short enough to cost little (one small key per /count for a minute).
MARKER_TTL_S = 60
REQUEST_ID = "X-Request-Id"
_MAX_REQUEST_ID = 256
# After a WAIT that timed out, increments are answered without waiting for this long.
DEGRADED_FOR_S = 1.0
_WARN_EVERY_S = 5.0


def marker_for_this_call() -> str:
    """The marker key of an increment: from the request's X-Request-Id, or fresh (see the module doc)."""
    request_id = request.headers.get(REQUEST_ID, "") if has_request_context() else ""
    if request_id and len(request_id) <= _MAX_REQUEST_ID:
        return MARKER_PREFIX + "rid:" + hashlib.sha256(request_id.encode("utf-8", "replace")).hexdigest()[:32]
    return MARKER_PREFIX + "new:" + uuid.uuid4().hex


class NotReplicated(redis.exceptions.ConnectionError):
    """No replica acknowledged the increment in time (REDIS_WAIT_STRICT=1): answered as unavailable."""


class AcknowledgedRedis(redis.Redis):
    """redis.Redis whose incr() runs once per call and waits for replicas (see the module doc)."""

    wait_replicas: int = 0
    wait_timeout_ms: int = 250
    wait_strict: bool = False
    _degraded_until: float = float("-inf")
    _last_warning: float = float("-inf")
    _clock = staticmethod(time.monotonic)
    _warn_lock = threading.Lock()

    def configure(self, wait_replicas: int, wait_timeout_ms: int, wait_strict: bool) -> "AcknowledgedRedis":
        """Set the WAIT policy of this client; returns the client."""
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.wait_strict = wait_strict
        self._degraded_until = float("-inf")
        return self

    def incr(self, name, amount=1):
        """Add 1 to the counter `name`, exactly once, acknowledged by wait_replicas replicas."""
        if amount != 1:
            raise ValueError("AcknowledgedRedis.incr counts by 1 only")
        return self.incr_once(name, marker_for_this_call())

    def incr_once(self, name, marker):
        """Add 1 to `name` unless this marker already did (then return that value); WAIT after it."""
        waiting = self.wait_replicas > 0 and (self.wait_strict or self._clock() >= self._degraded_until)
        pipe = self.pipeline(transaction=False)
        pipe.eval(INCR_ONCE, 2, name, marker, MARKER_TTL_S)
        if waiting:
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        results = pipe.execute()
        value = int(results[0])
        if waiting and int(results[1]) < self.wait_replicas:
            self._not_replicated(results[1])
        return value

    def _not_replicated(self, acked) -> None:
        """React to a WAIT that timed out: refuse (strict) or answer and stop waiting for a while."""
        message = (f"{acked} of {self.wait_replicas} replicas acknowledged an increment within "
                   f"{self.wait_timeout_ms} ms")
        if self.wait_strict:
            raise NotReplicated(message)
        self._degraded_until = self._clock() + DEGRADED_FOR_S
        now = self._clock()
        with self._warn_lock:
            if now - self._last_warning < _WARN_EVERY_S:
                return
            self._last_warning = now
        log.warning("%s: answering increments without a replica's acknowledgement for %.0f s at a time "
                    "until one answers again", message, DEGRADED_FOR_S)
