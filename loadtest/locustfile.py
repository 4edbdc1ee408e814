"""Locust users for the seed's workloads: hello, 10 ms of CPU work, page views and sessions.

Headless:  locust -f loadtest/locustfile.py -H http://127.0.0.1:8000 --headless -u 50 -r 50 -t 1m --csv out --html out.html
Web UI:    locust -f loadtest/locustfile.py,loadtest/shapes.py -H http://127.0.0.1:8000
Pick one workload by naming its class: `... HelloUser`. The quitting gate makes a headless run exit
non-zero when the failure ratio or p95 passes --max-fail-ratio / --max-p95-ms (or LOCUST_MAX_*).
"""

import logging
import os
import uuid

from locust import FastHttpUser, between, events, task
from locust.runners import WorkerRunner

try:
    from loadtest.gate import DEFAULT_MAX_FAIL_RATIO, DEFAULT_MAX_P95_MS, Limits, verdict
except ImportError:  # run as a bare file, with only its own directory on sys.path
    from gate import DEFAULT_MAX_FAIL_RATIO, DEFAULT_MAX_P95_MS, Limits, verdict

# No think time by default: the runs measure the server, not simulated people. LOAD_WAIT_MAX > 0
# spreads requests out, which makes throughput follow the user count in the web UI.
WAIT_MAX = float(os.environ.get("LOAD_WAIT_MAX") or 0)


def snippet(resp) -> str:
    """The start of a body for a failure message; empty when the connection itself failed."""
    return (resp.text or "")[:80]


@events.init_command_line_parser.add_listener
def add_gate_arguments(parser):
    """The gate's thresholds, settable on the command line, in the web UI or through the env."""
    parser.add_argument(
        "--max-fail-ratio", type=float, env_var="LOCUST_MAX_FAIL_RATIO", default=DEFAULT_MAX_FAIL_RATIO,
        help="exit non-zero when the failure ratio (0..1) is above this",
    )
    parser.add_argument(
        "--max-p95-ms", type=float, env_var="LOCUST_MAX_P95_MS", default=DEFAULT_MAX_P95_MS,
        help="exit non-zero when the 95th percentile response time (ms) is above this",
    )


@events.quitting.add_listener
def quitting_gate(environment, **_kwargs):
    """Set the process exit code from the aggregated stats."""
    # Workers only hold their share of the stats; the master (or a local runner) judges the whole.
    if isinstance(environment.runner, WorkerRunner):
        return
    options = environment.parsed_options
    limits = Limits(
        max_fail_ratio=getattr(options, "max_fail_ratio", DEFAULT_MAX_FAIL_RATIO),
        max_p95_ms=getattr(options, "max_p95_ms", DEFAULT_MAX_P95_MS),
    )
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) if total.num_requests else None
    code, reasons = verdict(total.num_requests, total.fail_ratio, p95, limits)
    if code:
        logging.error("quitting gate: FAIL: %s", "; ".join(reasons))
    else:
        logging.info("quitting gate: pass (%d requests, %.2f%% failed, p95 %s ms)",
                     total.num_requests, 100 * total.fail_ratio, p95)
    environment.process_exit_code = code


class HelloUser(FastHttpUser):
    """GET / — the cheapest request: the server's own overhead."""

    weight = 4
    wait_time = between(0, WAIT_MAX)

    @task
    def hello(self):
        """Expect the greeting from some worker."""
        with self.client.get("/", name="/", catch_response=True) as resp:
            if resp.status_code != 200 or not (resp.text or "").startswith("Hello"):
                resp.failure(f"unexpected answer {resp.status_code}: {snippet(resp)!r}")


class WorkUser(FastHttpUser):
    """GET /work — 10 ms of CPU per request: scales with cores, not with cleverness."""

    weight = 2
    wait_time = between(0, WAIT_MAX)

    @task
    def work(self):
        """Expect 200; the body names the pid that burnt the CPU."""
        with self.client.get("/work", name="/work", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")


class PageViewUser(FastHttpUser):
    """GET /count — one Redis INCR per request."""

    weight = 3
    wait_time = between(0, WAIT_MAX)

    @task
    def count(self):
        """Expect JSON with an integer totalViews."""
        with self.client.get("/count", name="/count", catch_response=True) as resp:
            try:
                views = resp.json()["totalViews"]
            except Exception:  # a 503 page, an HTML error, a cut-off body: all the same failure
                resp.failure(f"no totalViews in {resp.status_code}: {snippet(resp)!r}")
                return
            if resp.status_code != 200 or not isinstance(views, int):
                resp.failure(f"status {resp.status_code}, totalViews {views!r}")


class SessionUser(FastHttpUser):
    """PUT/GET/DELETE /session/<id> — each user owns one session and checks it reads back."""

    weight = 1
    wait_time = between(0, WAIT_MAX)

    def on_start(self):
        """A session id of our own, so users never race each other's data."""
        self.session_id = uuid.uuid4().hex
        self.stored = None

    @property
    def path(self):
        """This user's session URL."""
        return f"/session/{self.session_id}"

    @task(2)
    def put_session(self):
        """Store a fresh object; 200 or 201 both mean stored."""
        data = {"user": self.session_id[:8], "n": uuid.uuid4().int % 1000}
        with self.client.put(self.path, json=data, name="/session/[id]", catch_response=True) as resp:
            if resp.status_code in (200, 201):
                self.stored = data
            else:
                resp.failure(f"PUT status {resp.status_code}")

    @task(5)
    def get_session(self):
        """Read back exactly what we stored, or a 404 when nothing is stored."""
        with self.client.get(self.path, name="/session/[id]", catch_response=True) as resp:
            if self.stored is None:
                if resp.status_code == 404:
                    resp.success()  # absent is the right answer before the first PUT
                else:
                    resp.failure(f"expected 404, got {resp.status_code}")
                return
            try:
                body = resp.json()["session"]
            except Exception:
                resp.failure(f"no session in {resp.status_code}: {snippet(resp)!r}")
                return
            if body != self.stored:
                resp.failure(f"read {body!r}, stored {self.stored!r}")

    @task(1)
    def delete_session(self):
        """Delete it: 204, and nothing stored afterwards."""
        with self.client.delete(self.path, name="/session/[id]", catch_response=True) as resp:
            # 404 is right only when nothing was stored; otherwise the session went missing.
            if resp.status_code in (200, 204) or (resp.status_code == 404 and self.stored is None):
                resp.success()
                self.stored = None
            else:
                resp.failure(f"DELETE status {resp.status_code}")
