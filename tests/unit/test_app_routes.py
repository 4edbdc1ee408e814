"""Routes, validation, config and the OpenAPI document of app/, through Flask's test client.

No Redis runs here: REDIS_URL points at a loopback port nobody listens on, so a route that
reaches Redis shows up as a 503, and validation must answer before that happens.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import create_app
from app import store as store_module

ROOT = Path(__file__).resolve().parents[2]


def closed_port():
    """Return a loopback port with no listener (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app(monkeypatch):
    """An app whose Redis is unreachable, isolated from the caller's environment."""
    for name in ("REDIS_URL", "SESSION_TTL"):
        monkeypatch.delenv(name, raising=False)
    return create_app({"TESTING": True, "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"})


@pytest.fixture
def client(app):
    """Flask test client for app."""
    return app.test_client()


def assert_json_error(response, status):
    """Check a JSON error response with the worker pid header."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    assert isinstance(response.get_json()["error"], str)
    assert response.headers["X-Worker-Pid"] == str(os.getpid())
    assert "Traceback" not in response.get_data(as_text=True)


# --- stateless routes -------------------------------------------------------------------------


def test_hello_names_the_worker(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == f"Hello from worker {os.getpid()}"
    assert response.mimetype == "text/plain"
    assert response.headers["X-Worker-Pid"] == str(os.getpid())


def test_work_burns_ten_ms_of_thread_cpu_by_default(client):
    before = time.thread_time()
    response = client.get("/work")
    used = time.thread_time() - before
    assert response.status_code == 200
    assert response.get_json() == {"worker": os.getpid(), "ms": 10}
    assert used >= 0.010
    assert response.headers["X-Worker-Pid"] == str(os.getpid())


@pytest.mark.parametrize("ms", [1, 25])
def test_work_takes_the_cost_from_the_query(client, ms):
    before = time.thread_time()
    response = client.get(f"/work?ms={ms}")
    assert response.status_code == 200
    assert response.get_json()["ms"] == ms
    assert time.thread_time() - before >= ms / 1000


@pytest.mark.parametrize(
    "value", ["0", "1001", "-1", "abc", "1.5", "", " 5", "+5", "1e3", "\u0663", "99999999999999999999"]
)
def test_work_rejects_a_bad_cost(client, value):
    assert_json_error(client.get("/work", query_string={"ms": value}), 400)


def test_unknown_route_is_json_404(client):
    assert_json_error(client.get("/no/such/route"), 404)


@pytest.mark.parametrize(
    "method, path", [("post", "/"), ("post", "/count"), ("patch", "/session/abc"), ("delete", "/health")]
)
def test_wrong_method_is_json_405_with_allow(client, method, path):
    response = getattr(client, method)(path)
    assert_json_error(response, 405)
    assert "GET" in response.headers["Allow"] or "PUT" in response.headers["Allow"]


# --- validation answers before Redis is touched (a 503 here would mean it was) ------------------

BAD_IDS = ["a" * 65, "a.b", "a b", "é", "a:b", "*", "a%00b"]


@pytest.mark.parametrize("session_id", BAD_IDS)
@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_bad_session_id_is_400(client, method, session_id):
    response = getattr(client, method)(f"/session/{session_id}", json={"a": 1})
    assert_json_error(response, 400)


def test_longest_valid_session_id_reaches_redis(client):
    # 64 characters is valid: the request gets past validation, then Redis is unreachable.
    assert client.get("/session/" + "a" * 64).status_code == 503


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b"1",
        b'"text"',
        b"null",
        b"",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"\xff\xfe\x00garbage",
        b'{"a": 1',
        b"[" * 5000 + b"]" * 5000,
        b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_put_session_rejects_a_body_that_is_not_a_json_object(client, body):
    response = client.put("/session/abc", data=body, content_type="application/json")
    assert_json_error(response, 400)


def test_put_session_rejects_a_body_over_16_kib(client):
    body = json.dumps({"blob": "x" * (16 * 1024)}).encode()
    response = client.put("/session/abc", data=body, content_type="application/json")
    assert_json_error(response, 413)


# --- Redis unavailable ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/count", None),
        ("get", "/session/abc", None),
        ("put", "/session/abc", {"user": "ada"}),
        ("delete", "/session/abc", None),
    ],
)
def test_state_routes_answer_503_fast_when_redis_is_down(client, method, path, body):
    started = time.monotonic()
    response = getattr(client, method)(path, json=body)
    elapsed = time.monotonic() - started
    assert_json_error(response, 503)
    assert response.get_json() == {"error": "redis unavailable"}
    assert response.headers["Retry-After"] == "1"
    assert elapsed < 1.0


def test_health_is_503_and_degraded_when_redis_is_down(client):
    started = time.monotonic()
    response = client.get("/health")
    assert time.monotonic() - started < 1.0
    assert response.status_code == 503
    body = response.get_json()
    assert body["redis"] == "down"
    assert body["status"] == "degraded"
    assert body["pid"] == os.getpid()
    assert isinstance(body["memory"], int) and body["memory"] > 1_000_000
    assert isinstance(body["uptime"], (int, float)) and body["uptime"] >= 0
    assert response.headers["X-Worker-Pid"] == str(os.getpid())


def test_stateless_routes_still_answer_when_redis_is_down(client):
    assert client.get("/count").status_code == 503
    assert client.get("/").status_code == 200
    assert client.get("/work?ms=1").status_code == 200


def test_an_unexpected_error_is_a_json_500_without_traceback(app):
    @app.get("/boom")
    def boom():
        """Fail on purpose."""
        raise RuntimeError("secret detail")

    app.config["TESTING"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/boom")
    assert_json_error(response, 500)
    assert "secret detail" not in response.get_data(as_text=True)


# --- configuration ---------------------------------------------------------------------------------


def test_config_defaults(monkeypatch):
    for name in ("REDIS_URL", "SESSION_TTL", "FLASK_REDIS_URL", "FLASK_SESSION_TTL"):
        monkeypatch.delenv(name, raising=False)
    app = create_app()
    assert app.config["REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert app.config["SESSION_TTL"] == 1800
    assert app.config["MAX_CONTENT_LENGTH"] == 16 * 1024


def test_config_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "rediss://:s3cret@redis.example:6380/2")
    monkeypatch.setenv("SESSION_TTL", "60")
    monkeypatch.setenv("FLASK_WORK_MS", "7")
    app = create_app()
    assert app.config["REDIS_URL"] == "rediss://:s3cret@redis.example:6380/2"
    assert app.config["SESSION_TTL"] == 60
    assert app.config["WORK_MS"] == 7
    pool = store_module.get_store(app).client.connection_pool
    assert pool.connection_kwargs["password"] == "s3cret"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_class.__name__ == "SSLConnection"


def test_test_config_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("SESSION_TTL", "60")
    assert create_app({"SESSION_TTL": 5}).config["SESSION_TTL"] == 5


@pytest.mark.parametrize("value", ["0", "-3", "soon", "1.5"])
def test_a_bad_session_ttl_fails_at_start(monkeypatch, value):
    monkeypatch.setenv("SESSION_TTL", value)
    with pytest.raises(ValueError, match="SESSION_TTL"):
        create_app()


def test_a_bad_redis_url_fails_at_start():
    with pytest.raises(ValueError, match="REDIS_URL"):
        create_app({"REDIS_URL": "http://127.0.0.1:6379"})


# --- the Redis client: lazy, per process, bounded -----------------------------------------------------


def test_client_is_created_on_first_use_and_reused(app):
    store = store_module.get_store(app)
    assert store._client is None
    first = store.client
    assert store.client is first
    pool = first.connection_pool
    assert pool.connection_kwargs["socket_connect_timeout"] < 1
    assert pool.connection_kwargs["socket_timeout"] < 1


def test_client_is_recreated_after_fork(app):
    store = store_module.get_store(app)
    parent_client = store.client
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only, never return into pytest
        code = 1
        try:
            child_client = store.client
            fresh = child_client is not parent_client
            own_pool = child_client.connection_pool is not parent_client.connection_pool
            code = 0 if fresh and own_pool and store.client is child_client else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.client is parent_client


def test_importing_wsgi_opens_no_connection_and_starts_no_thread():
    code = (
        "import os, threading\n"
        "def sockets():\n"
        "    found = 0\n"
        "    for fd in os.listdir('/proc/self/fd'):\n"
        "        try:\n"
        "            found += os.readlink(f'/proc/self/fd/{fd}').startswith('socket:')\n"
        "        except OSError:\n"
        "            pass  # the fd listdir itself used, closed already\n"
        "    return found\n"
        "threads, socks = threading.active_count(), sockets()\n"
        "import app.wsgi\n"
        "assert threading.active_count() == threads, 'a thread was started at import'\n"
        "assert sockets() == socks, 'a socket was opened at import'\n"
        "assert app.wsgi.app.extensions['pycluster.redis']._client is None\n"
        "print('ok')\n"
    )
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- OpenAPI ---------------------------------------------------------------------------------------


def _openapi_path(rule):
    """Turn a Flask rule like /session/<session_id> into /session/{session_id}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_openapi_document_is_valid_and_covers_every_route(app, client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]

    documented = {
        (path, method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    }
    served = {
        (_openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == served

    schemas = spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        params = {p["name"] for p in item.get("parameters", [])}
        assert set(re.findall(r"{([^}]+)}", path)) <= params | {
            p["name"] for op in item.values() if isinstance(op, dict) for p in op.get("parameters", [])
        }
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert operation["operationId"] and operation["summary"]
            assert operation["responses"], (path, method)
            for status, resp in operation["responses"].items():
                assert re.fullmatch(r"[1-5][0-9][0-9]", status)
                assert resp["description"]
                for media in resp.get("content", {}).values():
                    ref = media["schema"].get("$ref")
                    if ref:
                        assert ref.removeprefix("#/components/schemas/") in schemas
