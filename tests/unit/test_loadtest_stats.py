"""Jain's index, shares, percentiles and the aggregation of benchmark runs."""

import math

import pytest

from loadtest.stats import add_derived, fairness_summary, jain_index, max_min_ratio, percentile, shares


def test_jain_is_one_for_an_even_spread():
    assert jain_index([500, 500, 500, 500]) == pytest.approx(1.0)


def test_jain_is_one_over_n_when_one_worker_takes_all():
    assert jain_index([2000, 0, 0, 0]) == pytest.approx(0.25)


def test_jain_of_a_known_split():
    # (x1+x2)^2 / (2 (x1^2+x2^2)) with 81% / 19%
    assert jain_index([81, 19]) == pytest.approx(100**2 / (2 * (81**2 + 19**2)))


def test_jain_of_nothing_is_nan():
    assert math.isnan(jain_index([])) and math.isnan(jain_index([0, 0]))


def test_max_min_ratio():
    assert max_min_ratio([30, 10, 20]) == 3.0
    assert math.isinf(max_min_ratio([5, 0]))


def test_shares_count_silent_workers_as_zero():
    assert shares(["1", "1", "2"], expected_workers=["1", "2", "3"]) == [2, 1, 0]
    assert shares(["7"] * 4, n_workers=3) == [4, 0, 0]


def test_fairness_summary():
    s = fairness_summary([3, 1])
    assert s["requests"] == 4 and s["top_share"] == 0.75 and s["max_min"] == 3.0
    assert s["jain"] == pytest.approx(0.8)
    assert fairness_summary([4, 0])["max_min"] == "inf"
    assert fairness_summary([0, 0])["jain"] is None


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([], 50) is None


def run(server, policy, workers, rps, endpoint="/", p99=10.0):
    return {"kind": "throughput", "server": server, "policy": policy, "workers": workers,
            "endpoint": endpoint, "conn": "keepalive", "rps": rps, "p99_ms": p99}


def test_add_derived_scaling_and_ratio_to_gunicorn_best():
    runs = [run("pycluster", "rr", 1, 1000), run("pycluster", "rr", 2, 1800, p99=8.0),
            run("gunicorn", "sync", 1, 800), run("gunicorn", "sync", 2, 1200),
            run("gunicorn", "gevent", 2, 1500, p99=16.0), {"kind": "fairness", "server": "x"}]
    add_derived(runs)
    rr2 = runs[1]
    assert rr2["scaling_efficiency"] == 0.9
    assert rr2["gunicorn_best"] == "gevent" and rr2["vs_gunicorn_best"] == 1.2
    assert rr2["p99_vs_gunicorn_best"] == 0.5
    assert runs[3]["scaling_efficiency"] == 0.75
    assert "scaling_efficiency" not in runs[5]


def test_add_derived_keeps_endpoints_apart():
    runs = [run("pycluster", "rr", 1, 100, "/work"), run("gunicorn", "sync", 1, 5000, "/")]
    add_derived(runs)
    assert "vs_gunicorn_best" not in runs[0]
