"""`pycluster ctl top` in a real terminal (tmux) against a real master under load: the numbers on
screen are the master's, they refresh in place, a killed worker's successor shows up, and `q`
and Ctrl-C quit cleanly."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from support import PYTHON, ROOT, wait_for
from support_ui import dashboard_env, metrics_port, require_tool, wait_rates

from loadtest.loadgen import LoadGen

ROW = re.compile(r"^ w(\d+)\s+(\d+)\s+(\w+)\s+([\d,.]+)\s")
TOTAL = re.compile(r"requests ([\d,]+)\s*$", re.M)


class Tmux:
    """A private tmux server (its own socket name), killed at the end."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.name = f"pycluster-test-{os.getpid()}"

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        return subprocess.run([self.binary, "-L", self.name, "-f", "/dev/null", *args], text=True, timeout=10,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, **kwargs)

    def start(self, session: str, command: str, status: Path) -> None:
        """Run `command` in a new session; its exit status goes to the file `status`.

        bash, not tmux, waits for the program (and bash goes on after a Ctrl-C the program
        handled itself): under pytest a tmux server does not always reap its panes' programs.
        """
        done = self("new-session", "-d", "-s", session, "-x", "170", "-y", "45",
                    f"bash -c '{command}; echo $? > {status}; sleep 60'", capture_output=False,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert done.returncode == 0

    def screen(self, session: str) -> str:
        return self("capture-pane", "-p", "-t", session).stdout

    def close(self) -> None:
        socket_path = self("display-message", "-p", "#{socket_path}").stdout.strip()
        self("kill-server")
        if socket_path:  # tmux leaves its socket file behind
            Path(socket_path).unlink(missing_ok=True)


def rows(screen: str) -> dict[int, tuple[int, str, float]]:
    """{worker id: (pid, state, req/s)} from the table on screen."""
    found = {}
    for line in screen.splitlines():
        match = ROW.match(line)
        if match:
            found[int(match.group(1))] = (int(match.group(2)), match.group(3), float(match.group(4).replace(",", "")))
    return found


def shown_total(screen: str) -> int | None:
    match = TOTAL.search(screen)
    return int(match.group(1).replace(",", "")) if match else None


def exit_status(path: Path) -> str | None:
    """The exit status bash wrote for the program, once it has exited."""
    return path.read_text().strip() if path.exists() and path.read_text().strip() else None


def test_ctl_top_shows_the_masters_numbers_refreshes_in_place_and_quits_on_q_or_ctrl_c(master, tmp_path):
    tmux = Tmux(require_tool("tmux"))
    m = master(workers=2, env=dashboard_env())
    gen = LoadGen("127.0.0.1", m.port, ["/sleep?s=0.02"], concurrency=4, keepalive=False, duration=60,
                  max_requests=30_000).start()
    top = f"{PYTHON} -m master ctl top --url http://127.0.0.1:{metrics_port(m)}"
    try:
        wait_rates(m)
        tmux.start("top", top, tmp_path / "top.status")
        status = m.status()
        pids = {w["id"]: w["pid"] for w in status["workers"]}
        screen = wait_for(lambda: (s := tmux.screen("top")) and set(rows(s)) == set(pids)
                          and all(r[2] > 0 for r in rows(s).values()) and s, 20, 0.2, "top's table")
        assert {wid: row[0] for wid, row in rows(screen).items()} == pids
        assert all(row[1] == "listening" for row in rows(screen).values())
        assert "workers 2/2" in screen and "policy rr" in screen
        # The total on screen is the master's: between what ctl status said before and after it.
        before = m.status()["master"]["requests_total"]
        screen = wait_for(lambda: (s := tmux.screen("top")) and (shown_total(s) or 0) > before and s, 10, 0.2,
                          "the total to refresh in place")
        assert before < shown_total(screen) <= m.status()["master"]["requests_total"]

        victim = min(pids)
        assert m.ctl("kill-worker", str(victim)).returncode == 0
        screen = wait_for(lambda: (s := tmux.screen("top")) and victim not in rows(s) and len(rows(s)) == 2
                          and "SIGKILL: crash" in s and s, 20, 0.2, "the successor on screen")
        successor = (set(rows(screen)) - set(pids)).pop()
        assert rows(screen)[successor][0] == {w["id"]: w["pid"] for w in m.status()["workers"]}[successor]

        tmux("send-keys", "-t", "top", "q")
        assert wait_for(lambda: exit_status(tmp_path / "top.status"), 10, 0.1, "top to quit on q") == "0"

        tmux.start("top2", top, tmp_path / "top2.status")
        wait_for(lambda: rows(tmux.screen("top2")), 20, 0.2, "the second top")
        tmux("send-keys", "-t", "top2", "C-c")
        assert wait_for(lambda: exit_status(tmp_path / "top2.status"), 10, 0.1, "top to quit on Ctrl-C") == "0"
    finally:
        tmux.close()
        gen.stop()
        gen.join()


def test_ctl_top_once_without_a_dashboard_says_where_it_looked(tmp_path):
    result = subprocess.run([PYTHON, "-m", "master", "ctl", "top", "--once", "--url", "http://127.0.0.1:9"],
                            capture_output=True, text=True, timeout=20, cwd=ROOT)
    assert result.returncode == 1
    assert "cannot read http://127.0.0.1:9/dashboard.json" in result.stderr
