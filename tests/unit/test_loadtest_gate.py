"""The quitting gate's thresholds and the step-load plan."""

import pytest

from loadtest.gate import Limits, limits_from_env, verdict
from loadtest.steps import StepPlan, plan_from_env


def test_a_healthy_run_passes():
    assert verdict(1000, 0.0, 120.0, Limits()) == (0, [])


def test_failure_ratio_above_the_limit_fails():
    code, reasons = verdict(1000, 0.02, 10.0, Limits(max_fail_ratio=0.01))
    assert code == 1 and "failure ratio" in reasons[0]


def test_ratio_at_the_limit_passes():
    assert verdict(100, 0.01, 10.0, Limits(max_fail_ratio=0.01))[0] == 0


def test_slow_p95_fails():
    code, reasons = verdict(1000, 0.0, 1500.0, Limits(max_p95_ms=1000))
    assert code == 1 and "p95" in reasons[0]


def test_no_requests_fails():
    code, reasons = verdict(0, 0.0, None, Limits())
    assert code == 1 and "no requests" in reasons[0]


def test_both_reasons_are_reported():
    assert len(verdict(10, 1.0, 5000.0, Limits())[1]) == 2


def test_limits_from_env():
    limits = limits_from_env({"LOCUST_MAX_FAIL_RATIO": "0.05", "LOCUST_MAX_P95_MS": "250"})
    assert limits == Limits(max_fail_ratio=0.05, max_p95_ms=250.0)
    assert limits_from_env({}) == Limits()


@pytest.mark.parametrize("kwargs", [{"max_fail_ratio": 1.5}, {"max_fail_ratio": -0.1}, {"max_p95_ms": 0}])
def test_invalid_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        Limits(**kwargs)


def test_steps_add_users_per_plateau_then_stop():
    plan = StepPlan(step_users=10, step_seconds=30, steps=3, spawn_rate=10)
    assert plan.at(0) == (10, 10)
    assert plan.at(29.9) == (10, 10)
    assert plan.at(30) == (20, 10)
    assert plan.at(89.9) == (30, 10)
    assert plan.at(90) is None
    assert plan.duration == 90


def test_steps_from_env():
    plan = plan_from_env({"STEP_USERS": "5", "STEP_SECONDS": "2", "STEP_COUNT": "4"})
    assert (plan.step_users, plan.step_seconds, plan.steps, plan.spawn_rate) == (5, 2.0, 4, 5.0)
    assert plan_from_env({}) == StepPlan(10, 30.0, 8, 10.0)


def test_invalid_plan_is_refused():
    with pytest.raises(ValueError):
        StepPlan(step_users=0)
