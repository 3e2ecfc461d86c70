"""How many gateway worker processes ``GATEWAY_WORKERS=auto`` starts: the cores this process may use.

Not the host's core count (``os.cpu_count()``), which a container or a ``taskset`` sees too: the CPUs the
scheduler lets this process run on (``os.sched_getaffinity``), lowered to a CPU quota if one applies (cgroup
v2 ``cpu.max`` along this process's cgroup path, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), which is
what ``docker run --cpus`` and a Kubernetes CPU limit set. A quota of 1.5 cores gives 1 worker (a second
would only be throttled), never fewer than 1, and at most ``AUTO_CAP``: beyond that a process's own share
of the fan-out is small and each worker holds its own upstream connections and memory.
"""

import math
import os
from collections.abc import Callable
from pathlib import Path

AUTO_CAP = 8
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota in cores that limits this process (the tightest along its cgroup path), or None."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    # "<id>:<controllers>:<path>": v2's line is "0::<path>", v1's cpu line names the cpu controller.
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") or [""]:
            paths[controller] = path
    if (cgroup_root / "cgroup.controllers").exists():  # v2, the unified hierarchy
        return _tightest(cgroup_root, paths.get("", "/"), lambda folder: _v2_limit(folder / "cpu.max"))
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # v1: the cpu controller's own hierarchy
        if (cgroup_root / mount).is_dir():
            return _tightest(cgroup_root / mount, paths.get("cpu", "/"), _v1_limit)
    return None


def _tightest(root: Path, path: str, limit_of: Callable[[Path], float | None]) -> float | None:
    """The smallest limit on ``path`` and its parents up to ``root`` (a container sees its own cgroup as
    the root: a path that does not exist below ``root`` is looked up from the root alone)."""
    folder = root / path.lstrip("/")
    if not folder.is_dir():
        folder = root
    limits = []
    while True:
        limit = limit_of(folder)
        if limit is not None:
            limits.append(limit)
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return min(limits) if limits else None


def _v2_limit(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cores(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process may run on, lowered to its CPU quota (whole cores, at least 1)."""
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota + 1e-9)))
    return max(1, cpus)


def auto_workers(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """``GATEWAY_WORKERS=auto``: one worker per usable core, at most ``AUTO_CAP``."""
    return min(AUTO_CAP, usable_cores(cgroup_root, proc_cgroup))
