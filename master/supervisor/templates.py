"""The supervisor keeps one fork template per generation of the app (master/primary/template.py).

At start-up the first workers are forked once the template has loaded the app (or, if it
cannot load it, the master halts as it would for a worker); a rolling restart first makes a
template of the new code, and only then replaces the workers; a template that dies is made
again after a pause, and meanwhile workers start as fresh interpreters.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ..primary.template import Template, TemplateStarter, become_subreaper

log = logging.getLogger("master.arbiter")

RESTART_AFTER = 1.0  # seconds before a template that died is made again


class TemplateKeeper:
    """Owns the current template; tells the arbiter when a generation is ready or cannot load."""

    def __init__(self, primary: Any, starter: TemplateStarter) -> None:
        self.primary = primary
        self.loop = primary.loop
        self.starter = starter
        self.current: Template | None = None
        self.pending: tuple[Template, Callable[[str | None], None]] | None = None
        self.stopped = False

    def start(self, then: Callable[[str | None], None]) -> None:
        """Make a template of the current code; `then(None)` once workers can start (from it, or fresh
        if the template itself is broken), `then(error)` if the app cannot be loaded."""
        if not become_subreaper():
            log.warning("Cannot become a child subreaper: workers start as fresh interpreters")
            then(None)
            return
        self.primary.adopts_orphans = True
        self._make(then)

    def renew(self, then: Callable[[str | None], None]) -> None:
        """A rolling restart: a template of the new code first; `then` as for start()."""
        if not self.primary.adopts_orphans:
            then(None)
            return
        self._make(then)

    def _make(self, then: Callable[[str | None], None]) -> None:
        template = Template(self.primary.template_env(), self.loop, self._on_state)
        self.primary.other_children[template.pid] = template.poll
        self.pending = (template, then)

    def _on_state(self, template: Template) -> None:
        if self.pending and self.pending[0] is template:
            _, then = self.pending
            self.pending = None
            if template.state == "ready":
                old, self.current = self.current, template
                self.starter.template = template
                log.info("Fork template %s is ready: workers start in milliseconds", template.pid)
                if old is not None:
                    old.stop()
                then(None)
            elif template.app_error:
                template.stop()
                then(template.error)
            else:  # the template itself broke: carry on without one
                log.warning("Fork template %s failed (%s): workers start as fresh interpreters", template.pid,
                            template.error)
                then(None)
            return
        if template.state == "gone":
            self.primary.other_children.pop(template.pid, None)
            if template is self.current:
                self.current = self.starter.template = None
                if not self.stopped:
                    log.warning("Fork template %s exited: making another in %.0f s (meanwhile workers start "
                                "as fresh interpreters)", template.pid, RESTART_AFTER)
                    self.loop.call_later(RESTART_AFTER, self._replace_lost)

    def _replace_lost(self) -> None:
        if not self.stopped and self.current is None and self.pending is None:
            self._make(lambda error: error and log.error("Fork template failed: %s", error))

    def figures(self) -> dict:
        """For status: the template serving now, and how workers were started."""
        return {"pid": self.current.pid if self.current else None,
                "forked": self.starter.forked, "fresh": self.starter.fresh}

    def stop(self) -> None:
        """The master is stopping: let every template go."""
        self.stopped = True
        for template in (self.current, self.pending[0] if self.pending else None):
            if template is not None:
                template.stop()
