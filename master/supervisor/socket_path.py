"""Where the control socket lives by default, for the server and the client alike."""
from __future__ import annotations

import os


def default_control_socket(bind: str) -> str:
    """A path any user can create, also non-root in a container (unlike gunicorn 27's default)."""
    port = bind.rpartition(":")[2] or "8000"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime_dir if runtime_dir and os.access(runtime_dir, os.W_OK) else os.environ.get("TMPDIR", "/tmp")
    return os.path.join(base, f"pycluster-{os.getuid()}-{port}.sock")
