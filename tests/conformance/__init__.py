"""HTTP/1.1 conformance of both engines (pywsgi, httptools): framing, limits, timeouts, keep-alive."""
