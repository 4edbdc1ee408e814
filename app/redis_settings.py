"""How the app reaches Redis, read once from the app's config and checked at start-up.

Two ways, chosen by REDIS_SENTINELS:
- unset: one server at REDIS_URL (the test suite, `make run` with its embedded Redis);
- "host:port,host:port,...": Redis Sentinels; the client asks them for the current primary of
  REDIS_SENTINEL_MASTER and follows a failover (redis-py's Sentinel support). Increments then wait
  for REDIS_WAIT_REPLICAS replicas (WAIT) before they are acknowledged.
REDIS_PASSWORD_FILE names a file holding the password (a compose or Swarm secret): a password in
REDIS_URL would show in `docker inspect`.
"""

import re
from dataclasses import dataclass

DEFAULTS = {
    "REDIS_SENTINELS": "",
    "REDIS_SENTINEL_MASTER": "pycluster",
    "REDIS_PASSWORD_FILE": "",
    # None: 1 with Sentinels (a primary and its replica), 0 with a single server.
    "REDIS_WAIT_REPLICAS": None,
    "REDIS_WAIT_TIMEOUT_MS": 250,
    "REDIS_WAIT_STRICT": "0",
}
# The names a deployment sets in the environment (the compose and stack files use them).
ENV_NAMES = tuple(DEFAULTS)

_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SWITCH = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class RedisSettings:
    """Everything a worker needs to build its Redis client."""

    url: str
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    password: str | None
    connect_timeout: float
    socket_timeout: float
    max_connections: int
    wait_replicas: int
    wait_timeout_ms: int
    wait_strict: bool

    @property
    def uses_sentinel(self) -> bool:
        """True when the client follows a primary through Sentinels."""
        return bool(self.sentinels)


def parse_sentinels(value) -> tuple[tuple[str, int], ...]:
    """Parse "host:port,host:port" into ((host, port), ...); ValueError naming the bad entry."""
    entries = []
    for raw in str(value or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or not _HOST.fullmatch(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"REDIS_SENTINELS: {entry!r} is not host:port (port 1-65535)")
        entries.append((host, int(port)))
    return tuple(entries)


def read_password(path) -> str | None:
    """The first line of the password file, or None when no file is configured."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            password = handle.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"REDIS_PASSWORD_FILE: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not password:
        raise ValueError(f"REDIS_PASSWORD_FILE: {path} is empty")
    return password


def _int(name, value, low, high) -> int:
    text = str(value).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return int(text)


def _switch(name, value) -> bool:
    try:
        return _SWITCH[str(value).strip().lower()]
    except KeyError:
        raise ValueError(f"{name} must be 1 or 0, got {value!r}") from None


def from_config(config) -> RedisSettings:
    """Build RedisSettings from a Flask config; ValueError with the setting's name when invalid."""
    sentinels = parse_sentinels(config.get("REDIS_SENTINELS"))
    master_name = str(config.get("REDIS_SENTINEL_MASTER") or "")
    if sentinels and not _NAME.fullmatch(master_name):
        raise ValueError(f"REDIS_SENTINEL_MASTER must match [A-Za-z0-9_.-]{{1,64}}, got {master_name!r}")
    socket_timeout = float(config["REDIS_SOCKET_TIMEOUT"])
    wait_default = 1 if sentinels else 0
    wait_raw = config.get("REDIS_WAIT_REPLICAS")
    wait_replicas = wait_default if wait_raw in (None, "") else _int("REDIS_WAIT_REPLICAS", wait_raw, 0, 16)
    # WAIT must give up before the socket does, or a slow replica would read as a dead primary.
    wait_limit = max(1, int(socket_timeout * 1000) - 50)
    wait_timeout_ms = _int("REDIS_WAIT_TIMEOUT_MS", config.get("REDIS_WAIT_TIMEOUT_MS"), 1, wait_limit)
    return RedisSettings(
        url=str(config["REDIS_URL"]),
        sentinels=sentinels,
        master_name=master_name,
        password=read_password(config.get("REDIS_PASSWORD_FILE")),
        connect_timeout=float(config["REDIS_CONNECT_TIMEOUT"]),
        socket_timeout=socket_timeout,
        max_connections=int(config["REDIS_MAX_CONNECTIONS"]),
        wait_replicas=wait_replicas,
        wait_timeout_ms=wait_timeout_ms,
        wait_strict=_switch("REDIS_WAIT_STRICT", config.get("REDIS_WAIT_STRICT")),
    )
