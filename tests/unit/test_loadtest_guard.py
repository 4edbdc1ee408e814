"""The guard's same-run comparison: which commit it measures, the tree it runs, and how it is judged."""

import subprocess

import pytest

from loadtest import balance_report, guard


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "docs" / "bench").mkdir(parents=True)
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "docs" / "bench" / "results.json").write_text("[]")
    (root / "code.py").write_text("old = True\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "results")
    (root / "code.py").write_text("old = False\n")
    git(root, "commit", "-qam", "code after the results")
    return root


def test_the_previous_commit_is_the_one_that_last_wrote_the_results(repo):
    first = subprocess.run(["git", "-C", str(repo), "rev-list", "--max-parents=0", "HEAD"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert guard.previous_commit(repo) == first


def test_no_previous_commit_outside_git_or_without_results(tmp_path, repo):
    assert guard.previous_commit(tmp_path) is None
    assert guard.previous_commit(repo, "docs/bench/nothing.json") is None


def test_the_exported_tree_is_that_commit(repo, tmp_path):
    dest = tmp_path / "before"
    dest.mkdir()
    guard.export_tree(guard.previous_commit(repo), dest, repo)
    assert (dest / "code.py").read_text() == "old = True\n"
    assert (dest / "docs" / "bench" / "results.json").exists() and not (dest / ".git").exists()


def test_ratios_are_of_the_medians():
    now = [{"rps": 100.0, "p99_ms": 2.0}, {"rps": 120.0, "p99_ms": 9.0}, {"rps": 110.0, "p99_ms": 3.0}]
    before = [{"rps": 100.0, "p99_ms": 3.0}, {"rps": 50.0, "p99_ms": 3.0}, {"rps": 200.0, "p99_ms": 3.0}]
    r = guard.ratios(now, before)
    assert (r["rps_now"], r["rps_before"], r["rps_ratio"]) == (110.0, 100.0, 1.1)
    assert (r["p99_now_ms"], r["p99_ratio"]) == (3.0, 1.0)


def throughput(policy, rps, p99):
    return {"kind": "throughput", "server": "pycluster", "policy": policy, "workers": 2, "endpoint": "/",
            "conn": "keepalive", "rps": rps, "p99_ms": p99}


def same_run(policy, rps_ratio, p99_ratio):
    return {"kind": "guard", "server": "pycluster", "policy": policy, "workers": 2, "previous_commit": "a" * 40,
            "pairs": 2, "rps_now": 100.0 * rps_ratio, "rps_before": 100.0, "p99_now_ms": p99_ratio,
            "p99_before_ms": 1.0, "rps_ratio": rps_ratio, "p99_ratio": p99_ratio}


def test_the_same_run_comparison_judges_the_guard_and_the_committed_figures_are_shown_beside():
    previous = [throughput("rr", 16000.0, 4.0), throughput("shared", 10000.0, 4.0)]
    runs = [throughput("rr", 14000.0, 4.2), same_run("rr", 0.99, 1.01), throughput("shared", 9000.0, 4.0)]
    rows = {r["policy"]: r for r in balance_report._guard(runs, previous)}
    assert rows["rr"]["met"]  # 0.875× the committed figure, but 0.99× the previous code in this run
    assert "same run against aaaaaaaa (2 pairs): 0.990×" in rows["rr"]["measured"]
    assert "committed figures: 0.875×" in rows["rr"]["measured"]
    assert not rows["shared"]["met"]  # no same-run comparison: the committed figures judge
    runs.append({**same_run("reuseport", 0.95, 1.0), "pairs": 1})
    rows = {r["policy"]: r for r in balance_report._guard(runs, previous)}
    assert not rows["reuseport"]["met"] and "committed" not in rows["reuseport"]["measured"]
    assert "(1 pair):" in rows["reuseport"]["measured"]


def test_a_run_resolves_the_bar_only_where_the_same_code_reads_within_it():
    assert guard.resolves({"rps_ratio": 0.98, "p99_ratio": 1.02}, 0.03)
    assert not guard.resolves({"rps_ratio": 0.96, "p99_ratio": 1.0}, 0.03)
    assert not guard.resolves({"rps_ratio": 1.0, "p99_ratio": 0.9}, 0.03)  # better by 10% is noise too
    assert guard.resolves(None, 0.03) is None


def test_the_guard_row_says_how_far_apart_the_same_code_read_and_keeps_the_bar():
    aa = {**same_run("rr", 1.06, 0.9), "kind": "guard-aa", "pairs": 3}
    runs = [throughput("rr", 14000.0, 4.2), same_run("rr", 0.99, 1.01), aa]
    row, = balance_report._guard(runs, [])
    assert row["met"]  # judged by the comparison with the previous code, as before
    assert "the same code (rr, 3 pairs) read 1.060× rate, p99 ×0.90: this run cannot tell 3%" in row["measured"]
    runs[-1] = {**aa, "rps_ratio": 1.01, "p99_ratio": 0.99, "pairs": 1}
    row, = balance_report._guard(runs, [])
    assert "(rr, 1 pair) read 1.010× rate, p99 ×0.99: a change of 3% shows" in row["measured"]
    runs[1] = same_run("rr", 0.9, 1.0)
    assert not balance_report._guard(runs, [])[0]["met"]
