"""The httptools engine alone in a process, with a scripted balancer: `python hook_server.py PORT VERDICTS TAKE`.

VERDICTS is a comma-separated list of what at_boundary() answers, in turn (then KEEP); TAKE is 1
if hand_back() takes the connection (it then answers that connection's next request itself,
outside the engine, with "taken over"), 0 if it refuses. Prints "ready" once listening, and
"asked N" each time at_boundary() is called.
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from master.core.board import Board  # noqa: E402
from master.core.settings import WorkerSettings  # noqa: E402
from master.worker.balance import KEEP  # noqa: E402
from master.worker.http import HttpServer  # noqa: E402
from master.worker.time_slice import TimeSlicer  # noqa: E402

TAKEN = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\ntaken over\n"


class ScriptedBalancer:
    park_after = None  # no idle connection goes back on its own here

    def __init__(self, verdicts: list[str], take: bool) -> None:
        self.verdicts, self.take, self.asked = verdicts, take, 0

    def at_boundary(self) -> str:
        self.asked += 1
        print(f"asked {self.asked}", flush=True)
        return self.verdicts.pop(0) if self.verdicts else KEEP

    def hand_back(self, sock, peer) -> bool:
        if self.take:  # a copy of the descriptor, as the lane passes one: the engine closes its own
            gevent.spawn(_answer_next, socket.socket(fileno=os.dup(sock.fileno())))
        return self.take


def _answer_next(sock) -> None:
    if sock.recv(65536):
        sock.sendall(TAKEN)
    sock.close()


class Runtime:
    def __init__(self, balancer: ScriptedBalancer) -> None:
        self.settings, self.balancer, self.id = WorkerSettings(engine="httptools"), balancer, 1
        self.board = Board.create()
        self.slicer = TimeSlicer(0)  # the engine marks app code; no timer in this harness
        self.requests = self.in_flight = self.connections = self.kept = 0
        self.draining = False

    def made_progress(self) -> None:
        pass


def app(environ, start_response):
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def main() -> None:
    port, verdicts, take = int(sys.argv[1]), [v for v in sys.argv[2].split(",") if v], sys.argv[3] == "1"
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    HttpServer(listener, app, Runtime(ScriptedBalancer(verdicts, take)), "reuseport").start()
    print("ready", flush=True)
    gevent.wait()


if __name__ == "__main__":
    main()
