"""Turn benchmark runs into docs/bench/results.json, docs/BENCHMARKS.md and PNG plots."""

import json
from pathlib import Path

from loadtest import balance_report, engine_report

TARGET_WORK_CEILING = 0.97     # /work at N = CPUs, as a share of N × the in-process ceiling
# The scheduling-policy issue's goals: rr's spread of new connections, its cost against
# shared (same run, same N), and requests lost when a worker is SIGKILLed under load.
TARGET_RR_JAIN = 0.99
TARGET_RR_VS_SHARED = 0.9
NEW_CONNECTION_MODES = ("sequential", "concurrent")
ZERO_LOSS_POLICIES = ("rr", "shared")
TARGET_VS_GUNICORN = 1.10      # / and /count against gunicorn's best class at the same N


def slug(endpoint: str) -> str:
    """A file-name-safe name for an endpoint: '/' -> 'root', '/work' -> 'work'."""
    return endpoint.strip("/").replace("/", "_") or "root"


def fmt(value, digits: int = 0, suffix: str = "") -> str:
    """A number for a Markdown cell; '–' when missing."""
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}{suffix}"


def label(run: dict) -> str:
    """'pycluster rr' / 'gunicorn gevent'."""
    return f"{run['server']} {run['policy']}"


def of_kind(runs: list[dict], kind: str) -> list[dict]:
    """The runs of one kind, in a stable order."""
    return sorted((r for r in runs if r.get("kind") == kind),
                  key=lambda r: (r.get("server", ""), r.get("policy", ""), r.get("workers") or 0,
                                 r.get("endpoint", ""), r.get("conn", ""), r.get("mode", "")))


def ceiling_of(runs: list[dict], endpoint: str) -> float | None:
    """Flask's in-process requests per core for an endpoint, if measured."""
    for r in runs:
        if r.get("kind") == "ceiling" and r.get("endpoint") == endpoint:
            return r.get("rps_per_core")
    return None


def targets(runs: list[dict], cpus: int, previous: list[dict] | None = None) -> list[dict]:
    """The issues' targets, one row per pycluster policy and target, with a met/missed verdict."""
    rows = []
    tput = [r for r in of_kind(runs, "throughput") if r["server"] == "pycluster"
            and r["workers"] == cpus and r.get("conn", "keepalive") == "keepalive"]
    ceiling = ceiling_of(runs, "/work")
    for r in tput:
        if r["endpoint"] == "/work" and ceiling and r.get("rps") is not None:
            ratio = r["rps"] / (cpus * ceiling)
            rows.append({"policy": r["policy"], "target": f"/work ≥ {TARGET_WORK_CEILING} × ceiling at N={cpus}",
                         "measured": f"{ratio:.3f} ({r['rps']:,.0f} of {cpus * ceiling:,.0f} req/s)",
                         "met": ratio >= TARGET_WORK_CEILING})
        elif r["endpoint"] in ("/", "/count") and r.get("vs_gunicorn_best") is not None:
            p99_ratio = r.get("p99_vs_gunicorn_best")
            met = r["vs_gunicorn_best"] >= TARGET_VS_GUNICORN and (p99_ratio is None or p99_ratio <= 1.0)
            rows.append({"policy": r["policy"],
                         "target": f"{r['endpoint']} ≥ {TARGET_VS_GUNICORN}× gunicorn best, p99 no worse",
                         "measured": f"{r['vs_gunicorn_best']:.2f}× {r['gunicorn_best']}, p99 ×{fmt(p99_ratio, 2)}"
                                     + vs_granian(r),
                         "met": met})
    goal_n = 2 if any(r.get("workers") == 2 for r in tput) else cpus
    return (rows + policy_targets(runs, cpus) + engine_report.targets(runs, goal_n)
            + balance_report.targets(runs, previous))


def policy_targets(runs: list[dict], cpus: int) -> list[dict]:
    """The scheduling-policy goals: rr's spread and cost, and loss on SIGKILL."""
    rows = []
    ours = [r for r in runs if r.get("server") == "pycluster"]
    for r in of_kind(ours, "fairness"):
        if r["policy"] == "rr" and r["mode"] in NEW_CONNECTION_MODES and r.get("jain") is not None:
            rows.append({"policy": "rr", "target": f"Jain ≥ {TARGET_RR_JAIN} over new connections ({r['mode']})",
                         "measured": f"{r['jain']:.4f} ({' / '.join(map(str, r['per_worker']))})",
                         "met": r["jain"] >= TARGET_RR_JAIN})
    tput = {(r["policy"], r.get("conn", "keepalive")): r for r in of_kind(ours, "throughput")
            if r["endpoint"] == "/" and r["workers"] == cpus and r.get("rps")}
    for conn, how in (("close", "a new connection per request"), ("keepalive", "keep-alive")):
        rr, shared = tput.get(("rr", conn)), tput.get(("shared", conn))
        if rr is None or shared is None:
            continue
        ratio = rr["rps"] / shared["rps"]
        rows.append({"policy": "rr", "target": f"/ ({how}) ≥ {TARGET_RR_VS_SHARED}× shared",
                     "measured": f"{ratio:.2f}× ({rr['rps']:,.0f} vs {shared['rps']:,.0f} req/s; "
                                 f"master {fmt(rr.get('master_cpu_pct'), 1)}% CPU)",
                     "met": ratio >= TARGET_RR_VS_SHARED})
    for r in of_kind(ours, "loss"):
        if r["policy"] in ZERO_LOSS_POLICIES:
            rows.append({"policy": r["policy"], "target": "0 requests lost when a worker is SIGKILLed under load",
                         "measured": f"{r['failures']} of {r['requests']:,}", "met": r["failures"] == 0})
    return rows


def vs_granian(run: dict) -> str:
    """'; 1.22× granian, p99 ×0.84' when granian ran beside it, else ''."""
    if run.get("vs_granian") is None:
        return ""
    return f"; {run['vs_granian']:.2f}× granian, p99 ×{fmt(run.get('p99_vs_granian'), 2)}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(runs: list[dict], meta: dict, plots: list[str], plot_dir: str = "bench/",
             previous: list[dict] | None = None) -> str:
    """The whole BENCHMARKS.md text."""
    cpus = meta["cpus"]
    out = [
        "# Benchmarks",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} — {meta['machine']}; {cpus} CPUs; "
        f"Python {meta['python']}; load from {meta['tool']} on the same machine "
        f"({meta['duration_s']} s per throughput run, {meta['connections']} connections). "
        + ("**Quick run: short durations, numbers are indicative only.**" if meta.get("quick") else ""),
        "",
        (f"The load generators (wrk, and Locust for the mixed profile) ran pinned to CPUs {meta['wrk_cpus']}; "
         f"the servers on the {cpus} CPUs the bench was started with."
         if meta.get("wrk_cpus") else
         "The load generator shares the CPUs with the server, so absolute numbers are lower than on "
         "separate machines; every server meets the same handicap."),
    ]
    for note in meta.get("notes", []):
        out += ["", f"> {note}"]
    rows = targets(runs, cpus, previous)
    out += ["", "## Targets", ""]
    out.append(table(["policy", "target", "measured", "verdict"],
                     [[r["policy"], r["target"], r["measured"], "met" if r["met"] else "**missed**"] for r in rows])
               if rows else "No pycluster runs to judge.")

    tput = of_kind(runs, "throughput")
    for endpoint, conn, title in (("/", "keepalive", "`GET /` (keep-alive)"),
                                  ("/work", "keepalive", "`GET /work` (10 ms CPU, keep-alive)"),
                                  ("/count", "keepalive", "`GET /count` (Redis INCR, keep-alive)"),
                                  ("/", "close", "`GET /` (a new connection per request)")):
        sel = [r for r in tput if r["endpoint"] == endpoint and r.get("conn", "keepalive") == conn]
        if not sel:
            continue
        out += ["", f"## Throughput: {title}", ""]
        out.append(table(
            ["server", "N", "req/s", "p50 ms", "p99 ms", "scaling eff.", "× gunicorn best", "× granian",
             "worker µs/req", "errors", "master CPU %", "master RSS MB"],
            [[label(r), r["workers"], fmt(r["rps"]), fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2),
              fmt(r.get("scaling_efficiency"), 2), fmt(r.get("vs_gunicorn_best"), 2), fmt(r.get("vs_granian"), 2),
              fmt(r.get("worker_cpu_us_per_req"), 0), fmt(r.get("errors_total")), fmt(r.get("master_cpu_pct"), 1),
              fmt(r.get("master_rss_mb"), 1)]
             for r in sel]))

    mixed = of_kind(runs, "mixed")
    if mixed:
        out += ["", "## Mixed profile (Locust, all user classes)", "",
                "`/work` req/s is the CPU-bound endpoint's share of the total (10 ms of CPU each, against "
                "about 0.1 ms for the others). The total counts every request alike, so where Locust shares "
                "the CPUs with the server, a server that serves fewer `/work` leaves Locust more CPU for "
                "cheap requests and scores a higher total: compare the two columns, not the total alone. "
                "The workers' CPU per request and the CPUs they kept busy (Locust runs much longer than its "
                "measured window, so CPUs busy counts its start and stop too) say the same from the server's side.", ""]
        out.append(table(["server", "N", "users", "req/s", "/work req/s", "other req/s", "p50 ms", "p99 ms",
                          "requests", "failures", "worker µs/req", "CPUs busy"],
                         [[label(r), r["workers"], r.get("users"), fmt(r["rps"]), fmt(r.get("work_rps")),
                           fmt(r.get("other_rps")), fmt(r["p50_ms"]), fmt(r["p99_ms"]), fmt(r["requests"]),
                           fmt(r["failures"]), fmt(r.get("worker_cpu_us_per_req"), 0),
                           fmt(r.get("worker_cpus_busy"), 2)] for r in mixed]))

    out += balance_report.sections(runs, table, fmt)

    fair = of_kind(runs, "fairness")
    if fair:
        out += ["", "## Fairness: requests per worker on `GET /`", "",
                "Jain's index is 1.0 for a perfectly even spread and 1/N when one worker takes all."]
        out.append("")
        out.append(table(["server", "N", "mode", "requests", "per worker", "Jain", "max/min", "top share"],
                         [[label(r), r["workers"], r["mode"], r["requests"],
                           " / ".join(map(str, r["per_worker"])), fmt(r["jain"], 3), fmt(r["max_min"], 2),
                           fmt(None if r["top_share"] is None else 100 * r["top_share"], 1, "%")]
                          for r in fair]))

    loss = of_kind(runs, "loss")
    if loss:
        out += ["", "## Loss: one worker SIGKILLed under load (new connection per request)", ""]
        out.append(table(["server", "N", "requests", "failures", "by kind"],
                         [[label(r), r["workers"], r["requests"], r["failures"],
                           ", ".join(f"{k} {v}" for k, v in sorted(r["by_kind"].items()) if k != "ok") or "none"]
                          for r in loss]))

    ceilings = of_kind(runs, "ceiling")
    if ceilings:
        out += ["", "## Flask's in-process ceiling (no socket)", "",
                "The app called as `app(environ, start_response)` in a loop: the most one core can do."]
        out.append("")
        out.append(table(["endpoint", "req/s per core", f"× {cpus} CPUs"],
                         [[f"`{r['endpoint']}`", fmt(r["rps_per_core"]),
                           fmt(None if r["rps_per_core"] is None else r["rps_per_core"] * cpus)] for r in ceilings]))

    if plots:
        out += ["", "## Plots", ""]
        out += [f"![{Path(p).stem}]({plot_dir}{Path(p).name})" for p in plots]
    out += ["", "## Reproduce", "", "```", "make bench          # full run, results committed here",
            "make bench QUICK=1  # under two minutes, indicative only", "```", ""]
    if meta.get("command") not in (None, "python -m loadtest.bench", "python -m loadtest.bench --quick"):
        out[-2:-2] = [f"{meta['command']}  # this report"]
    return "\n".join(out)


def plot(runs: list[dict], meta: dict, out_dir: Path) -> list[str]:
    """Throughput-vs-workers plots per endpoint and a fairness chart; the files written."""
    import matplotlib  # noqa: PLC0415 - heavy, and only needed when writing plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []
    tput = of_kind(runs, "throughput")
    workers = sorted({r["workers"] for r in tput})
    for endpoint, conn in (("/", "keepalive"), ("/work", "keepalive"), ("/count", "keepalive"), ("/", "close")):
        sel = [r for r in tput if r["endpoint"] == endpoint and r.get("conn", "keepalive") == conn]
        if not sel:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in sorted({label(r) for r in sel}):
            pts = sorted((r["workers"], r["rps"]) for r in sel if label(r) == name and r["rps"] is not None)
            if pts:
                style = "-o" if name.startswith("pycluster") else "--s"
                ax.plot(*zip(*pts), style, label=name)
        if endpoint == "/work":
            ax.plot(workers, [100 * n for n in workers], "k:", label="ideal N × 100 req/s")
        ceiling = ceiling_of(runs, endpoint)
        if ceiling and endpoint != "/count":
            ax.plot(workers, [ceiling * n for n in workers], color="grey", linestyle="-.",
                    label="in-process ceiling × N")
        ax.set_xlabel("workers")
        ax.set_ylabel("requests/s")
        ax.set_xticks(workers)
        ax.set_ylim(bottom=0)
        ax.set_title(f"GET {endpoint}" + (" (new connection per request)" if conn == "close" else "")
                     + (" — quick run" if meta.get("quick") else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"throughput_{slug(endpoint)}{'_close' if conn == 'close' else ''}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))

    fair = of_kind(runs, "fairness")
    if fair:
        names = sorted({label(r) for r in fair})
        modes = sorted({r["mode"] for r in fair})
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / max(1, len(modes))
        for i, mode in enumerate(modes):
            ys = [next((r["jain"] or 0 for r in fair if label(r) == n and r["mode"] == mode), 0) for n in names]
            ax.bar([x + i * width for x in range(len(names))], ys, width, label=mode)
        ax.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(len(names))], names, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.axhline(0.99, color="k", linestyle=":", linewidth=1)
        ax.set_ylabel("Jain's index")
        ax.set_title("Fairness per policy (1.0 = even)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "fairness.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written + balance_report.plots(runs, out_dir, plt)


def write(runs: list[dict], meta: dict, docs: Path, with_plots: bool = True, out: Path | None = None) -> dict:
    """Write results.json, meta.json, the plots and BENCHMARKS.md under docs/ (docs/bench/ and docs/), or all
    of them in out/ when given; their paths."""
    bench_dir = out or docs / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    results = bench_dir / "results.json"
    previous = previous_runs(results)
    results.write_text(json.dumps(runs, indent=1) + "\n")
    (bench_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    plots = plot(runs, meta, bench_dir) if with_plots else []
    md = (out or docs) / "BENCHMARKS.md"
    md.write_text(markdown(runs, meta, plots, plot_dir="" if out else "bench/", previous=previous))
    return {"results": str(results), "markdown": str(md), "plots": plots, "previous": previous}


def previous_runs(results: Path) -> list[dict]:
    """The runs of the report about to be replaced (the guard compares against them)."""
    try:
        return json.loads(results.read_text())
    except (OSError, ValueError):
        return []
