"""The Locust users of the stack chaos scenarios: paced GET / and GET /count, every request recorded.

Run by loadtest/locust_run.py (`python -m locust -f loadtest/chaos_locust.py --headless ...`):
- CHAOS_HOSTS    base URLs, comma-separated; users take them in turn (one per load balancer)
- CHAOS_RATE     requests per second per user (constant_throughput): a paced load below the
                 stack's capacity, so "capacity back" means the offered load is served again
- CHAOS_PATHS    the paths each user asks in turn, comma-separated (default "/,/count")
- CHAOS_RECORDS  the file every request is appended to, one JSON object per line: before it is
                 sent {"sent": path}, and when it is done
                 {"start", "end" (epoch s), "path", "kind" ("ok", "http_502", "error:..."),
                  "status", "host", "views" (totalViews of a successful /count, else null)}
                 (so a request that never completed, or whose record was lost, still counts as sent)
"""

import itertools
import json
import os

from locust import FastHttpUser, constant_throughput, events, task

HOSTS = [h.strip() for h in os.environ.get("CHAOS_HOSTS", "http://127.0.0.1:8000").split(",") if h.strip()]
RATE = float(os.environ.get("CHAOS_RATE", "10"))
PATHS = [p.strip() for p in os.environ.get("CHAOS_PATHS", "/,/count").split(",") if p.strip()]
_records = {"file": None}


@events.test_start.add_listener
def open_records(environment, **_kwargs):
    """Open the records file when the load starts."""
    # Line-buffered: the runner waits for the first line to know the load is on.
    _records["file"] = open(os.environ["CHAOS_RECORDS"], "a", encoding="utf-8", buffering=1)


@events.quitting.add_listener
def close_records(environment, **_kwargs):
    """Flush the records when Locust quits."""
    if _records["file"] is not None:
        _records["file"].close()
        _records["file"] = None


def _views(name, response, ok):
    """totalViews of a successful /count answer, else None."""
    if name != "/count" or not ok:
        return None
    try:
        return int(json.loads(response.text)["totalViews"])
    except (ValueError, KeyError, TypeError):
        return None


@events.request.add_listener
def record(request_type, name, response_time, response_length, response, context, exception,
           start_time, url, **_kwargs):
    """One line per request, failures included."""
    out = _records["file"]
    if out is None:
        return
    status = getattr(response, "status_code", 0) or 0
    ok = exception is None and 200 <= status < 400
    if ok:
        kind = "ok"
    elif status:
        kind = f"http_{status}"
    else:
        kind = "error:" + type(exception).__name__
    out.write(json.dumps({
        "start": start_time, "end": start_time + response_time / 1000.0, "path": name, "kind": kind,
        "status": status, "host": context.get("host", ""), "views": _views(name, response, ok),
    }) + "\n")


class ChaosUser(FastHttpUser):
    """Asks PATHS in turn: GET / (safe to retry) and GET /count (counts: never retried once sent) by default."""

    host = HOSTS[0]
    wait_time = constant_throughput(RATE)
    # A request that waits longer than this has failed as far as a user can tell.
    network_timeout = 10.0
    connection_timeout = 5.0
    _numbers = itertools.count()

    def __init__(self, environment):
        # Each user sticks to one load balancer, in turn: the runner spreads users over them.
        number = next(self._numbers)
        self.host = HOSTS[number % len(HOSTS)]
        self.paths = itertools.cycle(PATHS[number % len(PATHS):] + PATHS[:number % len(PATHS)])
        super().__init__(environment)

    def context(self):
        """Every request carries the load balancer it went through."""
        return {"host": self.host}

    @task
    def ask(self):
        """The next path; recorded under its path without the query string."""
        path = next(self.paths)
        name = path.split("?")[0]
        if _records["file"] is not None:
            _records["file"].write(json.dumps({"sent": name}) + "\n")
        self.client.get(path, name=name)
