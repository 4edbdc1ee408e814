"""Worker communication: messages both ways, broadcast, REQUEST_COUNT / GET_COUNT.

    python examples/worker_communication.py      # curl :3000/ a few times, then :3000/count

Each worker counts its own requests and tells the primary; the primary keeps the total and
answers GET_COUNT, so any worker can show the cluster-wide count.
Node original (abridged):
    worker.on('message', msg => { if (msg.cmd === 'REQUEST_COUNT') total++; ...
      if (msg.cmd === 'GET_COUNT') worker.send({ cmd: 'COUNT', count: total }); });
    process.send({ cmd: 'REQUEST_COUNT' });
"""
import json
import os
import threading

from master import cluster

PORT = int(os.environ.get("PORT", "3000"))
NUM_WORKERS = int(os.environ.get("WORKERS", os.cpu_count() or 1))

if cluster.is_primary:
    total = {"count": 0}

    def on_message(worker, msg):
        """The primary's side of the protocol."""
        if msg.get("cmd") == "REQUEST_COUNT":
            total["count"] += 1
        elif msg.get("cmd") == "GET_COUNT":
            worker.send({"cmd": "COUNT", "count": total["count"], "request_id": msg.get("request_id")})

    cluster.on("message", on_message)
    cluster.on("online", lambda w: w.send({"cmd": "WELCOME", "id": w.id}))
    for _ in range(NUM_WORKERS):
        cluster.fork()
    cluster.call_every(5.0, lambda: cluster.broadcast({"cmd": "TOTAL", "count": total["count"]}))
    cluster.run()
else:
    waiting = {}  # request_id -> [Event, answer]
    counter = {"next": 0}

    def on_message(msg):
        """The worker's side: answers to GET_COUNT, and the broadcasts."""
        if msg.get("cmd") == "COUNT" and msg.get("request_id") in waiting:
            slot = waiting[msg["request_id"]]
            slot[1] = msg["count"]
            slot[0].set()
        elif msg.get("cmd") == "TOTAL":
            print(f"Worker {os.getpid()}: the cluster has served {msg['count']} requests", flush=True)

    cluster.worker.on("message", on_message)

    def app(environ, start_response):
        """/count asks the primary for the total; every other path counts one request."""
        if environ.get("PATH_INFO") == "/count":
            counter["next"] += 1
            request_id = counter["next"]
            waiting[request_id] = [threading.Event(), None]
            cluster.worker.send({"cmd": "GET_COUNT", "request_id": request_id})
            waiting[request_id][0].wait(5)
            body = json.dumps({"worker": os.getpid(), "total": waiting.pop(request_id)[1]}).encode()
        else:
            cluster.worker.send({"cmd": "REQUEST_COUNT"})
            body = f"Hello from worker {os.getpid()}\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))])
        return [body]

    cluster.serve(app, bind=f"0.0.0.0:{PORT}")
