"""Flask with clustering: the seed's "Express with clustering" example, in Python.

Two ways to run it:
    python examples/flask_cluster.py                          # the cluster API, as the seed does
    python -m master examples.flask_cluster:app --bind :3000  # the production master

Node original:
    if (cluster.isPrimary) { for (let i = 0; i < numCPUs; i++) cluster.fork(); }
    else {
      const app = express();
      app.get('/', (req, res) => res.send(`Hello from worker ${process.pid}`));
      app.get('/health', (req, res) => res.json({ status: 'ok', pid: process.pid }));
      app.listen(3000);
    }
"""
import os
import time

from flask import Flask

STARTED = time.monotonic()
app = Flask(__name__)


@app.get("/")
def hello():
    """Say which worker answered."""
    return f"Hello from worker {os.getpid()}", 200, {"X-Worker-Pid": str(os.getpid())}


@app.get("/health")
def health():
    """Liveness, with the pid and uptime."""
    return {"status": "ok", "pid": os.getpid(), "uptime": round(time.monotonic() - STARTED, 1)}


if __name__ == "__main__":
    from master import cluster

    if cluster.is_primary:
        workers = int(os.environ.get("WORKERS", os.cpu_count() or 1))
        print(f"Primary {os.getpid()} is running; forking {workers} workers", flush=True)
        for _ in range(workers):
            cluster.fork()
        cluster.on("exit", lambda worker, code, signal: print(f"Worker {worker.process.pid} died", flush=True))
        cluster.run()
    else:
        cluster.serve(app, bind=f"0.0.0.0:{os.environ.get('PORT', '3000')}")
