"""A short headless Locust run of loadtest/locustfile.py: the quitting gate's exit code is the verdict."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.servers import REPO, RedisServer, Server, free_port

pytestmark = pytest.mark.skipif(not (REPO / "app" / "wsgi.py").exists(), reason="app.wsgi is not there yet")


def locust(host: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """A bounded headless run (5 users for 3 s) with a CSV, as CI would run it."""
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"), "--headless",
           "-H", host, "-u", "5", "-r", "5", "-t", "3s", "--stop-timeout", "2", "--only-summary",
           "--csv", str(tmp_path / "run"), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def server():
    """The real app under gunicorn (the baseline server: the smoke test is about the locustfile)."""
    redis = RedisServer().start()
    srv = Server("gunicorn", "gevent", 1, redis.url).start()
    yield srv
    srv.stop()
    srv.cleanup()
    redis.stop()


def test_every_user_class_passes_the_gate_on_a_healthy_server(server, tmp_path):
    proc = locust(server.url, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = (tmp_path / "run_stats.csv").read_text()
    for name in ("/,", "/work,", "/count,", "/session/[id],"):
        assert name in stats, stats


def test_the_p95_threshold_fails_the_run(server, tmp_path):
    proc = locust(server.url, "--max-p95-ms", "0.001", "HelloUser", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "quitting gate: FAIL" in proc.stderr and "p95" in proc.stderr


def test_a_dead_port_fails_the_run(tmp_path):
    proc = locust(f"http://127.0.0.1:{free_port()}", "HelloUser", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "failure ratio" in proc.stderr
