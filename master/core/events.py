"""A small synchronous event emitter with Node's `on`/`once`/`off`/`emit` semantics."""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Callable

log = logging.getLogger("master.events")


class EventEmitter:
    """Registers listeners per event name and calls them in registration order."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[..., Any]]] = defaultdict(list)

    def on(self, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Call `fn` every time `event` is emitted; returns `fn` so it can decorate."""
        self._listeners[event].append(fn)
        return fn

    def once(self, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Call `fn` the next time `event` is emitted, then forget it."""

        def wrapper(*args: Any) -> Any:
            self.off(event, wrapper)
            return fn(*args)

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        self._listeners[event].append(wrapper)
        return fn

    def off(self, event: str, fn: Callable[..., Any]) -> None:
        """Remove one registration of `fn` (or of a `once` wrapper around it)."""
        listeners = self._listeners.get(event, [])
        for i, registered in enumerate(listeners):
            if registered is fn or getattr(registered, "__wrapped__", None) is fn:
                del listeners[i]
                return

    def listener_count(self, event: str) -> int:
        """How many listeners `event` has."""
        return len(self._listeners.get(event, ()))

    def emit(self, event: str, *args: Any) -> bool:
        """Call every listener of `event`; True when there was at least one.

        A listener that raises is logged and does not stop the others: one faulty user
        handler must not take the master's event loop down.
        """
        listeners = list(self._listeners.get(event, ()))
        for fn in listeners:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - user code; keep the loop alive
                log.exception("listener for %r raised", event)
        return bool(listeners)
