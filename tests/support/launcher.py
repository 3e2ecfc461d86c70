"""``python -m devstack`` as ``make run`` starts it, on free ports, with its output collected."""

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from realtime.testing import free_port


def alive(pid: int) -> bool:
    """Running, and not just a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Launcher:
    def __init__(self, tmp: Path, *, via_shell: bool = False, **env: str) -> None:
        self.port = free_port()
        self.nats_port = free_port()
        full_env = os.environ | {
            "PORT": str(self.port),
            "NATS_PORT": str(self.nats_port),
            "NATS_MONITOR_PORT": str(free_port()),
            "STACK_LOG_DIR": str(tmp / "logs"),
            **env,
        }
        full_env["STACK_FREE_PORTS"] = "1"  # the fixed ports may be in use by a developer's `make run`
        argv = [sys.executable, "-m", "devstack"]
        if via_shell:  # a parent that stays in between, as make does
            argv = ["sh", "-c", f"{sys.executable} -m devstack; true"]
        self.process = subprocess.Popen(
            argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.seen: set[int] = set()  # every pid the launcher ever had below it
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with self.process.stdout:  # type: ignore[union-attr]
            for line in self.process.stdout:  # type: ignore[union-attr]
                with self.changed:
                    self.lines.append(line)
                    self.changed.notify_all()

    def wait_for_line(self, pattern: str, deadline: float, start: int = 0) -> re.Match[str]:
        """The first line from index ``start`` on that matches ``pattern``, waiting up to ``deadline``."""
        regex = re.compile(pattern)
        end = time.monotonic() + deadline
        with self.changed:
            while True:
                for line in self.lines[start:]:
                    if found := regex.search(line):
                        return found
                left = end - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    tail = "".join(self.lines[-30:])
                    raise AssertionError(f"no line matching {pattern!r} within {deadline}s:\n{tail}")
                self.changed.wait(min(left, 0.5))

    def pids(self) -> dict[str, int]:
        """name -> pid from the start-up table, updated by every "is back" line."""
        pids: dict[str, int] = {}
        for line in self.lines:
            found = re.search(r"devstack: (\S+) is back at [\d:]+: pid (\d+)", line)
            found = found or re.match(r"^([a-z]+(?:-\d+)?)\s+\S+\s.*\bpid (\d+)", line)
            if found:
                pids[found[1]] = int(found[2])
        return pids

    def note_descendants(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.seen.update(p.pid for p in psutil.Process(self.process.pid).children(recursive=True))

    def stop(self, deadline: float) -> None:
        """Kill the launcher if a test left it running, and collect the rest of its output."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(deadline)
        self.reader.join(deadline)
