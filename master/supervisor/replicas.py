"""The aggregate view's state: what each replica last said, and its totals over the last minutes.

Pure: peers.py fetches and hands over parsed answers; this module checks them (a replica's
answer is input like any other: wrong types, `1e400`, huge lists are refused, never
trusted), keeps a short series per replica and renders /cluster.json.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

SECONDS = 300           # per replica, like the local history
GONE_AFTER = 60.0       # a replica out of DNS for this long leaves the view
MAX_SAMPLES = 1000      # in one answer; a real one has at most history.SECONDS
MAX_WORKERS = 1024


class BadAnswer(ValueError):
    """A replica's answer that is not the dashboard JSON this version sends."""


def _number(value: Any, what: str, *, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadAnswer(f"{what} is not a finite number")
    return value


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2 ** 53:
        raise BadAnswer(f"{what} is not a whole number")
    return value


def _text(value: Any, what: str, limit: int = 255) -> str:
    if not isinstance(value, str):
        raise BadAnswer(f"{what} is not text")
    return value[:limit]


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadAnswer(f"{what} is not an object")
    return value


def _sequence(value: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise BadAnswer(f"{what} is not a list of at most {limit}")
    return value


def summarize(snapshot: Any) -> dict[str, Any]:
    """The figures the replicas table shows, from one replica's status snapshot."""
    master = _mapping(_mapping(snapshot, "snapshot").get("master"), "master")
    workers = [_mapping(w, "worker") for w in _sequence(snapshot.get("workers"), "workers", MAX_WORKERS)]
    reload = _mapping(master.get("reload") or {}, "reload")
    restarts = _mapping(master.get("restarts") or {}, "restarts")
    return {
        "pid": _whole(master.get("pid"), "pid"), "state": _text(master.get("state"), "state", 20),
        "policy": _text(master.get("policy"), "policy", 20),
        "target_workers": _whole(master.get("target_workers"), "target_workers"),
        "generation": _whole(master.get("generation"), "generation"),
        "uptime": _number(master.get("uptime"), "uptime"),
        "requests_total": _whole(master.get("requests_total"), "requests_total"),
        "restarts": {_text(k, "reason", 40): _whole(v, "restarts") for k, v in list(restarts.items())[:20]},
        "reload": {"state": _text(reload.get("state", "idle"), "reload state", 20),
                   "replaced": _whole(reload.get("replaced", 0), "replaced"),
                   "total": _whole(reload.get("total", 0), "total")},
        "workers": len(workers),
        "listening": sum(1 for w in workers if w.get("state") == "listening" and not w.get("draining")),
        "in_flight": sum(_whole(w.get("in_flight"), "in_flight") for w in workers),
        "rss": sum(_whole(w.get("rss"), "rss") for w in workers),
    }


@dataclass
class Replica:
    """One replica's metrics endpoint, as the poller last found it."""

    address: str
    instance: str | None = None
    host: str = ""
    seq: int = 0
    series: deque[tuple[float, float | None, int]] = field(default_factory=lambda: deque(maxlen=SECONDS))
    summary: dict[str, Any] | None = None
    error: str | None = None
    seen: float | None = None       # wall time of its last good answer
    listed: float = 0.0             # wall time it was last among the resolved addresses


class Replicas:
    """Every replica the peers' name resolved to, with what each said last."""

    def __init__(self, own_instance: str) -> None:
        self.own_instance = own_instance
        self.by_address: dict[str, Replica] = {}

    def since(self, address: str) -> int:
        """The sample number to ask `address` for the answers after."""
        replica = self.by_address.get(address)
        return replica.seq if replica else 0

    def _replica(self, address: str, now: float) -> Replica:
        replica = self.by_address.setdefault(address, Replica(address))
        replica.listed = now
        return replica

    def merge(self, address: str, answer: Any, now: float) -> None:
        """Take one /dashboard.json answer of `address`; BadAnswer leaves the replica as it was."""
        answer = _mapping(answer, "answer")
        instance = _text(answer.get("instance"), "instance", 64)
        samples = [_mapping(s, "sample") for s in _sequence(answer.get("samples"), "samples", MAX_SAMPLES)]
        points = [(_whole(s.get("seq"), "seq"), _number(s.get("t"), "t"), _number(s.get("rps"), "rps", nullable=True),
                   _whole(s.get("in_flight"), "in_flight")) for s in samples]
        summary = summarize(answer.get("snapshot"))
        host = _text(answer.get("host", ""), "host")
        replica = self._replica(address, now)
        if replica.instance != instance:  # a new master there: its numbering starts again
            replica.instance, replica.seq = instance, 0
            replica.series.clear()
        for seq, t, rps, in_flight in points:
            if seq > replica.seq:
                replica.series.append((t, rps, in_flight))
                replica.seq = seq
        replica.summary, replica.host, replica.error, replica.seen = summary, host, None, now

    def failed(self, address: str, error: str, now: float) -> None:
        """`address` did not answer usefully this time."""
        self._replica(address, now).error = error

    def forget_unlisted(self, now: float) -> None:
        """Drop replicas no resolution has returned for GONE_AFTER seconds (their container is gone)."""
        for address in [a for a, r in self.by_address.items() if now - r.listed > GONE_AFTER]:
            del self.by_address[address]

    def view(self, peers: str, errors: list[str], now: float) -> dict[str, Any]:
        """The /cluster.json document."""
        replicas = []
        for address in sorted(self.by_address):
            replica = self.by_address[address]
            replicas.append({
                "address": address, "self": replica.instance == self.own_instance, "host": replica.host,
                "ok": replica.error is None and replica.seen is not None, "error": replica.error,
                "in_dns": now - replica.listed < 5.0,
                "seen_ago": None if replica.seen is None else round(now - replica.seen, 1),
                "summary": replica.summary,
                "series": {"t": [p[0] for p in replica.series], "rps": [p[1] for p in replica.series],
                           "in_flight": [p[2] for p in replica.series]},
            })
        return {"peers": peers, "updated": round(now, 3), "errors": errors, "replicas": replicas}
