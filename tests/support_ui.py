"""Helpers for the dashboard's tests: the tools they need, a master with its dashboard on, load.

Chromium and tmux are installed by .ci/run, so in CI (CI or REQUIRE_DOCKER set) a missing one
fails the test; on a developer's machine without them the test is skipped and says how to
install them.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest

from support import free_port, wait_for


def require_tool(name: str, package: str | None = None) -> str:
    """The path of `name`; a failure in CI, a skip elsewhere, when it is not installed."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian: apt-get install -y {package or name})"
    if os.environ.get("CI") or os.environ.get("REQUIRE_DOCKER"):
        pytest.fail(message + "; .ci/run installs it")
    pytest.skip(message)


def dashboard_env(port: int | None = None, **extra: str) -> dict[str, str]:
    """The environment of a master whose dashboard listens on 127.0.0.1:`port` (a free one by default)."""
    return {"METRICS_BIND": f"127.0.0.1:{port or free_port()}", **extra}


def metrics_port(master: Any) -> int:
    """The dashboard port of a master started with dashboard_env()."""
    return int(master.env["METRICS_BIND"].rpartition(":")[2])


def dashboard_json(master: Any, query: str = "") -> dict[str, Any]:
    """GET /dashboard.json of `master`, parsed."""
    from master.supervisor.peers import fetch

    return json.loads(fetch("127.0.0.1", metrics_port(master), "/dashboard.json" + query, 5.0))


def wait_rates(master: Any, ids: set[str] | None = None, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until every listening worker (or those of `ids`) has a rate above 0 in the newest sample."""
    def ready():
        body = dashboard_json(master)
        latest = body["samples"][-1]["w"] if body["samples"] else {}
        wanted = ids or {str(w["id"]) for w in body["snapshot"]["workers"] if w["state"] == "listening"}
        rates = [latest.get(wid, [None])[0] for wid in wanted]
        return body if wanted and all(r and r > 0 for r in rates) else None
    return wait_for(ready, timeout, 0.2, "every worker to show a rate above 0")
