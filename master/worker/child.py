"""`python -m master.worker.child`: the worker process (Node's child_process.fork target).

Order matters here: gevent patches before anything else is imported, the worker ties its
life to the primary's (PR_SET_PDEATHSIG, plus IPC EOF), then it runs the user's program
or serves the app named by the supervisor.
"""
from gevent import monkey

monkey.patch_all()

# isort: split
import ctypes  # noqa: E402
import faulthandler  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

from setproctitle import setproctitle  # noqa: E402

from master.core import cpu_class  # noqa: E402
from master.core.exitcodes import WORKER_APP_LOAD_ERROR, WORKER_LISTEN_ERROR  # noqa: E402
from master.core.net import ListenError  # noqa: E402
from master.core.settings import WorkerSettings  # noqa: E402
from master.worker.app_loader import AppLoadError, AppSpecError, load_app  # noqa: E402

PR_SET_PDEATHSIG = 1
TITLE = "pycluster: worker"  # what ps shows for every worker, forked from the template or not


def set_title(env=None) -> None:
    """`pycluster: worker 3 (app.wsgi:app)` in ps, instead of the interpreter's command line."""
    env = os.environ if env is None else env
    what = env.get("PYCLUSTER_APP") or os.path.basename(env.get("PYCLUSTER_EXEC", ""))
    setproctitle(f"{TITLE} {env.get('PYCLUSTER_WORKER_ID', '?')} ({what})")


def die_with_primary() -> None:
    """Ask the kernel to SIGKILL us when the primary dies; leave now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the IPC EOF still ends us
    master_pid = int(os.environ.get("PYCLUSTER_MASTER_PID", "0"))
    # Compare with the primary's real pid, never with 1: in a container it may BE pid 1.
    if master_pid and os.getppid() != master_pid:
        os._exit(1)


def boot_failed(reason: str) -> None:
    """Tell the primary why this worker cannot start (it logs one line), then exit 4."""
    from master import cluster

    if cluster.worker is None or not cluster.worker.notify("bootError", error=reason):
        print(f"[worker {os.environ.get('PYCLUSTER_WORKER_ID')}] {reason}", file=sys.stderr, flush=True)
    raise SystemExit(WORKER_APP_LOAD_ERROR)


def run_app(spec: str, bind: str) -> int:
    """Serve the supervisor's app until disconnected."""
    sys.path.insert(0, os.getcwd())
    try:
        app = load_app(spec)
    except (AppLoadError, AppSpecError) as exc:
        boot_failed(str(exc))
    return serve_app(app, bind)


def serve_app(app, bind: str) -> int:
    """Serve an app already loaded until disconnected; the exit status."""
    from master import cluster

    try:
        cluster.serve(app, bind=bind, access_log=WorkerSettings.from_env().access_log)
    except ListenError as exc:
        print(f"[worker {cluster.worker.id}] {exc.strerror}", file=sys.stderr, flush=True)
        return WORKER_LISTEN_ERROR
    return 0


def serve_loaded(app, bind: str) -> int:
    """A worker forked from the template (master/worker/template.py): serve `app`, flush, the exit status."""
    try:
        code = serve_app(app, bind)
    except BaseException:  # noqa: BLE001 - as run(): show why, exit 1
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def run_script(path: str, args: list[str]) -> int:
    """Re-run the user's program as __main__, as Node re-runs the script in a worker."""
    from master import cluster

    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(path))
    runpy.run_path(path, run_name="__main__")
    runtime = cluster.worker
    # Like Node, a worker with message listeners stays up until it is disconnected.
    if runtime.servers or runtime.listener_count("message"):
        runtime.wait()
    return 0


def run() -> int:
    """Run what the primary asked for; the exit status."""
    try:
        if os.environ.get("PYCLUSTER_APP"):
            return run_app(os.environ["PYCLUSTER_APP"], os.environ.get("PYCLUSTER_BIND", "0.0.0.0:8000"))
        return run_script(os.environ["PYCLUSTER_EXEC"], json.loads(os.environ.get("PYCLUSTER_ARGS", "[]")))
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the user's program crashed: show why, exit 1
        traceback.print_exc()
        return 1


def bootstrap() -> None:
    """What every worker does first: tie its life to the primary's, set up signals, start its runtime."""
    set_title()
    die_with_primary()
    cpu_class.restore_in_child()  # before any thread starts: threads inherit it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the primary decides what Ctrl-C means
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the watchdog's stack dump
    from master import cluster
    from master.worker.runtime import WorkerRuntime

    runtime = WorkerRuntime.from_environment()
    cluster._attach_worker(runtime)
    runtime.start()


def main() -> None:
    """Bootstrap one worker and exit with its status."""
    bootstrap()
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
