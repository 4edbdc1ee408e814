"""LoadGen's failure kinds, against a loopback server that fails on purpose."""
import socket
import struct
import threading

import pytest

from loadtest.loadgen import LoadGen, kinds


def one_bad_server(how: str) -> tuple[int, threading.Thread]:
    """A listener that answers one request the way `how` says, then stops."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                if how == "reset":  # SO_LINGER 0: close sends RST
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif how == "half-answer":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
                # "fin": close without a word
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize("how, kind", [("fin", "closed"), ("half-answer", "closed"), ("reset", "reset")])
def test_a_dropped_request_is_told_apart_from_a_reset(how, kind):
    port, server = one_bad_server(how)
    records = LoadGen("127.0.0.1", port, ["/"], concurrency=1, keepalive=False, duration=5,
                      max_requests=1, timeout=2).run()
    server.join(5)
    assert kinds(records) == {kind: 1}
