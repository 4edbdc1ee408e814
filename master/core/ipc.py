"""The IPC channel between the primary and a worker.

One envelope for everything that crosses the channel (newline-delimited JSON over a
Unix stream socketpair, as Node does):

    {"cmd": "CLUSTER", "act": "<name>", "seq": n}           internal request
    {"cmd": "CLUSTER", "act": "reply", "ack": n, ...}       reply to request `seq` n
    {"cmd": "CLUSTER", "act": "<name>"}                     internal notification
    {"cmd": "USER", "data": <any JSON value>}               a user message

User messages are wrapped in their own envelope, so nothing a user sends can ever be
mistaken for an internal message. A frame that carries file descriptors says how many
in "fds"; the descriptors travel as SCM_RIGHTS ancillary data with the frame's first
bytes, so they always arrive no later than the frame that names them.

The internal acts, documented once (handlers live in master/primary/primary.py and master/worker/runtime.py):
    worker -> primary: online, queryServer (request: address, port -> ok/policy/error),
                       listening (address, port), heartbeat (stats), exiting (the worker
                       decided to leave: exited_after_disconnect), bootError (why it cannot
                       load the app, just before exit 4)
    primary -> worker: disconnect (drain and exit), reply (ack of queryServer; with the
                       listening socket for shared, the handoff lane for rr)
Connections themselves never travel here: rr hands them over on each worker's own lane
(master/core/lane.py), so this channel stays free for control and user messages.
"""
from __future__ import annotations

import array
import json
import os
import socket
from collections import deque
from typing import Any, Callable, Iterable

INTERNAL = "CLUSTER"
USER = "USER"
MAX_FDS_PER_READ = 16
READ_SIZE = 256 * 1024


class MessageError(TypeError):
    """A message that cannot travel: not JSON-serialisable, or not a valid frame."""


class ChannelClosed(ConnectionError):
    """The channel is closed: the other side is gone or disconnected."""


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one envelope into a frame; refuses values JSON cannot carry."""
    try:
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"message is not JSON-serialisable: {exc}") from None
    return text.encode() + b"\n"


def user_envelope(data: Any) -> dict[str, Any]:
    """Wrap a user message so it never collides with internal ones."""
    return {"cmd": USER, "data": data}


def internal(act: str, **fields: Any) -> dict[str, Any]:
    """Build an internal envelope."""
    return {"cmd": INTERNAL, "act": act, **fields}


def fds_from_ancdata(ancdata: Iterable[tuple[int, int, bytes]]) -> list[int]:
    """Extract the file descriptors of SCM_RIGHTS ancillary data."""
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % array.array("i").itemsize
            fds.extend(array.array("i", data[:usable]))
    return fds


def scm_rights(fds: list[int]) -> list[tuple[int, int, bytes]]:
    """Ancillary data that passes `fds`."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


class FrameDecoder:
    """Turns received bytes and descriptors back into (envelope, fds) pairs, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fds: deque[int] = deque()

    def feed(self, data: bytes, fds: Iterable[int] = ()) -> list[tuple[dict[str, Any], list[int]]]:
        """Add received bytes; return every complete frame so far."""
        self._fds.extend(fds)
        self._buffer += data
        frames = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end])
            start = end + 1
            try:
                message = json.loads(line)
            except ValueError:
                raise MessageError(f"malformed frame on the IPC channel: {line[:80]!r}") from None
            if not isinstance(message, dict) or message.get("cmd") not in (INTERNAL, USER):
                raise MessageError(f"frame without a valid envelope: {line[:80]!r}")
            wanted = int(message.get("fds") or 0)
            attached = [self._fds.popleft() for _ in range(min(wanted, len(self._fds)))]
            frames.append((message, attached))
        del self._buffer[:start]
        return frames

    def close_unclaimed(self) -> None:
        """Close descriptors that arrived without a frame to claim them."""
        while self._fds:
            _close_quietly(self._fds.popleft())


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class Channel:
    """The primary's non-blocking end of one worker's channel, driven by the event loop."""

    def __init__(
        self,
        sock: socket.socket,
        loop: Any,
        on_message: Callable[[dict[str, Any], list[int]], None],
        on_close: Callable[[], None],
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._loop = loop
        self._on_message = on_message
        self._on_close = on_close
        self._decoder = FrameDecoder()
        self._out: deque[list[Any]] = deque()  # [memoryview, fds] per frame
        self._writing = False
        self.closed = False
        loop.add_reader(sock.fileno(), self._on_readable)

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """Queue one frame (encoded now, so bad messages fail at the caller) and flush."""
        if self.closed:
            raise ChannelClosed("the IPC channel is closed")
        data = encode(message)
        self._out.append([memoryview(data), list(fds or ())])
        self._flush()

    def _flush(self) -> None:
        while self._out and not self.closed:
            item = self._out[0]
            try:
                if item[1]:
                    sent = self.sock.sendmsg([item[0]], scm_rights(item[1]))
                    item[1] = []
                else:
                    sent = self.sock.send(item[0])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            item[0] = item[0][sent:]
            if not len(item[0]):
                self._out.popleft()
        self._want_write(bool(self._out) and not self.closed)

    def _want_write(self, wanted: bool) -> None:
        if wanted == self._writing:
            return
        self._writing = wanted
        if wanted:
            self._loop.add_writer(self.sock.fileno(), self._flush)
        else:
            self._loop.remove_writer(self.sock.fileno())

    def drain(self) -> None:
        """Read and dispatch whatever has already arrived (e.g. before reaping the sender)."""
        self._on_readable()

    def _on_readable(self) -> None:
        for _ in range(64):  # bounded, so one chatty worker cannot starve the loop
            if self.closed:
                return
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    READ_SIZE, socket.CMSG_SPACE(MAX_FDS_PER_READ * 4)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            fds = fds_from_ancdata(ancdata)
            if not data and not fds:
                self.close()
                return
            try:
                frames = self._decoder.feed(data, fds)
            except MessageError:
                self.close()
                return
            for message, attached in frames:
                self._on_message(message, attached)
            if len(data) < READ_SIZE:
                return  # drained; the selector is level-triggered and says when more comes

    def close(self) -> None:
        """Close the channel once; the other side sees EOF at once."""
        if self.closed:
            return
        self.closed = True
        self._out.clear()
        self._writing = False
        self._loop.remove_reader(self.sock.fileno())
        self._loop.remove_writer(self.sock.fileno())
        self._decoder.close_unclaimed()
        self.sock.close()
        self._on_close()
