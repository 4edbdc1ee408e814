"""A bounded headless Locust run of loadtest/chaos_locust.py in a subprocess, and its request records.

Locust patches the interpreter with gevent when imported, so it runs in a process of its own; the
chaos code that injects faults stays plain Python. Every run is bounded: Locust's own --run-time,
and a kill at run time + STOP_GRACE seconds if it has not exited by then.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STOP_GRACE = 30.0


@dataclass(frozen=True)
class StackRecord:
    """One request as the chaos judge reads it (the fields of loadgen.Record it uses, and more)."""

    start: float       # epoch seconds
    end: float
    path: str
    kind: str          # "ok", "http_<status>", "error:<exception>"
    status: int
    host: str          # the load balancer it went through
    views: int | None  # totalViews of a successful /count


class LocustRun:
    """One Locust process: start(), wait_started(), then join() for the records."""

    def __init__(self, hosts: list[str], users: int, rate: float, seconds: float, paths=("/", "/count")):
        self.hosts = hosts
        self.paths = list(paths)
        self.users = users
        self.rate = rate
        self.seconds = seconds
        self._dir = tempfile.TemporaryDirectory(prefix="pycluster-chaos-")
        self.records_path = Path(self._dir.name) / "records.jsonl"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.sent: dict[str, int] = {}   # requests sent, by path (read by join())
        self.skipped = 0                 # record lines that did not parse

    def start(self) -> "LocustRun":
        """Start Locust; returns at once."""
        env = {**os.environ, "CHAOS_HOSTS": ",".join(self.hosts), "CHAOS_RATE": str(self.rate),
               "CHAOS_PATHS": ",".join(self.paths),
               "CHAOS_RECORDS": str(self.records_path), "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "chaos_locust.py"), "--headless",
                "-u", str(self.users), "-r", str(self.users), "-t", f"{int(self.seconds)}s",
                "--stop-timeout", "2", "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"]
        self.started_at = time.time()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        return self

    def wait_started(self, deadline: float = 30.0) -> float:
        """Block until the first request was sent; that moment (epoch s). AssertionError on deadline."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"locust exited {self.proc.returncode} before any request:\n"
                                     + self.proc.stderr.read()[-3000:])
            try:
                with open(self.records_path, encoding="utf-8") as handle:
                    first = handle.readline()
                if first.endswith("\n"):
                    return time.time()  # the first request is under way: the timeline's origin
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"locust made no request in {deadline:.0f} s")

    def stop(self) -> None:
        """Kill Locust now (a test that fails midway must not leave load running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def join(self) -> list[StackRecord]:
        """Wait for the run to end (bounded); the records, sorted by start."""
        try:
            self.proc.wait(timeout=max(0.0, self.started_at + self.seconds - time.time()) + STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.stop()
        records, self.sent, self.skipped = read_run(self.records_path)
        self._dir.cleanup()
        return records


def read_records(path: Path) -> list[StackRecord]:
    """Parse a records file: the completed requests, sorted by start (a cut-off line is dropped)."""
    return read_run(path)[0]


def read_run(path: Path) -> tuple[list[StackRecord], dict[str, int], int]:
    """(completed requests sorted by start, requests sent by path, lines that did not parse)."""
    records, sent, skipped = [], {}, 0
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    fields = json.loads(line)
                    if "sent" in fields:
                        sent[fields["sent"]] = sent.get(fields["sent"], 0) + 1
                    else:
                        records.append(StackRecord(**fields))
                except (ValueError, TypeError):
                    skipped += 1
    except FileNotFoundError:
        pass
    return sorted(records, key=lambda r: r.start), sent, skipped
