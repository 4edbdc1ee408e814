"""schemathesis against the app's own /openapi.json, served by a real master on a real redis-server.

Every check schemathesis has, every phase (coverage, fuzzing, stateful), a fixed seed and a
bounded number of examples: the same few hundred cases on every CI run, and none may fail.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_the_api_conforms_to_its_openapi_document(master, redis_server, tmp_path):
    m = master(app="app.wsgi:app", workers=2, env={"REDIS_URL": redis_server.url})
    out = subprocess.run(
        [str(SCHEMATHESIS), "run", m.url + "/openapi.json", "--checks", "all", "--max-examples", "30",
         "--seed", "17", "--workers", "1", "--generation-database", "none", "--no-color"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert counts, out.stdout[-3000:]
    generated, passed = map(int, counts.groups())
    assert generated == passed and generated >= 100, out.stdout[-3000:]
    assert re.search(r"Operations:\s+(\d+) selected / \1 total", out.stdout), out.stdout[:2000]  # all of them
