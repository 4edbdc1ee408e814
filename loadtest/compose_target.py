"""The chaos scenarios' target when it is the docker compose stack (`python -m loadtest.chaos --compose`).

Same methods as chaos.LocalTarget, done with `docker compose` commands. Configure with COMPOSE_FILE
(default docker-compose.yml at the repo root), CHAOS_PORT (the app's published port, default 8000)
and CHAOS_WORKERS (default: the workers seen answering).
"""

import json
import os
import subprocess
import time

from loadtest.servers import REPO, wait_http

# Runs inside the app container. Workers retitle themselves `pycluster: worker N (...)`; matching
# "-m master" instead would also match the init (docker-init -- python -m master ...) and the
# master itself. Python is the one tool the image is sure to have.
_LIST_WORKERS = r"""
import os
def cmd(p):
    try: return open(f"/proc/{p}/cmdline","rb").read().split(b"\0")
    except OSError: return []
print(" ".join(p for p in os.listdir("/proc") if p.isdigit() and b"".join(cmd(p)).startswith(b"pycluster: worker")))
"""


class ComposeTarget:
    """The compose stack: app on a published port, Redis inside the network."""

    name = "compose"
    host = "127.0.0.1"

    def __init__(self):
        self.port = int(os.environ.get("CHAOS_PORT", "8000"))
        self.compose = ["docker", "compose", "-f", os.environ.get("COMPOSE_FILE", str(REPO / "docker-compose.yml"))]
        self.workers = int(os.environ.get("CHAOS_WORKERS", "0"))

    def _run(self, *args: str, timeout: float = 60) -> str:
        """One docker compose command; its stdout."""
        return subprocess.run([*self.compose, *args], check=True, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO).stdout

    def _exec(self, service: str, *cmd: str) -> str:
        """A command inside a running service."""
        return self._run("exec", "-T", service, *cmd)

    def start(self) -> None:
        """The stack must be up already (`docker compose up -d`); wait until the app is healthy."""
        self.ready(60)
        if not self.workers:
            self.workers = len(self.worker_pids())

    def stop(self) -> None:
        """Leave the stack running for the next scenario."""

    def ready(self, deadline: float = 60.0) -> None:
        """Wait until /health answers 200 on the published port."""
        wait_http(self.port, "/health", deadline, host=self.host)

    def worker_pids(self) -> list[int]:
        """Worker pids inside the app container."""
        return [int(p) for p in self._exec("app", "python", "-c", _LIST_WORKERS).split()]

    def signal_worker(self, pid: int, sig: int) -> None:
        """Signal one worker inside the container."""
        self._exec("app", "python", "-c", f"import os; os.kill({pid}, {int(sig)})")

    def signal_master(self, sig: int) -> None:
        """`docker compose kill -s SIG app`: the signal reaches the container's main process."""
        self._run("kill", "-s", sig.name, "app")

    def redis_kill(self) -> None:
        """`docker compose kill redis`."""
        self._run("kill", "redis")

    def redis_start(self) -> None:
        """`docker compose start redis`, then wait until it answers."""
        self._run("start", "redis")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if "PONG" in self._exec("redis", "redis-cli", "PING"):
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.2)

    def counter(self) -> int:
        """page_views, read with redis-cli inside the redis container."""
        out = self._exec("redis", "redis-cli", "--no-raw", "GET", "page_views").strip()
        value = json.loads(out) if out and out != "(nil)" else None
        return int(value) if value is not None else 0

    def wait_master_exit(self, timeout: float) -> int | None:
        """`docker compose stop app` waits for the exit; then the container's exit code."""
        self._run("stop", "-t", str(int(timeout)), "app", timeout=timeout + 30)
        cid = self._run("ps", "-a", "-q", "app").strip()
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", cid], capture_output=True,
                             text=True, timeout=30)
        return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None

    def restart_app(self) -> None:
        """Bring the app back after graceful-shutdown stopped it."""
        self._run("start", "app")
        self.ready(60)
