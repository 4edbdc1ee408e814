"""Fixtures shared by the unit tests."""
import socket

import pytest


@pytest.fixture
def tcp_pair():
    """A listener and a connected client; yields (listener, client)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    yield listener, client
    client.close()
    listener.close()
