"""Combining a server's mixed keep-alive rounds into its record (loadtest/mixed_rounds.py)."""

import pytest

from loadtest import mixed_rounds


def cell(rps, p99, max_ms, timeouts=0, over_1s=0, cpu=1400.0):
    return {"kind": "mixed-keepalive", "server": "pycluster", "policy": "rr", "workers": 2, "rps": rps,
            "p50_ms": 20.0, "p99_ms": p99, "max_ms": max_ms, "over_1s": over_1s, "timeouts": timeouts,
            "requests": int(rps * 8), "errors_total": timeouts, "worker_cpu_us_per_req": cpu}


def test_the_median_round_by_rate_stands_with_the_worst_slowest_and_all_timeouts():
    rounds = [cell(1400, 35.0, 150.0, cpu=1390), cell(1300, 40.0, 900.0, timeouts=1, over_1s=0),
              cell(1450, 33.0, 1200.0, over_1s=2)]
    r = mixed_rounds.combine(rounds)
    assert r["rps"] == 1400 and r["worker_cpu_us_per_req"] == 1390  # the middle round, whole
    assert r["p99_ms"] == 35.0  # the median of the three p99s
    assert r["max_ms"] == 1200.0 and r["over_1s"] == 2  # the slowest request of any round counts
    assert r["timeouts"] == 1 and r["errors_total"] == 1 and r["requests"] == 1400 * 8 + 1300 * 8 + 1450 * 8
    assert [x["rps"] for x in r["rounds"]] == [1400, 1300, 1450]  # in the order they ran


def test_an_even_count_takes_the_lower_middle_and_a_single_round_is_itself():
    two = mixed_rounds.combine([cell(1500, 30.0, 40.0), cell(1200, 36.0, 40.0)])
    assert two["rps"] == 1200 and two["p99_ms"] == 36.0
    one = cell(1234, 34.0, 50.0)
    r = mixed_rounds.combine([one])
    assert {k: r[k] for k in one} == one and len(r["rounds"]) == 1


def test_no_rounds_is_an_error():
    with pytest.raises(ValueError):
        mixed_rounds.combine([])
