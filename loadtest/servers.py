"""Start, probe and stop the servers under test (our master, gunicorn, granian) and a real Redis, on loopback."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.embedded_redis import EmbeddedRedis

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# gunicorn worker classes, each with the flags that make it a fair opponent.
GUNICORN_CLASSES = {
    "sync": ["-k", "sync"],
    "gthread": ["-k", "gthread", "--threads", "4"],
    "gevent": ["-k", "gevent", "--worker-connections", "1000"],
}
POLICIES = ("rr", "shared", "reuseport")
# granian (Rust/hyper) serving the same WSGI app: HTTP/1 only and no websockets, as we serve. It
# does not replace a dead worker unless asked (it shuts down instead), and then waits 3.5 s by
# default: asked, and at once, as gunicorn and we do, so the crash cells compare like with like.
GRANIAN_ARGS = ["--interface", "wsgi", "--http", "1", "--no-ws", "--log-level", "warning", "--no-access-log",
                "--respawn-failed-workers", "--respawn-interval", "0.1"]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def master_available() -> bool:
    """Whether `python -m master` exists in this checkout yet."""
    return (REPO / "master" / "__main__.py").exists()


def app_available() -> bool:
    """Whether the benchmark target app.wsgi exists in this checkout yet."""
    return (REPO / "app" / "wsgi.py").exists()


def get(port: int, path: str = "/", timeout: float = 2.0, host: str = HOST) -> tuple[int, dict, bytes]:
    """One GET on a new connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_http(port: int, path: str = "/health", deadline_s: float = 30.0, proc=None, host: str = HOST) -> float:
    """Poll until `path` answers 200; seconds it took. Raises when the deadline passes or proc dies."""
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < deadline_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            status, _, body = get(port, path, timeout=1.0, host=host)
            if status == 200:
                return time.monotonic() - start
            last = f"{status} {body[:80]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port}{path} not ready after {deadline_s:.0f}s: {last}")


def children(pid: int) -> list[int]:
    """Direct children of pid, from /proc (every thread's children list)."""
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                kids += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                continue
    except OSError:
        return []
    return sorted(set(kids))


def is_fork_template(pid: int) -> bool:
    """Whether a child of pycluster's master is its fork template rather than a worker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"pycluster: fork template" in cmdline or b"master.worker.template" in cmdline


def alive(pid: int) -> bool:
    """Whether pid exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class ProcSample:
    """CPU seconds (user+system) and RSS bytes of one process at one moment."""

    t: float
    cpu_s: float
    rss: int


def sample(pid: int) -> ProcSample | None:
    """Read /proc/<pid>/stat and statm; None when the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    # After the ")" the fields start at stat's 3rd: utime and stime are the 14th and 15th.
    return ProcSample(time.monotonic(), (int(fields[11]) + int(fields[12])) / CLK_TCK, rss_pages * PAGE_SIZE)


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user+system) used so far by these processes together (those still alive)."""
    return sum(s.cpu_s for s in map(sample, pids) if s is not None)


def cpu_percent(before: ProcSample | None, after: ProcSample | None) -> float | None:
    """CPU used between two samples, in percent of one core."""
    if not before or not after or after.t <= before.t:
        return None
    return 100.0 * (after.cpu_s - before.cpu_s) / (after.t - before.t)


class RedisServer:
    """A throwaway Redis for one benchmark or chaos run: the project's EmbeddedRedis in a temp dir."""

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-redis-")
        # appendfsync always: an acknowledged INCR is on disk, so even a SIGKILL loses none of
        # them and the chaos scenarios can demand exactly zero lost increments.
        self.impl = EmbeddedRedis(self._tmp.name, appendfsync="always")

    @property
    def url(self) -> str:
        """REDIS_URL for the workers."""
        return self.impl.url

    def start(self) -> "RedisServer":
        """Start, or restart on the same port and data directory; waits until it answers."""
        self.impl.start()
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data stays."""
        self.impl.kill()

    def client(self, timeout: float = 1.0):
        """A redis-py client with short timeouts, so a dead server fails fast."""
        import redis  # noqa: PLC0415 - an app dependency, imported where it is needed

        return redis.Redis(host=self.impl.host, port=self.impl.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)

    def get_int(self, key: str) -> int:
        """An integer key's value, 0 when absent."""
        with self.client() as r:
            value = r.get(key)
        return int(value) if value is not None else 0

    def stop(self) -> None:
        """Stop it and remove its data."""
        try:
            self.impl.stop()
        finally:
            self._tmp.cleanup()


@dataclass
class Server:
    """One server under test: our master with a policy, gunicorn with a worker class, or granian."""

    server: str                  # "pycluster", "gunicorn" or "granian"
    policy: str                  # rr/shared/reuseport, sync/gthread/gevent, or wsgi (granian)
    workers: int
    redis_url: str
    app: str = "app.wsgi:app"
    graceful_timeout: float = 10.0
    worker_timeout: float = 30.0  # the watchdog: a worker silent this long is replaced
    port: int = 0
    extra_env: dict = field(default_factory=dict)
    root: Path = REPO            # the tree it runs from (the guard runs the previous commit's beside ours)
    proc: subprocess.Popen | None = None
    log_path: str = ""

    @property
    def label(self) -> str:
        """Short name for progress lines and plots."""
        return f"{self.server}/{self.policy}"

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts this server."""
        bind = f"{HOST}:{self.port}"
        if self.server == "pycluster":
            return [sys.executable, "-m", "master", self.app, "--workers", str(self.workers),
                    "--bind", bind, "--policy", self.policy,
                    "--graceful-timeout", str(self.graceful_timeout),
                    "--worker-timeout", str(self.worker_timeout)]
        if self.server == "gunicorn":
            return [sys.executable, "-m", "gunicorn", "-w", str(self.workers), "-b", bind,
                    *GUNICORN_CLASSES[self.policy], "--graceful-timeout", str(int(self.graceful_timeout)),
                    "--timeout", str(int(self.worker_timeout)),
                    "--log-level", "warning", self.app]
        if self.server == "granian":
            return [sys.executable, "-m", "granian", *GRANIAN_ARGS, "--workers", str(self.workers),
                    "--host", HOST, "--port", str(self.port), self.app]
        raise ValueError(f"unknown server {self.server!r}")

    def start(self, deadline_s: float = 30.0) -> "Server":
        """Start and wait until /health answers 200 and all workers are up."""
        if not self.port:
            self.port = free_port()
        env = {**os.environ, "REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1", **self.extra_env}
        log = tempfile.NamedTemporaryFile(prefix=f"bench-{self.server}-{self.policy}-", suffix=".log",
                                          delete=False)
        self.log_path = log.name
        self.proc = subprocess.Popen(self.command(), cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            wait_http(self.port, "/health", deadline_s, self.proc)
            self.wait_workers(self.workers, deadline_s)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.label} -w {self.workers} failed to start:\n{self.log_tail()}")
        return self

    def wait_workers(self, n: int, deadline_s: float = 30.0) -> list[int]:
        """Wait until the master has n live children; their pids."""
        start = time.monotonic()
        while time.monotonic() - start < deadline_s:
            pids = self.worker_pids()
            if len(pids) >= n:
                return pids
            time.sleep(0.05)
        raise TimeoutError(f"{self.label}: only {len(self.worker_pids())} of {n} workers after {deadline_s}s")

    def worker_pids(self) -> list[int]:
        """Live children of the master that are workers (pycluster's fork template is a child too)."""
        return [p for p in children(self.proc.pid) if alive(p) and not is_fork_template(p)] if self.proc else []

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server logged."""
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        """Send a signal to the master."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, bounded wait, then SIGKILL the whole group we started; the exit code."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        try:
            # Our own session: a worker that outlived its master must not keep the port or a core.
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.returncode

    def cleanup(self) -> None:
        """Remove the log file."""
        if self.log_path:
            Path(self.log_path).unlink(missing_ok=True)
