"""App specs: 'module:attr', 'module:obj.attr' or 'module:factory(args)', read the same way everywhere.

A factory's arguments are Python literals only (read with ast.literal_eval), so a spec can
never run code of its own: `'app:create_app()'`, `'app:create_app("prod", debug=False)'`.
The supervisor checks a spec at start-up; a worker loads it (master/worker/app_loader.py).
"""
from __future__ import annotations

import ast
import re
from typing import Any

SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*)(?::(?P<attr>[A-Za-z_][\w.]*)(?P<call>\(.*\))?)?$", re.DOTALL)


class AppSpecError(ValueError):
    """The spec is not of a form we can load; its message says which form is expected."""


def parse_spec(spec: str) -> tuple[str, str, tuple[tuple[Any, ...], dict[str, Any]] | None]:
    """'pkg.mod:create_app(1, x=2)' -> ('pkg.mod', 'create_app', ((1,), {'x': 2})); call None without ()."""
    match = SPEC.match(spec.strip())
    if not match:
        raise AppSpecError(f"invalid app {spec!r}: expected module:attribute or module:factory(), "
                           "e.g. app.wsgi:app or app:create_app()")
    call = match.group("call")
    return match.group("module"), match.group("attr") or "app", None if call is None else _literal_args(spec, call)


def _literal_args(spec: str, call: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        node = ast.parse(f"f{call}", mode="eval").body
        if not isinstance(node, ast.Call):
            raise ValueError
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        if len(kwargs) != len(node.keywords):  # **spread
            raise ValueError
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        raise AppSpecError(f"invalid app {spec!r}: a factory's arguments must be Python literals, "
                           "e.g. app:create_app('prod')") from None
    return args, kwargs
