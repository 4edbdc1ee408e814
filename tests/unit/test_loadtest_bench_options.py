"""The bench's options for a narrowed-down scaling run: workers, servers, endpoints, durations, wrk, output."""

import json
import subprocess

import pytest

from loadtest import bench, mixed, report, wrk


def plan(**overrides):
    return bench.customize(bench.make_plan(False, 16, [1, 2, 4, 8, 16]), **overrides)


def test_default_plan_is_unchanged():
    p = bench.make_plan(False, 2, None)
    assert p.workers == (1, 2) and p.duration_s == 10 and p.endpoints is None and not p.skip
    assert bench.throughput_runs(p, 1) == [("/", False), ("/work", False), ("/count", False), ("/", True)]
    quick = bench.make_plan(True, 2, None)
    assert bench.throughput_runs(quick, 1) == [("/", False), ("/work", False), ("/count", False)]
    assert bench.throughput_runs(quick, 2)[-1] == ("/", True)


def test_endpoints_are_parsed_and_measured_at_every_n():
    p = plan(endpoints="/, /work,/:close,/work")
    assert p.endpoints == (("/", False), ("/work", False), ("/", True))
    assert bench.throughput_runs(p, 1) == bench.throughput_runs(p, 16) == list(p.endpoints)
    for bad in ("/nope", "/work:open", " , "):
        with pytest.raises(ValueError):
            plan(endpoints=bad)


def test_overrides_and_skip():
    p = plan(duration_s=5, warmup_s=1, connections=64, skip="fairness,loss,mixed", wrk_threads=4, wrk_cpus="12-15")
    assert (p.duration_s, p.warmup_s, p.connections, p.wrk_threads, p.wrk_cpus) == (5, 1, 64, 4, "12-15")
    assert p.skip == {"fairness", "loss", "mixed"}
    assert plan() == bench.make_plan(False, 16, [1, 2, 4, 8, 16])
    with pytest.raises(ValueError):
        plan(skip="fairness,speed")
    with pytest.raises(ValueError):
        plan(duration_s=0.5)


def test_steps_follow_endpoints_and_skip():
    pairs = [("pycluster", "rr"), ("gunicorn", "sync")]
    p = plan(endpoints="/,/work", skip="ceiling,fairness,loss,mixed,mixed-keepalive,capacity,guard")
    assert bench.count_steps(pairs, p, 16) == 2 * 5 * 2
    # the guard: one same-run comparison per pycluster policy, then the first against itself
    assert bench.count_steps(pairs, plan(endpoints="/,/work", skip="ceiling,fairness,loss,mixed,mixed-keepalive,"
                                                                   "capacity"), 16) == 2 * 5 * 2 + 1 + 1
    others = [("gunicorn", "sync")]  # no pycluster policy: no guard at all
    assert bench.count_steps(others, plan(endpoints="/", skip="ceiling,fairness,loss,mixed,mixed-keepalive,capacity"),
                             16) == bench.count_steps(others, plan(endpoints="/", skip="ceiling,fairness,loss,mixed,"
                                                                   "mixed-keepalive,capacity,guard"), 16)
    default = bench.make_plan(False, 2, None)
    # ceiling + per pair and N: 3 endpoints + close; at N=2: fairness modes + loss (rr, sync) + mixed
    # and three capacity timelines; the mixed keep-alive profile, each pair once per round; the guard
    # for rr, and rr against itself
    fair = len(bench.fairness.MODES) + 1
    assert default.mixed_keepalive_rounds == 3 and bench.make_plan(True, 2, None).mixed_keepalive_rounds == 1
    assert bench.count_steps(pairs, default, 2) == 1 + 2 * 2 * 4 + 2 * fair + 2 + 2 * 3 + 2 * 3 + 2


def test_servers_accept_dashes_slashes_and_families():
    all_pairs, _ = bench.servers_to_run(None)
    pairs, _ = bench.servers_to_run(["pycluster-rr", "gunicorn/sync"])
    assert set(pairs) == {p for p in all_pairs if p in {("pycluster", "rr"), ("gunicorn", "sync")}}
    pairs, _ = bench.servers_to_run(["gunicorn"])
    assert {p[1] for p in pairs} == {"sync", "gthread", "gevent"}


def test_bad_options_exit_with_usage(capsys):
    for argv in (["--workers", "0,2"], ["--endpoints", "/x"], ["--skip", "everything"], ["--workers", "a"]):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2


def test_wrk_runs_under_taskset_when_cpus_given(monkeypatch):
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="Requests/sec:   10.0\n", stderr="")

    monkeypatch.setattr(wrk.subprocess, "run", fake_run)
    wrk.run("http://127.0.0.1:1/", 1, 8, threads=4, cpus="12-15")
    wrk.run("http://127.0.0.1:1/", 1, 8)
    assert seen[0][:4] == ["taskset", "-c", "12-15", "wrk"] and seen[0][seen[0].index("-t") + 1] == "4"
    assert seen[1][0] == "wrk"


def test_locust_runs_under_taskset_when_cpus_given(monkeypatch, tmp_path):
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        prefix = cmd[cmd.index("--csv") + 1]
        with open(f"{prefix}_stats.csv", "w") as f:
            f.write("Type,Name,Request Count,Failure Count,Requests/s,50%,95%,99%\n"
                    ",Aggregated,10,0,5.0,1,2,3\n")
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(mixed.subprocess, "run", fake_run)
    assert mixed.run("http://127.0.0.1:1", 2, 1, cpus="12-15")["rps"] == 5.0
    mixed.run("http://127.0.0.1:1", 2, 1)
    assert seen[0][:3] == ["taskset", "-c", "12-15"] and seen[0][3:5] == [seen[1][0], "-m"]
    assert seen[1][1:3] == ["-m", "locust"]


def test_load_cpus_is_the_flag_and_wrk_cpus_its_old_name(capsys):
    for flag in ("--load-cpus", "--wrk-cpus"):
        with pytest.raises(SystemExit) as exc:
            bench.main([flag, "12-15", "--workers", "0"])
        assert exc.value.code == 2
        assert "positive counts" in capsys.readouterr().err  # the flag itself was understood


def test_report_out_dir_holds_everything(tmp_path):
    runs = [{"kind": "throughput", "server": "pycluster", "policy": "rr", "workers": 1, "endpoint": "/work",
             "conn": "keepalive", "rps": 90.0, "p50_ms": 10.0, "p99_ms": 20.0, "errors_total": 0}]
    meta = {"command": "python -m loadtest.bench --out x", "date": "d", "machine": "m", "cpus": 12, "python": "3",
            "tool": "wrk (4 threads, on CPUs 12-15)", "duration_s": 5, "connections": 64, "wrk_cpus": "12-15"}
    out = tmp_path / "device"
    paths = report.write(runs, meta, tmp_path / "docs", out=out)
    assert paths["results"] == str(out / "results.json") and paths["markdown"] == str(out / "BENCHMARKS.md")
    assert json.loads((out / "results.json").read_text())[0]["rps"] == 90.0
    assert not (tmp_path / "docs").exists()
    md = (out / "BENCHMARKS.md").read_text()
    assert "](throughput_work.png)" in md and "](bench/" not in md
    assert "pinned to CPUs 12-15" in md and "python -m loadtest.bench --out x  # this report" in md


def test_keep_alive_fairness_sends_enough_requests_to_average_out_the_cpu_sharing():
    from loadtest import fairness

    assert fairness.requests_for("keepalive", 2000) == fairness.KEEPALIVE_MIN_REQUESTS == 30_000
    assert fairness.requests_for("keepalive", 50_000) == 50_000
    assert fairness.requests_for("keepalive", 500, quick=True) == 500
    assert fairness.requests_for("sequential", 2000) == fairness.requests_for("concurrent", 2000) == 2000


def test_a_cpu_list_taskset_cannot_use_is_refused_before_anything_runs(capsys):
    assert bench.cpu_list_problem("0") is None
    for bad in ("abc", "999999"):
        assert bench.cpu_list_problem(bad)
        assert bench.main(["--load-cpus", bad, "--servers", "pycluster-rr"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"--load-cpus {bad!r}: ") and "Traceback" not in err


def test_servers_that_name_nothing_are_refused_before_anything_runs(capsys, tmp_path):
    assert bench.main(["--servers", "x,gunicorn-nope", "--out", str(tmp_path)]) == 2
    assert "names no server here: use pycluster-rr" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing measured, nothing written
