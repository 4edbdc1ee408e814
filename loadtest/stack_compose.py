"""One project of the docker-compose.yml stack, driven with the docker CLI: used by the stack chaos
scenarios (loadtest/chaos_stack.py) and by the e2e tests (tests/e2e), so both measure the same way.

Nothing here waits with a bare sleep: every wait polls a condition against a deadline.
"""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
REDIS_NODES = ("redis-primary", "redis-replica")
MASTER_NAME = "pycluster"
COUNTER_KEY = "page_views"

# redis-cli inside a Redis or Sentinel container, with the password from the mounted secret: it
# never appears on a command line or in the environment of anything outside the container.
_REDIS_CLI = 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" exec redis-cli "$@"'


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, deadline: float, what: str, step: float = 0.2):
    """Poll predicate() until it returns something truthy; that value. AssertionError at the deadline."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        try:
            last = predicate()
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(step)
    raise AssertionError(f"{what}: not reached in {deadline:.0f} s (last: {last!r})")


class Headers(dict):
    """Response headers, looked up without regard to case (HAProxy sends names in lower case)."""

    def __init__(self, items=()):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def __contains__(self, name):
        return super().__contains__(str(name).lower())

    def get(self, name, default=None):
        """The value of header `name`, or default."""
        return super().get(name.lower(), default)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Headers, str]:
    """GET url: (status, headers, body text); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, Headers(resp.headers.items()), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, Headers(err.headers.items()), err.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        return 0, Headers(), str(err)


def docker(*argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """Run a docker command; AssertionError with its output when it fails and check is set."""
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout)[-2000:]}")
    return done


class ComposeProject:
    """A compose project of the HA stack: its commands, containers, HAProxy view and Redis view."""

    def __init__(self, project: str, env: dict[str, str], env_file: str | None = None):
        self.project = project
        self.env = env
        self.env_file = env_file
        self.app_port = int(env.get("APP_PORT", "8000"))
        self.stats_port = int(env.get("HAPROXY_STATS_PORT", "8404"))

    # --- compose ------------------------------------------------------------------------------
    def argv(self, *args: str) -> list[str]:
        """The docker compose command line for this project."""
        extra = ["--env-file", self.env_file] if self.env_file else []
        return ["docker", "compose", "-f", str(COMPOSE_FILE), *extra, "-p", self.project, *args]

    def compose(self, *args: str, timeout: float = 120, check: bool = True, env=None) -> subprocess.CompletedProcess:
        """Run `docker compose ARGS`; AssertionError with the output when it fails and check is set."""
        done = subprocess.run(self.argv(*args), cwd=REPO, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} exited {done.returncode}\n"
                                 f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")
        return done

    def logs(self, service: str = "", tail: int = 80) -> str:
        """The last lines of a service's logs (all services when empty), for failure messages."""
        args = ["logs", "--no-color", "--tail", str(tail)] + ([service] if service else [])
        done = self.compose(*args, check=False, timeout=30)
        return done.stdout[-6000:] + done.stderr[-2000:]

    def up(self, wait_timeout: float = 150, env=None) -> None:
        """`up -d --wait` without building: every service running, the healthchecked ones healthy."""
        self.compose("up", "-d", "--no-build", "--wait", "--wait-timeout", str(int(wait_timeout)),
                     timeout=wait_timeout + 60, env=env)

    def down(self) -> None:
        """`down -v`: containers, networks and volumes of this project are gone."""
        self.compose("--profile", "baseline", "down", "-v", "--remove-orphans", "--timeout", "5",
                     timeout=180, check=False)

    def containers(self, service: str | None = None, all_states: bool = True) -> list[dict]:
        """`docker compose ps --format json` parsed: one dict per container (Name, ID, State, ...)."""
        args = ["ps", "--format", "json"] + (["-a"] if all_states else []) + ([service] if service else [])
        out = self.compose(*args).stdout.strip()
        if not out:
            return []
        if out.startswith("["):  # older compose prints one array
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def running(self, service: str) -> list[str]:
        """Names of the service's running containers."""
        return sorted(c["Name"] for c in self.containers(service) if c.get("State") == "running")

    def container_of(self, service: str) -> str:
        """The name of the service's first container (single-container services)."""
        names = sorted(c["Name"] for c in self.containers(service))
        if not names:
            raise AssertionError(f"no container for service {service}")
        return names[0]

    def inspect(self, container: str) -> dict:
        """`docker inspect` of one container."""
        return json.loads(docker("inspect", container).stdout)[0]

    def kill(self, container: str) -> None:
        """`docker kill`: SIGKILL, a manual stop (no restart policy brings it back)."""
        docker("kill", container)

    def start_services(self, *services: str) -> None:
        """`docker compose start`: bring stopped containers of these services back."""
        self.compose("start", *services)

    # --- HTTP through HAProxy -----------------------------------------------------------------
    @property
    def load_hosts(self) -> list[str]:
        """Where the load goes: HAProxy's published port."""
        return [f"http://127.0.0.1:{self.app_port}"]

    def get(self, path: str, timeout: float = 5.0, port: int | None = None) -> tuple[int, dict, str]:
        """GET a path on a published loopback port (HAProxy's by default)."""
        return http_get(f"http://127.0.0.1:{port or self.app_port}{path}", timeout)

    def haproxy_servers(self) -> dict[str, str]:
        """{server slot: status} of the app backend with an address (UP, DOWN, ...), from the stats CSV."""
        code, _, body = http_get(f"http://127.0.0.1:{self.stats_port}/;csv", timeout=3)
        if code != 200:
            return {}
        lines = body.lstrip("# ").splitlines()
        header = lines[0].split(",")
        servers = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "app" and row.get("svname") not in ("FRONTEND", "BACKEND"):
                if not row.get("status", "").startswith("MAINT"):
                    servers[row["svname"]] = row["status"]
        return servers

    def server_of(self, container: str) -> str | None:
        """The HAProxy slot (X-Server) that has this container's address, or None."""
        networks = self.inspect(container)["NetworkSettings"]["Networks"]
        addresses = {n["IPAddress"] for n in networks.values() if n.get("IPAddress")}
        code, _, body = http_get(f"http://127.0.0.1:{self.stats_port}/;csv", timeout=3)
        lines = body.lstrip("# ").splitlines() if code == 200 else []
        header = lines[0].split(",") if lines else []
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "app" and row.get("addr", "").rpartition(":")[0] in addresses:
                return row["svname"]
        return None

    def wait_servers_up(self, count: int, deadline: float = 60) -> dict[str, str]:
        """Wait until HAProxy has exactly `count` app servers UP and none in another state."""
        def ready():
            servers = self.haproxy_servers()
            return servers if list(servers.values()).count("UP") == count == len(servers) else None
        return wait_until(ready, deadline, f"{count} app servers UP in HAProxy")

    # --- Redis --------------------------------------------------------------------------------
    def redis_cli(self, container: str, *args: str, port: int = 6379, timeout: float = 20) -> str:
        """redis-cli ARGS inside a Redis or Sentinel container, authenticated; its stdout."""
        return docker("exec", container, "sh", "-c", _REDIS_CLI, "redis-cli", "-p", str(port), *args,
                      timeout=timeout).stdout

    def sentinel_view(self) -> tuple[str, list[dict]]:
        """(the primary's service, [replica fields]) as the first answering Sentinel sees them."""
        for service in SENTINELS:
            for container in self.running(service):
                try:
                    address = self.redis_cli(container, "SENTINEL", "get-master-addr-by-name", MASTER_NAME,
                                             port=26379, timeout=10).split()[0]
                    raw = self.redis_cli(container, "SENTINEL", "replicas", MASTER_NAME, port=26379, timeout=10)
                except (AssertionError, IndexError, subprocess.SubprocessError):
                    continue
                return self.node_at(address), _parse_replicas(raw)
        raise AssertionError("no Sentinel answers")

    def node_at(self, address: str) -> str:
        """The Redis node service whose running container has this address (the Sentinels name addresses)."""
        for service in REDIS_NODES:
            for container in self.running(service):
                networks = self.inspect(container)["NetworkSettings"]["Networks"]
                if address in {n.get("IPAddress") for n in networks.values()}:
                    return service
        return f"unknown ({address})"

    def primary_service(self) -> str:
        """The service (redis-primary or redis-replica) that is the primary now."""
        return self.sentinel_view()[0]

    def wait_replicated(self, deadline: float = 60) -> str:
        """Wait until the Sentinels know a healthy replica of the primary and it is in sync; the primary."""
        def healthy():
            primary, replicas = self.sentinel_view()
            good = [r for r in replicas if "s_down" not in r.get("flags", "") and "disconnected" not in r.get("flags", "")
                    and r.get("master-link-status") == "ok"]
            if not good:
                return None
            info = self.redis_cli(self.container_of(primary), "INFO", "replication")
            return primary if "connected_slaves:1" in info.replace("\r", "") else None
        return wait_until(healthy, deadline, "a Redis replica known to the Sentinels and in sync", step=0.5)

    def counter(self) -> int:
        """page_views on the current primary."""
        out = self.redis_cli(self.container_of(self.primary_service()), "GET", COUNTER_KEY).strip()
        return int(out) if out else 0


def _parse_replicas(raw: str) -> list[dict]:
    """SENTINEL replicas output (field, value lines; one block per replica) as dicts."""
    lines = [line.strip() for line in raw.splitlines()]
    replicas, current = [], {}
    for key, value in zip(lines[0::2], lines[1::2]):
        if key == "name" and current:
            replicas.append(current)
            current = {}
        current[key] = value
    if current:
        replicas.append(current)
    return replicas


def isolated_env(**overrides: str) -> dict[str, str]:
    """The environment for a project of our own: the inherited one minus the stack's knobs."""
    from loadtest.stack_knobs import KNOBS  # noqa: PLC0415 - one list, shared with the tests

    env = {k: v for k, v in os.environ.items() if k not in KNOBS}
    env.update(overrides)
    return env
