"""Basic cluster: the seed's first example, in Python.

    python examples/basic_cluster.py      # then: curl http://localhost:3000/

Node original:
    if (cluster.isPrimary) {
      console.log(`Primary ${process.pid} is running`);
      for (let i = 0; i < numCPUs; i++) cluster.fork();
      cluster.on('exit', (worker, code, signal) => console.log(`worker ${worker.process.pid} died`));
    } else {
      http.createServer((req, res) => { res.writeHead(200); res.end('hello world\\n'); }).listen(8000);
      console.log(`Worker ${process.pid} started`);
    }
"""
import os

from master import cluster

PORT = int(os.environ.get("PORT", "3000"))
NUM_WORKERS = int(os.environ.get("WORKERS", os.cpu_count() or 1))


def hello(environ, start_response):
    """Answer every request with the worker's pid."""
    body = f"Hello from worker {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Worker-Pid", str(os.getpid()))])
    return [body]


if cluster.is_primary:
    print(f"Primary {os.getpid()} is running", flush=True)
    for _ in range(NUM_WORKERS):
        cluster.fork()
    cluster.on("exit", lambda worker, code, signal: print(f"worker {worker.process.pid} died", flush=True))
    cluster.run()
else:
    print(f"Worker {os.getpid()} started", flush=True)
    cluster.serve(hello, bind=f"0.0.0.0:{PORT}")
