"""Control commands: decode a request and validate every argument before anything runs.

Signals and the control socket both go through validate(), so a command reaches the
arbiter only with arguments of the right type, range, depth and size. Everything here is
pure and raises CommandError with the one line the client should read.
"""
from __future__ import annotations

import json
import math
from typing import Any

from ..core.ipc import MessageError, encode, user_envelope
from ..primary.worker import signal_number

MAX_REQUEST_BYTES = 64 * 1024  # one request line; a longer one is refused, never buffered further
MAX_WORKERS = 1024  # a scale beyond this is a typo, not a plan
MAX_DEPTH = 32  # nesting of a broadcast message
MAX_WORKER_ID = 2 ** 31 - 1


class CommandError(ValueError):
    """A request that cannot run as sent; its message says why."""


def _reject_constant(name: str) -> Any:
    raise CommandError(f"bad request: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CommandError(f"bad request: the number {text[:20]} is out of range")
    return value


def decode_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """One request line -> (command name, its arguments); CommandError on anything else."""
    if len(line) > MAX_REQUEST_BYTES:
        raise CommandError(f"bad request: longer than {MAX_REQUEST_BYTES} bytes")
    try:
        request = json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float)
    except CommandError:
        raise
    except (ValueError, RecursionError):  # includes integers past Python's digit limit
        raise CommandError('bad request: expected one JSON object like {"cmd": "status"}') from None
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise CommandError('bad request: expected one JSON object like {"cmd": "status"}')
    name = request.pop("cmd")
    return name, request


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"{name} must be a whole number, got {_show(value)}")
    if not low <= value <= high:
        raise CommandError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, without recursion (a deep value cannot blow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _no_args(args: dict[str, Any]) -> dict[str, Any]:
    return {}


def _stop(args: dict[str, Any]) -> dict[str, Any]:
    graceful = args.get("graceful", True)
    if not isinstance(graceful, bool):
        raise CommandError(f"graceful must be true or false, got {_show(graceful)}")
    return {"graceful": graceful}


def _scale(args: dict[str, Any]) -> dict[str, Any]:
    if ("workers" in args) == ("delta" in args):
        raise CommandError("scale needs exactly one of workers (a count) or delta (a change)")
    if "workers" in args:
        if isinstance(args["workers"], int) and not isinstance(args["workers"], bool) and args["workers"] < 1:
            raise CommandError(f"cannot scale to {args['workers']}: need at least 1 worker")
        return {"workers": _integer("workers", args["workers"], 1, MAX_WORKERS)}
    return {"delta": _integer("delta", args["delta"], -MAX_WORKERS, MAX_WORKERS)}


def _kill_worker(args: dict[str, Any]) -> dict[str, Any]:
    worker_id = _integer("id", args.get("id"), 1, MAX_WORKER_ID)
    name = args.get("signal_name", "SIGKILL")
    if not isinstance(name, (str, int)) or isinstance(name, bool) or len(str(name)) > 16:
        raise CommandError(f"signal_name must be a signal name such as SIGTERM, got {_show(name)}")
    try:
        signal_number(name)
    except (ValueError, OverflowError):
        raise CommandError(f"unknown signal {_show(name)}: use a name such as SIGTERM") from None
    return {"id": worker_id, "signal_name": name}


def _broadcast(args: dict[str, Any]) -> dict[str, Any]:
    message = args.get("message")
    if _depth(message, MAX_DEPTH) > MAX_DEPTH:
        raise CommandError(f"message is nested deeper than {MAX_DEPTH} levels")
    try:
        size = len(encode(user_envelope(message)))
    except MessageError as exc:
        raise CommandError(str(exc)) from None
    if size > MAX_REQUEST_BYTES:
        raise CommandError(f"message is larger than {MAX_REQUEST_BYTES} bytes")
    return {"message": message}


# name -> (the arguments it takes, its validator)
COMMANDS = {
    "status": ((), _no_args),
    "reload": ((), _no_args),
    "stop": (("graceful",), _stop),
    "scale": (("workers", "delta"), _scale),
    "kill-worker": (("id", "signal_name"), _kill_worker),
    "broadcast": (("message",), _broadcast),
}


def validate(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The command's arguments, checked; CommandError for an unknown command or a bad argument."""
    if name not in COMMANDS:
        raise CommandError(f"unknown command {_show(name)}: expected one of {', '.join(COMMANDS)}")
    known, validator = COMMANDS[name]
    extra = sorted(set(args) - set(known))
    if extra:
        raise CommandError(f"{name} takes no argument {_show(extra[0])}")
    return validator(args)
