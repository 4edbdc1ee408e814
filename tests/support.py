"""Real processes on real sockets: start the master or a cluster program, wait on events.

Nothing here sleeps for readiness: every wait polls a condition against a deadline.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import requests

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports nobody listens on right now. All are held while choosing: one
    free_port() after another may hand out the same port twice, and a redis-server given a port
    another one already took fails to start (CI saw a Sentinel's port answer as a plain Redis)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def is_fork_template(pid: int) -> bool:
    """Whether a child of the master is its fork template (master/worker/template.py), not a worker."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return b"pycluster: fork template" in cmdline or b"master.worker.template" in cmdline


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(url: str, timeout: float = 5.0, **kwargs: Any) -> requests.Response:
    """One GET on a fresh connection (so every request is a new connection)."""
    return requests.get(url, timeout=timeout, headers={"Connection": "close"}, **kwargs)


def worker_pid(port: int, path: str = "/") -> int:
    """The pid of the worker that answered one request."""
    response = get(f"http://127.0.0.1:{port}{path}")
    return int(response.headers["X-Worker-Pid"])


class Master:
    """`python -m master` on a free port, its log in a file, killed with its workers at the end."""

    def __init__(self, tmp_path: Path, app: str = "apps.hello:app", workers: int = 2, *args: str,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = tmp_path / f"master-{self.port}.log"
        self.socket_path = str(tmp_path / f"ctl-{self.port}.sock")
        self.env = dict(os.environ)
        self.env.update({"METRICS_BIND": "none", "CONTROL_SOCKET": self.socket_path,
                         "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "PYTHONUNBUFFERED": "1"})
        self.env.update(env or {})
        self.argv = [PYTHON, "-m", "master", app, "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
                     *args]
        self.proc: subprocess.Popen | None = None
        self.known_pids: set[int] = set()

    def start(self) -> "Master":
        """Start the master (does not wait)."""
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the master and its workers wrote so far."""
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        """The worker pids right now (the fork template is a child too, but not a worker)."""
        pids = children(self.pid)
        self.known_pids.update(pids)
        return [pid for pid in pids if not is_fork_template(pid)]

    def status(self) -> dict[str, Any]:
        """`ctl status --json`, parsed."""
        out = subprocess.run([PYTHON, "-m", "master", "ctl", "--socket", self.socket_path, "status", "--json"],
                             capture_output=True, text=True, timeout=10, cwd=ROOT, env=self.env)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        """Run `python -m master ctl --socket ... ARGS`."""
        return subprocess.run([PYTHON, "-m", "master", "ctl", "--socket", self.socket_path, *args],
                              capture_output=True, text=True, timeout=10, cwd=ROOT, env=self.env)

    def listening_workers(self) -> list[int]:
        """Pids of workers in state 'listening', from the control socket."""
        try:
            return [w["pid"] for w in self.status()["workers"] if w["state"] == "listening"]
        except (AssertionError, ValueError, subprocess.SubprocessError):
            return []

    def wait_ready(self, workers: int | None = None, timeout: float = 20.0) -> "Master":
        """Wait until `workers` workers are listening and the port answers."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"master exited with {self.proc.returncode}:\n{self.log()}")
            count = len(self.listening_workers())
            return count >= (workers or 1)
        wait_for(ready, timeout, 0.05, f"{workers} listening workers\n{self.log()}")
        return self

    def signal(self, signum: int) -> None:
        """Send a signal to the master."""
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 20.0) -> int:
        """Wait for the master to exit; its status."""
        return self.proc.wait(timeout=timeout)

    def kill_all(self) -> None:
        """SIGKILL the master and every worker it ever had."""
        if self.proc is None:
            return
        pids = set(self.known_pids) | set(children(self.pid))
        for pid in [self.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def run_program(name: str, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run tests/programs/NAME.py (a cluster program: primary and workers) to completion."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([PYTHON, str(ROOT / "tests" / "programs" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd or ROOT)


def events(output: str) -> list[dict[str, Any]]:
    """The JSON lines a cluster program printed."""
    found = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found


SYSTEM_PYTHON = "/usr/bin/python3"


def as_nobody(argv: list[str], extra_path: list[str] | None = None) -> tuple[list[str], dict[str, str]] | None:
    """Run a `python ...` argv as user nobody, or None where this machine cannot.

    This venv's interpreter lives under /root (mode 0700), so nobody runs the system
    interpreter of the same minor version with this venv's site-packages on its path.
    """
    import sysconfig

    if os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON):
        return None
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.stdout.strip() != str(tuple(sys.version_info[:2])):
        return None
    path = [*(extra_path or []), str(ROOT), sysconfig.get_paths()["purelib"]]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_PYTHON, *argv[1:]], env
