"""What every benchmark here reports with: nearest-rank percentiles and per-process CPU seconds."""

import psutil


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p`` quantile (0..1) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User plus system CPU seconds each named process has used so far, with its live descendants (the
    gateway's worker processes), read from /proc."""
    result = {}
    for name, pid in pids.items():
        process = psutil.Process(pid)
        total = 0.0
        for one in [process, *process.children(recursive=True)]:
            try:
                t = one.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        result[name] = total
    return result
