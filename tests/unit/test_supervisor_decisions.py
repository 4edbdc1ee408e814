"""The supervisor's pure decisions: what an exit means, which control requests may run, app specs,
and how every switch reads."""
from __future__ import annotations

import json

import pytest

from master.core.app_spec import AppSpecError, parse_spec
from master.core.exitcodes import WORKER_APP_LOAD_ERROR, WORKER_LISTEN_ERROR
from master.supervisor import lifecycle
from master.supervisor.commands import CommandError, decode_request, validate
from master.supervisor.config import OPTIONS, ConfigError, load_config, parse_switch


def facts(**changes):
    base = dict(code=None, signame="SIGKILL", supervisor_stopping=False, retired=False, was_successor=False,
                ever_listened=True, successor_alive=False, cluster_ever_listened=True, kill_reason=None)
    return lifecycle.ExitFacts(**{**base, **changes})


@pytest.mark.parametrize("changes, verdict, reason", [
    ({}, lifecycle.RESPAWN, "crash"),
    ({"kill_reason": "timeout"}, lifecycle.RESPAWN, "timeout"),
    ({"supervisor_stopping": True, "retired": True}, lifecycle.SHUTTING_DOWN, "stop"),
    ({"retired": True}, lifecycle.DRAINED, "retired"),
    ({"was_successor": True, "ever_listened": False}, lifecycle.SUCCESSOR_FAILED, "boot-failure"),
    ({"was_successor": True, "ever_listened": True}, lifecycle.RESPAWN, "crash"),
    ({"code": WORKER_APP_LOAD_ERROR, "signame": None, "cluster_ever_listened": False},
     lifecycle.APP_LOAD_HALT, "boot-failure"),
    ({"code": WORKER_APP_LOAD_ERROR, "signame": None}, lifecycle.APP_LOAD_SLOT_DOWN, "boot-failure"),
    ({"code": WORKER_LISTEN_ERROR, "signame": None}, lifecycle.LISTEN_HALT, "boot-failure"),
    ({"successor_alive": True}, lifecycle.SUCCESSOR_TAKES_OVER, "crash"),
    ({"code": 1, "signame": None}, lifecycle.RESPAWN, "crash"),
])
def test_classify_exit(changes, verdict, reason):
    assert lifecycle.classify_exit(facts(**changes)) == (verdict, reason)


def test_describe_exit():
    assert lifecycle.describe_exit(None, "SIGKILL") == "SIGKILL"
    assert lifecycle.describe_exit(3, None) == "exit code 3"


@pytest.mark.parametrize("line", [
    b'{"cmd":"scale","workers":Infinity}', b'{"cmd":"kill-worker","id":1e400}', b'{"cmd":"scale","workers":NaN}',
    b"[" * 2000 + b"]" * 2000, b'{"cmd":"broadcast","message":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"not json", b"", b'"just a string"', b'{"cmd": 1}', b'{"cmd":"scale","workers":1' + b"0" * 5000 + b"}",
    b"\xff\xfe", b'{"cmd":"status"' + b" " * 70000 + b"}",
])
def test_hostile_request_lines_are_command_errors(line):
    with pytest.raises(CommandError):
        name, args = decode_request(line)
        validate(name, args)


def test_a_good_request_decodes():
    assert decode_request(b'{"cmd": "scale", "workers": 4}') == ("scale", {"workers": 4})
    assert validate("kill-worker", {"id": 2}) == {"id": 2, "signal_name": "SIGKILL"}
    assert validate("stop", {}) == {"graceful": True}


@pytest.mark.parametrize("name, args, message", [
    ("kill-worker", {"id": 1e400}, "whole number"),
    ("kill-worker", {"id": 10 ** 40}, "between 1 and"),
    ("kill-worker", {"id": 1, "signal_name": "SIGNOPE"}, "unknown signal"),
    ("kill-worker", {"id": 1, "signal_name": ["x"]}, "signal name"),
    ("broadcast", {"message": json.loads("[" * 40 + "]" * 40)}, "deeper than"),
    ("broadcast", {"message": "x" * 70000}, "larger than"),
    ("stop", {"graceful": "yes"}, "true or false"),
    ("explode", {}, "unknown command"),
    ("status", {"verbose": True}, "no argument"),
])
def test_bad_arguments_name_what_is_wrong(name, args, message):
    with pytest.raises(CommandError, match=message):
        validate(name, args)


@pytest.mark.parametrize("spec, parsed", [
    ("app.wsgi:app", ("app.wsgi", "app", None)),
    ("myapp", ("myapp", "app", None)),
    ("pkg.mod:obj.wsgi", ("pkg.mod", "obj.wsgi", None)),
    ("factory:create_app()", ("factory", "create_app", ((), {}))),
    ("factory:create_app('prod', debug=False)", ("factory", "create_app", (("prod",), {"debug": False}))),
])
def test_app_specs(spec, parsed):
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["not an app", "x:y(__import__('os'))", "x:y(**k)", "x:y(", "1x:y", "x:"])
def test_bad_app_specs_are_clear_errors(spec):
    with pytest.raises(AppSpecError, match="invalid app"):
        parse_spec(spec)


SWITCHES = [flag for flag, _env, parse, _default, _help in OPTIONS if parse is parse_switch]


@pytest.mark.parametrize("flag", SWITCHES)
@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("YES", True), ("on", True),
                                        ("0", False), ("false", False), ("No", False), ("off", False)])
def test_every_switch_reads_the_same_words(flag, raw, value):
    config = load_config(["a:b", flag, raw], environ={})
    assert getattr(config, flag[2:].replace("-", "_")) is value


@pytest.mark.parametrize("flag", SWITCHES)
def test_every_switch_refuses_other_words(flag):
    with pytest.raises(ConfigError, match="expected 1 or 0"):
        load_config(["a:b", flag, "maybe"], environ={})


def test_access_log_off_means_off_and_reaches_the_workers():
    # It used to be re-read in the worker by a rule of its own, which turned "off" into on.
    for raw, value in (("off", False), ("on", True)):
        config = load_config(["a:b"], environ={"ACCESS_LOG": raw})
        assert json.loads(config.worker_settings().to_env()["PYCLUSTER_WORKER_SETTINGS"])["access_log"] is value


def test_heartbeats_follow_the_watchdog_timeout():
    assert load_config(["a:b", "--worker-timeout", "2"], environ={}).heartbeat_interval == 0.5
    assert load_config(["a:b", "--worker-timeout", "0"], environ={}).heartbeat_interval == 1.0
    assert load_config(["a:b", "--worker-timeout", "0.1"], environ={}).heartbeat_interval == 0.05


def test_nothing_about_redis_in_the_master():
    assert not [flag for flag, *_ in OPTIONS if "redis" in flag]
