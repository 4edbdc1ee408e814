"""The demo application served by the workers: a Flask app factory, the flaskr way."""

import os
import time

from flask import Flask

from .redis_settings import DEFAULTS as REDIS_DEFAULTS
from .redis_settings import ENV_NAMES as REDIS_ENV_NAMES

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SESSION_TTL = 1800
MAX_BODY_BYTES = 16 * 1024


def _positive_int(name, value):
    """Return value as a positive int, or raise a ValueError naming the setting."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _load_config(app, test_config):
    """Fill app.config from defaults, FLASK_* env, the public env names, then test_config."""
    app.config.from_mapping(
        REDIS_URL=DEFAULT_REDIS_URL,
        SESSION_TTL=DEFAULT_SESSION_TTL,
        # Sub-second on purpose: a state endpoint must answer 503 within 1 s when Redis is away.
        REDIS_CONNECT_TIMEOUT=0.25,
        REDIS_SOCKET_TIMEOUT=0.5,
        REDIS_MAX_CONNECTIONS=512,
        WORK_MS=10,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        **REDIS_DEFAULTS,
    )
    app.config.from_prefixed_env()
    # REDIS_URL, SESSION_TTL and the REDIS_* settings are the public contract (compose and stack
    # files and docs use them), so the plain names win over FLASK_REDIS_URL and friends.
    for name in ("REDIS_URL", "SESSION_TTL", *REDIS_ENV_NAMES):
        if os.environ.get(name):
            app.config[name] = os.environ[name]
    if test_config is not None:
        app.config.from_mapping(test_config)
    # Fail at start-up, where the master reports an import error, not on the first request.
    app.config["SESSION_TTL"] = _positive_int("SESSION_TTL", app.config["SESSION_TTL"])
    app.config["WORK_MS"] = _positive_int("WORK_MS", app.config["WORK_MS"])
    url = str(app.config["REDIS_URL"])
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {url!r}")


def create_app(test_config=None):
    """Create and configure the application; nothing connects to Redis until a request needs it."""
    # No static folder: every route is ours and documented in /openapi.json.
    app = Flask(__name__, static_folder=None)
    _load_config(app, test_config)
    app.extensions["pycluster.started"] = time.monotonic()

    from . import errors, health, openapi, state, store, views

    store.init_app(app)
    errors.init_app(app)
    views.init_app(app)
    health.init_app(app)
    state.init_app(app)
    openapi.init_app(app)
    return app
