"""The httptools engine: the worker's HTTP/1.1 layer on llhttp (Node's parser), through httptools.

`--engine httptools` selects it (master/worker/serve.py); docs/HTTP.md has the design.

- poller.py: one edge-triggered epoll set for every connection; wakes them in the order they
  became ready (FIFO), and expires the ones waiting on a client past their deadline.
- connection.py: one greenlet per connection: read, parse, call the app, write, in order.
- parse.py: llhttp's callbacks turned into WSGI environs, with the limits and the framing
  rules applied as the bytes arrive; body.py: wsgi.input; response.py: heads and framing.
- server.py: the server interface serve.py drives (the same as the pywsgi engine's), with the
  shared cap on connections per worker (conn_cap.py); intake.py: our own listener (shared,
  reuseport); under rr, connections come through LaneReader (lane_reader.py).
"""
from .server import HttpServer

__all__ = ["HttpServer"]
