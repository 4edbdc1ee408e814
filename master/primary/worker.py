"""The primary's record of one worker process (Node's `Worker` on the primary side)."""
from __future__ import annotations

import itertools
import signal as signal_module
import time
from typing import Any, Callable

from ..core import ipc
from ..core.events import EventEmitter

# Worker states, in the only order they can move (Node's worker.state).
NONE, ONLINE, LISTENING, DISCONNECTED, DEAD = "none", "online", "listening", "disconnected", "dead"


def signal_number(sig: int | str) -> int:
    """Accept 9, "SIGKILL" or "KILL"; raise ValueError with the valid form otherwise."""
    if isinstance(sig, int):
        return int(signal_module.Signals(sig))
    name = str(sig).upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal_module.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {sig!r}: use a name such as 'SIGTERM' or a number") from None


class Worker(EventEmitter):
    """One worker: its process, channel, state, and Node's events.

    Events: online(), listening(address), message(msg), disconnect(), exit(code, signal),
    error(exc).
    """

    # Every field, declared once: nothing else attaches attributes to a Worker.
    __slots__ = (
        # Node's worker, as the primary sees it
        "id", "process", "state", "exited_after_disconnect", "exit_code", "signal_code",
        # what the primary learns about it
        "started_at", "started_monotonic", "last_heartbeat", "stats", "boot_error", "ever_listened",
        "kill_reason",
        # the supervisor's plan for it (master/supervisor): where it serves and what replaces it
        "slot", "generation", "request_limit", "retire_reason", "replaces", "replaced_by", "replace_reason",
        # plumbing: the IPC channel, and the load board the worker writes its figures to
        "channel", "board", "_seq", "_pending", "_primary",
    )

    def __init__(self, worker_id: int, process: Any, channel_sock: Any, loop: Any, primary: Any,
                 board: Any = None) -> None:
        super().__init__()
        self.id = worker_id
        self.process = process
        self.state = NONE
        self.exited_after_disconnect = False
        self.exit_code: int | None = None
        self.signal_code: str | None = None
        self.started_at = time.time()
        self.started_monotonic = loop.clock()  # the loop's clock: unit tests drive it
        self.last_heartbeat = self.started_monotonic
        self.stats: dict[str, Any] = {}
        self.boot_error: str | None = None  # why it could not load the app (its bootError message)
        self.ever_listened = False
        self.kill_reason: str | None = None  # set when the master kills it for its own fault (timeout)
        self.slot = 0
        self.generation = 0
        self.request_limit = 0  # recycle after this many requests (0: never)
        self.retire_reason: str | None = None  # why the supervisor is draining it
        self.replaces: Worker | None = None  # the worker this one takes over from, once listening
        self.replaced_by: Worker | None = None
        self.replace_reason: str | None = None
        self._seq = itertools.count(1)
        self._pending: dict[int, Callable[[dict[str, Any] | None], None]] = {}
        self._primary = primary
        self.board = board  # master/core/board.py: this worker's live figures
        self.channel = ipc.Channel(channel_sock, loop, self._on_frame, self._channel_closed)

    # -- Node's API -------------------------------------------------------------------
    @property
    def pid(self) -> int:
        """The worker process's pid."""
        return self.process.pid

    def send(self, message: Any) -> None:
        """Send a user message to the worker; raises when it cannot travel or arrive."""
        if not self.is_connected():
            raise ipc.ChannelClosed(f"cannot send to worker {self.id}: its IPC channel is closed (state {self.state})")
        self.channel.send(ipc.user_envelope(message))

    def disconnect(self) -> None:
        """Ask the worker to stop accepting, finish what it has, and exit."""
        self.exited_after_disconnect = True
        if self.is_connected():
            self.channel.send(ipc.internal("disconnect"))
            self._primary._worker_disconnecting(self)

    def kill(self, sig: int | str = "SIGTERM") -> None:
        """Close the channel and send `sig` to the worker (Node: worker.kill())."""
        signum = signal_number(sig)
        self.exited_after_disconnect = True
        if self.is_connected():
            self.channel.close()
        self.signal(signum)

    def signal(self, signum: int, reason: str | None = None) -> bool:
        """Send a signal without changing exited_after_disconnect; False when already gone.

        `reason` records that the master killed it for its own fault (e.g. "timeout"): rr
        then never retries what it was serving, which might hang the next worker too.
        """
        if reason is not None:
            self.kill_reason = reason
        if self.state == DEAD or self.process.poll() is not None:
            return False
        # Through the process object, never os.kill(pid): once reaped, a pid can belong to
        # someone else, and Popen.send_signal refuses to signal a process it has reaped.
        self.process.send_signal(signum)
        return True

    def is_dead(self) -> bool:
        """Whether the process has exited."""
        return self.state == DEAD

    def is_connected(self) -> bool:
        """Whether the IPC channel is open."""
        return not self.channel.closed

    # -- internal requests --------------------------------------------------------------
    def request(self, message: dict[str, Any], fds: list[int] | None,
                on_reply: Callable[[dict[str, Any] | None], None]) -> None:
        """Send an internal request; `on_reply(reply)` or `on_reply(None)` if the channel dies."""
        seq = next(self._seq)
        message = dict(message, seq=seq)
        if fds:
            message["fds"] = len(fds)
        self._pending[seq] = on_reply
        try:
            self.channel.send(message, fds)
        except ipc.ChannelClosed:
            self._pending.pop(seq, None)
            on_reply(None)

    def reply(self, request: dict[str, Any], fds: list[int] | None = None, **fields: Any) -> None:
        """Answer a request the worker made."""
        if not self.is_connected():
            return
        message = ipc.internal("reply", ack=request.get("seq"), **fields)
        if fds:
            message["fds"] = len(fds)
        self.channel.send(message, fds)

    def _on_frame(self, message: dict[str, Any], fds: list[int]) -> None:
        if message["cmd"] == ipc.INTERNAL and message.get("act") == "reply" and message.get("ack") in self._pending:
            self._pending.pop(message["ack"])(message)
            return
        self._primary._worker_frame(self, message, fds)

    def _channel_closed(self) -> None:
        pending, self._pending = self._pending, {}
        for on_reply in pending.values():
            on_reply(None)
        self._primary._worker_channel_closed(self)

    def __repr__(self) -> str:
        return f"<Worker id={self.id} pid={self.pid} state={self.state}>"
