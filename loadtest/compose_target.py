"""The chaos scenarios' target when it is the docker compose stack (`python -m loadtest.chaos --compose`).

Same methods as chaos.LocalTarget, done with `docker compose` commands against a stack that is up
already (`docker compose up -d`). The load goes through HAProxy (CHAOS_PORT, default 8000); the
worker faults hit the first app replica; a Redis outage takes both Redis nodes away (one alone
would only be a failover: loadtest/chaos_stack.py's redis-primary-kill). Configure with
COMPOSE_FILE (default docker-compose.yml at the repo root) and CHAOS_WORKERS (default: the workers
seen in the first replica).
"""

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
REDIS_NODES = ("redis-primary", "redis-replica")
_REDIS_CLI = 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" exec redis-cli "$@"'


class ComposeTarget:
    """The compose stack: HAProxy on a published port, the app replicas and Redis inside the networks."""

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
        """Wait until /health answers 200 through HAProxy."""
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
        """`docker compose kill` both Redis nodes: no primary anywhere."""
        self._run("kill", *REDIS_NODES)

    def redis_start(self) -> None:
        """Start both Redis nodes again (`docker start`: compose's start waits on dependencies), then
        wait until one of them answers as the primary."""
        ids = self._run("ps", "-a", "-q", *REDIS_NODES).split()
        subprocess.run(["docker", "start", *ids], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for node in REDIS_NODES:
                try:
                    if self._redis_cli(node, "ROLE").split()[:1] == ["master"]:
                        return
                except subprocess.CalledProcessError:
                    pass
            time.sleep(0.2)

    def _redis_cli(self, service: str, *args: str) -> str:
        """redis-cli inside a Redis or Sentinel container, with the password from its secret."""
        return self._exec(service, "sh", "-c", _REDIS_CLI, "redis-cli", *args)

    def counter(self) -> int:
        """page_views on the primary the Sentinels name, read from inside sentinel-1."""
        primary = self._redis_cli("sentinel-1", "-p", "26379", "SENTINEL", "get-master-addr-by-name",
                                  "pycluster").split()[0]
        out = self._redis_cli("sentinel-1", "-h", primary, "GET", "page_views").strip()
        return int(out) if out else 0

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
