"""The mixed profile: every user class of the locustfile at once, through headless Locust."""

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest.servers import REPO


WORK = "/work"  # the CPU-bound endpoint, reported apart from the rest


def parse_stats_csv(path: Path) -> dict:
    """A Locust *_stats.csv: the Aggregated row's requests, failures, rps, p50, p95, p99, plus the
    rate per endpoint (`by_endpoint`, methods summed) and the CPU-bound endpoint's rate apart.

    The aggregate counts a 10 ms /work like a 0.1 ms `/`, so on a machine the load generator shares,
    a server that serves fewer /work leaves Locust more CPU for cheap requests and scores higher;
    the split shows which happened.
    """
    aggregated, by_endpoint = None, {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            name = row.get("Name")
            rps = _number(row.get("Requests/s"))
            if name == "Aggregated":
                aggregated = {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                              "rps": rps, "p50_ms": _number(row.get("50%")), "p95_ms": _number(row.get("95%")),
                              "p99_ms": _number(row.get("99%"))}
            elif name:
                by_endpoint[name] = round(by_endpoint.get(name, 0.0) + (rps or 0.0), 2)
    if aggregated is None:
        raise ValueError(f"no Aggregated row in {path}")
    work = by_endpoint.get(WORK)
    other = round(aggregated["rps"] - work, 2) if aggregated["rps"] is not None and work is not None else None
    return {**aggregated, "by_endpoint": by_endpoint, "work_rps": work, "other_rps": other}


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "", "N/A") else None


def run(url: str, users: int, seconds: int, extra_env: dict | None = None, cpus: str | None = None) -> dict:
    """One bounded headless Locust run of all user classes, on the CPUs `cpus` (a taskset list) if
    given; its figures (parse_stats_csv) and exit code."""
    with tempfile.TemporaryDirectory(prefix="bench-locust-") as tmp:
        prefix = Path(tmp) / "mixed"
        cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"),
               "--headless", "-H", url, "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
               "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
               # The bench judges numbers itself; the gate here only flags a broken server.
               "--max-p95-ms", "60000", "--stop-timeout", "5"]
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds + 60,
                              env={**os.environ, **(extra_env or {})})
        stats = Path(f"{prefix}_stats.csv")
        if not stats.exists():
            raise RuntimeError(f"locust wrote no stats ({proc.returncode}): {proc.stderr[-500:]}")
        return {**parse_stats_csv(stats), "locust_exit_code": proc.returncode}
