"""Shared state in Redis: an exact page-view counter and JSON sessions with a TTL."""

import json
import os
import re

from flask import Blueprint, abort, current_app, request

from .errors import NotJSON, json_error, strict_loads
from .store import get_redis

bp = Blueprint("state", __name__)

COUNTER_KEY = "page_views"
SESSION_PREFIX = "session:"
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@bp.get("/count")
def count():
    """Increment the shared page-view counter and return its new value."""
    # A GET that counts: if this worker is killed after the INCR, serving the request again
    # elsewhere would count it twice, so pycluster must not retry it (a no-op elsewhere).
    no_retry = request.environ.get("pycluster.no_retry")
    if no_retry:
        no_retry()
    # INCR is atomic in Redis, so concurrent workers never lose an increment.
    return {"worker": os.getpid(), "totalViews": get_redis().incr(COUNTER_KEY)}


def _bad_session_id(session_id):
    """Return a 400 response when session_id is not a valid id, else None."""
    if SESSION_ID.fullmatch(session_id):
        return None
    return json_error(400, "session id must match [A-Za-z0-9_-]{1,64}")


def parse_json_object(data):
    """Return data decoded as a JSON object, or raise ValueError saying why it is not one."""
    try:
        value = strict_loads(data)
    except NotJSON:
        raise
    except RecursionError:
        raise ValueError("body is nested too deeply") from None
    except ValueError:  # includes an integer past Python's digit limit
        raise ValueError("body must be valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError("body must be a JSON object")
    return value


def read_body():
    """Return the request body, raising 413 when it is over MAX_CONTENT_LENGTH."""
    # get_data() answers 413 for a Content-Length over the limit, but a chunked body is cut
    # silently at the limit; one more byte from the server's own stream tells if it was longer.
    data = request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(data) >= limit:
        if request.environ["wsgi.input"].read(1):
            abort(413)
    return data


@bp.get("/session/<session_id>")
def get_session(session_id):
    """Return the stored session, or 404 when it is absent or expired."""
    error = _bad_session_id(session_id)
    if error:
        return error
    raw = get_redis().get(SESSION_PREFIX + session_id)
    if raw is None:
        return json_error(404, "session not found")
    try:
        session = parse_json_object(raw)
    except ValueError:  # stored before JSON was strict (e.g. an Infinity): never echo it
        return json_error(500, "the stored session is not valid JSON")
    return {"session": session}


@bp.put("/session/<session_id>")
def put_session(session_id):
    """Store a JSON object as the session with a TTL; 201 when new, 200 when replaced."""
    error = _bad_session_id(session_id)
    if error:
        return error
    try:
        session = parse_json_object(read_body())
    except ValueError as exc:
        return json_error(400, str(exc))
    key = SESSION_PREFIX + session_id
    encoded = json.dumps(session, separators=(",", ":"), allow_nan=False)
    # EXISTS and SET in one MULTI: no other worker can slip in between, so 201 is reported once.
    pipe = get_redis().pipeline(transaction=True)
    pipe.exists(key)
    pipe.set(key, encoded, ex=current_app.config["SESSION_TTL"])
    existed, _ = pipe.execute()
    return {"session": session}, 200 if existed else 201


@bp.delete("/session/<session_id>")
def delete_session(session_id):
    """Delete the session; deleting an absent session also answers 204."""
    error = _bad_session_id(session_id)
    if error:
        return error
    get_redis().delete(SESSION_PREFIX + session_id)
    return "", 204


def init_app(app):
    """Register the Redis-backed routes."""
    app.register_blueprint(bp)
