"""The stack's own pieces that need no Docker: knob lists, the Sentinel name cache."""

import socket
import threading
from pathlib import Path

import pytest
import redis

from app.resolving_sentinel import NameCache
from loadtest.stack_knobs import COMPOSE_OWN, KNOBS, compose_knobs

ROOT = Path(__file__).resolve().parents[2]


def test_every_compose_knob_is_listed_in_env_example():
    """.env.example names each variable docker-compose.yml reads, so `cp .env.example .env` shows them all."""
    listed = (ROOT / ".env.example").read_text()
    missing = [k for k in KNOBS if k not in COMPOSE_OWN and f"{k}=" not in listed]
    assert not missing, f"not in .env.example: {missing}"


def test_knobs_are_read_off_interpolations_and_pass_throughs_not_comments():
    text = "# ${COMMENTED:-x}\nservices:\n  a:\n    image: ${IMAGE:-x}  # ${TRAILING}\n    environment:\n      PASSED:\n      SET: 1\n"
    assert compose_knobs(text) == ("IMAGE", "PASSED")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def answer(address):
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]


def test_an_address_passes_through_and_a_name_is_looked_up_once_a_second():
    calls = []
    clock = FakeClock()
    names = NameCache(lookup=lambda host, *_: calls.append(host) or answer("10.0.0.7"), clock=clock)
    assert names.resolve("192.168.1.2") == "192.168.1.2" and calls == []
    assert names.resolve("sentinel-1") == "10.0.0.7"
    assert names.resolve("sentinel-1") == "10.0.0.7" and calls == ["sentinel-1"]
    clock.now += 1.5
    assert names.resolve("sentinel-1") == "10.0.0.7" and calls == ["sentinel-1", "sentinel-1"]


def test_a_failed_lookup_is_remembered_too():
    calls = []

    def missing(host, *_):
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    names = NameCache(lookup=missing, clock=FakeClock())
    for _ in range(3):
        with pytest.raises(redis.exceptions.ConnectionError, match="cannot resolve 'sentinel-2'"):
            names.resolve("sentinel-2")
    assert calls == ["sentinel-2"]


def test_a_lookup_that_hangs_fails_within_the_limit_and_is_not_started_twice():
    release = threading.Event()
    calls = []

    def hangs(host, *_):
        calls.append(host)
        release.wait(5)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    names = NameCache(lookup=hangs, limit=0.05)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="took over 0.05 s"):
            names.resolve("sentinel-3")
        # Still in flight: the next caller fails at once, and no second lookup starts.
        with pytest.raises(redis.exceptions.ConnectionError, match="took over"):
            names.resolve("sentinel-3")
        assert calls == ["sentinel-3"]
    finally:
        release.set()
