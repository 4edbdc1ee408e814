"""Find and build the WSGI callable an app spec names (the spec's forms: master/core/app_spec.py)."""
from __future__ import annotations

import importlib
import traceback
from typing import Any, Callable

from ..core.app_spec import AppSpecError, parse_spec

__all__ = ["AppLoadError", "AppSpecError", "load_app"]


class AppLoadError(Exception):
    """The app could not be imported or built; its message is the one-line reason."""


def load_app(spec: str) -> Callable:
    """Import the module, find the attribute, call it if it is a factory; AppLoadError on any failure."""
    module_name, attribute, call = parse_spec(spec)
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
        if call is not None:
            target = target(*call[0], **call[1])
    except Exception as exc:  # noqa: BLE001 - any failure to build the app is the same verdict
        raise AppLoadError(f"cannot load app {spec!r}: {type(exc).__name__}: {exc}{_where(exc)}") from None
    if not callable(target):
        what = f"{attribute}() returned {type(target).__name__}" if call is not None else f"{attribute} is"
        raise AppLoadError(f"cannot load app {spec!r}: {what} not a WSGI callable")
    return target


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
