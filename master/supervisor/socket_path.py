"""Where the control socket lives, and the checks that make a path safe to bind.

A socket in a directory other users can write can be squatted: someone creates the name
first, and `ctl stop` talks to them. So the default lives in a directory that only this
user can write: $XDG_RUNTIME_DIR/pycluster when the login session provides one (owned by
us, as the XDG spec requires), else $TMPDIR/pycluster-<uid> (TMPDIR defaults to /tmp),
which the master creates with mode 0700 and whose owner and mode it checks every time.
A path given with --control-socket must sit in a directory owned by us or root that no
group or other user can write (the Dockerfile's /run/pycluster is 0700, owned by the
app user).

Whatever is already at the path is replaced only if it is a socket of ours that nobody
answers on (a master that died without cleaning up). Anything else is a
ControlSocketError naming the path and its owner: the master refuses to start rather
than run with no control, or with a control socket someone else holds.
"""
from __future__ import annotations

import os
import pwd
import socket
import stat
import struct

PRIVATE_MODE = 0o700
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ControlSocketError(Exception):
    """A control socket path that cannot be used safely; the message names it and says why."""


def default_control_socket(bind: str) -> str:
    """The control socket for a master on `bind`, in this user's private directory."""
    port = bind.rpartition(":")[2] or "8000"
    return os.path.join(private_dir(), f"control-{port}.sock")


def private_dir() -> str:
    """This user's directory for control sockets (it may not exist yet)."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime_dir) and _owned_dir(runtime_dir):
        return os.path.join(runtime_dir, "pycluster")
    # Not our XDG_RUNTIME_DIR (unset, or another user's, as `sudo -E` leaves it).
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"pycluster-{os.getuid()}")


def _owned_dir(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def owner_name(uid: int) -> str:
    """'uid 65534 (nobody)', for messages."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def make_private_dir(path: str) -> None:
    """Create `path` mode 0700 if absent; then insist it is a directory of ours that only we can enter."""
    try:
        os.mkdir(path, PRIVATE_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ControlSocketError(f"cannot create the control socket directory {path}: {exc.strerror}") from None
    try:
        info = os.lstat(path)  # lstat: a symlink planted here is refused, never followed
    except OSError as exc:
        raise ControlSocketError(f"cannot inspect the control socket directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ControlSocketError(f"the control socket directory {path} is not a directory "
                                 f"(it belongs to {owner_name(info.st_uid)}): remove it, or set --control-socket")
    if info.st_uid != os.getuid():
        raise ControlSocketError(f"the control socket directory {path} belongs to {owner_name(info.st_uid)}, "
                                 f"not to this master's {owner_name(os.getuid())}: someone else created it; "
                                 "remove it, or set --control-socket")
    if stat.S_IMODE(info.st_mode) != PRIVATE_MODE:
        try:
            os.chmod(path, PRIVATE_MODE)  # ours: tighten it (whatever is inside is checked next)
        except OSError as exc:
            raise ControlSocketError(f"cannot make {path} private (mode 0700): {exc.strerror}") from None


def check_given_dir(path: str) -> None:
    """A --control-socket directory: owned by us or root, writable by nobody else."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ControlSocketError(f"the control socket directory {path} is not usable: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ControlSocketError(f"the control socket directory {path} is not a directory")
    if info.st_uid not in (os.getuid(), 0):
        raise ControlSocketError(f"the control socket directory {path} belongs to {owner_name(info.st_uid)}, "
                                 f"not to this master's {owner_name(os.getuid())} or root: choose a directory of yours")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ControlSocketError(f"the control socket directory {path} is writable by other users "
                                 f"(mode {stat.S_IMODE(info.st_mode):04o}), so anyone could take the socket's name "
                                 "first: use a private directory (mode 0700), e.g. $XDG_RUNTIME_DIR")


def clear_stale(path: str) -> None:
    """Remove an old socket of ours at `path` that nobody answers on; refuse anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlSocketError(f"cannot inspect the control socket {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlSocketError(f"{path} exists and is not a socket (it belongs to {owner_name(info.st_uid)}): "
                                 "remove it, or choose another --control-socket")
    if info.st_uid != os.getuid():
        raise ControlSocketError(f"the control socket {path} belongs to {owner_name(info.st_uid)}, not to this "
                                 f"master's {owner_name(os.getuid())}: someone else holds it; "
                                 "remove it, or choose another --control-socket")
    holder = live_peer(path)
    if holder is not None:
        raise ControlSocketError(f"the control socket {path} is in use by another master (pid {holder}): "
                                 "stop it first, or choose another --control-socket")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ControlSocketError(f"cannot remove the stale control socket {path}: {exc.strerror}") from None


def live_peer(path: str, timeout: float = 0.5) -> int | None:
    """The pid serving `path` (0 if it answers but says no pid), or None if nothing listens."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(timeout)
        probe.connect(path)
        return peer_credentials(probe)[0]
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except OSError:
        return 0  # it exists and does not refuse (a full backlog, a timeout): treat as in use
    finally:
        probe.close()


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    return PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))


def bind_private(path: str, *, private_dir_default: bool) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600, after every check above."""
    directory = os.path.dirname(os.path.abspath(path))
    if private_dir_default:
        make_private_dir(directory)
    else:
        check_given_dir(directory)
    clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # created 0600: no window in which others could connect
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise ControlSocketError(f"cannot create the control socket {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    return sock
