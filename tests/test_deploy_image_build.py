"""The build stage of every Dockerfile replayed without a container engine: its bind mounts, COPY steps and
``uv sync`` commands run in a temporary folder with the workspace's own uv, offline from uv's cache (filled by
``make install``). Then the resulting venv runs the image's CMD and HEALTHCHECK commands.

This proves what a text check cannot: phase 1 installs dependencies from manifests alone, phase 2 finds
every file it needs among what the Dockerfile copies, the image holds its member and the shared package and
nothing else, and the healthcheck command tells ready from not ready.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from devstack.stack import GATEWAY_MODULE, SERVICES, free_port
from realtime.close_codes import CloseCode
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.deploy import ROOT, instructions, member_of

MODULES = [module for module, _ in SERVICES.values()] + [GATEWAY_MODULE]
IGNORED = shutil.ignore_patterns("tests", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", ".venv")
DEADLINE = 10.0
# Starting and stopping a fresh venv's server: its first imports compile nothing (no bytecode written) and,
# beside other tests on two workers, took over 10 s under load once. Only a failure waits this long.
PROCESS_DEADLINE = 45.0
# A WebSocket path per service, to check that SIGTERM closes a connected client with 1001.
WS_PATHS = {"echo_service": "/echo", "rooms_service": "/ws/lobby", "stats_service": "/stats"}


def uv_binary() -> str:
    found = ROOT / ".tools" / "bin" / "uv"
    if not found.exists():
        pytest.fail("uv not found in .tools/bin: run `make install`, which installs it")
    return str(found)


def build_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    froms = [i for i, (keyword, _) in enumerate(steps) if keyword == "FROM"]
    return steps[froms[0] + 1 : froms[1]]


def replay(dockerfile: Path, work: Path) -> Path:
    """Run the build stage's uv steps; returns the venv (the image's /app/.venv)."""
    src = work / "src"
    src.mkdir()
    venv = work / "venv"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(work)),
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON": sys._base_executable,  # the interpreter this venv was made from
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
        "UV_OFFLINE": "1",
        "UV_NO_PROGRESS": "1",
    }
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    uv_runs = 0
    workdir = "/"
    for keyword, args in build_stage(dockerfile):
        if keyword == "WORKDIR":
            workdir = args
        elif keyword == "COPY":
            *sources, target = shlex.split(args)
            assert not any(s.startswith("--") for s in sources), args
            for source in sources:
                origin, dest = ROOT / source, src / target
                if origin.is_dir():
                    shutil.copytree(origin, dest, ignore=IGNORED, dirs_exist_ok=True)  # COPY merges
                elif target.endswith("/"):
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, dest / origin.name)
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, dest)
        elif keyword == "RUN" and "uv sync" in args:
            words = shlex.split(args)
            mounts = [w.split("=", 1)[1] for w in words if w.startswith("--mount=")]
            command = words[words.index("uv") :]
            mounted = []
            for mount in mounts:
                options = dict(part.split("=", 1) for part in mount.split(","))
                if options["type"] == "bind":
                    target = src / Path(workdir, options["target"]).relative_to(workdir)
                    assert not target.exists(), f"{target} would hide a copied file"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / options["source"], target)
                    mounted.append(target)
            result = subprocess.run(
                [uv_binary(), *command[1:]], cwd=src, env=env, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, f"{args}\n{result.stderr}"
            for target in mounted:  # a bind mount is gone after its RUN step
                target.unlink()
            uv_runs += 1
            if uv_runs == 1:
                # Phase 1: dependencies only; no workspace member is installed yet.
                assert not list((venv / "lib").glob("python*/site-packages/realtime"))
    assert uv_runs == 2
    return venv


@pytest.mark.timeout(240)
@pytest.mark.parametrize("module", MODULES)
def test_build_stage_installs_only_its_member_and_the_image_command_serves(
    tmp_path: Path, module: str
) -> None:
    dockerfile = member_of(module)[0] / "Dockerfile"
    venv = replay(dockerfile, tmp_path)
    python = str(venv / "bin" / "python")

    others = [m for m in [*MODULES, "devstack", "pytest", "compose"] if m != module]
    probe = "import importlib.util as u, sys; print(*[m for m in sys.argv[1:] if u.find_spec(m)])"
    present = subprocess.run(
        [python, "-c", probe, module, "realtime", *others], cwd=tmp_path, capture_output=True, text=True
    )
    assert present.stdout.split() == [module, "realtime"], present.stderr

    steps = instructions(dockerfile)
    cmd = json.loads(next(a for k, a in reversed(steps) if k == "CMD"))
    health = json.loads(next(a for k, a in steps if k == "HEALTHCHECK").split(" CMD ", 1)[1])
    port = free_port()
    env = {"PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}", "HOST": "127.0.0.1", "PORT": str(port)}
    env |= {"BUS_URL": "memory://", "PYTHONDONTWRITEBYTECODE": "1", "INTERNAL_PORT": str(free_port())}
    if module == GATEWAY_MODULE:
        # No upstream answers here, so the gateway must report itself NOT ready: the check says so.
        env["UPSTREAMS"] = '{"echo": ["127.0.0.1:1"], "rooms": ["127.0.0.1:1"], "stats": ["127.0.0.1:1"]}'
    server = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + PROCESS_DEADLINE
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the image's CMD did not start listening"
            time.sleep(0.05)
        expect_ready = module != GATEWAY_MODULE
        deadline = time.monotonic() + DEADLINE
        while True:
            check = subprocess.run(health, env=env, capture_output=True, text=True, timeout=DEADLINE)
            if (check.returncode == 0) == expect_ready or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert (check.returncode == 0) == expect_ready, check.stderr
        client = None
        if module in WS_PATHS:
            client = connect(
                f"ws://127.0.0.1:{port}{WS_PATHS[module]}", open_timeout=DEADLINE, compression=None
            )
    finally:
        server.terminate()  # SIGTERM, as a container stop sends
        try:
            code = server.wait(PROCESS_DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # its session: the gateway's worker processes too
            server.wait(DEADLINE)
            raise
        finally:
            log = server.stdout.read().decode(errors="replace") if server.stdout else ""
            if server.stdout is not None:
                server.stdout.close()  # also on failure: an open pipe fails a later test (ResourceWarning)
    # uvicorn shuts down gracefully (lifespan, bus drain), then re-raises the signal it caught: 143 in Docker.
    assert code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log, log
    if client is not None:
        # The connected client was told to go elsewhere: 1001, not a dropped connection.
        with client, pytest.raises(ConnectionClosed) as closed:
            while True:
                client.recv(timeout=DEADLINE)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.GOING_AWAY, closed.value
