"""A short ring of per-second samples kept in the master, for the dashboard and `ctl top`.

Pure: the feed (dashboard.py) hands it one status snapshot per second and each worker's
heartbeat time, and it turns counters into rates and notices what changed (an exit, a
rolling restart's steps, a new target) as timeline events. Nothing here touches the loop,
a socket or a process, so unit tests drive it with plain dicts.

Rates come from heartbeats, not from the sampling tick: a worker's `requests` counter only
moves when its heartbeat arrives (about once a second), so a counter difference per tick
would read 0, then double, as the two clocks drift. The rate over the interval between two
heartbeats is exact; a worker whose heartbeats stop (hung, SIGSTOPped) gets no rate at all
rather than its last one, so the chart shows a gap where the worker went silent.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

SECONDS = 300           # five minutes at one sample a second
MAX_EVENTS = 200        # restarts, rolling-restart steps and scaling, oldest dropped first
FIELDS = ("rps", "in_flight", "rss")   # the order of a worker's numbers in a sample


@dataclass(frozen=True)
class Beat:
    """What the history needs from a worker record: when its stats last came, when it started."""

    last_heartbeat: float
    started: float


@dataclass
class _Rate:
    at: float               # the heartbeat the counter came with (the loop's clock)
    requests: int
    rps: float | None


class History:
    """Samples (one a second, the newest SECONDS of them) and the events between them."""

    def __init__(self, seconds: int = SECONDS, max_events: int = MAX_EVENTS) -> None:
        self.samples: deque[dict[str, Any]] = deque(maxlen=seconds)
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.seq = 0
        self._event_id = 0
        self._rates: dict[int, _Rate] = {}
        self._last_exit_ts = 0.0
        self._rolling: dict[str, Any] = {"state": "idle"}
        self._target: int | None = None

    def record(self, snapshot: dict[str, Any], beats: dict[int, Beat], now: float, clock: float,
               stale_after: float) -> dict[str, Any]:
        """Add the sample for `snapshot`, taken at wall time `now` and loop time `clock`."""
        self.seq += 1
        master = snapshot["master"]
        workers: dict[str, list[Any]] = {}
        for worker in snapshot["workers"]:
            beat = beats.get(worker["id"])
            rps = None if beat is None else self._rate(worker["id"], worker["requests"], beat, clock, stale_after)
            workers[str(worker["id"])] = [rps, worker["in_flight"], worker["rss"]]
        live = {w["id"] for w in snapshot["workers"]}
        for gone in [wid for wid in self._rates if wid not in live]:
            del self._rates[gone]
        rates = [values[0] for values in workers.values() if values[0] is not None]
        reload = master.get("reload") or {}
        sample = {
            "seq": self.seq, "t": round(now, 3), "w": workers,
            "rps": round(sum(rates), 1) if rates else (0.0 if not workers else None),
            "in_flight": sum(values[1] for values in workers.values()), "target": master["target_workers"],
            "rolling": [reload.get("replaced", 0), reload.get("total", 0)] if reload.get("state") == "running" else None,
        }
        self.samples.append(sample)
        self._note_exits(master.get("recent_exits") or [])
        self._note_rolling(reload, now)
        self._note_target(master["target_workers"], now)
        return sample

    def _rate(self, worker_id: int, requests: int, beat: Beat, clock: float, stale_after: float) -> float | None:
        # Before its first heartbeat a worker's baseline is its start, with no request served.
        known = self._rates.setdefault(worker_id, _Rate(beat.started, 0, None))
        if beat.last_heartbeat > known.at:
            elapsed = beat.last_heartbeat - known.at
            known.rps = max(0.0, (requests - known.requests) / elapsed)
            known.at, known.requests = beat.last_heartbeat, requests
        if known.rps is None or clock - beat.last_heartbeat > stale_after:
            return None
        return round(known.rps, 1)

    def _event(self, t: float, kind: str, text: str, **fields: Any) -> None:
        self._event_id += 1
        self.events.append({"id": self._event_id, "seq": self.seq, "t": round(t, 3), "kind": kind,
                            "text": text, **fields})

    def _note_exits(self, exits: list[dict[str, Any]]) -> None:
        # The snapshot carries the last 10 exits: only more than 10 within one second would miss a marker.
        for exit_ in exits:
            if exit_["ts"] <= self._last_exit_ts:
                continue
            self._last_exit_ts = exit_["ts"]
            self._event(exit_["ts"], "exit", f"worker {exit_['worker']} (pid {exit_['pid']}) {exit_['exit']}: "
                        f"{exit_['reason']} → {exit_['verdict']}", worker=exit_["worker"], reason=exit_["reason"],
                        verdict=exit_["verdict"])

    def _note_rolling(self, reload: dict[str, Any], now: float) -> None:
        state, before = reload.get("state", "idle"), self._rolling
        started_again = reload.get("started") != before.get("started")
        if state == "running" and (before.get("state") != "running" or started_again):
            self._event(reload.get("started", now), "rolling",
                        f"rolling restart started: generation {reload.get('generation')}, "
                        f"{reload.get('total')} workers", phase="start")
        elif state == "running" and reload.get("replaced") != before.get("replaced"):
            self._event(now, "rolling", f"rolling restart: {reload.get('replaced')}/{reload.get('total')} replaced",
                        phase="step")
        if state in ("done", "failed") and (before.get("state") == "running" or started_again):
            text = (f"rolling restart done: {reload.get('replaced')} replaced" if state == "done"
                    else f"rolling restart failed: {reload.get('error')}")
            self._event(reload.get("finished", now), "rolling", text, phase=state)
        self._rolling = dict(reload)

    def _note_target(self, target: int, now: float) -> None:
        if self._target is not None and target != self._target:
            self._event(now, "scale", f"target {self._target} → {target} workers")
        self._target = target

    # -- what the JSON endpoint sends ------------------------------------------------------
    def since(self, after_seq: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Samples with seq > after_seq and the events recorded with them."""
        samples = [s for s in self.samples if s["seq"] > after_seq]
        return samples, [e for e in self.events if e["seq"] > after_seq]
