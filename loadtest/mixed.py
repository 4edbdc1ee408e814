"""The mixed profile: every user class of the locustfile at once, through headless Locust."""

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest.servers import REPO


def parse_stats_csv(path: Path) -> dict:
    """The Aggregated row of a Locust *_stats.csv: requests, failures, rps, p50, p95, p99."""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("Name") == "Aggregated":
                num = lambda k: float(row[k]) if row.get(k) not in (None, "", "N/A") else None
                return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                        "rps": num("Requests/s"), "p50_ms": num("50%"), "p95_ms": num("95%"),
                        "p99_ms": num("99%")}
    raise ValueError(f"no Aggregated row in {path}")


def run(url: str, users: int, seconds: int, extra_env: dict | None = None) -> dict:
    """One bounded headless Locust run of all user classes; its aggregated figures and exit code."""
    with tempfile.TemporaryDirectory(prefix="bench-locust-") as tmp:
        prefix = Path(tmp) / "mixed"
        cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"),
               "--headless", "-H", url, "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
               "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
               # The bench judges numbers itself; the gate here only flags a broken server.
               "--max-p95-ms", "60000", "--stop-timeout", "5"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds + 60,
                              env={**os.environ, **(extra_env or {})})
        stats = Path(f"{prefix}_stats.csv")
        if not stats.exists():
            raise RuntimeError(f"locust wrote no stats ({proc.returncode}): {proc.stderr[-500:]}")
        return {**parse_stats_csv(stats), "locust_exit_code": proc.returncode}
