"""GET /openapi.json: a hand-written OpenAPI 3 description of every route, for docs and fuzzing."""

import copy

from flask import Blueprint

from . import MAX_BODY_BYTES
from .views import MAX_WORK_MS

bp = Blueprint("openapi", __name__)

_PID_HEADER = {
    "X-Worker-Pid": {
        "description": "Pid of the worker process that served the request.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _json(schema_name, description):
    """Describe a JSON response whose body follows a named component schema."""
    return {
        "description": description,
        "headers": _PID_HEADER,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }


def _error(description):
    """Describe a JSON error response."""
    return _json("Error", description)


_UNAVAILABLE = _error("Redis is unavailable; retry shortly.")
_BAD_ID = _error("The session id does not match ^[A-Za-z0-9_-]{1,64}$.")
# An id holding an encoded "/" no longer matches the route at all.
_NO_ROUTE = _error("The id contains '/', so no route matches.")
_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "minLength": 1, "maxLength": 64},
}

SPEC = {
    "openapi": "3.0.3",
    "info": {
        "title": "pycluster demo app",
        "version": "0.1.0",
        "description": "Flask workers behind the pycluster master; shared state lives in Redis.",
    },
    "paths": {
        "/": {
            "get": {
                "operationId": "hello",
                "summary": "Greet the caller with the serving worker's pid.",
                "responses": {
                    "200": {
                        "description": "A greeting.",
                        "headers": _PID_HEADER,
                        "content": {"text/plain": {"schema": {"type": "string", "pattern": "^Hello from worker [0-9]+$"}}},
                    }
                },
            }
        },
        "/work": {
            "get": {
                "operationId": "work",
                "summary": "Burn CPU time (10 ms by default), then answer with the pid.",
                "parameters": [
                    {
                        "name": "ms",
                        "in": "query",
                        "required": False,
                        "description": "Milliseconds of CPU time to burn.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_WORK_MS},
                    }
                ],
                "responses": {
                    "200": _json("Work", "The work was done."),
                    "400": _error(f"ms is not an integer from 1 to {MAX_WORK_MS}."),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Worker vital signs and Redis reachability.",
                "responses": {
                    "200": _json("Health", "The worker is healthy and Redis answers."),
                    "503": _json("Health", "Redis does not answer."),
                },
            }
        },
        "/count": {
            "get": {
                "operationId": "count",
                "summary": "Increment the shared page-view counter (Redis INCR).",
                "responses": {
                    "200": _json("Count", "The counter after this increment."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/session/{session_id}": {
            "parameters": [_SESSION_ID],
            "get": {
                "operationId": "getSession",
                "summary": "Read a session.",
                "responses": {
                    "200": _json("SessionEnvelope", "The stored session."),
                    "400": _BAD_ID,
                    "404": _error("No such session, or it expired."),
                    "503": _UNAVAILABLE,
                },
            },
            "put": {
                "operationId": "putSession",
                "summary": "Store a session (a JSON object) with the SESSION_TTL expiry.",
                "requestBody": {
                    "required": True,
                    "description": f"Any JSON object of at most {MAX_BODY_BYTES} bytes.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": _json("SessionEnvelope", "An existing session was replaced."),
                    "201": _json("SessionEnvelope", "A new session was created."),
                    "400": _error("Bad session id, or the body is not a JSON object."),
                    "404": _NO_ROUTE,
                    "413": _error(f"The body is larger than {MAX_BODY_BYTES} bytes."),
                    "503": _UNAVAILABLE,
                },
            },
            "delete": {
                "operationId": "deleteSession",
                "summary": "Delete a session (absent sessions too).",
                "responses": {
                    "204": {"description": "Deleted.", "headers": _PID_HEADER},
                    "400": _BAD_ID,
                    "404": _NO_ROUTE,
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "headers": _PID_HEADER,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Work": {
                "type": "object",
                "required": ["worker", "ms"],
                "properties": {"worker": {"type": "integer"}, "ms": {"type": "integer"}},
            },
            "Health": {
                "type": "object",
                "required": ["status", "pid", "memory", "uptime", "redis"],
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "degraded"]},
                    "pid": {"type": "integer"},
                    "memory": {"type": "integer", "description": "Resident set size in bytes."},
                    "uptime": {"type": "number", "description": "Seconds since the app was created."},
                    "redis": {"type": "string", "enum": ["ok", "down"]},
                },
            },
            "Count": {
                "type": "object",
                "required": ["worker", "totalViews"],
                "properties": {"worker": {"type": "integer"}, "totalViews": {"type": "integer"}},
            },
            "SessionEnvelope": {
                "type": "object",
                "required": ["session"],
                "properties": {"session": {"type": "object"}},
            },
        }
    },
}


@bp.get("/openapi.json")
def openapi():
    """Return the OpenAPI document."""
    # A copy, so that nothing downstream can alter the module-level document.
    return copy.deepcopy(SPEC)


def init_app(app):
    """Register the OpenAPI route."""
    app.register_blueprint(bp)
