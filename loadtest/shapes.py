"""Locust load shapes: a step load, so the web UI shows throughput rising until the workers saturate.

Use it next to the locustfile: `locust -f loadtest/locustfile.py,loadtest/shapes.py`.
Tune with STEP_USERS, STEP_SECONDS, STEP_COUNT, STEP_SPAWN_RATE.
"""

from locust import LoadTestShape

try:
    from loadtest.steps import plan_from_env
except ImportError:  # run as a bare file, with only its own directory on sys.path
    from steps import plan_from_env


class StepLoadShape(LoadTestShape):
    """Adds STEP_USERS users every STEP_SECONDS for STEP_COUNT steps, then stops."""

    def __init__(self):
        super().__init__()
        self.plan = plan_from_env()

    def tick(self):
        """Users and spawn rate for now; None ends the run."""
        return self.plan.at(self.get_run_time())
