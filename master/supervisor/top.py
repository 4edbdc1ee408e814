"""`pycluster ctl top`: the dashboard's numbers in the terminal, refreshed in place (htop, `pm2 monit`).

It reads the same /dashboard.json the page polls (METRICS_BIND, or --url), so the terminal and
the page never disagree: the rates are the master's, computed from heartbeats. The screen is
built by render() as plain lines of (text, style) pieces, which --once prints and curses
draws; `q` or Ctrl-C quits.
"""
from __future__ import annotations

import curses
import json
import locale
import os
import sys
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from ..core.net import format_bind, parse_bind
from .peers import FetchError, fetch

SPARK = "▁▂▃▄▅▆▇█"      # zero is the lowest bar; no value (a silent worker) is a blank
SPARK_SECONDS = 40
Piece = tuple[str, str]      # (text, style); styles: title, dim, ok, warn, bad, info, big, head
Line = list[Piece]


class TopError(Exception):
    """What top could not do, in one line."""


def default_url(environ: dict[str, str] | None = None) -> str:
    """The master's dashboard endpoint: METRICS_BIND as the master reads it (a wildcard host means this one)."""
    environ = os.environ if environ is None else environ
    bind = environ.get("METRICS_BIND", "") or "127.0.0.1:9100"
    if bind.strip().lower() in ("none", "off"):
        raise TopError("METRICS_BIND is off, so the master serves no dashboard: give --url http://HOST:PORT")
    host, port = parse_bind(bind)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://{format_bind(host, port)}"


def _endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise TopError(f"invalid --url {url!r}: expected http://HOST:PORT of the master's METRICS_BIND")
    try:
        return parts.hostname, parts.port or 80
    except ValueError:
        raise TopError(f"invalid --url {url!r}: bad port") from None


class Feed:
    """The samples top has seen (the newest few minutes), merged like the page does."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.host, self.port = _endpoint(url)
        self.instance: str | None = None
        self.seq = 0
        self.samples: deque[dict[str, Any]] = deque(maxlen=300)
        self.events: dict[int, dict[str, Any]] = {}
        self.answer: dict[str, Any] | None = None
        self.error: str | None = None
        self.updated = 0.0

    def refresh(self, timeout: float = 2.0) -> None:
        """One poll; a failure is kept in .error and shown, the last good numbers stay."""
        try:
            answer = json.loads(fetch(self.host, self.port, f"/dashboard.json?since={self.seq}", timeout))
            if answer.get("instance") != self.instance:  # a new master: start over with its whole ring
                answer = json.loads(fetch(self.host, self.port, "/dashboard.json", timeout))
                self.instance, self.seq = answer.get("instance"), 0
                self.samples.clear()
                self.events.clear()
        except (FetchError, ValueError) as exc:
            self.error = f"cannot read {self.url}/dashboard.json: {exc}"
            return
        for sample in answer["samples"]:
            if sample["seq"] > self.seq:
                self.samples.append(sample)
                self.seq = sample["seq"]
        self.events.update((event["id"], event) for event in answer["events"])
        self.answer, self.error, self.updated = answer, None, time.time()


# -- the screen, as text ---------------------------------------------------------------------
def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def human_rate(value: float | None) -> str:
    """Requests per second as the page shows them."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def human_duration(seconds: float) -> str:
    """65 -> '1m05s'."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def sparkline(values: list[float | None], top: float, width: int) -> str:
    """The last `width` values as block characters scaled to `top` (a gap where there is no value)."""
    values = values[-width:]
    cells = [" " if v is None else SPARK[min(len(SPARK) - 1, round(v / top * (len(SPARK) - 1)))] if top else SPARK[0]
             for v in values]
    return "".join(cells).rjust(width)


def _header(feed: Feed, master: dict[str, Any], workers: list[dict[str, Any]], now: float) -> list[Line]:
    latest = feed.samples[-1] if feed.samples else {"rps": None, "in_flight": 0}
    serving = sum(1 for w in workers if w["state"] == "listening" and not w.get("draining"))
    state_style = "ok" if master["state"] == "running" else "warn"
    fresh = feed.error is None and now - feed.updated < 4
    restarts = master.get("restarts") or {}
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(restarts.items()))
    return [
        [(" pycluster ", "title"), (f" {feed.answer.get('host', '')}  master {master['pid']} ", "dim"),
         (master["state"], state_style), (f"   policy {master['policy']}   workers ", "dim"),
         (f"{serving}/{master['target_workers']}", "ok" if serving >= master["target_workers"] else "warn"),
         (f"   up {human_duration(master['uptime'])}   gen {master['generation']}   ", "dim"),
         ("● live" if fresh else "○ stale", "ok" if fresh else "bad"), (time.strftime("  %H:%M:%S", time.localtime(now)), "dim")],
        [(" requests/s ", "dim"), (human_rate(latest["rps"]), "big"), ("    in flight ", "dim"),
         (str(latest["in_flight"]), "big"), ("    memory ", "dim"), (human_bytes(sum(w["rss"] for w in workers)), "big"),
         ("    restarts ", "dim"), (str(sum(restarts.values())), "bad" if restarts else "big"),
         (f" ({reasons})" if reasons else "", "dim"), ("    requests ", "dim"), (f"{master['requests_total']:,}", "big")],
    ]


def _rolling(master: dict[str, Any], width: int) -> list[Line]:
    reload = master.get("reload") or {}
    if reload.get("state") != "running":
        return []
    done, total = reload.get("replaced", 0), reload.get("total", 0) or 1
    bar = max(10, min(40, width - 50))
    filled = round(bar * done / total)
    current = reload.get("current") or {}
    return [[(" rolling restart ", "info"), (f"{done}/{total} ", "big"), ("█" * filled, "info"),
             ("─" * (bar - filled), "dim"), (f"  now {current.get('old')} → {current.get('new')}" if current else "", "dim")]]


def _workers(feed: Feed, workers: list[dict[str, Any]], width: int) -> list[Line]:
    spark = max(10, min(SPARK_SECONDS, width - 92))
    latest = feed.samples[-1]["w"] if feed.samples else {}
    series = {str(w["id"]): [s["w"].get(str(w["id"]), [None])[0] for s in feed.samples] for w in workers}
    top = max([v for values in series.values() for v in values[-spark:] if v is not None] or [0])
    lines: list[Line] = [[(f" {'WORKER':<8}{'PID':>8}  {'STATE':<12}{'REQ/S':>9}  {'LAST ' + str(spark) + ' s':<{spark}}"
                           f"{'IN FLIGHT':>10}{'MEMORY':>11}{'UPTIME':>8}{'REQUESTS':>11}{'RESTARTS':>9}", "head")]]
    for w in workers:
        state = "draining" if w.get("draining") else w["state"]
        now = latest.get(str(w["id"]))
        lines.append([(f" {'w' + str(w['id']):<8}{w['pid']:>8}  ", ""),
                      (f"{state:<12}", "ok" if state == "listening" else "warn"),
                      (f"{human_rate(now[0] if now else None):>9}  ", "big"),
                      (sparkline(series[str(w["id"])], top, spark), "info"),
                      (f"{w['in_flight']:>10}{human_bytes(w['rss']):>11}{human_duration(w['uptime']):>8}"
                       f"{w['requests']:>11,}{w['restarts']:>9}", "")])
    return lines


def render(feed: Feed, width: int = 120, height: int = 40, now: float | None = None) -> list[Line]:
    """The whole screen."""
    now = time.time() if now is None else now
    if feed.answer is None:
        return [[(" pycluster top ", "title"), ("  waiting for ", "dim"), (feed.url, "")],
                [(f" {feed.error}" if feed.error else " connecting…", "bad" if feed.error else "dim")],
                [(" q quit", "dim")]]
    master, workers = feed.answer["snapshot"]["master"], feed.answer["snapshot"]["workers"]
    lines = _header(feed, master, workers, now) + _rolling(master, width) + [[]] + _workers(feed, workers, width)
    if feed.error:
        lines.append([(f" {feed.error} (showing the last numbers)", "bad")])
    room = max(0, height - len(lines) - 4)
    events = sorted(feed.events.values(), key=lambda e: e["t"], reverse=True)[:room]
    if events:
        lines += [[], [(" EVENTS", "head")]]
        lines += [[(time.strftime(" %H:%M:%S  ", time.localtime(e["t"])), "dim"),
                   (e["text"], "bad" if e.get("verdict") not in (None, "drained") else "info")] for e in events]
    lines += [[], [(" q quit", "dim"), (f" · every second from {feed.url}/dashboard.json", "dim")]]
    return lines


def as_text(lines: list[Line]) -> str:
    """The screen without styles (--once, and pipes)."""
    return "\n".join("".join(text for text, _style in line).rstrip() for line in lines)


# -- the terminal --------------------------------------------------------------------------
def _styles() -> dict[str, int]:
    curses.use_default_colors()
    pairs = {"ok": curses.COLOR_GREEN, "warn": curses.COLOR_YELLOW, "bad": curses.COLOR_RED,
             "info": curses.COLOR_CYAN, "head": curses.COLOR_BLUE, "dim": -1, "big": -1, "": -1}
    styles = {}
    for index, (name, color) in enumerate(pairs.items(), start=1):
        curses.init_pair(index, color, -1)
        styles[name] = curses.color_pair(index)
    styles["big"] |= curses.A_BOLD
    styles["head"] |= curses.A_BOLD
    styles["title"] = curses.A_REVERSE | curses.A_BOLD
    styles["dim"] |= curses.A_DIM
    return styles


def _draw(screen: Any, lines: list[Line], styles: dict[str, int]) -> None:
    height, width = screen.getmaxyx()
    screen.erase()
    for row, line in enumerate(lines[: height]):
        column = 0
        for text, style in line:
            if column >= width - 1:
                break
            screen.addnstr(row, column, text, width - 1 - column, styles.get(style, 0))
            column += len(text)
    screen.refresh()


def _loop(screen: Any, feed: Feed, interval: float) -> None:
    curses.curs_set(0)
    styles = _styles() if curses.has_colors() else {}
    screen.timeout(100)          # getch() waits at most 0.1 s: keys answer at once, data every interval
    next_poll = 0.0
    while True:
        if time.monotonic() >= next_poll:
            feed.refresh()
            next_poll = time.monotonic() + interval
            height, width = screen.getmaxyx()
            _draw(screen, render(feed, width, height), styles)
        key = screen.getch()
        if key in (ord("q"), ord("Q"), 27):
            return
        if key == curses.KEY_RESIZE:
            next_poll = 0.0


def top_main(url: str | None, interval: float = 1.0, once: bool = False) -> int:
    """`pycluster ctl top`; returns the exit status."""
    try:
        feed = Feed(url or default_url())
    except TopError as exc:
        print(f"pycluster ctl top: error: {exc}", file=sys.stderr)
        return 1
    if once or not sys.stdout.isatty():
        feed.refresh()
        if feed.answer is None:
            print(f"pycluster ctl top: error: {feed.error}", file=sys.stderr)
            return 1
        print(as_text(render(feed)))
        return 0
    locale.setlocale(locale.LC_ALL, "")  # curses draws the block characters only in a UTF-8 locale
    try:
        curses.wrapper(_loop, feed, max(0.2, interval))
    except KeyboardInterrupt:
        pass
    return 0
