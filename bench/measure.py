"""What every benchmark here reports with: nearest-rank percentiles and per-process CPU seconds."""

import psutil


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p`` quantile (0..1) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User plus system CPU seconds each named process has used so far (read from /proc)."""
    times = {name: psutil.Process(pid).cpu_times() for name, pid in pids.items()}
    return {name: t.user + t.system for name, t in times.items()}
