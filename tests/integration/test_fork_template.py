"""Workers forked from a template that has imported the app, and the template's own life."""
from __future__ import annotations

import os
import signal

from support import ROOT, get, wait_for

APP = '''
import os
VERSION = "VERSION"
def app(environ, start_response):
    start_response("200 OK", [("X-Worker-Pid", str(os.getpid()))])
    return [VERSION.encode()]
'''


def template_figures(m) -> dict:
    return m.status()["master"]["fork_template"]


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def test_workers_and_their_replacements_are_forked_from_the_template(master):
    m = master(workers=2)
    figures = template_figures(m)
    assert figures["forked"] == 2 and figures["fresh"] == 0
    assert all(cmdline(pid).startswith(b"pycluster: worker") for pid in m.workers())
    assert cmdline(figures["pid"]).startswith(b"pycluster: fork template (apps.hello:app)")
    victim = m.workers()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in m.listening_workers() and len(m.listening_workers()) == 2, timeout=10,
             what="the replacement")
    assert template_figures(m)["forked"] == 3
    assert get(m.url).status_code == 200


def test_a_reload_makes_a_template_of_the_new_code(master, tmp_path):
    (tmp_path / "versioned.py").write_text(APP.replace("VERSION", "v1"))
    m = master(app="versioned:app", workers=2,
               env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'tests'}{os.pathsep}{ROOT}",
                    "PYTHONDONTWRITEBYTECODE": "1"})
    first = template_figures(m)["pid"]
    (tmp_path / "versioned.py").write_text(APP.replace("VERSION", "v2"))
    assert m.ctl("reload").returncode == 0
    wait_for(lambda: m.status()["master"]["reload"]["state"] == "done", timeout=30, what="the restart")
    assert template_figures(m)["pid"] != first
    assert get(m.url).text == "v2"
    wait_for(lambda: not os.path.exists(f"/proc/{first}") or b"fork template" not in cmdline(first),
             timeout=10, what="the old template gone")


def test_a_lost_template_is_made_again_and_workers_start_meanwhile(master):
    m = master(workers=2)
    template = template_figures(m)["pid"]
    victim = m.workers()[0]  # chosen first: the dying template, a zombie child for a moment, is no worker
    os.kill(template, signal.SIGKILL)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(m.listening_workers()) == 2 and victim not in m.listening_workers(), timeout=15,
             what="a replacement without a template")
    wait_for(lambda: (template_figures(m)["pid"] or template) != template, timeout=15, what="a new template")
    assert "Fork template %d exited" % template in m.log()
