"""`pycluster ctl`: talk to a running master through its control socket."""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

from .socket_path import default_control_socket, owner_name, peer_credentials
from .top import top_main


class CtlError(Exception):
    """A ctl failure, with the one line to print."""


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the master at `path` and return its reply."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        check_server(sock, path)  # before a single byte of the request leaves
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except FileNotFoundError:
        raise CtlError(f"no control socket at {path}: is the master running? (use --socket PATH)") from None
    except PermissionError:
        raise CtlError(f"permission denied on {path}: the control socket belongs to another user") from None
    except ConnectionRefusedError:
        raise CtlError(f"nothing listens on {path}: the master is not running (stale socket)") from None
    except socket.timeout:
        raise CtlError(f"the master at {path} did not answer within {timeout:.0f} s") from None
    except OSError as exc:
        raise CtlError(f"cannot talk to the master at {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        return json.loads(data)
    except ValueError:
        raise CtlError("the master sent an unreadable reply") from None


def check_server(sock: socket.socket, path: str) -> None:
    """Refuse a server that is neither our own user nor root: whoever holds the path could be anyone."""
    try:
        pid, uid, _gid = peer_credentials(sock)
    except OSError as exc:
        raise CtlError(f"cannot tell who serves {path} (SO_PEERCRED: {exc.strerror}): refusing to talk to it") from None
    if uid not in (os.getuid(), 0):
        trusted = "root" if os.getuid() == 0 else f"you ({owner_name(os.getuid())}) or root"
        raise CtlError(f"refusing to talk to {path}: it is served by pid {pid} of {owner_name(uid)}, not by "
                       f"{trusted}, so it may not be a master at all (to control another user's master, "
                       "run ctl as that user)")


def _ctl_parser() -> argparse.ArgumentParser:
    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:
            raise CtlError(message)

    parser = Parser(prog="pycluster ctl", description="Control a running master through its control socket.")
    parser.add_argument("--socket", default=None,
                        help="control socket path (default: from CONTROL_SOCKET, else per user and BIND/PORT)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    status = commands.add_parser("status", help="a table of the workers (or --json)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    commands.add_parser("reload", help="rolling restart: replace every worker, one at a time")
    scale = commands.add_parser("scale", help="set the number of workers")
    scale.add_argument("workers", type=int)
    kill = commands.add_parser("kill-worker", help="SIGKILL one worker (it is replaced)")
    kill.add_argument("id", type=int, help="worker id, as status shows it")
    kill.add_argument("--signal", default="SIGKILL", help="signal to send (default SIGKILL)")
    broadcast = commands.add_parser("broadcast", help="send a JSON message to every worker")
    broadcast.add_argument("message", help="a JSON value, e.g. '{\"cmd\": \"ping\"}'")
    commands.add_parser("stop", help="graceful shutdown (like SIGTERM)")
    top = commands.add_parser("top", help="live view of the workers, refreshed in place (q or Ctrl-C quits)")
    top.add_argument("--url", help="the master's dashboard endpoint (default: http:// + METRICS_BIND, "
                                   "else http://127.0.0.1:9100)")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true", help="print one screen as text and exit")
    return parser


def _default_socket() -> str:
    if os.environ.get("CONTROL_SOCKET"):
        return os.environ["CONTROL_SOCKET"]
    bind = os.environ.get("BIND", "0.0.0.0:8000")
    if os.environ.get("PORT"):
        bind = f"{bind.rpartition(':')[0]}:{os.environ['PORT']}"
    return default_control_socket(bind)


def _human_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def format_status(status: dict[str, Any]) -> str:
    """The `ctl status` table."""
    master = status["master"]
    lines = [f"master {master['pid']}  {master['state']}  policy {master['policy']}  {master['bind']}  "
             f"workers {len(status['workers'])}/{master['target_workers']}  uptime {master['uptime']:.0f} s  "
             f"requests {master['requests_total']}"]
    reload = master.get("reload") or {}
    if reload.get("state") not in (None, "idle"):
        lines.append(f"rolling restart: {reload.get('state')}"
                     + (f" ({reload.get('error')})" if reload.get("error") else ""))
    header = ("ID", "PID", "STATE", "REQUESTS", "IN FLIGHT", "RSS", "UPTIME", "RESTARTS")
    rows = [header] + [(str(w["id"]), str(w["pid"]), w["state"] + (" (draining)" if w.get("draining") else ""),
                        str(w["requests"]), str(w["in_flight"]), _human_bytes(w["rss"]), f"{w['uptime']:.0f} s",
                        str(w["restarts"])) for w in status["workers"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def ctl_main(argv: list[str]) -> int:
    """`pycluster ctl ...`; returns the exit status."""
    try:
        args = _ctl_parser().parse_args(argv)
        if args.command == "top":  # reads the dashboard's JSON, not the control socket
            return top_main(args.url, args.interval, args.once)
        path = args.socket or _default_socket()
        payload: dict[str, Any] = {"cmd": args.command}
        if args.command == "scale":
            payload["workers"] = args.workers
        elif args.command == "kill-worker":
            payload.update(id=args.id, signal_name=args.signal)
        elif args.command == "broadcast":
            try:
                payload["message"] = json.loads(args.message)
            except ValueError:
                raise CtlError(f"broadcast needs a JSON value, got {args.message!r}") from None
        reply = request(path, payload)
    except CtlError as exc:
        print(f"pycluster ctl: error: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"pycluster ctl: error: {reply.get('error', 'the master refused')}", file=sys.stderr)
        return 1
    if args.command == "status":
        reply.pop("ok", None)
        print(json.dumps(reply, indent=2) if args.json else format_status(reply))
    elif args.command == "reload":
        print(f"rolling restart started: replacing {reply.get('replacing')} workers one at a time")
    elif args.command == "scale":
        print(f"scaling to {reply.get('workers')} workers")
    elif args.command == "kill-worker":
        print(f"sent {args.signal} to worker {args.id} (pid {reply.get('pid')})")
    elif args.command == "broadcast":
        print(f"sent to {reply.get('sent')} workers")
    else:
        print("stopping")
    return 0
