"""The quitting gate: pass/fail thresholds for a finished Locust run, kept free of Locust itself."""

import os
from dataclasses import dataclass

DEFAULT_MAX_FAIL_RATIO = 0.01
DEFAULT_MAX_P95_MS = 1000.0


@dataclass(frozen=True)
class Limits:
    """Thresholds a run must stay within; a ratio in 0..1 and a latency in ms."""

    max_fail_ratio: float = DEFAULT_MAX_FAIL_RATIO
    max_p95_ms: float = DEFAULT_MAX_P95_MS

    def __post_init__(self):
        if not 0.0 <= self.max_fail_ratio <= 1.0:
            raise ValueError(f"max fail ratio must be within 0..1, got {self.max_fail_ratio}")
        if self.max_p95_ms <= 0:
            raise ValueError(f"max p95 must be positive, got {self.max_p95_ms}")


def limits_from_env(env=None) -> Limits:
    """Limits from LOCUST_MAX_FAIL_RATIO / LOCUST_MAX_P95_MS, defaults where unset."""
    env = os.environ if env is None else env
    return Limits(
        max_fail_ratio=float(env.get("LOCUST_MAX_FAIL_RATIO") or DEFAULT_MAX_FAIL_RATIO),
        max_p95_ms=float(env.get("LOCUST_MAX_P95_MS") or DEFAULT_MAX_P95_MS),
    )


def verdict(num_requests: int, fail_ratio: float, p95_ms: float | None, limits: Limits) -> tuple[int, list[str]]:
    """Exit code (0 pass, 1 fail) and the reasons for failing."""
    reasons = []
    # A run that sent nothing proves nothing: a wrong host or a dead port must not pass.
    if num_requests <= 0:
        reasons.append("no requests were made")
    if fail_ratio > limits.max_fail_ratio:
        reasons.append(f"failure ratio {fail_ratio:.2%} > {limits.max_fail_ratio:.2%}")
    if p95_ms is not None and p95_ms > limits.max_p95_ms:
        reasons.append(f"p95 {p95_ms:.0f} ms > {limits.max_p95_ms:.0f} ms")
    return (1 if reasons else 0), reasons
