"""Pure logic of the master, without processes: backoff, framing, config, policies, logs."""
import json
import logging
import os
import socket

import pytest

from master.core import ipc
from master.supervisor.backoff import Backoff
from master.supervisor.config import ConfigError, available_cpus, load_config, parse_size
from master.core.events import EventEmitter
from master.supervisor.logs import JsonFormatter, TextFormatter
from master.core.net import parse_bind
from master.primary.primary import exit_status
from master.scheduling import normalize_policy


def test_backoff_doubles_from_the_second_crash_up_to_the_cap_and_resets():
    backoff = Backoff(initial=0.1, factor=2, cap=1.0, reset_after=30)
    delays = [backoff.next_delay(uptime=1) for _ in range(7)]
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.next_delay(uptime=31) == 0.0  # a worker that stayed up earns a fresh start
    assert backoff.next_delay(uptime=1) == 0.1


def test_a_worker_that_served_a_while_is_replaced_at_once_however_often_it_dies():
    """Killed after it had listened for a second or more: not a crash loop, no delay."""
    backoff = Backoff(initial=0.1, factor=2, cap=1.0, reset_after=30, stable_after=1.0)
    assert [backoff.next_delay(uptime=2.0, listened=True) for _ in range(10)] == [0.0] * 10
    assert [backoff.next_delay(uptime=0.5, listened=True) for _ in range(3)] == [0.1, 0.2, 0.4]  # too soon
    assert [backoff.next_delay(uptime=2.0, listened=False) for _ in range(2)] == [0.8, 1.0]  # never served


def test_frames_split_across_reads_keep_their_order_and_descriptors():
    decoder = ipc.FrameDecoder()
    first = ipc.encode(ipc.internal("reply", ack=1, fds=2))
    second = ipc.encode(ipc.user_envelope({"hello": "world\nwith a newline"}))
    data = first + second
    assert decoder.feed(data[:5], [10, 11]) == []
    frames = decoder.feed(data[5:])
    assert frames[0] == ({"cmd": "CLUSTER", "act": "reply", "ack": 1, "fds": 2}, [10, 11])
    assert frames[1] == ({"cmd": "USER", "data": {"hello": "world\nwith a newline"}}, [])


def test_user_messages_cannot_pass_for_internal_ones():
    envelope = ipc.user_envelope({"cmd": "CLUSTER", "act": "disconnect"})
    assert envelope["cmd"] == "USER" and envelope["data"]["act"] == "disconnect"


def test_unserialisable_and_malformed_messages_are_clear_errors():
    with pytest.raises(ipc.MessageError, match="not JSON-serialisable"):
        ipc.encode(ipc.user_envelope({1, 2}))
    with pytest.raises(ipc.MessageError, match="not JSON-serialisable"):
        ipc.encode(ipc.user_envelope(float("nan")))
    with pytest.raises(ipc.MessageError, match="malformed frame"):
        ipc.FrameDecoder().feed(b"not json\n")
    with pytest.raises(ipc.MessageError, match="envelope"):
        ipc.FrameDecoder().feed(b'{"cmd": "OTHER"}\n')


def test_descriptors_survive_a_real_socketpair():
    left, right = socket.socketpair()
    reader, writer = os.pipe()
    try:
        left.sendmsg([ipc.encode(ipc.internal("reply", ack=1, fds=1))], ipc.scm_rights([reader]))
        data, ancdata, _, _ = right.recvmsg(4096, socket.CMSG_SPACE(4 * 4))
        [(message, fds)] = ipc.FrameDecoder().feed(data, ipc.fds_from_ancdata(ancdata))
        os.write(writer, b"x")
        assert message["act"] == "reply" and os.read(fds[0], 1) == b"x"
        os.close(fds[0])
    finally:
        for fd in (reader, writer):
            os.close(fd)
        left.close()
        right.close()


def test_flags_win_over_their_environment_twins():
    config = load_config(["app.wsgi:app", "--workers", "3"], {"WORKERS": "7", "GRACEFUL_TIMEOUT": "4",
                                                              "CLUSTER_SCHED_POLICY": "shared"})
    assert config.workers == 3 and config.graceful_timeout == 4.0 and config.policy == "shared"
    assert load_config([], {"APP_MODULE": "app.wsgi:app", "PORT": "9000"}).bind == "0.0.0.0:9000"
    assert load_config(["a:b", "--bind", "[::]:8080"], {}).bind == "[::]:8080"
    assert load_config(["a:b"], {}).workers == available_cpus() >= 1
    assert load_config(["a:b", "--metrics-bind", "none"], {}).metrics_bind is None
    assert load_config(["a:b"], {"MAX_MEMORY": "512M"}).max_memory == 512 * 1024 ** 2
    assert load_config(["a:b"], {}).batch_scheduling is True
    assert load_config(["a:b"], {"BATCH_SCHEDULING": "off"}).batch_scheduling is False


@pytest.mark.parametrize("argv, env, message", [
    (["a:b", "--workers", "0"], {}, "need at least 1"),
    (["a:b"], {"WORKERS": "two"}, "invalid WORKERS 'two'"),
    (["a:b", "--bind", "host:port"], {}, "invalid bind address"),
    (["a:b"], {"PORT": "99999"}, "invalid PORT"),
    (["a:b", "--policy", "random"], {}, "unknown scheduling policy"),
    (["a:b", "--log-format", "xml"], {}, "expected text or json"),
    (["a:b", "--max-memory", "lots"], {}, "invalid --max-memory 'lots'"),
    (["a:b", "--batch-scheduling", "maybe"], {}, "invalid --batch-scheduling 'maybe': expected 1 or 0"),
    (["a:b", "--time-slice", "1e30"], {}, "invalid --time-slice '1e30': at most 1 seconds"),
    (["a:b"], {"TIME_SLICE": "-0.002"}, "invalid TIME_SLICE '-0.002'"),
    (["a:b"], {"TIME_SLICE": "nan"}, "invalid TIME_SLICE 'nan'"),
    (["not an app"], {}, "invalid APP_MODULE"),
    ([], {}, "missing APP_MODULE"),
    (["a:b", "--no-such-flag"], {}, "unrecognized arguments"),
])
def test_bad_configuration_is_one_clear_error(argv, env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(argv, env)


def test_policy_names_and_aliases():
    assert normalize_policy("RR") == "rr" and normalize_policy("none") == "shared"
    assert normalize_policy("reuseport") == "reuseport"
    with pytest.raises(ValueError, match="expected one of rr, shared, reuseport"):
        normalize_policy("fastest")


def test_bind_addresses_and_exit_statuses():
    assert parse_bind("0.0.0.0:3000") == ("0.0.0.0", 3000)
    assert parse_bind(":3000") == ("0.0.0.0", 3000) and parse_bind(3000) == ("0.0.0.0", 3000)
    assert parse_bind("[::1]:80") == ("::1", 80)
    assert exit_status(42) == (42, None) and exit_status(-9) == (None, "SIGKILL")
    assert parse_size("1g") == 1024 ** 3 and parse_size("2048") == 2048


def test_a_listener_that_raises_does_not_stop_the_others(caplog):
    emitter, seen = EventEmitter(), []
    emitter.on("exit", lambda *a: 1 / 0)
    emitter.once("exit", lambda *a: seen.append(("once", a)))
    emitter.on("exit", lambda *a: seen.append(("on", a)))
    with caplog.at_level(logging.ERROR):
        emitter.emit("exit", 1, None)
        emitter.emit("exit", 2, None)
    assert seen == [("once", (1, None)), ("on", (1, None)), ("on", (2, None))]
    assert "listener for 'exit' raised" in caplog.text


def test_log_lines_have_a_timestamp_in_text_and_json():
    record = logging.LogRecord("master", logging.INFO, __file__, 1, "Worker %s is online", (42,), None)
    text = TextFormatter().format(record)
    assert text.endswith("INFO Worker 42 is online") and text[:4].isdigit() and "T" in text[:20]
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "Worker 42 is online" and entry["level"] == "info" and entry["ts"].endswith("Z")
