"""`python -m master.worker.template`: a process that has imported the app, and forks workers from it.

A fresh interpreter takes a second or more to import gevent, Flask and the app, longer on a
busy machine; a worker forked from a process that already has them is serving in milliseconds.
The template is started like a worker (gevent patched before anything else, its life tied to
the primary's), imports the app once, says it is ready, and then only forks: each request
from the primary carries the new worker's environment and, as descriptors, its IPC channel and
load board. The template never starts gevent's hub, opens no socket of the app's and serves
nothing, so a fork copies no state a worker would have to undo. The supervisor makes a new
template for every rolling restart, so new code still loads.

Each worker is forked twice (template -> intermediate -> worker) and the intermediate exits at
once: the worker is reparented to the primary, which is a child subreaper, so the primary
reaps it and sees its exit status as for any worker it started itself.

Wire (a SOCK_SEQPACKET pair, one JSON record each way): the template says {"ready": true} or
{"error": why} (then exits 4); the primary asks {"seq": n, "env": {...}} with two descriptors;
the intermediate answers {"seq": n, "pid": worker pid} (or {"seq": n, "error": why}).
"""
from gevent import monkey

monkey.patch_all()

# isort: split
import _socket  # noqa: E402
import array  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from setproctitle import setproctitle  # noqa: E402

from master.core import cpu_class  # noqa: E402
from master.core.exitcodes import WORKER_APP_LOAD_ERROR  # noqa: E402
from master.worker import child  # noqa: E402
from master.worker.app_loader import AppLoadError, AppSpecError, load_app  # noqa: E402

ENV = "PYCLUSTER_TEMPLATE_FD"
TITLE = "pycluster: fork template"  # what ps shows; tools tell the template from workers by it
MAX_RECORD = 256 * 1024
# The plain calls, not gevent's: the template never starts a hub, so a fork carries none over.
_fork = monkey.get_original("os", "fork")
_waitpid = monkey.get_original("os", "waitpid")
_ANCILLARY = socket.CMSG_SPACE(2 * array.array("i").itemsize)


def _say(sock, **message) -> None:
    sock.send(json.dumps(message).encode())


def _requests(sock):
    """Fork requests from the primary: (seq, env, [channel fd, board fd]); ends when it goes away."""
    while True:
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(MAX_RECORD, _ANCILLARY)
        except InterruptedError:
            continue
        if not data:
            return
        fds = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
        request = json.loads(data)
        yield request["seq"], request["env"], fds


def _become_worker(app, sock, env: dict[str, str], fds: list[int]) -> None:
    """In the forked worker: wait to be the primary's child, take its environment, serve."""
    child.set_title(env)  # first: by the time the primary adopts us, we no longer look like the template
    sock.close()
    master_pid = int(env.get("PYCLUSTER_MASTER_PID", "0"))
    deadline = time.monotonic() + 2.0
    while os.getppid() != master_pid and time.monotonic() < deadline:
        time.sleep(0.0005)  # the intermediate is exiting; then the subreaper primary adopts us
    env = dict(env, PYCLUSTER_CHANNEL_FD=str(fds[0]), PYCLUSTER_BOARD_FD=str(fds[1]))
    os.environ.clear()
    os.environ.update(env)
    child.bootstrap()  # PR_SET_PDEATHSIG (now on the primary), signals, faulthandler, the runtime
    os._exit(child.serve_loaded(app, env.get("PYCLUSTER_BIND", "0.0.0.0:8000")))


def _fork_worker(app, sock, seq: int, env: dict[str, str], fds: list[int]) -> None:
    if _fork() == 0:  # the intermediate: fork the worker, report its pid, leave
        try:
            pid = _fork()
            if pid == 0:
                _become_worker(app, sock, env, fds)
            _say(sock, seq=seq, pid=pid)
        except BaseException as exc:  # noqa: BLE001 - whatever happens, the primary hears of it
            try:
                _say(sock, seq=seq, error=f"{type(exc).__name__}: {exc}")
            except OSError:
                pass
        finally:
            os._exit(0)
    for fd in fds:
        os.close(fd)
    try:
        _waitpid(-1, 0)  # the intermediate, which exits at once
    except ChildProcessError:
        pass


def main() -> None:
    """Import the app, say so, then fork workers on request until the primary goes away."""
    child.die_with_primary()
    cpu_class.restore_in_child()  # workers forked from here inherit the class we go back to
    sock = _socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, int(os.environ.pop(ENV)))
    setproctitle(f"{TITLE} ({os.environ.get('PYCLUSTER_APP', '')})")
    sys.path.insert(0, os.getcwd())
    try:
        app = load_app(os.environ["PYCLUSTER_APP"])
    except (AppLoadError, AppSpecError) as exc:
        _say(sock, error=str(exc))
        os._exit(WORKER_APP_LOAD_ERROR)
    _say(sock, ready=True)
    for seq, env, fds in _requests(sock):
        _fork_worker(app, sock, seq, env, fds)
    os._exit(0)


if __name__ == "__main__":
    main()
