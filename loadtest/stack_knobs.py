"""The knobs of docker-compose.yml: every ${VAR} it interpolates and every variable it passes through.

A project of our own (chaos, e2e tests) strips them from the inherited environment, so a developer's
shell cannot change what is measured; a test checks that .env.example lists each of them.
"""

import re
from pathlib import Path

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
# Compose's own variables change which project and files a command means.
COMPOSE_OWN = ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES")


def compose_knobs(text: str) -> tuple[str, ...]:
    """Variables interpolated (${NAME...}) or passed through (`NAME:` with no value) by a compose file."""
    text = "\n".join(line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    interpolated = re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text)
    passed = re.findall(r"^\s+([A-Z_][A-Z0-9_]*):\s*$", text, re.MULTILINE)
    return tuple(sorted(set(interpolated) | set(passed)))


KNOBS = (*compose_knobs(COMPOSE_FILE.read_text()), *COMPOSE_OWN)
