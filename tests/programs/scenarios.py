"""Cluster programs for the API tests, after Node's test/parallel/test-cluster-*.js.

    python tests/programs/scenarios.py SCENARIO [PORT]

Like a Node cluster test, the same file runs as the primary and, re-run by fork(), as each
worker. Both sides print what happens as JSON lines; the tests read them.
"""
import json
import os
import signal
import socket
import sys
import time

from master import cluster

SCENARIO = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
BIG = "x" * (1024 * 1024)  # far larger than a socket buffer
BURST = 10_000


def out(event, **fields):
    """One JSON line on stdout."""
    print(json.dumps({"side": "primary" if cluster.is_primary else "worker", "event": event, **fields}), flush=True)


def hello(environ, start_response):
    """A WSGI app that answers with the pid."""
    if environ.get("PATH_INFO") == "/sleep":
        time.sleep(1.0)
    body = f"hello from {os.getpid()}".encode()
    start_response("200 OK", [("Content-Length", str(len(body))), ("X-Worker-Pid", str(os.getpid()))])
    return [body]


def record_lifecycle(worker):
    """Print every event of `worker` with its state at that moment."""
    for name in ("online", "listening", "disconnect", "exit"):
        worker.on(name, lambda *args, n=name: out(f"worker.{n}", id=worker.id, state=worker.state, args=list(args),
                                                   exited_after_disconnect=worker.exited_after_disconnect))


# -- primaries ------------------------------------------------------------------------------
def primary_lifecycle():
    for name in ("fork", "online", "listening", "disconnect", "exit"):
        cluster.on(name, lambda w, *args, n=name: out(n, id=w.id, state=w.state, args=list(args)))
    worker = cluster.fork()
    record_lifecycle(worker)
    worker.on("listening", lambda address: worker.disconnect())
    cluster.run()
    out("done", workers=len(cluster.workers))


def primary_exit42():
    cluster.on("exit", lambda w, code, sig: out("exit", code=code, signal=sig,
                                                exited_after_disconnect=w.exited_after_disconnect))
    cluster.fork()
    cluster.run()


def primary_sigkill():
    order = []
    cluster.on("disconnect", lambda w: order.append("disconnect"))
    cluster.on("exit", lambda w, code, sig: (order.append("exit"), out("exit", code=code, signal=sig, order=order,
                                                                       state=w.state)))
    worker = cluster.fork()
    worker.on("listening", lambda address: os.kill(worker.process.pid, signal.SIGKILL))
    cluster.run()


def primary_busy_sigterm():
    worker = cluster.fork()
    worker.on("message", lambda msg: msg == "spinning" and worker.kill())
    cluster.on("exit", lambda w, code, sig: out("exit", code=code, signal=sig))
    cluster.run()


def primary_messages():
    worker = cluster.fork()
    worker.on("message", lambda msg: out("worker.message", msg=msg))
    cluster.on("message", lambda w, msg: out("cluster.message", id=w.id, msg=msg))

    def on_message(msg):
        if msg.get("hello"):
            worker.send({"reply": "from primary", "to": worker.id})
            cluster.broadcast({"broadcast": True})
        if msg.get("got") == "broadcast":
            worker.disconnect()
    worker.on("message", on_message)
    cluster.run()


def primary_big_and_burst():
    worker = cluster.fork()
    received = []

    def on_message(msg):
        received.append(msg)
        if len(received) == 1 + BURST:
            big, burst = received[0], received[1:]
            out("primary.received", big_ok=big == {"big": BIG}, in_order=burst == list(range(BURST)))
            worker.send({"big": BIG})
            for i in range(BURST):
                worker.send(i)
        if isinstance(msg, dict) and "worker_received" in msg:
            out("worker.report", **msg["worker_received"])
            worker.disconnect()
    worker.on("message", on_message)
    cluster.run()


def primary_disconnect_twice():
    rounds = []

    def start_round():
        for _ in range(2):
            cluster.fork()

    def on_listening(worker, address):
        if len([w for w in cluster.workers.values() if w.state == "listening"]) == 2:
            cluster.disconnect(after_disconnect)

    def after_disconnect():
        rounds.append(len(cluster.workers))
        out("disconnected", round=len(rounds), workers=len(cluster.workers))
        if len(rounds) < 2:
            start_round()
    cluster.on("listening", on_listening)
    start_round()
    cluster.run()
    out("done", rounds=rounds)


def primary_open_connection():
    worker = cluster.fork()
    state = {}

    def on_listening(address):
        client = socket.create_connection(("127.0.0.1", address["port"]))
        client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")  # headers not finished: an open exchange
        state["client"] = client
        cluster.call_later(0.3, worker.disconnect)
        cluster.call_later(1.8, close_client)

    def close_client():
        out("before_close", dead=worker.is_dead(), state=worker.state)
        state["closed_at"] = time.monotonic()
        state["client"].close()

    def on_exit(code, sig):
        out("exit", code=code, after_close=time.monotonic() >= state.get("closed_at", float("inf")))
    worker.on("listening", on_listening)
    worker.on("exit", on_exit)
    cluster.run()


def primary_ipc_drop():
    worker = cluster.fork()
    started = {}

    def drop(address):
        started["at"] = time.monotonic()
        worker.channel.close()  # the IPC channel goes away; the process is not signalled
    worker.on("listening", drop)
    worker.on("exit", lambda code, sig: out("exit", code=code, signal=sig,
                                            seconds=round(time.monotonic() - started["at"], 2)))
    cluster.run()


def primary_serve_forever():
    cluster.on("listening", lambda w, a: out("listening", pid=w.process.pid, port=a["port"]))
    for _ in range(2):
        cluster.fork()
    cluster.run()


def primary_fork_env():
    os.environ["INHERITED"] = "from-primary"
    os.environ["DROPPED"] = "should-not-arrive"
    worker = cluster.fork(env={"GREETING": "hi", "NUMBER": 7, "DROPPED": None})
    worker.on("message", lambda msg: (out("env", **msg), worker.disconnect()))
    cluster.run()


def primary_errors():
    errors = {}
    try:
        cluster.scheduling_policy = "fastest"
    except ValueError as exc:
        errors["policy"] = str(exc)
    worker = cluster.fork()
    try:
        cluster.scheduling_policy = "reuseport" if cluster.scheduling_policy != "reuseport" else "rr"
    except RuntimeError as exc:
        errors["frozen"] = str(exc)
    try:
        worker.send({"a set": {1, 2}})
    except TypeError as exc:
        errors["not_json"] = str(exc)

    def on_message(msg):
        errors.update(msg)

    def on_exit(code, sig):
        try:
            worker.send({"late": True})
        except ConnectionError as exc:
            errors["dead"] = str(exc)
        out("errors", **errors)
    worker.on("message", on_message)
    worker.on("exit", on_exit)
    cluster.run()


def primary_eaddrinuse():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    cluster.setup_primary(args=[SCENARIO, str(port)])
    cluster.on("exit", lambda w, code, sig: out("exit", code=code))
    cluster.fork()
    cluster.run()
    blocker.close()


def primary_rr_refuse():
    """A worker drains without telling the primary; its handoffs must be refused and re-routed."""
    import threading
    import urllib.request

    cluster.scheduling_policy = "rr"
    listening = []
    state = {}

    def on_listening(worker, address):
        listening.append(worker)
        state["port"] = address["port"]
        if len(listening) == 2:
            # This request makes its worker start draining and keeps it busy for 3 s.
            threading.Thread(target=lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{address['port']}/drain-silently", timeout=10).read(), daemon=True).start()

    def on_message(worker, msg):
        if msg == "draining":
            state["drained"] = worker.process.pid
            threading.Thread(target=client, daemon=True).start()

    def client():
        # 20 at once: placed by load, several land on the draining worker too (it looks no
        # busier than the other once that one holds a few), and it must send them back.
        from concurrent.futures import ThreadPoolExecutor

        def one(_):
            with urllib.request.urlopen(f"http://127.0.0.1:{state['port']}/", timeout=5) as response:
                return int(response.headers["X-Worker-Pid"])

        with ThreadPoolExecutor(20) as pool:
            pids = list(pool.map(one, range(20)))
        handle = next(iter(cluster._the_primary().handles.values()))
        out("served", pids=pids, drained_pid=state["drained"], refused=handle.refused)

    cluster.on("listening", on_listening)
    cluster.on("message", on_message)
    cluster.on("exit", lambda w, code, sig: cluster.disconnect())
    for _ in range(2):
        cluster.fork()
    cluster.run()


# -- workers --------------------------------------------------------------------------------
def worker_main():
    me = cluster.worker
    if SCENARIO == "exit42":
        sys.exit(42)
    if SCENARIO == "busy_sigterm":
        me.send("spinning")
        while True:
            pass
    if SCENARIO == "messages":
        me.on("message", lambda msg: (out("worker.got", msg=msg),
                                      me.send({"got": "broadcast" if msg.get("broadcast") else "reply"})))
        me.send({"hello": me.id})
        return
    if SCENARIO == "big_and_burst":
        got = []

        def on_message(msg):
            got.append(msg)
            if len(got) == 1 + BURST:
                me.send({"worker_received": {"big_ok": got[0] == {"big": BIG},
                                             "in_order": got[1:] == list(range(BURST))}})
        me.on("message", on_message)
        me.send({"big": BIG})
        for i in range(BURST):
            me.send(i)
        return
    if SCENARIO == "fork_env":
        me.on("message", lambda msg: None)
        me.send({k: os.environ.get(k) for k in ("GREETING", "NUMBER", "INHERITED", "DROPPED")})
        return
    if SCENARIO == "errors":
        found = {}
        try:
            cluster.fork()
        except RuntimeError as exc:
            found["fork_in_worker"] = str(exc)
        try:
            me.send(float("nan"))
        except TypeError as exc:
            found["worker_not_json"] = str(exc)
        me.send(found)
        return
    if SCENARIO == "rr_refuse":
        def app(environ, start_response):
            if environ["PATH_INFO"] == "/drain-silently":
                me.begin_drain()  # no "exiting" notice: the primary still thinks we are free
                me.send("draining")
                time.sleep(3)  # an exchange in flight keeps this worker draining, and connected
            return hello(environ, start_response)
        cluster.serve(app, bind=f"127.0.0.1:{PORT}")
        return
    if SCENARIO == "eaddrinuse":
        try:
            cluster.serve(hello, bind=f"127.0.0.1:{PORT}")
        except OSError as exc:
            out("listen_error", error=str(exc.strerror), errno=exc.errno)
            sys.exit(7)
        return
    cluster.serve(hello, bind=f"127.0.0.1:{PORT}")


if __name__ == "__main__":
    if cluster.is_primary:
        globals()[f"primary_{SCENARIO}"]()
    else:
        worker_main()
