"""Per-interval throughput and failures from request records, recovery times, and the timeline plot."""

from pathlib import Path


def buckets(records, t0: float, end: float, width: float = 0.5) -> list[dict]:
    """[{t, ok_rps, failed_rps}] per `width` seconds from t0 to end, by request completion time."""
    n = max(1, int((end - t0) / width + 0.999))
    ok, failed = [0] * n, [0] * n
    for r in records:
        i = int((r.end - t0) / width)
        if 0 <= i < n:
            (ok if r.kind == "ok" else failed)[i] += 1
    return [{"t": round(i * width, 3), "ok_rps": ok[i] / width, "failed_rps": failed[i] / width} for i in range(n)]


def baseline(series: list[dict], start: float, end: float) -> float:
    """Median successful rate between start and end (s since t0): the 'full throughput'."""
    values = sorted(b["ok_rps"] for b in series if start <= b["t"] < end)
    if not values:
        return 0.0
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def recovery_time(series: list[dict], fault_t: float, full: float, share: float = 0.9,
                  width: float = 0.5) -> float | None:
    """Seconds from fault_t until a bucket runs at share × full with no failures; None if never."""
    for b in series:
        if b["t"] + width <= fault_t:
            continue
        if b["ok_rps"] >= share * full and b["failed_rps"] == 0 and b["t"] >= fault_t:
            return round(b["t"] + width - fault_t, 2)
    return None


def plot(series: list[dict], faults: list[dict], title: str, path: Path, per_worker: list[dict] | None = None) -> None:
    """Throughput and failures over time, each fault marked with a vertical line; with `per_worker`
    (capacity.buckets of keep-alive clients), a third panel stacks each worker's share of them."""
    import matplotlib  # noqa: PLC0415 - heavy, only needed for the PNG

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ts = [b["t"] for b in series]
    rows = 3 if per_worker else 2
    fig, axes = plt.subplots(rows, 1, sharex=True, figsize=(8, 5 + 2.2 * (rows - 2)),
                             height_ratios=[3, 1.4, 2.6][:rows])
    top, bottom = axes[0], axes[1]
    if per_worker:
        _stack_per_worker(axes[2], per_worker)
    top.plot(ts, [b["ok_rps"] for b in series], color="tab:blue", label="successful req/s")
    bottom.bar(ts, [b["failed_rps"] for b in series], width=0.45, align="edge", color="tab:red",
               label="failed req/s")
    for i, f in enumerate(faults):
        color = "tab:green" if f.get("recovery") else "tab:red"
        for ax in axes:
            ax.axvline(f["t"], color=color, linestyle="--", linewidth=1)
        if i < 12:  # worker-kill has 15 marks; naming the first few is enough
            top.annotate(f["what"], (f["t"], 0), xytext=(2, 4), textcoords="offset points", fontsize=7,
                         rotation=90, color=color)
    top.set_ylabel("successful req/s")
    top.set_ylim(bottom=0)
    top.set_title(title)
    top.grid(alpha=0.3)
    bottom.set_ylabel("failed/s")
    bottom.set_xlabel("seconds")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _stack_per_worker(ax, points: list[dict]) -> None:
    """Keep-alive answers per second, one colour per worker pid, in the order workers appeared."""
    ts = [p["t"] for p in points]
    pids = sorted({pid for p in points for pid in p["by_pid"]},
                  key=lambda pid: min(p["t"] for p in points if pid in p["by_pid"]))
    layers = [[p["by_pid"].get(pid, 0) / 0.5 for p in points] for pid in pids]
    if layers:
        ax.stackplot(ts, layers, alpha=0.85)
    ax.set_ylabel("keep-alive req/s\nby worker", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
