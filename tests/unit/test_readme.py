"""The README stays true: every flag, variable, signal and set-up command it must name."""
from pathlib import Path

from master.supervisor.arbiter import SIGNAL_COMMANDS
from master.supervisor.config import OPTIONS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_flag_and_environment_twin_is_documented():
    for flag, env, *_ in OPTIONS:
        assert f"| `{flag}` | `{env}` |" in README, flag


def test_every_signal_is_documented():
    for signum in SIGNAL_COMMANDS:
        assert f"`{signum.name[3:]}`" in README, signum.name


def test_the_set_up_commands_are_the_ones_ci_runs():
    assert "docker compose up" in README and "make test" in README and "make run" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
