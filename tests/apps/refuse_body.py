"""An app that refuses every body with its own 413 and never reads it (as Flask's MAX_CONTENT_LENGTH does)."""


def app(environ, start_response):
    """413 for any request with a body; 200 otherwise."""
    if environ.get("CONTENT_LENGTH") not in (None, "", "0") or environ.get("HTTP_TRANSFER_ENCODING"):
        body = b"too large for me\n"
        start_response("413 Content Too Large", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
