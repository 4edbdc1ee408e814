"""The primary's side of the fork template (master/worker/template.py): start it, and fork workers from it.

`TemplateStarter` has Popen's signature, so the Primary uses it as its process starter: while a
template is ready, a worker is forked from it in milliseconds; otherwise (not ready yet, gone,
an error) the worker starts as a fresh interpreter, as before. The primary becomes a child
subreaper so that the forked workers are its children.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
from typing import Any, Callable

from ..core.ipc import scm_rights

log = logging.getLogger("master.cluster")

TEMPLATE_MODULE = "master.worker.template"
TEMPLATE_ENV = "PYCLUSTER_TEMPLATE_FD"
FORK_TIMEOUT = 2.0  # seconds for the template to answer a fork request, else a fresh interpreter
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux): the template's workers are then our own children."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class ForkedProcess:
    """What Popen would be for a worker the template forked: pid, poll(), send_signal()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Reap it if it has exited; its return code (negative: the signal), or None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not ours (yet): it has not been reparented, or is gone
                return None
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal it unless it has been reaped (its pid may belong to someone else by then)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


class Template:
    """One template process: started, ready (or failed), asked to fork."""

    def __init__(self, env: dict[str, str], loop: Any, on_state: Callable[["Template"], None]) -> None:
        self.ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.loop = loop
        self.on_state = on_state  # called when it becomes ready, fails, or exits
        self.state = "starting"  # starting -> ready | failed; -> gone once it exits
        self.error = ""
        self.app_error = False  # it failed because the app cannot be loaded (not because it broke)
        self._seq = 0
        try:
            self.process = subprocess.Popen([sys.executable, "-m", TEMPLATE_MODULE],
                                            env={**env, TEMPLATE_ENV: str(theirs.fileno())},
                                            pass_fds=(theirs.fileno(),), close_fds=True)
        finally:
            theirs.close()
        loop.add_reader(self.ours.fileno(), self._on_first_word)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _on_first_word(self) -> None:
        try:
            data = self.ours.recv(65536)
            word = json.loads(data) if data else {"error": "the template exited before it was ready"}
        except (OSError, ValueError) as exc:
            word = {"error": f"unreadable answer from the template: {exc}"}
        self.loop.remove_reader(self.ours.fileno())
        self.state = "ready" if word.get("ready") else "failed"
        self.error = str(word.get("error", ""))
        self.app_error = bool(data) and "error" in word
        self.on_state(self)

    def fork(self, env: dict[str, str], fds: tuple[int, int]) -> ForkedProcess:
        """Ask for one worker with this environment and (channel, board) descriptors; RuntimeError on failure."""
        self._seq += 1
        request = json.dumps({"seq": self._seq, "env": env}).encode()
        try:
            self.ours.sendmsg([request], scm_rights(list(fds)))
            ready, _, _ = select.select([self.ours], [], [], FORK_TIMEOUT)
            reply = json.loads(self.ours.recv(65536)) if ready else {"error": "no answer"}
        except (OSError, ValueError) as exc:
            reply = {"error": str(exc)}
        if reply.get("seq") != self._seq or "pid" not in reply:
            raise RuntimeError(f"the template could not fork a worker: {reply.get('error', reply)}")
        return ForkedProcess(int(reply["pid"]))

    def poll(self) -> int | None:
        """Reap the template itself once it has exited."""
        code = self.process.poll()
        if code is not None and self.state != "gone":
            self.state = "gone"
            self.loop.remove_reader(self.ours.fileno())
            self.ours.close()
            self.on_state(self)
        return code

    def stop(self) -> None:
        """Ask it to go (it exits when its socket closes); SIGTERM as well."""
        if self.state != "gone":
            try:
                self.ours.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.process.send_signal(signal.SIGTERM)


class TemplateStarter:
    """The Primary's process starter: fork from the current template, else Popen."""

    def __init__(self) -> None:
        self.template: Template | None = None
        self.forked = self.fresh = 0

    def __call__(self, argv: list[str], *, env: dict[str, str], pass_fds: tuple[int, ...], close_fds: bool) -> Any:
        template = self.template
        if template is not None and template.state == "ready":
            try:
                process = template.fork(env, (pass_fds[0], pass_fds[1]))
                self.forked += 1
                return process
            except RuntimeError as exc:
                log.warning("%s; starting a fresh interpreter instead", exc)
        self.fresh += 1
        return subprocess.Popen(argv, env=env, pass_fds=pass_fds, close_fds=close_fds)
