"""Production-ready cluster: restart on exit, online/disconnect logs, SIGTERM shutdown.

    python examples/production_ready.py          # then: kill -9 <a worker pid>; kill -TERM <primary>

Node original (abridged):
    cluster.on('online', w => console.log(`Worker ${w.process.pid} is online`));
    cluster.on('exit', (w, code, signal) => {
      console.log(`Worker ${w.process.pid} died with code: ${code}, and signal: ${signal}`);
      if (!w.exitedAfterDisconnect) { console.log('Starting a new worker'); cluster.fork(); }
    });
    process.on('SIGTERM', () => { for (const id in cluster.workers) cluster.workers[id].disconnect(); });
"""
import os

from master import cluster

PORT = int(os.environ.get("PORT", "3000"))
NUM_WORKERS = int(os.environ.get("WORKERS", os.cpu_count() or 1))
SHUTDOWN_TIMEOUT = float(os.environ.get("SHUTDOWN_TIMEOUT", "10"))


def app(environ, start_response):
    """Hello, with the pid that answered."""
    body = f"Hello from worker {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))])
    return [body]


def shutdown(signame):
    """Disconnect every worker; kill whatever has not left after the timeout."""
    print(f"{signame} received: shutting down gracefully", flush=True)
    for worker in list(cluster.workers.values()):
        worker.disconnect()

    def force():
        for worker in list(cluster.workers.values()):
            print(f"Worker {worker.process.pid} did not exit in time: killing it", flush=True)
            worker.kill("SIGKILL")
    cluster.call_later(SHUTDOWN_TIMEOUT, force)


if cluster.is_primary:
    print(f"Primary {os.getpid()} is running", flush=True)
    cluster.on("online", lambda w: print(f"Worker {w.process.pid} is online", flush=True))
    cluster.on("disconnect", lambda w: print(f"Worker {w.process.pid} disconnected", flush=True))

    @cluster.on("exit")
    def restart(worker, code, signal):
        """Replace a worker that crashed; not one we asked to leave."""
        print(f"Worker {worker.process.pid} died with code: {code}, and signal: {signal}", flush=True)
        if not worker.exited_after_disconnect:
            print("Starting a new worker", flush=True)
            cluster.fork()

    cluster.on_signal("SIGTERM", shutdown)
    cluster.on_signal("SIGINT", shutdown)
    for _ in range(NUM_WORKERS):
        cluster.fork()
    cluster.run()
    print("All workers exited; primary exiting", flush=True)
else:
    cluster.serve(app, bind=f"0.0.0.0:{PORT}")
