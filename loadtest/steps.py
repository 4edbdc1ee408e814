"""Step-load schedule, kept free of Locust: how many users at a given second of the run."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class StepPlan:
    """`steps` plateaus of `step_seconds` each, adding `step_users` users per step."""

    step_users: int = 10
    step_seconds: float = 30.0
    steps: int = 8
    spawn_rate: float = 10.0

    def __post_init__(self):
        if self.step_users < 1 or self.steps < 1 or self.step_seconds <= 0 or self.spawn_rate <= 0:
            raise ValueError(f"invalid step plan: {self}")

    @property
    def duration(self) -> float:
        """Seconds until the plan ends."""
        return self.steps * self.step_seconds

    def at(self, run_time: float) -> tuple[int, float] | None:
        """(users, spawn rate) for this moment, or None once the plan is over (Locust then stops)."""
        if run_time < 0:
            run_time = 0.0
        if run_time >= self.duration:
            return None
        step = int(run_time // self.step_seconds) + 1
        return step * self.step_users, self.spawn_rate


def plan_from_env(env=None) -> StepPlan:
    """A StepPlan from STEP_USERS, STEP_SECONDS, STEP_COUNT and STEP_SPAWN_RATE."""
    env = os.environ if env is None else env
    users = int(env.get("STEP_USERS") or 10)
    return StepPlan(
        step_users=users,
        step_seconds=float(env.get("STEP_SECONDS") or 30),
        steps=int(env.get("STEP_COUNT") or 8),
        # Reaching each plateau within about a second keeps the steps sharp on the charts.
        spawn_rate=float(env.get("STEP_SPAWN_RATE") or max(users, 1)),
    )
