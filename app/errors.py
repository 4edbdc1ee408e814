"""JSON error responses: every failure is a small JSON object, never an HTML page or a traceback."""

from flask import current_app, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

from .store import UNAVAILABLE_ERRORS, get_store


def json_error(status, message, **extra):
    """Return a JSON response {"error": message, ...} with the given status."""
    response = jsonify(error=message, **extra)
    response.status_code = status
    return response


def handle_http_exception(exc):
    """Render a werkzeug HTTPException (404, 405, 413, ...) as JSON, keeping its headers."""
    # get_response() keeps headers such as Allow on a 405; only the body changes.
    response = exc.get_response()
    response.data = jsonify(error=exc.description or exc.name).get_data()
    response.content_type = "application/json"
    return response


def handle_redis_unavailable(exc):
    """Answer 503 when Redis cannot be reached; the client may retry shortly."""
    get_store().report_unavailable(exc)
    response = json_error(503, "redis unavailable")
    response.headers["Retry-After"] = "1"
    return response


def handle_unexpected(exc):
    """Log an unexpected exception and answer a bare 500 JSON without the traceback."""
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    original = getattr(exc, "original_exception", exc)
    current_app.logger.exception("unhandled error: %r", original)
    return json_error(500, InternalServerError.description)


def init_app(app):
    """Register the JSON error handlers on app."""
    app.register_error_handler(HTTPException, handle_http_exception)
    for error in UNAVAILABLE_ERRORS:
        app.register_error_handler(error, handle_redis_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
