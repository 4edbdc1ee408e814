"""wrk output parsing, chaos timelines and the written report."""

import json

import pytest

from loadtest import report, wrk
from loadtest.loadgen import Record
from loadtest.timeline import baseline, buckets, recovery_time

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:8000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.43ms    1.42ms  22.09ms   90.12%
    Req/Sec     7.30k   512.01     7.86k    80.00%
  Latency Distribution
     50%    4.21ms
     75%    4.70ms
     90%    5.46ms
     99%  812.00us
  7263 requests in 1.00s, 1.18MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   7262.71
Transfer/sec:      1.18MB
"""


def test_wrk_parse():
    r = wrk.parse(WRK_OUTPUT)
    assert r["rps"] == 7262.71 and r["requests"] == 7263 and r["non2xx"] == 5
    assert r["p50_ms"] == 4.21 and r["p90_ms"] == 5.46 and r["p99_ms"] == 0.812
    assert r["errors"] == {"connect": 0, "read": 2, "write": 0, "timeout": 1}


def test_wrk_units():
    assert wrk.to_ms("2.00s") == 2000 and wrk.to_ms("1.5ms") == 1.5
    with pytest.raises(ValueError):
        wrk.to_ms("fast")


def rec(end, kind="ok", path="/"):
    return Record(end - 0.001, end, path, kind, 200 if kind == "ok" else 0, "1")


def test_buckets_baseline_and_recovery():
    records = [rec(t / 10) for t in range(0, 20)]            # 10 req/s... per 0.5 s: 5 each
    records += [rec(2.1, "reset"), rec(2.2, "reset")]          # a fault at 2.0: failures, no successes
    records += [rec(2.5 + t / 10) for t in range(0, 15)]       # back from 2.5 s
    series = buckets(records, 0.0, 4.0, 0.5)
    assert [b["ok_rps"] for b in series[:4]] == [10, 10, 10, 10]
    assert series[4] == {"t": 2.0, "ok_rps": 0, "failed_rps": 4}
    assert baseline(series, 0, 2.0) == 10
    assert recovery_time(series, 2.0, 10, 0.9, 0.5) == 1.0
    assert recovery_time(series, 2.0, 1000, 0.9, 0.5) is None


def sample_runs():
    runs = [{"kind": "ceiling", "server": "in-process", "policy": "-", "workers": 1, "endpoint": "/work",
             "rps_per_core": 100.0}]
    for server, policy, rps in (("pycluster", "rr", 196.0), ("gunicorn", "sync", 180.0)):
        for n in (1, 2):
            runs.append({"kind": "throughput", "server": server, "policy": policy, "workers": n,
                         "endpoint": "/work", "conn": "keepalive", "rps": rps * n / 2, "p50_ms": 10,
                         "p99_ms": 20, "errors_total": 0})
            runs.append({"kind": "throughput", "server": server, "policy": policy, "workers": n,
                         "endpoint": "/", "conn": "keepalive", "rps": rps * 40 * n / 2, "p50_ms": 1,
                         "p99_ms": 5, "errors_total": 0})
    runs.append({"kind": "fairness", "server": "pycluster", "policy": "rr", "workers": 2, "mode": "sequential",
                 "requests": 2000, "per_worker": [1000, 1000], "jain": 1.0, "max_min": 1.0, "top_share": 0.5})
    runs.append({"kind": "loss", "server": "pycluster", "policy": "rr", "workers": 2, "requests": 900,
                 "failures": 0, "by_kind": {"ok": 900}})
    return runs


def test_targets_judge_work_against_the_ceiling_and_hello_against_gunicorn():
    from loadtest.stats import add_derived

    rows = report.targets(add_derived(sample_runs()), cpus=2)
    work = next(r for r in rows if r["target"].startswith("/work"))
    hello = next(r for r in rows if r["target"].startswith("/ "))
    assert work["met"] is True and work["measured"].startswith("0.980")
    assert hello["met"] is False  # 196/180 = 1.09 < 1.10


def test_policy_targets_judge_rr_spread_and_cost_and_loss_on_sigkill():
    runs = sample_runs()
    for policy, rps in (("rr", 4_400.0), ("shared", 5_000.0)):
        runs.append({"kind": "throughput", "server": "pycluster", "policy": policy, "workers": 2, "endpoint": "/",
                     "conn": "close", "rps": rps, "master_cpu_pct": 9.5 if policy == "rr" else 0.0})
    runs.append({"kind": "throughput", "server": "pycluster", "policy": "shared", "workers": 2, "endpoint": "/",
                 "conn": "keepalive", "rps": 3_900.0})
    runs.append({"kind": "fairness", "server": "pycluster", "policy": "rr", "workers": 2, "mode": "concurrent",
                 "requests": 2000, "per_worker": [1100, 900], "jain": 0.99, "max_min": 1.22, "top_share": 0.55})
    runs.append({"kind": "fairness", "server": "pycluster", "policy": "rr", "workers": 2, "mode": "keepalive",
                 "requests": 2000, "per_worker": [2000, 0], "jain": 0.5, "max_min": None, "top_share": 1.0})
    runs.append({"kind": "loss", "server": "pycluster", "policy": "shared", "workers": 2, "requests": 1200,
                 "failures": 2, "by_kind": {"ok": 1198, "reset": 2}})
    runs.append({"kind": "loss", "server": "gunicorn", "policy": "sync", "workers": 2, "requests": 1200,
                 "failures": 5, "by_kind": {"ok": 1195, "reset": 5}})
    rows = {(r["policy"], r["target"]): r for r in report.policy_targets(runs, cpus=2)}
    assert rows["rr", "Jain ≥ 0.99 over new connections (sequential)"]["met"] is True
    assert rows["rr", "Jain ≥ 0.99 over new connections (concurrent)"]["met"] is True
    assert not any("keepalive" in target for _, target in rows)  # one choice per connection: not judged
    close = rows["rr", "/ (a new connection per request) ≥ 0.9× shared"]
    assert close["met"] is False and close["measured"].startswith("0.88× (4,400 vs 5,000")
    assert rows["rr", "/ (keep-alive) ≥ 0.9× shared"]["met"] is True  # 7,840 vs 3,900
    assert rows["rr", "0 requests lost when a worker is SIGKILLed under load"]["met"] is True
    assert rows["shared", "0 requests lost when a worker is SIGKILLed under load"]["measured"] == "2 of 1,200"
    assert len(rows) == 6  # gunicorn's loss and reuseport's are reported, not judged


def test_report_writes_json_markdown_and_plots(tmp_path):
    from loadtest.stats import add_derived

    runs = add_derived(sample_runs())
    meta = {"command": "python -m loadtest.bench --quick", "date": "today", "machine": "test", "cpus": 2,
            "python": "3.11", "tool": "wrk", "duration_s": 1, "connections": 32, "quick": True,
            "notes": ["a note"]}
    paths = report.write(runs, meta, tmp_path)
    assert json.loads((tmp_path / "bench" / "results.json").read_text()) == runs
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Targets" in md and "Quick run" in md and "a note" in md
    assert "| pycluster rr | 2 |" in md and "## Fairness" in md and "## Loss" in md
    assert "![throughput_work](bench/throughput_work.png)" in md
    assert (tmp_path / "bench" / "throughput_work.png").stat().st_size > 1000
    assert len(paths["plots"]) == 3  # /, /work, fairness


def test_slug():
    assert report.slug("/") == "root" and report.slug("/work") == "work"
