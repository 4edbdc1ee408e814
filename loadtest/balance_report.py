"""The balancing issue's part of docs/BENCHMARKS.md: capacity timelines, the mixed keep-alive
profile, their targets and plots. report.py calls in here; the numbers come from bench.py."""

from pathlib import Path

from loadtest import guard
from loadtest.capacity import GOAL_RATE, GOAL_SHARE, GOAL_WITHIN
from loadtest.wrk import MIXED_EVERY, MIXED_FAST, MIXED_SLOW

TARGET_MIXED_VS_GUNICORN = 1.10
TARGET_LOCUST_VS_GTHREAD = 1.10
TARGET_KEEPALIVE_JAIN = 0.99
MAX_SLOWEST_MS = 1000.0
GUARD = 0.03  # keep-alive `/` may not lose more than this against the previous committed run


def _label(run: dict) -> str:
    return f"{run['server']} {run['policy']}"


def _of(runs: list[dict], kind: str) -> list[dict]:
    return sorted((r for r in runs if r.get("kind") == kind),
                  key=lambda r: (r["server"], r["policy"], r.get("scenario", ""), r.get("workers") or 0))


def targets(runs: list[dict], previous: list[dict] | None = None) -> list[dict]:
    """One row per pycluster policy and goal of the balancing issue."""
    rows = []
    for r in _of(runs, "capacity"):
        if r["server"] != "pycluster":
            continue
        back = "never" if r["recovered_s"] is None else f"{r['recovered_s']} s"
        rows.append({"policy": r["policy"], "met": r["met"],
                     "target": f"capacity after {r['scenario']}: ≥ {GOAL_RATE} of the rate, no worker above "
                               f"{GOAL_SHARE:.0%}, within {GOAL_WITHIN:.0f} s",
                     "measured": f"{back} (then {r['after_rps']:,.0f} req/s of {r['reference_rps']:,.0f}, "
                                 f"top share {r['top_share_after']:.0%})"})
        if r["scenario"] == "startup" and r.get("jain") is not None:
            rows.append({"policy": r["policy"], "met": r["jain"] >= TARGET_KEEPALIVE_JAIN,
                         "target": f"keep-alive Jain ≥ {TARGET_KEEPALIVE_JAIN}, connections opened while workers booted",
                         "measured": f"{r['jain']:.4f}"})
    rows += _mixed_targets(runs) + _fairness_targets(runs) + _guard(runs, previous or [])
    return rows


def mixed_floor_us(fast_per_core: float | None, slow_per_core: float | None) -> float | None:
    """CPU µs per request of the mixed profile for the app alone: Flask called in-process (the bench's
    ceiling cells), no server, no socket. No server's workers can spend less than this per request."""
    if not fast_per_core or not slow_per_core:
        return None
    return 1e6 * ((MIXED_EVERY - 1) / fast_per_core + 1 / slow_per_core) / MIXED_EVERY


def cpu_bound_ratios(ours_us: float, peer_us: float, floor_us: float | None) -> tuple[float, float | None]:
    """In a CPU-bound profile where both servers keep the same CPUs busy, their rates differ only by
    what a request costs: (our rate over the peer's at equal CPU, and the most any server could reach
    over the peer: one that cost nothing beyond the app's own in-process CPU)."""
    return peer_us / ours_us, (peer_us / floor_us if floor_us else None)


def _cpu_story(r: dict, best: dict, runs: list[dict]) -> str:
    """What the workers' CPU per request says about the ratio (empty where the cells lack it)."""
    ours_us, peer_us = r.get("worker_cpu_us_per_req"), best.get("worker_cpu_us_per_req")
    if not ours_us or not peer_us:
        return ""
    ceiling = {c["endpoint"]: c.get("rps_per_core") for c in _of(runs, "ceiling")}
    floor = mixed_floor_us(ceiling.get(MIXED_FAST), ceiling.get(MIXED_SLOW))
    equal_cpu, most = cpu_bound_ratios(ours_us, peer_us, floor)
    text = (f"; worker CPU per request {ours_us:,.0f} µs on {r.get('worker_cpus_busy')} CPUs, {best['policy']} "
            f"{peer_us:,.0f} µs on {best.get('worker_cpus_busy')}: {equal_cpu:.2f}× at equal CPU")
    if most is not None:
        text += f"; the app alone (in-process) {floor:,.0f} µs, so no server passes {most:.2f}× at equal CPU"
    return text


def _mixed_targets(runs: list[dict]) -> list[dict]:
    rows = []
    mka = {(r["server"], r["policy"]): r for r in _of(runs, "mixed-keepalive") if r.get("rps")}
    gunicorn = {p: r for (s, p), r in mka.items() if s == "gunicorn"}
    best = max(gunicorn.values(), key=lambda r: r["rps"], default=None)
    sync = gunicorn.get("sync")
    granian = mka.get(("granian", "wsgi"))
    for (server, policy), r in sorted(mka.items()):
        if server != "pycluster" or best is None:
            continue
        ratio = r["rps"] / best["rps"]
        p99_ok = sync is None or (r["p99_ms"] is not None and sync["p99_ms"] is not None and r["p99_ms"] <= sync["p99_ms"])
        slowest_ok = (r.get("max_ms") or 0) <= MAX_SLOWEST_MS and not r.get("timeouts")
        rows.append({"policy": policy, "met": ratio >= TARGET_MIXED_VS_GUNICORN and p99_ok and slowest_ok,
                     "target": f"mixed keep-alive ≥ {TARGET_MIXED_VS_GUNICORN}× gunicorn best, p99 ≤ sync's, "
                               f"none over {MAX_SLOWEST_MS / 1000:.0f} s",
                     "measured": f"{ratio:.2f}× {best['policy']}, p99 {r['p99_ms']} ms (sync "
                                 f"{sync['p99_ms'] if sync else '–'} ms), slowest {r.get('max_ms')} ms"
                                 + (f"; {r['rps'] / granian['rps']:.2f}× granian (p99 {granian['p99_ms']} ms)"
                                    if granian else "") + _cpu_story(r, best, runs)})
    locust = {(r["server"], r["policy"]): r for r in _of(runs, "mixed") if r.get("rps")}
    gthread = locust.get(("gunicorn", "gthread"))
    for (server, policy), r in sorted(locust.items()):
        if server == "pycluster" and gthread:
            ratio = r["rps"] / gthread["rps"]
            p99_ok = r["p99_ms"] is not None and gthread["p99_ms"] is not None and r["p99_ms"] <= gthread["p99_ms"]
            rows.append({"policy": policy, "met": ratio >= TARGET_LOCUST_VS_GTHREAD and p99_ok,
                         "target": f"Locust mixed ≥ {TARGET_LOCUST_VS_GTHREAD}× gunicorn gthread, p99 no higher",
                         "measured": f"{ratio:.2f}×, p99 {r['p99_ms']:.0f} ms vs {gthread['p99_ms']:.0f} ms"
                                     + _work_split(r, gthread)})
    return rows


def _rounds_text(r: dict) -> str:
    """Each round's rate and p99, for a combined mixed keep-alive record ("–" for a single cell)."""
    rounds = r.get("rounds") or []
    return ", ".join(f"{x['rps']:,.0f} ({x['p99_ms']})" for x in rounds if x.get("rps")) or "–"


def _work_split(ours: dict, theirs: dict) -> str:
    """The CPU-bound share of two Locust runs, when both recorded it (loadtest/mixed.py)."""
    if ours.get("work_rps") is None or theirs.get("work_rps") is None:
        return ""
    return f"; /work {ours['work_rps']:.0f} vs {theirs['work_rps']:.0f} req/s"


def _fairness_targets(runs: list[dict]) -> list[dict]:
    return [{"policy": r["policy"], "met": r["jain"] >= TARGET_KEEPALIVE_JAIN,
             "target": f"keep-alive Jain ≥ {TARGET_KEEPALIVE_JAIN} (32 connections)", "measured": f"{r['jain']:.4f}"}
            for r in _of(runs, "fairness")
            if r["server"] == "pycluster" and r.get("mode") == "keepalive" and r.get("jain") is not None]


def _guard(runs: list[dict], previous: list[dict]) -> list[dict]:
    """Keep-alive `/` throughput and p99 against the previous committed run, per pycluster policy.

    Judged by the same-run comparison with the previous committed code where the bench made one
    (loadtest/guard.py: the machine's drift between runs cancels out), else by the committed figures.
    """
    def pick(source):
        tops = {}
        for r in source:
            if (r.get("kind") == "throughput" and r.get("server") == "pycluster" and r.get("endpoint") == "/"
                    and r.get("conn", "keepalive") == "keepalive" and r.get("rps")):
                if r["workers"] >= tops.get(r["policy"], {}).get("workers", 0):
                    tops[r["policy"]] = r
        return tops
    now, before = pick(runs), pick(previous)
    same_run = {r["policy"]: r for r in _of(runs, "guard")}
    aa = next(iter(_of(runs, "guard-aa")), None)
    noise = "" if aa is None else (
        f"; in this run the same code ({aa['policy']}, {aa['pairs']} pair{'s' if aa['pairs'] != 1 else ''}) read {aa['rps_ratio']:.3f}× rate, "
        f"p99 ×{aa['p99_ratio']:.2f}: " + (f"a change of {GUARD:.0%} shows" if guard.resolves(aa, GUARD) else
                                          f"this run cannot tell {GUARD:.0%} from the machine's noise"))
    target = f"guard: keep-alive / within {GUARD:.0%} of the previous run (rate and p99)"
    rows = []
    for policy in sorted(set(now) | set(same_run)):
        r, old, ab = now.get(policy), before.get(policy), same_run.get(policy)
        committed = None
        if r is not None and old is not None and old["workers"] == r["workers"]:
            rps_ratio, p99_ratio = r["rps"] / old["rps"], (r["p99_ms"] or 0) / (old["p99_ms"] or 1)
            committed = (rps_ratio, p99_ratio, f"{rps_ratio:.3f}× rate ({r['rps']:,.0f} vs {old['rps']:,.0f}), "
                                               f"p99 ×{p99_ratio:.2f} ({r['p99_ms']} vs {old['p99_ms']} ms)")
        if ab is not None:
            pairs = f"{ab['pairs']} pair" + ("s" if ab["pairs"] != 1 else "")
            measured = (f"same run against {ab['previous_commit'][:8]} ({pairs}): {ab['rps_ratio']:.3f}× "
                        f"rate ({ab['rps_now']:,.0f} vs {ab['rps_before']:,.0f}), p99 ×{ab['p99_ratio']:.2f}"
                        + (f"; against the committed figures: {committed[2]}" if committed else "") + noise)
            rows.append({"policy": policy, "target": target, "measured": measured,
                         "met": ab["rps_ratio"] >= 1 - GUARD and ab["p99_ratio"] <= 1 + GUARD})
        elif committed is not None:
            rows.append({"policy": policy, "target": target, "measured": committed[2],
                         "met": committed[0] >= 1 - GUARD and committed[1] <= 1 + GUARD})
    return rows


def sections(runs: list[dict], table, fmt) -> list[str]:
    """Markdown for the mixed keep-alive profile and the capacity timelines."""
    out = []
    mka = _of(runs, "mixed-keepalive")
    if mka:
        out += ["", "## Mixed keep-alive profile (wrk, 32 connections, 1 request in 8 is 10 ms of CPU)", ""]
        out += ["The profile is CPU-bound: a server that keeps the CPUs busy is as fast as a request is cheap "
                "to it. The workers' CPU per request (user + system, all workers) and the CPUs they kept busy "
                "show which a rate is; the target row sets them against the app's own in-process cost. Every server "
                "ran once per round, fresh and in turn, so each round measures them all in the same stretch of the "
                "machine's time (loadtest/mixed_rounds.py); a row is the server's median round by rate, with the "
                "median p99 and the slowest request and timeouts over all rounds.", ""]
        out.append(table(["server", "N", "req/s", "p50 ms", "p99 ms", "slowest ms", "over 1 s", "timeouts (2 s)",
                          "worker µs/req", "CPUs busy", "rounds: req/s (p99 ms)"],
                         [[_label(r), r["workers"], fmt(r["rps"]), fmt(r["p50_ms"], 1), fmt(r["p99_ms"], 1),
                           fmt(r.get("max_ms"), 0), fmt(r.get("over_1s")), fmt(r.get("timeouts")),
                           fmt(r.get("worker_cpu_us_per_req"), 0), fmt(r.get("worker_cpus_busy"), 2),
                          _rounds_text(r)]
                          for r in mka]))
    cap = _of(runs, "capacity")
    if cap:
        out += ["", f"## Capacity with keep-alive clients ({cap[0]['clients']} clients on `{cap[0]['path']}`)", "",
                f"Recovered: seconds after the event until the rate is ≥ {GOAL_RATE} of the reference and no worker "
                f"carries more than {GOAL_SHARE:.0%}, holding for 2 s (the reference is the rate before a crash, "
                "the rate at the end for a start-up or a scale-up). Plots: capacity_*.png."]
        out.append("")
        out.append(table(["server", "scenario", "N", "reference req/s", "recovered", "req/s 3 s after",
                          "top share 3 s after", "failures", "Jain"],
                         [[_label(r), r["scenario"], r["workers"], fmt(r["reference_rps"]),
                           "never" if r["recovered_s"] is None else f"{r['recovered_s']} s", fmt(r["after_rps"]),
                           fmt(100 * r["top_share_after"], 0, "%"), r["failures"], fmt(r.get("jain"), 3)]
                          for r in cap]))
    return out


def plots(runs: list[dict], out_dir: Path, plt) -> list[str]:
    """One figure per capacity scenario: each server's rate over time, its worker shares stacked."""
    written = []
    cap = _of(runs, "capacity")
    for scenario in sorted({r["scenario"] for r in cap}):
        sel = [r for r in cap if r["scenario"] == scenario]
        fig, axes = plt.subplots(len(sel), 1, figsize=(8, 1.9 * len(sel) + 0.6), sharex=True, squeeze=False)
        for ax, r in zip(axes[:, 0], sel):
            points = r["timeline"]
            ts = [p["t"] for p in points]
            pids = sorted({pid for p in points for pid in p["by_pid"]}, key=lambda pid: min(
                p["t"] for p in points if pid in p["by_pid"]))
            layers = [[p["by_pid"].get(pid, 0) / 0.5 for p in points] for pid in pids]
            if layers:
                ax.stackplot(ts, layers, labels=[f"pid {pid}" for pid in pids], alpha=0.85)
            ax.axvline(r["event_s"], color="k", linestyle=":", linewidth=1)
            ax.axhline(GOAL_RATE * r["reference_rps"], color="grey", linestyle="--", linewidth=1)
            back = "never" if r["recovered_s"] is None else f"{r['recovered_s']} s"
            ax.set_title(f"{_label(r)}: back in {back}", fontsize=9, loc="left")
            ax.set_ylabel("req/s", fontsize=8)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("seconds (dotted: the event; dashed: 0.9 of the reference rate)")
        fig.suptitle(f"Capacity with keep-alive clients: {scenario}", fontsize=11)
        fig.tight_layout()
        path = out_dir / f"capacity_{scenario.replace('-', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written
