"""Pure numbers for the benchmark: fairness, percentiles, scaling, aggregation of runs."""

import math
from collections import Counter
from collections.abc import Iterable, Sequence


def jain_index(counts: Sequence[float]) -> float:
    """Jain's fairness index: 1.0 when every share is equal, 1/n when one takes everything."""
    counts = list(counts)
    if not counts:
        return float("nan")
    total = sum(counts)
    squares = sum(c * c for c in counts)
    if squares == 0:
        return float("nan")
    return total * total / (len(counts) * squares)


def max_min_ratio(counts: Sequence[float]) -> float:
    """Largest share over smallest; inf when some worker got nothing."""
    counts = list(counts)
    if not counts:
        return float("nan")
    low = min(counts)
    return math.inf if low == 0 else max(counts) / low


def shares(observed: Iterable[str], expected_workers: Iterable[str] = (), n_workers: int = 0) -> list[int]:
    """Requests per worker, sorted high to low, counting known-but-silent workers as 0.

    `observed` is one worker id per response; `expected_workers` are ids known to exist; `n_workers`
    pads with zeros up to that many workers when the ids of idle workers are unknown.
    """
    counter = Counter(observed)
    for worker in expected_workers:
        counter.setdefault(worker, 0)
    counts = sorted(counter.values(), reverse=True)
    counts += [0] * max(0, n_workers - len(counts))
    return counts


def fairness_summary(counts: Sequence[int]) -> dict:
    """The fairness figures the report shows for one distribution."""
    total = sum(counts)
    return {
        "requests": total,
        "per_worker": list(counts),
        "jain": round(jain_index(counts), 4) if total else None,
        "max_min": (None if not total else
                    ("inf" if math.isinf(max_min_ratio(counts)) else round(max_min_ratio(counts), 3))),
        "top_share": round(max(counts) / total, 4) if total else None,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def scaling_efficiency(rps_n: float, n: int, rps_1: float) -> float | None:
    """rps(N) / (N × rps(1)): 1.0 is perfect linear scaling."""
    if not rps_1 or n < 1:
        return None
    return rps_n / (n * rps_1)


def add_derived(runs: list[dict]) -> list[dict]:
    """Fill scaling efficiency and the ratio to gunicorn's best class into each throughput run.

    Runs are grouped by (server, policy, endpoint, conn); gunicorn's best at N is the highest rps
    of any gunicorn class on the same endpoint, connection mode and N.
    """
    key = lambda r: (r["server"], r["policy"], r["endpoint"], r.get("conn", "keepalive"))
    one = {key(r): r["rps"] for r in runs if r.get("kind") == "throughput" and r["workers"] == 1}
    best = {}
    for r in runs:
        if r.get("kind") == "throughput" and r["server"] == "gunicorn" and r.get("rps"):
            k = (r["endpoint"], r.get("conn", "keepalive"), r["workers"])
            if r["rps"] > best.get(k, (0, None))[0]:
                best[k] = (r["rps"], r)
    # granian, the other peer, beside gunicorn's best: every ratio names both.
    granian = {(r["endpoint"], r.get("conn", "keepalive"), r["workers"]): r for r in runs
               if r.get("kind") == "throughput" and r["server"] == "granian" and r.get("rps")}
    for r in runs:
        if r.get("kind") != "throughput":
            continue
        eff = scaling_efficiency(r.get("rps") or 0, r["workers"], one.get(key(r)))
        r["scaling_efficiency"] = None if eff is None else round(eff, 3)
        b = best.get((r["endpoint"], r.get("conn", "keepalive"), r["workers"]))
        if b and r.get("rps") is not None:
            r["gunicorn_best"] = b[1]["policy"]
            r["vs_gunicorn_best"] = round(r["rps"] / b[0], 3)
            if r.get("p99_ms") is not None and b[1].get("p99_ms"):
                r["p99_vs_gunicorn_best"] = round(r["p99_ms"] / b[1]["p99_ms"], 3)
        g = granian.get((r["endpoint"], r.get("conn", "keepalive"), r["workers"]))
        if g and r.get("rps") is not None:
            r["vs_granian"] = round(r["rps"] / g["rps"], 3)
            if r.get("p99_ms") is not None and g.get("p99_ms"):
                r["p99_vs_granian"] = round(r["p99_ms"] / g["p99_ms"], 3)
    return runs
