"""The control socket's home: a private directory, owner checks, and a client that checks who answers.

Another user is real here: `setpriv` runs the squatter as nobody (tests/support.as_nobody).
These tests need root to do that; where they cannot, they fail, never skip.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
import pytest

from support import PYTHON, ROOT, Master, as_nobody, children, wait_for

NOBODY = 65534
MASTER_CONTROL_SOCKET_ERROR = 7

# Run as nobody: make the directories asked for, serve a fake master at the path (it answers
# every request with {"ok": true}), and print one JSON line per connection with what it read.
SQUATTER = r"""
import json, os, socket, sys
path, make = sys.argv[1], sys.argv[2:]
for d in make:
    os.mkdir(d, 0o755)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o777)
srv.listen(8)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    conn.settimeout(2)
    try:
        data = conn.recv(65536)
    except OSError:
        data = b""
    print(json.dumps({"got": data.decode("latin-1")}), flush=True)
    try:
        conn.sendall(b'{"ok": true}\n')
    except OSError:
        pass
    conn.close()
"""



def _nobody(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    wrapped = as_nobody(argv)
    assert wrapped is not None, "these tests run a squatter as user nobody: they need root and /usr/bin/python3"
    return wrapped


@pytest.fixture
def shared_tmp():
    """A directory every user may write, like /tmp (mode 1777); pytest's own tmp_path is root's alone."""
    shared = Path(tempfile.mkdtemp(prefix="pycluster-shared-", dir="/tmp"))
    os.chmod(shared, 0o1777)
    yield shared
    shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def squatter():
    """Start the fake master as nobody at a path; every one is killed after the test."""
    started = []

    def start(path, *make_dirs):
        argv, env = _nobody([PYTHON, "-c", SQUATTER, str(path), *map(str, make_dirs)])
        proc = subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=5)


def _env(shared, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "CONTROL_SOCKET")}
    env.update(TMPDIR=str(shared), PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}", METRICS_BIND="none", **extra)
    return env


def _ctl(env, *args, port=None):
    if port is not None:
        env = dict(env, PORT=str(port))
    return subprocess.run([PYTHON, "-m", "master", "ctl", *args], capture_output=True, text=True, timeout=15,
                          cwd=ROOT, env=env)


def _refused(m: Master) -> str:
    """The master's log once it has exited, asserting it refused to start with no worker left."""
    code = m.wait_exit(timeout=20)
    log = m.log()
    assert code == MASTER_CONTROL_SOCKET_ERROR, log
    assert "Traceback" not in log and "not starting" in log, log
    assert children(m.pid) == [] and "Forking" not in log, log
    return log


def test_the_default_socket_is_in_a_private_directory_that_ctl_finds(shared_tmp, own):
    m = own("apps.hello:app", 1, env=_env(shared_tmp, CONTROL_SOCKET="")).start()
    try:
        m.socket_path = str(shared_tmp / f"pycluster-{os.getuid()}" / f"control-{m.port}.sock")
        m.wait_ready(1)
        directory = os.lstat(shared_tmp / f"pycluster-{os.getuid()}")
        assert stat.S_IMODE(directory.st_mode) == 0o700 and directory.st_uid == os.getuid()
        assert stat.S_IMODE(os.stat(m.socket_path).st_mode) == 0o600
        assert f"Control socket at {m.socket_path}" in m.log()
        out = _ctl(_env(shared_tmp), "status", "--json", port=m.port)  # no --socket: the same default
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["master"]["pid"] == m.pid
    finally:
        m.kill_all()


def test_xdg_runtime_dir_is_used_when_it_is_ours(tmp_path, shared_tmp, own):
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = _env(shared_tmp, CONTROL_SOCKET="", XDG_RUNTIME_DIR=str(runtime))
    m = own("apps.hello:app", 1, env=env).start()
    try:
        m.socket_path = str(runtime / "pycluster" / f"control-{m.port}.sock")
        m.wait_ready(1)
        assert not (shared_tmp / f"pycluster-{os.getuid()}").exists()
        assert _ctl(env, "status", port=m.port).returncode == 0
    finally:
        m.kill_all()


def test_a_squatted_default_directory_makes_the_master_refuse_and_names_the_path(shared_tmp, squatter, own):
    port_dir = shared_tmp / f"pycluster-{os.getuid()}"
    m = own("apps.hello:app", 1, env=_env(shared_tmp, CONTROL_SOCKET=""))
    fake = squatter(port_dir / f"control-{m.port}.sock", port_dir)  # nobody got there first
    log = _refused(m.start())
    assert f"the control socket directory {port_dir} belongs to uid {NOBODY} (nobody)" in log
    # ...and ctl, which looks in the same place, refuses the squatter before sending anything.
    out = _ctl(_env(shared_tmp), "stop", port=m.port)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"uid {NOBODY} (nobody), not by root" in out.stderr, out.stderr
    fake.kill()
    assert [line for line in fake.stdout.read().splitlines() if '"got": ""' not in line] == []


def test_the_client_refuses_a_server_of_another_user_before_sending_a_byte(shared_tmp, squatter):
    path = shared_tmp / "fake.sock"
    fake = squatter(path)
    out = _ctl(os.environ, "--socket", str(path), "stop")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"refusing to talk to {path}" in out.stderr and f"uid {NOBODY} (nobody)" in out.stderr, out.stderr
    fake.kill()
    assert json.loads(fake.stdout.readline()) == {"got": ""}  # it connected, then left without a request


@pytest.mark.parametrize("what", ["socket of nobody", "plain file", "world-writable directory"])
def test_a_given_path_that_is_not_safely_ours_is_refused(tmp_path, shared_tmp, what, own):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    path = (shared_tmp if what == "world-writable directory" else private) / "control.sock"
    if what == "socket of nobody":
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(str(path))
        os.chown(path, NOBODY, NOBODY)
        expected = f"the control socket {path} belongs to uid {NOBODY} (nobody)"
    elif what == "plain file":
        path.write_text("not a socket")
        expected = f"{path} exists and is not a socket"
    else:
        expected = f"the control socket directory {shared_tmp} is writable by other users (mode 1777)"
    m = own("apps.hello:app", 1, env={"CONTROL_SOCKET": str(path)}).start()
    assert expected in _refused(m)
    assert path.exists() or what == "world-writable directory"  # nothing of someone else's was removed


def test_a_stale_socket_of_ours_is_replaced_and_a_live_one_is_not(own):
    first = own("apps.hello:app", 1).start().wait_ready(1)
    second = own("apps.hello:app", 1, env={"CONTROL_SOCKET": first.socket_path}).start()
    log = _refused(second)
    assert f"the control socket {first.socket_path} is in use by another master (pid {first.pid})" in log
    first.kill_all()  # SIGKILL: the socket file stays behind, with nobody listening
    assert os.path.exists(first.socket_path)
    third = own("apps.hello:app", 1, env={"CONTROL_SOCKET": first.socket_path}).start()
    try:
        third.socket_path = first.socket_path
        third.wait_ready(1)
        assert third.status()["master"]["pid"] == third.pid
    finally:
        third.kill_all()


def test_a_master_run_by_another_user_refuses_cleanly_where_it_cannot_create_its_directory(tmp_path, shared_tmp):
    # The old default was a file in /tmp: a non-root master that found root's file there died on
    # an uncaught PermissionError. Its private directory, taken by root here, is refused by name.
    taken = shared_tmp / f"pycluster-{NOBODY}"
    taken.write_text("root's")
    argv, env = _nobody([PYTHON, "-m", "master", "apps.hello:app", "--bind", "127.0.0.1:0", "--workers", "1"])
    env = {k: v for k, v in env.items() if k not in ("XDG_RUNTIME_DIR", "CONTROL_SOCKET")}
    env.update(TMPDIR=str(shared_tmp), METRICS_BIND="none", PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{env['PYTHONPATH']}")
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", timeout=30)
    assert out.returncode == MASTER_CONTROL_SOCKET_ERROR, out.stderr
    assert "Traceback" not in out.stderr and "PermissionError" not in out.stderr
    assert f"the control socket directory {taken} is not a directory (it belongs to uid 0 (root))" in out.stderr


def test_control_socket_none_runs_without_one(own):
    m = own("apps.hello:app", 1, env={"CONTROL_SOCKET": "none"}).start()
    try:
        wait_for(lambda: "Control socket disabled" in m.log() and m.proc.poll() is None, timeout=20)
        wait_for(lambda: len(m.workers()) == 1, timeout=20, what="one worker")
        assert not os.path.exists(m.socket_path)
    finally:
        m.kill_all()

