"""The guard, measured in the same run: the code of the previous committed bench against the code now.

The guard asks that keep-alive `/` throughput and p99 do not get worse by more than 3% against
the previous committed run. Compared with the committed figures, that measures the machine as
much as the code: on a shared 2-CPU machine the same code gives 12,300 to 16,200 req/s from one
run to the next. So the bench also takes the tree of the commit that last wrote the committed
results (`git archive`), starts its master beside the current one, and measures the two in turn
(previous, now, previous, now …) with the same wrk command; the ratio of the medians is what the
code changed. The committed figures are still shown beside it.

How small a change one run can see is measured too: the current code against itself, the same way
(`aa`, for the first policy). Where that ratio is further from 1 than the guard's bar, this run
cannot tell a change of that size from the machine's noise, and the report says so beside the
verdict (the bar itself stays).
"""
from __future__ import annotations

import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

from loadtest.servers import REPO, Server

RESULTS = "docs/bench/results.json"


def previous_commit(repo: Path = REPO, results: str = RESULTS) -> str | None:
    """The commit that last changed the committed results; None outside a git checkout or without them."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%H", "--", results],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else None


def export_tree(commit: str, dest: Path, repo: Path = REPO) -> None:
    """Write the files of `commit` into `dest` (no .git: the previous code only needs to run)."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                             capture_output=True, timeout=120, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, timeout=120, check=True)


def ratios(now: list[dict], before: list[dict]) -> dict:
    """Median rate and p99 of each side, and their ratios (now / before)."""
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    rps_now, rps_before = med(now, "rps"), med(before, "rps")
    p99_now, p99_before = med(now, "p99_ms"), med(before, "p99_ms")
    return {"rps_now": round(rps_now, 1), "rps_before": round(rps_before, 1),
            "p99_now_ms": round(p99_now, 3), "p99_before_ms": round(p99_before, 3),
            "rps_ratio": round(rps_now / rps_before, 4), "p99_ratio": round(p99_now / p99_before, 4)}


def resolves(aa: dict | None, bar: float) -> bool | None:
    """Whether a run whose current code, measured against itself, gave the ratios in `aa` can see a
    change of `bar` (0.03: 3%) in rate and p99; None when there was no such measurement."""
    if aa is None:
        return None
    return abs(aa["rps_ratio"] - 1) <= bar and abs(aa["p99_ratio"] - 1) <= bar


def _alternate(policy: str, n: int, redis_url: str, pairs: int, throughput: Callable[[Server], dict],
               sides: tuple[tuple[str, Path], tuple[str, Path]]) -> dict[str, list[dict]]:
    """`pairs` rounds of one fresh server per side, in turn; each side's measurements."""
    out: dict[str, list[dict]] = {name: [] for name, _ in sides}
    for _ in range(pairs):
        for name, where in sides:
            srv = Server("pycluster", policy, n, redis_url, root=where).start()
            try:
                out[name].append(throughput(srv))
            finally:
                srv.stop()
                srv.cleanup()
    return out


def measure(policies: list[str], n: int, redis_url: str, pairs: int,
            throughput: Callable[[Server], dict], progress: Any) -> tuple[list[dict], list[str]]:
    """For each policy, `pairs` alternating runs of the previous committed code and the current one.

    `throughput(server)` measures keep-alive `/` on a started server (the bench's own cell).
    Returns the guard records and notes on what could not be measured.
    """
    commit = previous_commit()
    if commit is None:
        return [], [f"guard: no committed {RESULTS} in a git checkout here, so no same-run comparison"]
    out: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        root = Path(tmp)
        try:
            export_tree(commit, root)
        except (OSError, subprocess.SubprocessError) as exc:
            return [], [f"guard: could not export {commit[:12]} ({exc}), so no same-run comparison"]
        for policy in policies:
            progress.start(f"guard pycluster/{policy} N={n}: {commit[:12]} against now")
            try:
                sides = _alternate(policy, n, redis_url, pairs, throughput, (("before", root), ("now", REPO)))
            except (RuntimeError, TimeoutError) as exc:
                progress.note(f"guard pycluster/{policy}: not measured ({str(exc).splitlines()[0]})")
                continue
            record = {"kind": "guard", "server": "pycluster", "policy": policy, "workers": n,
                      "endpoint": "/", "previous_commit": commit, "pairs": pairs,
                      "before": [_cell(r) for r in sides["before"]], "now": [_cell(r) for r in sides["now"]],
                      **ratios(sides["now"], sides["before"])}
            out.append(record)
            progress.step(f"guard pycluster/{policy:<9} N={n} now {record['rps_now']:,.0f} req/s against "
                          f"{record['rps_before']:,.0f} ({record['rps_ratio']:.3f}×), p99 ×{record['p99_ratio']:.2f}")
    if policies:
        out += _same_code(policies[0], n, redis_url, pairs, throughput, progress)
    return out, []


def _same_code(policy: str, n: int, redis_url: str, pairs: int, throughput: Callable[[Server], dict],
               progress: Any) -> list[dict]:
    """The current code against itself, as the guard measures: how far apart identical code reads."""
    progress.start(f"guard pycluster/{policy} N={n}: the current code against itself")
    try:
        sides = _alternate(policy, n, redis_url, pairs, throughput, (("a", REPO), ("b", REPO)))
    except (RuntimeError, TimeoutError) as exc:
        progress.note(f"guard pycluster/{policy} against itself: not measured ({str(exc).splitlines()[0]})")
        return []
    record = {"kind": "guard-aa", "server": "pycluster", "policy": policy, "workers": n, "endpoint": "/",
              "pairs": pairs, "a": [_cell(r) for r in sides["a"]], "b": [_cell(r) for r in sides["b"]],
              **ratios(sides["b"], sides["a"])}
    progress.step(f"guard pycluster/{policy:<9} N={n} the same code reads {record['rps_ratio']:.3f}× "
                  f"({record['rps_now']:,.0f} against {record['rps_before']:,.0f} req/s), p99 ×{record['p99_ratio']:.2f}")
    return [record]


def _cell(run: dict) -> dict:
    return {"rps": run["rps"], "p99_ms": run["p99_ms"]}
