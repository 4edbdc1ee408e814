"""Zero-downtime restart on SIGUSR2, one worker at a time, using exited_after_disconnect.

    python examples/zero_downtime_restart.py     # then: kill -USR2 <primary pid>

For each old worker: fork a replacement, wait until it is listening, then disconnect the
old one (it finishes its requests), and move to the next once it has exited.
"""
import os

from master import cluster

PORT = int(os.environ.get("PORT", "3000"))
NUM_WORKERS = int(os.environ.get("WORKERS", os.cpu_count() or 1))


def app(environ, start_response):
    """Hello, with the pid that answered."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))])
    return [f"Hello from worker {os.getpid()}\n".encode()]


if cluster.is_primary:
    print(f"Primary {os.getpid()} is running; send SIGUSR2 to restart the workers", flush=True)
    restarting = {"queue": []}

    @cluster.on("exit")
    def on_exit(worker, code, signal):
        """A crash is replaced; a worker we disconnected on purpose is not."""
        if not worker.exited_after_disconnect:
            print(f"Worker {worker.process.pid} crashed ({code or signal}); starting a new one", flush=True)
            cluster.fork()

    def restart_next():
        """Replace the next old worker, or finish."""
        if not restarting["queue"]:
            print("Rolling restart complete", flush=True)
            return
        old = restarting["queue"].pop(0)
        new = cluster.fork()

        def on_listening(address):
            print(f"Worker {new.process.pid} is listening; disconnecting {old.process.pid}", flush=True)
            old.once("exit", lambda code, signal: restart_next())
            old.disconnect()
        new.once("listening", on_listening)

    def on_sigusr2(signame):
        """Start a rolling restart unless one is running."""
        if restarting["queue"]:
            return
        restarting["queue"] = [w for w in cluster.workers.values() if w.is_connected()]
        print(f"{signame}: restarting {len(restarting['queue'])} workers one at a time", flush=True)
        restart_next()

    cluster.on_signal("SIGUSR2", on_sigusr2)
    for _ in range(NUM_WORKERS):
        cluster.fork()
    cluster.run()
else:
    cluster.serve(app, bind=f"0.0.0.0:{PORT}")
