"""GATEWAY_WORKERS=auto: the cores this process may use (affinity, then a cgroup CPU quota), not the host's
core count. The quota is read from a cgroup tree laid out as the kernel does (here in a temporary folder)."""

import os
from pathlib import Path

import pytest
from gateway.cores import AUTO_CAP, auto_workers, cpu_quota, usable_cores
from gateway.settings import GatewaySettings

AFFINITY = len(os.sched_getaffinity(0))


def v2_tree(tmp_path: Path, limits: dict[str, str], path: str = "/app.slice/gateway") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    (root / path.lstrip("/")).mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for folder, value in limits.items():
        (root / folder.lstrip("/") / "cpu.max").write_text(value + "\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def test_no_quota_means_the_cpus_this_process_may_run_on(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, {"/app.slice/gateway": "max 100000"})
    assert cpu_quota(root, proc) is None
    assert usable_cores(root, proc) == AFFINITY
    assert usable_cores() <= (os.cpu_count() or 1)  # this machine, as it is


def test_a_quota_of_one_core_gives_one_worker(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, {"/app.slice/gateway": "100000 100000"})
    assert cpu_quota(root, proc) == 1.0
    assert auto_workers(root, proc) == 1


def test_the_tightest_quota_along_the_path_counts_and_fractions_round_down(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, {"/app.slice": "150000 100000", "/app.slice/gateway": "max 100000"})
    assert cpu_quota(root, proc) == 1.5
    assert usable_cores(root, proc) == 1
    root, proc = v2_tree(tmp_path / "small", {"/app.slice/gateway": "50000 100000"})
    assert usable_cores(root, proc) == 1  # half a core: still one worker


def test_a_container_sees_its_own_cgroup_as_the_root(tmp_path: Path) -> None:
    """Inside a container /proc/self/cgroup may name a host path the container cannot see."""
    root, proc = v2_tree(tmp_path, {}, path="/")
    (root / "cpu.max").write_text("100000 100000\n")
    proc.write_text("0::/kubepods/burstable/pod1234/abcd\n")
    assert cpu_quota(root, proc) == 1.0


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    cpu = root / "cpu,cpuacct"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("100000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text("3:cpu,cpuacct:/\n0::/\n")
    assert cpu_quota(root, proc) == 1.0
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert cpu_quota(root, proc) is None


def test_auto_is_the_default_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_WORKERS", raising=False)
    workers = GatewaySettings().gateway_workers
    assert workers == auto_workers() and 1 <= workers <= min(AUTO_CAP, AFFINITY)
    monkeypatch.setenv("GATEWAY_WORKERS", "3")
    assert GatewaySettings().gateway_workers == 3
    monkeypatch.setenv("GATEWAY_WORKERS", "0")
    with pytest.raises(ValueError, match="GATEWAY_WORKERS"):
        GatewaySettings()
