"""The Locust mixed profile's figures: the aggregate, and the CPU-bound endpoint apart from the rest."""

import pytest

from loadtest import mixed, report

# A real Locust stats file (pycluster rr, 2 workers, 50 users, 15 s), the percentile columns cut short.
STATS = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%
GET,/,11240,0,23,24.18,2.17,78.31,23.0,801.7870103740004,0.0,23,27,29,31,35,40,46,52,76
GET,/count,3902,0,51,53.12,8.74,458.50,36.0,278.3427859857072,0.0,51,57,60,64,70,78,91,100,320
DELETE,/session/[id],169,0,49,48.55,5.10,105.09,0.0,12.055338501174917,0.0,49,54,55,57,65,73,82,99,110
GET,/session/[id],884,0,47,48.88,4.08,303.23,36.52,63.05869369845341,0.0,47,55,59,62,70,78,95,110,300
PUT,/session/[id],344,0,49,51.21,22.30,129.83,39.88,24.5386771858235,0.0,49,55,59,61,69,74,83,99,130
GET,/work,1923,0,68,72.38,18.77,224.11,25.0,137.17405880330986,0.0,68,80,85,92,110,120,140,160,210
,Aggregated,18462,0,31,37.23,2.17,458.50,26.70,1316.9565645484693,0.0,31,40,48,54,66,79,99,110,210
"""


def test_stats_give_the_aggregate_and_the_cpu_bound_share_apart(tmp_path):
    path = tmp_path / "mixed_stats.csv"
    path.write_text(STATS)
    r = mixed.parse_stats_csv(path)
    assert (r["requests"], r["failures"], r["p50_ms"], r["p99_ms"]) == (18462, 0, 31.0, 110.0)
    assert r["rps"] == pytest.approx(1316.96, abs=0.01)
    assert r["work_rps"] == pytest.approx(137.17, abs=0.01)
    assert r["other_rps"] == pytest.approx(1316.96 - 137.17, abs=0.02)
    # the three methods on /session/[id] are one endpoint
    assert r["by_endpoint"]["/session/[id]"] == pytest.approx(12.06 + 63.06 + 24.54, abs=0.02)
    assert set(r["by_endpoint"]) == {"/", "/count", "/session/[id]", "/work"}


def test_stats_without_an_aggregated_row_are_refused(tmp_path):
    path = tmp_path / "mixed_stats.csv"
    path.write_text(STATS.rsplit("\n,Aggregated", 1)[0] + "\n")
    with pytest.raises(ValueError, match="no Aggregated row"):
        mixed.parse_stats_csv(path)


def test_the_report_shows_work_apart_and_the_locust_target_names_both_shares():
    runs = [{"kind": "mixed", "server": server, "policy": policy, "workers": 2, "users": 50, "rps": rps,
             "work_rps": work, "other_rps": rps - work, "p50_ms": 30.0, "p99_ms": p99, "requests": 1000,
             "failures": 0}
            for server, policy, rps, work, p99 in (("pycluster", "rr", 1300.0, 137.0, 120.0),
                                                   ("gunicorn", "gthread", 1900.0, 56.0, 210.0))]
    meta = {"cpus": 2, "command": "python -m loadtest.bench", "date": "today", "machine": "test",
            "python": "3.11", "tool": "wrk", "duration_s": 1, "connections": 32}
    text = report.markdown(runs, meta, [])
    assert "| req/s | /work req/s | other req/s |" in text
    assert "| 137 | 1,163 |" in text and "| 56 | 1,844 |" in text
    row = next(r for r in report.targets(runs, 2) if r["target"].startswith("Locust mixed"))
    assert not row["met"] and "/work 137 vs 56 req/s" in row["measured"]
