"""Run wrk (`wrk --latency`) and parse its report into numbers."""

import re
import shutil
import subprocess
from pathlib import Path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
# The mixed keep-alive profile's script: every 8th request wrk sends is /work?ms=10, the rest `/`.
MIXED_KEEPALIVE_SCRIPT = str(Path(__file__).with_name("mixed_keepalive.lua"))
MIXED_EVERY = 8  # the script's `n % 8`: one request in this many is the slow one
MIXED_SLOW, MIXED_FAST = "/work", "/"  # what it sends (the slow one with ?ms=10, the bench's /work default)


def available() -> bool:
    """Whether the wrk binary is on PATH."""
    return shutil.which("wrk") is not None


def to_ms(text: str) -> float:
    """'812.00us' / '1.23ms' / '2.00s' as milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(output: str) -> dict:
    """rps, p50_ms, p90_ms, p99_ms, requests, non2xx and socket errors from `wrk --latency` output."""
    result = {"rps": None, "p50_ms": None, "p90_ms": None, "p99_ms": None, "requests": 0, "non2xx": 0,
              "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", output):
        result["requests"] = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        result["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        result["errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    for pct, key in (("50", "p50_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", output, re.MULTILINE):
            result[key] = round(to_ms(m.group(1)), 3)
    if m := re.search(r"^MIXED over_1s=(\d+) over_2s=(\d+) max_us=(\d+)", output, re.MULTILINE):
        result.update(over_1s=int(m.group(1)), over_2s=int(m.group(2)), max_ms=round(int(m.group(3)) / 1000, 1))
    return result


def window_s(seconds: float) -> int:
    """The seconds wrk actually counts requests over for a run asked to last `seconds` (whole, ≥ 1)."""
    return max(1, round(seconds))


def run(url: str, seconds: float, connections: int, threads: int = 1, close: bool = False,
        cpus: str | None = None, script: str | None = None) -> dict:
    """One bounded wrk run against url, on the CPUs `cpus` (a taskset list) if given; parsed figures plus
    the raw exit code."""
    secs = window_s(seconds)
    cmd = ["wrk", "--latency", "-t", str(threads), "-c", str(max(connections, threads)),
           "-d", f"{secs}s", "--timeout", "2s"]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    if close:
        # wrk reconnects after every response the server closes: one new connection per request.
        cmd += ["-H", "Connection: close"]
    if script:
        cmd += ["-s", script]
    proc = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=secs + 30)
    result = parse(proc.stdout)
    result["returncode"] = proc.returncode
    if proc.returncode and result["rps"] is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout[-300:]}")
    return result
