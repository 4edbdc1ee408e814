"""`python -m loadtest.dashboard_shot` (make dashboard-screenshot): the README's dashboard picture.

A crash demo on loopback, about 45 seconds: the demo app under steady load, two workers
SIGKILLed a few seconds apart, then a rolling restart; headless Chromium then takes the
dashboard's screenshot (docs/img/dashboard.png) with the crashes, their replacements and the
reload on the timeline.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from loadtest.browser import Browser, chromium_path
from loadtest.loadgen import LoadGen
from loadtest.progress import Progress
from loadtest.servers import HOST, REPO, RedisServer, Server, free_port

# (seconds after the load starts, what happens)
SCRIPT = ((12.0, "kill"), (22.0, "kill"), (32.0, "reload"), (44.0, "shoot"))


def run_demo(out: Path, workers: int) -> Path:
    """Start Redis and the master, play SCRIPT under load, and save the screenshot to `out`."""
    metrics = free_port()
    redis = RedisServer().start()
    server = Server("pycluster", "rr", workers, redis.url, extra_env={"METRICS_BIND": f"{HOST}:{metrics}"})
    progress = Progress(len(SCRIPT), [SCRIPT[0][0]] + [b[0] - a[0] for a, b in zip(SCRIPT, SCRIPT[1:])])
    try:
        server.start()
        # New connections, so the policy places every request and replacements get their share at once.
        gen = LoadGen(HOST, server.port, ["/", "/count", "/work?ms=3"], concurrency=6, keepalive=False,
                      duration=SCRIPT[-1][0] + 15, max_requests=200_000).start()
        try:
            with Browser(width=1440, height=900) as browser:
                browser.goto(f"http://{HOST}:{metrics}/")
                for at, action in SCRIPT:
                    progress.start(action)
                    time.sleep(max(0.0, gen.t0 + at - time.monotonic()))
                    progress.step(_act(action, server, browser, out))
        finally:
            gen.stop()
            gen.join()
    finally:
        progress.close()
        server.stop()
        server.cleanup()
        redis.stop()
    return out


def _act(action: str, server: Server, browser: Browser, out: Path) -> str:
    if action == "kill":
        victim = min(server.worker_pids())
        os.kill(victim, signal.SIGKILL)
        return f"SIGKILL worker {victim}"
    if action == "reload":
        server.signal(signal.SIGUSR2)
        return "SIGUSR2: rolling restart"
    browser.wait_for("window.pyclusterDashboard && window.pyclusterDashboard.state.events.size >= 3", 10,
                     what="the crashes and the reload on the page")
    if browser.errors:
        raise RuntimeError(f"the page had errors: {browser.errors}")
    browser.screenshot(out)
    return f"wrote {out}"


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run the demo."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.dashboard_shot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "img" / "dashboard.png"))
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    if not chromium_path():
        print("chromium is not installed (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    run_demo(Path(args.out), args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
