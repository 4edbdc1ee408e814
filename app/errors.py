"""JSON error responses: every failure is a small JSON object, never an HTML page or a traceback.

JSON is strict both ways (StrictJSONProvider): a number that overflows (1e400), NaN or
Infinity in a request body is a 400, and no response ever carries one.
"""

import json
import math

from flask import current_app, jsonify
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, InternalServerError

from .store import UNAVAILABLE_ERRORS, get_store


class NotJSON(ValueError):
    """A value JSON cannot carry (NaN, Infinity, a number that overflows); the message says which."""


def _reject_constant(name):
    raise NotJSON(f"{name} is not valid JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf, which no JSON can carry back out
        raise NotJSON(f"the number {text[:20]} is out of range")
    return value


def strict_loads(data, **kwargs):
    """json.loads that raises NotJSON (a ValueError) for NaN, Infinity and overflowing numbers."""
    kwargs.setdefault("parse_constant", _reject_constant)
    kwargs.setdefault("parse_float", _finite_float)
    return json.loads(data, **kwargs)


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, minus what is not JSON: NaN, Infinity and numbers that overflow to them."""

    def dumps(self, obj, **kwargs):
        """Encode; a NaN or infinity raises ValueError (a 500) instead of leaving as non-JSON."""
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)

    def loads(self, s, **kwargs):
        """Decode; request.get_json() turns the ValueError into a 400."""
        return strict_loads(s, **kwargs)


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
    """Make JSON strict and register the JSON error handlers on app."""
    app.json = StrictJSONProvider(app)
    app.register_error_handler(HTTPException, handle_http_exception)
    for error in UNAVAILABLE_ERRORS:
        app.register_error_handler(error, handle_redis_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
