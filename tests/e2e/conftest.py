"""The compose stack under the real Docker engine: one build and one project per test session.

Every test here takes the `stack` fixture, which
- skips when no Docker engine with the Compose v2 plugin answers, or FAILS when REQUIRE_DOCKER=1;
- builds the images once (tagged `pycluster-*:e2e`, so a later session reuses the layer cache);
- brings the default stack (redis, app, locust, locust-worker) up under a project name of its own,
  publishing on free loopback ports, and waits for health with a deadline;
- always tears it down with `down -v` (containers, network, the Redis volume).
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

# Knobs of docker-compose.yml (see .env.example): stripped from the inherited environment so a
# developer's shell cannot change what the tests run against.
COMPOSE_KNOBS = (
    "PYTHON_IMAGE", "REDIS_IMAGE", "IMAGE_PREFIX", "IMAGE_TAG", "PUBLISH_ADDR", "APP_PORT",
    "LOCUST_WEB_PORT", "BASELINE_PORT", "APP_MODULE", "REDIS_URL", "REDIS_APPENDFSYNC",
    "GRACEFUL_TIMEOUT", "STOP_GRACE_PERIOD", "WORKERS", "CLUSTER_SCHED_POLICY", "WORKER_TIMEOUT",
    "MAX_REQUESTS", "MAX_REQUESTS_JITTER", "MAX_MEMORY", "ACCESS_LOG", "RETRY_IDEMPOTENT", "BATCH_SCHEDULING", "METRICS_BIND", "LOG_FORMAT", "LOCUSTFILE", "TARGET_HOST", "LOCUST_USERS", "LOCUST_SPAWN_RATE",
    "LOCUST_RUN_TIME", "LOCUST_AUTOSTART", "LOCUST_USER_CLASSES", "LOCUST_MAX_FAIL_RATIO",
    "LOCUST_MAX_P95_MS", "LOAD_WAIT_MAX", "STEP_USERS", "STEP_SECONDS", "STEP_COUNT",
    "STEP_SPAWN_RATE", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES",
)

BUILD_TIMEOUT = 600
UP_TIMEOUT = 150

# Runs inside the app container (no ps/pgrep in the slim image): the master and its workers.
PROCS_SCRIPT = r"""
import json, os
procs = {}
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        argv = open("/proc/%s/cmdline" % entry, "rb").read().split(b"\0")
        state = open("/proc/%s/stat" % entry, "rb").read().rsplit(b")", 1)[1].split()[0]
        ppid = int(open("/proc/%s/stat" % entry, "rb").read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        continue
    if state == b"Z":
        continue
    argv = [a.decode() for a in argv if a]
    procs[int(entry)] = (ppid, argv)
def is_master(argv):
    return "-m" in argv and "master" in argv and "ctl" not in argv
masters = [pid for pid, (_, argv) in procs.items() if is_master(argv)]
# Workers retitle themselves `pycluster: worker N (...)` (the fork template is `pycluster: fork template`).
workers = [pid for pid, (ppid, argv) in procs.items() if " ".join(argv).startswith("pycluster: worker") and ppid in masters]
def cpu_ticks(pid):
    fields = open("/proc/%s/stat" % pid, "rb").read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
print(json.dumps({"master": masters[0] if masters else None, "workers": sorted(workers),
                  "cpus": len(os.sched_getaffinity(0)),
                  "worker_cpu_ticks": sum(cpu_ticks(pid) for pid in workers)}))
"""


def docker_problem():
    """Return why the engine cannot be used, or None when docker and docker compose answer."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    for argv in (["docker", "info", "--format", "{{.ServerVersion}}"], ["docker", "compose", "version"]):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv)}: {exc}"
        if done.returncode != 0:
            return f"{' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()[:300]}"
    return None


def free_port():
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """One compose project: run compose commands, reach published ports, look inside the app."""

    def __init__(self, project, env, env_file):
        self.project = project
        self.env = env
        self.env_file = env_file
        self.app_port = int(env["APP_PORT"])
        self.locust_port = int(env["LOCUST_WEB_PORT"])
        self.baseline_port = int(env["BASELINE_PORT"])

    # --- compose ------------------------------------------------------------------------------
    def argv(self, *args):
        """The docker compose command line for this project."""
        return ["docker", "compose", "-f", str(COMPOSE_FILE), "--env-file", self.env_file,
                "-p", self.project, *args]

    def compose(self, *args, timeout=120, check=True, env=None):
        """Run `docker compose ARGS` and return the CompletedProcess (text)."""
        done = subprocess.run(self.argv(*args), cwd=ROOT, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {done.returncode}\n"
                f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")
        return done

    def popen(self, *args, env=None):
        """Start `docker compose ARGS` in the background; stdout and stderr are pipes."""
        return subprocess.Popen(self.argv(*args), cwd=ROOT, env={**self.env, **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def logs(self, service="", tail=80):
        """The last lines of a service's logs (all services when empty), for failure messages."""
        args = ["logs", "--no-color", "--tail", str(tail)] + ([service] if service else [])
        done = self.compose(*args, check=False, timeout=30)
        return done.stdout[-6000:] + done.stderr[-2000:]

    def containers(self, service=None):
        """`docker compose ps -a --format json` parsed: one dict per container."""
        args = ["ps", "-a", "--format", "json"] + ([service] if service else [])
        out = self.compose(*args).stdout.strip()
        if not out:
            return []
        if out.startswith("["):  # older compose prints one array
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def container_id(self, service):
        """The id of the service's (first) container."""
        return self.compose("ps", "-a", "-q", service).stdout.split()[0]

    def inspect(self, service):
        """`docker inspect` of the service's container."""
        cid = self.container_id(service)
        done = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, timeout=30, check=True)
        return json.loads(done.stdout)[0]

    def health(self, service):
        """The container's health status ('healthy', 'starting', ...), or its state without one."""
        state = self.inspect(service)["State"]
        return state.get("Health", {}).get("Status") or state["Status"]

    def wait_health(self, service, want="healthy", deadline_s=60.0):
        """Poll until the service's container reports `want`; fail with its logs at the deadline."""
        deadline = time.monotonic() + deadline_s
        status = None
        while time.monotonic() < deadline:
            status = self.health(service)
            if status == want:
                return
            time.sleep(0.5)
        raise AssertionError(f"{service} is {status!r}, not {want!r}, after {deadline_s:.0f} s\n"
                             + self.logs(service))

    def exec_app(self, *argv, timeout=60, check=True, user=None):
        """Run a command inside the app container (as the image's user unless told)."""
        args = ["exec", "-T"] + (["--user", user] if user else []) + ["app", *argv]
        return self.compose(*args, timeout=timeout, check=check)

    def processes(self):
        """{'master': pid, 'workers': [pids], 'cpus': n} as seen inside the app container."""
        return json.loads(self.exec_app("python", "-c", PROCS_SCRIPT).stdout)

    def wait_workers(self, predicate, deadline_s=20.0, what="workers"):
        """Poll the app's processes until predicate(procs) holds; return them."""
        deadline = time.monotonic() + deadline_s
        procs = None
        while time.monotonic() < deadline:
            try:
                procs = self.processes()
            except AssertionError:  # the container may be between lives
                procs = None
            if procs is not None and predicate(procs):
                return procs
            time.sleep(0.2)
        raise AssertionError(f"{what}: not reached in {deadline_s:.0f} s; last seen {procs}\n" + self.logs("app"))

    # --- HTTP from the host, loopback only ----------------------------------------------------
    def url(self, path, port=None):
        """http://127.0.0.1:<published port><path>."""
        return f"http://127.0.0.1:{port or self.app_port}{path}"

    def get(self, path, timeout=5.0, port=None):
        """GET a path on the published app port: (status, headers, body text); status 0 when unreachable."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url(path, port), timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as err:
            return 0, {}, str(err)

    def wait_http(self, path, want=200, deadline_s=30.0, port=None):
        """Poll GET path until it answers `want`; return (status, headers, body)."""
        deadline = time.monotonic() + deadline_s
        last = None
        while time.monotonic() < deadline:
            last = self.get(path, timeout=3.0, port=port)
            if last[0] == want:
                return last
            time.sleep(0.2)
        raise AssertionError(f"GET {path}: wanted {want}, last {last} after {deadline_s:.0f} s\n" + self.logs())

    # --- Locust -------------------------------------------------------------------------------
    def locust_argv(self, seconds, users, extra=()):
        """`docker compose run` arguments for a bounded headless Locust in the loadtest image."""
        return ["run", "--rm", "--no-deps", "-T", "locust",
                "-f", "loadtest/locustfile.py", "--host", "http://app:8000",
                "--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
                "--stop-timeout", "5", "--only-summary", "--json", *extra]

    def headless_locust(self, seconds=8, users=10, extra=(), env=None):
        """Run a bounded headless Locust to completion: (exit code, stats list, stderr)."""
        done = self.compose(*self.locust_argv(seconds, users, extra), check=False,
                            timeout=seconds + 90, env=env)
        return done.returncode, parse_locust_json(done.stdout), done.stderr

    @staticmethod
    def totals(stats):
        """(requests, failures) summed over a Locust --json stats list."""
        return totals(stats)

    def background_locust(self, seconds=15, users=10, extra=(), env=None):
        """Start a headless Locust; return a BackgroundLocust to wait on."""
        return BackgroundLocust(self.popen(*self.locust_argv(seconds, users, extra), env=env), seconds)


def parse_locust_json(stdout):
    """The stats list Locust's --json prints last, or [] when there is none."""
    # The summary table on stdout has names like "/session/[id]": start at the last line that
    # opens a JSON array (json.dumps with indent puts "[" alone on its line).
    lines = stdout.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].strip() in ("[", "[]"):
            try:
                return json.loads("\n".join(lines[index:]))
            except ValueError:
                return []
    return []


def totals(stats):
    """(requests, failures) summed over a Locust --json stats list."""
    return (sum(s.get("num_requests", 0) for s in stats), sum(s.get("num_failures", 0) for s in stats))


class BackgroundLocust:
    """A headless Locust running in its own container while a test does something to the stack."""

    def __init__(self, proc, seconds):
        self.proc = proc
        self.seconds = seconds
        self.stderr_lines = []
        self.stdout = ""
        self.spawned = threading.Event()
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err.start()
        self._out.start()

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if "All users spawned" in line:
                self.spawned.set()

    def _read_stdout(self):
        self.stdout = self.proc.stdout.read()

    def wait_spawned(self, deadline_s=60.0):
        """Block until Locust reports every user spawned (load is on)."""
        if not self.spawned.wait(deadline_s):
            self.proc.kill()
            raise AssertionError("Locust did not spawn its users in time:\n" + "".join(self.stderr_lines[-40:]))

    def result(self):
        """Wait for the run to end: (exit code, stats list, stderr text)."""
        try:
            code = self.proc.wait(timeout=self.seconds + 90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=30)
        self._out.join(timeout=10)
        self._err.join(timeout=10)
        return code, parse_locust_json(self.stdout), "".join(self.stderr_lines)


def _fail_or_skip(reason):
    if os.environ.get("REQUIRE_DOCKER") == "1":
        pytest.fail(f"REQUIRE_DOCKER=1 but no Docker engine answers: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def docker_engine():
    """Skip (or fail under REQUIRE_DOCKER=1) when docker / docker compose do not answer."""
    problem = docker_problem()
    if problem:
        _fail_or_skip(problem)
    return True


@pytest.fixture(scope="session")
def stack_env(docker_engine):
    """The environment every compose command of this session runs with."""
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_KNOBS}
    env.update(
        IMAGE_TAG=os.environ.get("E2E_IMAGE_TAG", "e2e"),
        PUBLISH_ADDR="127.0.0.1",
        APP_PORT=str(free_port()),
        LOCUST_WEB_PORT=str(free_port()),
        BASELINE_PORT=str(free_port()),
        GRACEFUL_TIMEOUT="10",
        STOP_GRACE_PERIOD="20s",
    )
    return env


@pytest.fixture(scope="session")
def built_images(stack_env, tmp_path_factory):
    """Build the app and loadtest images once per session; return the build time in seconds."""
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("")
    probe = Stack("pycluster-e2e-build", stack_env, str(env_file))
    started = time.monotonic()
    # locust-worker shares the locust image: building `locust` builds it for both.
    probe.compose("--profile", "baseline", "build", "app", "locust", "baseline", timeout=BUILD_TIMEOUT)
    return time.monotonic() - started


@pytest.fixture(scope="session")
def stack(built_images, stack_env, tmp_path_factory):
    """The default stack, up and healthy, under a project of its own; `down -v` at the end."""
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("")
    project = f"pycluster-e2e-{os.getpid()}-{secrets.token_hex(3)}"
    stack = Stack(project, stack_env, str(env_file))
    stack.build_seconds = built_images
    try:
        # --no-build: the images were built above; a fresh build here would only duplicate it.
        done = stack.compose("up", "-d", "--no-build", "--wait", "--wait-timeout", str(UP_TIMEOUT),
                             timeout=UP_TIMEOUT + 60, check=False)
        if done.returncode != 0:
            raise AssertionError(f"docker compose up failed ({done.returncode}):\n{done.stderr[-3000:]}\n"
                                 + stack.logs())
        stack.wait_http("/health", 200, deadline_s=60)
        yield stack
    finally:
        stack.compose("--profile", "baseline", "down", "-v", "--remove-orphans", "--timeout", "5",
                      timeout=120, check=False)
