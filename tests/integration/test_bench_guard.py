"""The bench's guard, in the same run: the previous committed code and the current code each serve,
in turn, from their own trees (loadtest/guard.py). Real masters, a real Redis; the cell measured on
each is a few real requests here instead of wrk, so the test needs no load generator."""
from __future__ import annotations

import io
import os
import urllib.request

import pytest

from loadtest import guard
from loadtest.progress import Progress
from loadtest.servers import REPO, RedisServer


@pytest.mark.timeout(120)
def test_the_previous_committed_code_and_ours_serve_in_turn_from_their_own_trees():
    assert guard.previous_commit() is not None, "a git checkout with committed bench results"
    served = []

    def cell(srv):
        pids = {os.readlink(f"/proc/{pid}/cwd") for pid in srv.worker_pids()}
        for _ in range(5):
            with urllib.request.urlopen(srv.url + "/", timeout=5) as resp:
                assert resp.status == 200
        served.append((srv.policy, str(srv.root), pids))
        return {"rps": 100.0 + len(served), "p99_ms": 1.0}

    redis = RedisServer().start()
    try:
        records, notes = guard.measure(["rr"], 2, redis.url, 2, cell, Progress(1, stream=io.StringIO()))
    finally:
        redis.stop()
    assert notes == [] and [r["kind"] for r in records] == ["guard", "guard-aa"]
    record, same_code = records
    assert record["previous_commit"] == guard.previous_commit() and record["pairs"] == 2
    # previous, now, previous, now: each side's workers run in that side's tree
    roots = [root for _policy, root, _pids in served]
    assert roots[1] == roots[3] == str(REPO) and roots[0] == roots[2] != str(REPO)
    assert all(pids == {root} for _policy, root, pids in served)
    assert [c["rps"] for c in record["before"]] == [101.0, 103.0] and [c["rps"] for c in record["now"]] == [102.0, 104.0]
    assert record["rps_ratio"] == round(103.0 / 102.0, 4)
    assert not os.path.exists(roots[0])  # the exported tree is gone afterwards
    # then the current code against itself, the same way: four more fresh masters, all in our tree
    assert len(served) == 8 and roots[4:] == [str(REPO)] * 4
    assert [c["rps"] for c in same_code["a"]] == [105.0, 107.0] and [c["rps"] for c in same_code["b"]] == [106.0, 108.0]
    assert same_code["rps_ratio"] == round(107.0 / 106.0, 4) and same_code["pairs"] == 2
